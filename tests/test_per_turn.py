"""Work gathered over one turn of the event loop (gateway.per_turn) and the credential stage that signs with it:
done after the turn's ready tasks, back to back, in order; each result or error to its own caller; nothing done
for a caller that went away; every call its own valid token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jwt
import pytest

from gateway.calls.credential import Credential
from gateway.catalog.model import Credentials, HttpTransport
from gateway.credentials.secret_sources import SecretResolver
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.per_turn import PerTurn
from gateway.store import open_store
from gateway.verifier import argument_digest

AUDIENCE = "https://tools.example/mcp"


async def test_the_work_of_one_turn_is_done_after_its_ready_tasks_back_to_back_and_in_order() -> None:
    per_turn = PerTurn()
    events: list[str] = []

    def work(n: int) -> int:
        events.append(f"work {n}")
        return n * 10

    async def caller(n: int) -> int:
        events.append(f"asked {n}")
        result = await per_turn.run(work, n)
        events.append(f"got {n}")
        return result

    results = await asyncio.gather(*(caller(n) for n in range(4)))
    assert results == [0, 10, 20, 30]
    assert events[:8] == ["asked 0", "asked 1", "asked 2", "asked 3", "work 0", "work 1", "work 2", "work 3"]
    assert sorted(events[8:]) == ["got 0", "got 1", "got 2", "got 3"]

    # The next turn is a batch of its own: the queue was emptied and its callback runs again.
    events.clear()
    assert await per_turn.run(work, 7) == 70
    assert events == ["work 7"]


async def test_an_error_reaches_only_its_own_caller() -> None:
    per_turn = PerTurn()

    def work(n: int) -> int:
        if n == 1:
            raise ValueError("no key for 1")
        return n

    outcomes = await asyncio.gather(*(per_turn.run(work, n) for n in range(3)), return_exceptions=True)
    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "no key for 1"


async def test_whatever_the_work_raises_reaches_its_caller_and_the_rest_of_the_turn_goes_on() -> None:
    """A StopIteration (which a future refuses) as a RuntimeError, a BaseException such as CancelledError as it is:
    either way the callers after it in the turn get their own results, none is left waiting."""
    per_turn = PerTurn()

    def work(n: int) -> int:
        if n == 1:
            raise StopIteration("out of items")
        if n == 3:
            raise asyncio.CancelledError("the work gave up")
        return n

    outcomes = await asyncio.gather(*(per_turn.run(work, n) for n in range(5)), return_exceptions=True)
    assert outcomes[0] == 0 and outcomes[2] == 2 and outcomes[4] == 4
    assert isinstance(outcomes[1], RuntimeError) and isinstance(outcomes[1].__cause__, StopIteration)
    assert isinstance(outcomes[3], asyncio.CancelledError)


def test_a_stop_of_the_process_cancels_the_callers_left_in_the_turn() -> None:
    per_turn = PerTurn()
    seen: dict[int, object] = {}

    def work(n: int) -> int:
        if n == 1:
            raise KeyboardInterrupt
        return n

    async def caller(n: int) -> None:
        try:
            seen[n] = await per_turn.run(work, n)
        except BaseException as exc:  # what each caller got is the point
            seen[n] = type(exc)

    async def main() -> None:
        await asyncio.gather(*(caller(n) for n in range(3)))

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(main())
        loop.run_until_complete(asyncio.sleep(0))  # the callers wake up with what they were given
    finally:
        loop.close()
    assert seen[0] == 0
    assert seen[1] is KeyboardInterrupt and seen[2] is asyncio.CancelledError


def test_a_loop_that_stopped_mid_turn_does_not_hold_up_the_next_loop() -> None:
    per_turn = PerTurn()

    async def ask_and_stop() -> None:
        per_turn.run(int, "7")  # queued, and the loop stops before its callback runs
        asyncio.get_running_loop().stop()

    stopped = asyncio.new_event_loop()
    try:
        asking = stopped.create_task(ask_and_stop())
        stopped.run_forever()
        assert asking.done()
    finally:
        stopped.close()

    async def ask() -> int:
        return await asyncio.wait_for(per_turn.run(int, "8"), 5)

    assert asyncio.run(ask()) == 8


async def test_nothing_is_done_for_a_caller_cancelled_before_its_turn_ends() -> None:
    per_turn = PerTurn()
    done: list[int] = []

    def work(n: int) -> int:
        done.append(n)
        return n

    gone = per_turn.run(work, 1)
    kept = per_turn.run(work, 2)
    gone.cancel()
    assert await kept == 2
    assert done == [2]
    with pytest.raises(asyncio.CancelledError):
        await gone


def call_for(agent_id: str, server_id: str = "tools") -> Any:
    """The parts of a ToolCall the credential stage reads (a stand-in: the stage is tested on its own here; the
    gateway's end-to-end tests send real calls through it)."""
    principal = SimpleNamespace(agent_id=agent_id, user=None, claims={"sub": f"spiffe://example.org/{agent_id}"},
                                auth_method="jwt", task_id=None)
    return SimpleNamespace(entry=SimpleNamespace(server_id=server_id, name="search"), principal=principal,
                           request=SimpleNamespace(trace_id=None))


async def test_the_credential_stage_signs_a_turns_tokens_together_each_call_its_own(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'gw.db'}")
    await store.migrate()
    resolver = SecretResolver()
    auth = UpstreamAuth("https://gateway.example", resolver)
    await auth.start(store)
    assert auth.keyring is not None
    keyring = auth.keyring
    events: list[str] = []
    sign = keyring.sign

    def recorded_sign(claims: dict[str, Any], typ: str) -> str:
        events.append(f"sign {claims['sub']}")
        return sign(claims, typ)

    keyring.sign = recorded_sign  # type: ignore[method-assign]
    server = SimpleNamespace(transport=HttpTransport(url=AUDIENCE), credentials=Credentials(resource=AUDIENCE))
    pool = SimpleNamespace(catalog=SimpleNamespace(servers={"tools": server}))
    stage = Credential(auth, cast(Any, pool), cast(Any, SimpleNamespace(tracing_enabled=False)))

    async def one(agent_id: str, query: str) -> dict[str, str] | None:
        events.append(f"asked {agent_id}")
        arguments = {"q": query}
        return await stage(call_for(agent_id), cast(Any, SimpleNamespace(args_digest=None)), arguments)

    try:
        agents = [f"agent-{n}" for n in range(3)]
        headers = await asyncio.gather(*(one(agent, f"query {agent}") for agent in agents))
        assert events == [*(f"asked {a}" for a in agents), *(f"sign {a}" for a in agents)]
        public = jwt.PyJWK(keyring.jwks()["keys"][0])
        jtis = set()
        for agent, header in zip(agents, headers, strict=True):
            assert header is not None
            claims = jwt.decode(header["Authorization"].removeprefix("Bearer "), public, algorithms=["ES256"],
                                audience=AUDIENCE)
            assert claims["sub"] == agent and claims["scope"] == "search"
            assert claims["args_sha256"] == argument_digest({"q": f"query {agent}"})
            jtis.add(claims["jti"])
        assert len(jtis) == len(agents)
    finally:
        await resolver.close()
        await store.close()
