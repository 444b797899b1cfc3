"""How hard the fuzzers try: briefly in `make test`, at length in `make fuzz`.

`NARROWGATE_FUZZ_EXAMPLES` (an integer) sets the examples per property for a long run (`make fuzz`
sets it, with a random `--hypothesis-seed`); unset, each property runs its small default with a
fixed derandomized seed, so `make test` is quick and repeatable. The argument-canonicalizer
properties (tests/test_canonical*.py) read the same variable.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

ENV_VAR = "NARROWGATE_FUZZ_EXAMPLES"


def long_run() -> int | None:
    """The examples asked for by a long run, or None in a normal test run."""
    raw = os.environ.get(ENV_VAR, "").strip()
    return int(raw) if raw else None


def fuzz_settings(default: int, share: float = 1.0) -> settings:
    """Settings for one property: `default` examples normally, `share` of the long-run budget otherwise.

    `share` lets a property that drives real processes over HTTP (milliseconds per example) run a
    fraction of what a pure-function property runs in the same long run.
    """
    asked = long_run()
    return settings(
        max_examples=default if asked is None else max(default, int(asked * share)),
        derandomize=asked is None,
        deadline=None,  # the machine is shared: wall-clock deadlines would make failures flaky
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )
