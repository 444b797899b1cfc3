# Narrowgate gateway image: slim, non-root, `narrowgate serve`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/narrowgate --create-home narrowgate
COPY --from=build /install /usr/local
# The catalog is deployment-specific: mount it at /etc/narrowgate/tool_catalog.
RUN mkdir -p /etc/narrowgate/tool_catalog
COPY cedar /etc/narrowgate/cedar
COPY examples/config/docker.yaml /etc/narrowgate/config.yaml
USER narrowgate
WORKDIR /var/lib/narrowgate
EXPOSE 8080
ENTRYPOINT ["narrowgate"]
CMD ["serve", "--config", "/etc/narrowgate/config.yaml"]
