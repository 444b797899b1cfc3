"""Compliance evidence: per control of a framework, facts computed from the running deployment and its
store, each with the command or query that produced it (`narrowgate evidence`, `/admin/v1/evidence`)."""
