# Every target works on a bare machine with only python3: the venv is created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test provision bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the gateway with its two demo upstreams; prints the URL, tokens, client config and how to
## reach it from another shell. `make run PORT=9000` picks the port (else NARROWGATE_LISTEN, else 8080).
run: $(STAMP)
	@$(VENV)/bin/narrowgate demo $(if $(PORT),--port $(PORT))

## test: every test, including the MCP conformance suite through the gateway. tests/provision.py first
## installs what the tests run (Debian's npm, chromium and chromium-driver as root; the pinned Node 22
## and conformance suite) or stops in its first seconds with one line naming what is missing.
test: provision $(STAMP)
	$(PY) -m pytest -q

provision:
	@$(PYTHON) tests/provision.py

## bench: direct vs through-the-gateway latency, throughput and CPU per call
bench: $(STAMP)
	$(PY) -m bench.run --sdk-check --json .narrowgate/bench.json
	$(PY) -m bench.policy --json .narrowgate/bench-policy.json
	$(PY) -m bench.stall --json .narrowgate/bench-stall.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .narrowgate .pytest_cache tests/conformance/node_modules
