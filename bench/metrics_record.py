"""Instructions of one call's metrics recording, in process: `record_request` + `record_policy_evaluation`.

Run it under callgrind at N=0 and N=K and divide the difference by K (docs/performance.md):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m bench.metrics_record 0
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p python -m bench.metrics_record 2000

Both series exist before the counted calls (as on a running gateway), and one scrape of `/metrics`
runs after them (its cost is in both counts, so it cancels out).
"""

from __future__ import annotations

import sys

from gateway.telemetry import Telemetry


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    telemetry = Telemetry.from_env({})
    record_request = telemetry.record_request
    record_policy = telemetry.record_policy_evaluation
    record_request("tools/call", "allow", "bench", 0.0012, None)  # the series exist before the count
    record_policy(0.0003, "allow")
    for i in range(calls):
        record_request("tools/call", "allow", "bench", 0.0012 + i * 1e-7, None)
        record_policy(0.0003 + i * 1e-8, "allow")
    telemetry.metrics_response()
    telemetry.shutdown()


if __name__ == "__main__":
    main()
