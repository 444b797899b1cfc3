"""The demo's pieces behind `narrowgate demo` (the command itself is gateway.cli.demo).

state: the state directory (store, tokens, keys kept across restarts); issuer: the development
workload identity; payments: the HTTP upstream child; approvals: which calls ask for approval,
worked out from the policies; banner: what is printed.
"""
