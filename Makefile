# Every target works on a bare machine with only python3: the venv is created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test provision bench lint typecheck clean

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
## installs what the tests run (Debian's npm, chromium, chromium-driver, postgresql and redis-server as root;
## the pinned Node 22, conformance suite and test OpenID provider) or stops in its first seconds with one line
## naming what is missing.
## The type check runs first: a type error fails `make test` before any test starts. The tests then run on
## TEST_WORKERS pytest-xdist workers, one test file per worker at a time; the `serial` ones (timing-sensitive)
## run after them, alone. Both parts always run; either failing fails `make test`. See docs/development.md.
TEST_WORKERS ?= 2
test: provision $(STAMP) typecheck
	@status=0; \
	echo "$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile -m 'not serial'"; \
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile -m "not serial" || status=$$?; \
	echo "$(PY) -m pytest -q --durations=15 -m serial"; \
	$(PY) -m pytest -q --durations=15 -m serial || status=$$?; \
	exit $$status

provision:
	@$(PYTHON) tests/provision.py

## bench: direct vs the floor (a minimal Python proxy) vs the gateway in one run: latency, throughput, CPU per
## call and the gateway/floor ratio; then the reload stalls (bench.stall) and the Cedar decisions (bench.policy).
## BENCH_ARGS go to bench.run, e.g. `make bench BENCH_ARGS="--workers 2 --replicas 2"` (issue 15's scale-out sides
## on a throwaway PostgreSQL + Redis: gw-pg, gw-2w, gw-2r, and the revocation's time to reach every replica)
bench: $(STAMP)
	@mkdir -p .narrowgate
	$(PY) -m bench.run --sdk-check --json .narrowgate/bench.json $(BENCH_ARGS)
	$(PY) -m bench.stall --json .narrowgate/bench-stall.json
	$(PY) -m bench.policy --json .narrowgate/bench-policy.json

## fuzz: the fuzzers (tests/fuzz, tests/test_canonical*.py) at length, from a random seed it prints:
## FUZZ_EXAMPLES examples per Hypothesis property (those that drive real processes run a share of it),
## then each atheris (coverage-guided) target for ATHERIS_SECONDS; crash inputs go to .narrowgate/fuzz/.
FUZZ_EXAMPLES ?= 10000
ATHERIS_SECONDS ?= 120
.PHONY: fuzz soak
fuzz: $(STAMP)
	@seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	echo "make fuzz: $(FUZZ_EXAMPLES) examples per property, --hypothesis-seed=$$seed"; \
	NARROWGATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -o timeout=0 --hypothesis-seed=$$seed \
		--hypothesis-show-statistics tests/fuzz $(wildcard tests/test_canonical*.py)
	$(PY) -m tests.fuzz.atheris_targets all --seconds $(ATHERIS_SECONDS)

## soak: SOAK_MINUTES (default 60) of mixed traffic against a real gateway; RSS, fds, tasks and latency
## sampled each minute, slopes per hour; not part of `make test`. See docs/operations.md#soak.
SOAK_MINUTES ?= 60
soak: $(STAMP)
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) -m bench.soak --json .narrowgate/soak.json

## lint: the type check (typecheck below), then ruff
lint: $(STAMP) typecheck
	$(VENV)/bin/ruff check .

## typecheck: mypy on the gateway package, configured in pyproject.toml [tool.mypy] (strict); its cache
## is .narrowgate/mypy-cache, so a second run takes seconds. See docs/development.md.
typecheck: $(STAMP)
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .narrowgate .pytest_cache tests/conformance/node_modules tests/oidc_provider/node_modules
