"""How long a revocation takes to reach every replica of a fleet (issue 15's speed aims), for bench.run.

For each of K agents of their own: one 2026-07-28 agent per replica (bench.load's Agent, a keep-alive
connection) checks its call runs there; the agent is suspended through the first replica's admin API;
then every replica is polled every POLL_S until it refuses that agent's next call. A sample is the time
from the suspension's answer until the last replica refused (the propagation; the suspension's own
request is reported apart). Only a wrong answer counts as a refusal: a connection error fails the sample.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.load import MODERN, Agent, CallFailure, Target, percentile

REVOCABLE_AGENTS = 20
POLL_S = 0.005
REFUSAL_DEADLINE_S = 10.0
MAX_ERRORS_KEPT = 5
ADMIN_NAME = "bench"


@dataclass(frozen=True)
class Revocable:
    """The agents the phase suspends (id -> bearer token) and the admin token that suspends them."""

    admin_token: str
    agents: dict[str, str]

    @classmethod
    def new(cls, count: int = REVOCABLE_AGENTS) -> Revocable:
        return cls(secrets.token_urlsafe(32), {f"revoke-{i}": secrets.token_urlsafe(32) for i in range(count)})

    def add_to(self, config: Path, server: str) -> None:
        """Add the agents (an agents file of the config's own, entitled to `server`), their static tokens
        and the admin token (both by SHA-256: the config holds no secret) to a config of bench.run."""
        data = yaml.safe_load(config.read_text())
        agents_file = Path(data["agents_file"])
        listed = yaml.safe_load(agents_file.read_text())
        listed["agents"] += [_agent_spec(agent, server) for agent in self.agents]
        own = config.with_name(f"{config.stem}-agents.yaml")
        own.write_text(yaml.safe_dump(listed, sort_keys=False))
        data["agents_file"] = str(own)
        data["auth"]["static_tokens"] += [{"agent": agent, "token_sha256": _sha256(token)}
                                          for agent, token in self.agents.items()]
        data["admin"] = {"tokens": [{"name": ADMIN_NAME, "token_sha256": _sha256(self.admin_token)}]}
        config.write_text(yaml.safe_dump(data, sort_keys=False))


def _agent_spec(agent: str, server: str) -> dict[str, Any]:
    return {
        "id": agent, "owner": "bench@example.com", "purpose": "benchmark revocation", "state": "active",
        "identities": [{"kind": "static", "issuer": "narrowgate", "subject": agent}],
        "entitlement": {"servers": [server], "require_task": False},
    }


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def measure(urls: list[str], tool: str, revocable: Revocable) -> dict[str, Any]:
    """Suspend every revocable agent on `urls[0]`; the propagation to every replica in `urls`, p50 and max."""
    propagation_ns: list[int] = []
    request_ns: list[int] = []
    errors: list[str] = []
    headers = {"authorization": f"Bearer {revocable.admin_token}"}
    timeout = aiohttp.ClientTimeout(total=REFUSAL_DEADLINE_S)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as admin:
        for agent, token in revocable.agents.items():
            try:
                took = await _one(admin, urls, tool, agent, token)
            except (CallFailure, aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(f"{agent}: {type(exc).__name__}: {exc}"[:400])
                continue
            request_ns.append(took[0])
            propagation_ns.append(took[1])
    propagation_ns.sort()
    request_ns.sort()
    return {
        "agents": len(revocable.agents),
        "replicas": len(urls),
        "poll_ms": POLL_S * 1000,
        "p50_ms": percentile(propagation_ns, 50),
        "max_ms": propagation_ns[-1] / 1e6 if propagation_ns else 0.0,
        "suspend_request_p50_ms": percentile(request_ns, 50),
        "failures": len(revocable.agents) - len(propagation_ns),
        "errors": errors,
    }


async def _one(admin: aiohttp.ClientSession, urls: list[str], tool: str, agent: str, token: str) -> tuple[int, int]:
    """(the suspension's request, then until every replica refused the agent), in ns."""
    pollers = [Agent(Target(url, tool=tool, token=token, era=MODERN), agent) for url in urls]
    try:
        for poller in pollers:  # the connection is open and the agent is served on every replica
            await poller.open()
            await poller.call_echo("before")
        suspend = urls[0].removesuffix("/mcp") + f"/admin/v1/agents/{agent}/suspend"
        started = time.perf_counter_ns()
        async with admin.post(suspend, json={"reason": "bench.revocation"}) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise CallFailure(f"suspend: HTTP {resp.status}: {body[:300]!r}")
        done = time.perf_counter_ns()
        refused = await asyncio.gather(*(_refused(poller, done) for poller in pollers))
        return done - started, max(refused) - done
    finally:
        await asyncio.gather(*(poller.close() for poller in pollers))


async def _refused(poller: Agent, since_ns: int) -> int:
    """When (perf_counter_ns) the replica first refused the poller's call."""
    for attempt in range(int(REFUSAL_DEADLINE_S / POLL_S)):
        try:
            await poller.call_echo(f"poll-{attempt}")
        except CallFailure:
            return time.perf_counter_ns()
        if time.perf_counter_ns() - since_ns > REFUSAL_DEADLINE_S * 1e9:
            break
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{poller.target.url} still serves {poller.name} {REFUSAL_DEADLINE_S:.0f}s after its suspension")
