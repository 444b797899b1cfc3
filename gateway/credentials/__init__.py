"""Credentials the gateway issues: its signing keys, per-call upstream tokens, and revocations."""
