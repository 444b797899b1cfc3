"""The request that is itself closing its agent's sessions (the kill switch, an agent ending its own
task): it must finish and answer with its own error instead of being cancelled. The registry's
shielded write task inherits it. Set by the chain stage and the session registry, read by the latter;
here, below both, so neither imports the other."""

from __future__ import annotations

import asyncio
import contextvars

SPARED_REQUEST: contextvars.ContextVar[asyncio.Task[object] | None] = contextvars.ContextVar(
    "narrowgate_spared_request", default=None)
