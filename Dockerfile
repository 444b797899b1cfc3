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
# Healthy while /healthz answers 200 (the image has no curl; Python's urllib does the request). The
# port follows NARROWGATE_LISTEN if it is set, as the gateway does.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('NARROWGATE_LISTEN', ':8080').rpartition(':')[2]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["narrowgate"]
CMD ["serve", "--config", "/etc/narrowgate/config.yaml"]
