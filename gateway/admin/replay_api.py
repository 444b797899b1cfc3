"""`POST /admin/v1/policies/replay`: what-if replay of recorded decisions with a candidate policy set.

Admins only. The body carries the candidate's files (the CLI reads the directory), the window and an
optional agent; the answer is the report of gateway.privilege.replay. Reads only: the live engine, its
decisions and the store are never changed. One replay runs at a time (it is CPU work, off the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.auth import AdminAuthenticator
from gateway.admin.http import admin_route, error_response, json_response, read_json
from gateway.audit import AuditLog, AuditUnavailable
from gateway.policy.engine import PolicyEngine
from gateway.policy.recorder import DecisionRecorder
from gateway.privilege.replay import EXAMPLES, CandidateInvalid, Replay, compile_candidate, window_for
from gateway.registry.service import Registry
from gateway.store.base import Store

DEFAULT_SINCE_S = 7 * 86400.0
MAX_SINCE_S = 366 * 86400.0


class BadReplayRequest(ValueError):
    pass


class ReplayApi:
    def __init__(self, engine: PolicyEngine, recorder: DecisionRecorder, audit: AuditLog, store: Store,
                 registry: Registry, auth: AdminAuthenticator) -> None:
        self.engine = engine
        self.recorder = recorder
        self.audit = audit
        self.store = store
        self.registry = registry
        self.auth = auth
        self._one_at_a_time = asyncio.Lock()

    def routes(self) -> list[Route]:
        return [Route("/admin/v1/policies/replay", admin_route(self.auth, self.replay, replay_errors),
                      methods=["POST"])]

    async def replay(self, request: Request, actor: str) -> Response:
        body = await read_json(request)
        files, since_s, agent_id, examples = _parse(body)
        async with self._one_at_a_time:
            candidate = await asyncio.to_thread(compile_candidate, self.engine, files)
            window = window_for(since_s, agent_id, await settled_until(self.recorder, self.audit))
            report = await Replay(candidate, self.recorder.cipher, self.store, self.store, window,
                                  self.recorder.cutoff(window.until), self.engine.version, examples).run()
        if agent_id is not None and report["decisions"] == 0 and self.registry.get(agent_id) is None:
            return error_response(404, f"no agent {agent_id!r}")
        report["recording"] = self.recorder.status()
        return json_response(report)


async def settled_until(recorder: DecisionRecorder, audit: AuditLog) -> float:
    """The window's end, once everything decided before it is in the store. Taken first, then the audit records
    are flushed, then the inputs: a decision is noted before its audit record is stamped, so each one audited
    before the end was noted before the recorder's flush began. (Flushing the inputs first let a call decided
    during the audit flush be audited in the window with its input still queued: "not recorded", exit 2.)"""
    until = time.time()
    # A failing audit store: read as it is (recorded decisions not yet audited are still replayed).
    with contextlib.suppress(AuditUnavailable):
        await audit.flush()
    await recorder.flush()
    return until


def _parse(body: dict[str, Any]) -> tuple[dict[str, str], float, str | None, int]:
    files = body.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BadReplayRequest("files must be an object of relative path -> policy text")
    since = body.get("since_s", DEFAULT_SINCE_S)
    if isinstance(since, bool) or not isinstance(since, int | float) or not 0 < since <= MAX_SINCE_S:
        raise BadReplayRequest(f"since_s must be a number of seconds in (0, {MAX_SINCE_S:.0f}]")
    agent = body.get("agent")
    if agent is not None and (not isinstance(agent, str) or not agent):
        raise BadReplayRequest("agent must be an agent id")
    examples = body.get("examples", EXAMPLES)
    if isinstance(examples, bool) or not isinstance(examples, int) or not 0 <= examples <= 20:
        raise BadReplayRequest("examples must be an integer from 0 to 20")
    return files, float(since), agent, examples


def replay_errors(exc: Exception) -> Response | None:
    if isinstance(exc, CandidateInvalid):
        return error_response(422, "the candidate policy set is invalid", exc.problems)
    if isinstance(exc, BadReplayRequest):
        return error_response(400, str(exc))
    return None
