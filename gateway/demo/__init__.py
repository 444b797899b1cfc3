"""`narrowgate demo` (what `make run` starts) and `narrowgate demo token`.

runner: the order of start-up and the demo's settings; state: the state directory (store, tokens,
keys kept across restarts); issuer: the development workload identity; payments: the HTTP upstream
child; approvals: which calls ask for approval, worked out from the policies; banner: what is printed.
"""

from gateway.demo.runner import run_demo, run_token

__all__ = ["run_demo", "run_token"]
