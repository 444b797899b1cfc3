"""What-if replay on recorded traffic, end to end: a real gateway records what Cedar saw for several hundred
scripted calls (allow, deny and step-up; three agents; four tools; two phases a second apart), and
`narrowgate policy replay` decides them again with candidate policy sets through the admin API.

The test knows the truth of every call it made, so it knows exactly which decisions each candidate
must flip: none for the live set itself, the allows of one tool for a candidate that forbids it, only
the second phase's for a rule on `context.request.time` (replayed at the recorded time, not now).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from gateway.cli.policy_replay import EXIT_LOOSENS, exit_status
from tests.support.clients import mcp_client
from tests.support.processes import ADMIN_TOKEN, NARROWGATE, Gateway, cedar_copy
from tests.test_policy_e2e import ALL_DAYS, make_gateway, manifest, noon_zone, token_for

RISKS = {"echo": "read", "progress": "read", "log": "write", "whoami": "privileged"}
AGENTS = {"agent-a": ["alpha"], "agent-b": ["alpha"], "agent-c": []}  # agent-c may call nothing
NO_PASSWORDS = """\
@id("no-password-echo")
@reason("echo must not carry passwords")
forbid (principal, action == Action::"alpha__echo", resource)
when { context.input has text && context.input.text like "*password*" };
"""
FORBID_ECHO = """\
@id("candidate-no-echo")
forbid (principal, action == Action::"alpha__echo", resource);
"""
PERMIT_C = """\
@id("candidate-permit-c")
permit (principal == Agent::"agent-c", action in Action::"call_tool", resource);
"""
BROKEN = """\
@id("fine")
permit (principal, action, resource) when { true };

@id("broken")
permit (principal, action, resource) when { 1 + };
"""
BROKEN_LINE = 4
PROMPT, RESOURCE = "alpha__greet", "behaviour://status"  # prompts/get and resources/read are recorded too
SECRET = "sk_live_Replay0Secret9Value7Z"
APPROVER_TOKEN = "replay-approver-token"  # a secret-looking argument value: never readable at rest
# Per agent and phase: (tool, arguments) in order; "password" echoes are denied by NO_PASSWORDS.
SCRIPT = ([("alpha__echo", {"text": f"hello {i}"}) for i in range(14)]
          + [("alpha__echo", {"text": f"my password is {i}"}) for i in range(4)]
          + [("alpha__echo", {"text": SECRET})] * 2
          + [("alpha__progress", {"steps": 1})] * 15
          + [("alpha__log", {"message": "note"})] * 8
          + [("alpha__whoami", {})] * 7
          + [(PROMPT, {"name": "Ada"})] * 3
          + [(RESOURCE, {})] * 3)


@dataclass
class Traffic:
    """What the test did, and so what the gateway must have decided."""

    calls: list[tuple[int, str, str, str]] = field(default_factory=list)  # (phase, agent, tool, outcome)
    phase_two_starts: int = 0  # epoch second: every phase-1 call was decided before it, every phase-2 one after

    def count(self, **match: Any) -> int:
        keys = ("phase", "agent", "tool", "outcome")
        return sum(all(dict(zip(keys, call, strict=True))[k] == v for k, v in match.items()) for call in self.calls)


def expected(agent: str, tool: str, arguments: dict[str, Any]) -> str:
    if agent == "agent-c":
        return "deny"
    if tool in ("alpha__log", "alpha__whoami"):  # a write outside working hours; a privileged tool
        return "step_up"
    return "deny" if "password" in str(arguments.get("text", "")) else "allow"


async def outcome_of(client: Any, tool: str, arguments: dict[str, Any]) -> str:
    try:
        if tool in (PROMPT, RESOURCE):
            await (client.get_prompt(tool, arguments) if tool == PROMPT else client.read_resource(tool))
            return "allow"
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        return {-32030: "deny", -32031: "step_up"}[exc.error.code]
    if result.is_error and (result.meta or {}).get("narrowgate/approval"):
        return "step_up"  # pending mode: the agent is told which approval to wait for
    assert not result.is_error, result
    return "allow"


async def run_agent(gateway: Gateway, agent: str, phase: int, traffic: Traffic) -> None:
    async with mcp_client(gateway.url, token_for(agent), "legacy") as client:
        for tool, arguments in SCRIPT:
            outcome = await outcome_of(client, tool, arguments)
            assert outcome == expected(agent, tool, arguments), (agent, tool, arguments, outcome)
            traffic.calls.append((phase, agent, tool, outcome))


async def scripted_traffic(gateway: Gateway) -> Traffic:
    traffic = Traffic()
    await asyncio.gather(*(run_agent(gateway, agent, 1, traffic) for agent in AGENTS))
    # context.request.time has whole seconds: phase 2 starts at the next one.
    traffic.phase_two_starts = int(time.time()) + 1
    await asyncio.sleep(traffic.phase_two_starts - time.time())
    await asyncio.gather(*(run_agent(gateway, agent, 2, traffic) for agent in AGENTS))
    return traffic


def start_gateway(workdir: Path, behaviour_http: int, retention: str | None = None) -> Gateway:
    policy: dict[str, Any] = {"watch_interval_s": 0,
                              # outside working hours all day: writes step up (a time-dependent rule)
                              "working_hours": {"start": "00:00", "end": "00:01", "days": ALL_DAYS,
                                                "timezone": noon_zone()}}
    if retention is not None:
        policy["record_retention"] = retention
    gateway = make_gateway(workdir, [manifest("alpha", behaviour_http, RISKS)], AGENTS,
                           cedar_copy(workdir / "cedar", **{"60-replay": NO_PASSWORDS}), policy)
    gateway.extra_config["approvals"] = {"default_mode": "pending"}
    gateway.extra_config["admin"] = {"tokens": [{"name": "test-admin", "token": ADMIN_TOKEN},
                                                {"name": "approver@example.com", "token": APPROVER_TOKEN,
                                                 "role": "approver"}]}
    return gateway.start()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, behaviour_http: int) -> Iterator[tuple[Gateway, Traffic]]:
    gateway = start_gateway(tmp_path_factory.mktemp("replay"), behaviour_http)
    try:
        yield gateway, asyncio.run(scripted_traffic(gateway))
    finally:
        gateway.stop()


def candidate(gateway: Gateway, name: str, **extra: str) -> Path:
    """The live policy directory, copied, with `extra` policy files added."""
    target = gateway.workdir / name
    shutil.copytree(gateway.workdir / "cedar", target)
    for file, text in extra.items():
        (target / "policies" / f"{file}.cedar").write_text(text, encoding="utf-8")
    return target


def replay(gateway: Gateway, directory: Path, *options: str, output: str = "json") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), "policy", "replay", "--candidate", str(directory), "--gateway",
                           gateway.base, "--admin-token", ADMIN_TOKEN, "--format", output, *options],
                          capture_output=True, text=True, timeout=120)


def replay_api(gateway: Gateway) -> dict[str, Any]:
    """The admin API's replay of the live set, straight (no CLI)."""
    live = gateway.workdir / "cedar"
    files = {p.relative_to(live).as_posix(): p.read_text() for p in [live / "schema.cedarschema",
                                                                      *live.glob("policies/*.cedar")]}
    answer = httpx2.post(f"{gateway.base}/admin/v1/policies/replay", json={"files": files},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


def report_of(done: subprocess.CompletedProcess[str], status: int) -> dict[str, Any]:
    assert done.returncode == status, (done.returncode, done.stdout[-3000:], done.stderr)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def flipped(report: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    return Counter({(g["flip"], g["tool"], g["agent"]): g["count"] for g in report["groups"]})


# --- replay reproduces, and flips exactly what it must ----------------------------------------------------


def test_replaying_the_live_set_reproduces_every_recorded_decision(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, traffic = recorded
    assert len(traffic.calls) == 2 * len(AGENTS) * len(SCRIPT) >= 300
    report = report_of(replay(gateway, gateway.workdir / "cedar"), 0)
    outcomes = Counter(outcome for *_, outcome in traffic.calls)
    assert min(outcomes["allow"], outcomes["deny"], outcomes["step_up"]) > 50, outcomes
    assert report["decisions"] == report["replayed"] == report["unchanged"] == len(traffic.calls)
    assert report["replayed_outcomes"] == dict(outcomes)
    assert report["flipped"] == report["loosening"] == report["not_replayable"]["total"] == 0
    assert report["groups"] == [] and report["live_policy_version"] == report["candidate_policy_version"]
    table = replay(gateway, gateway.workdir / "cedar", output="table")
    assert table.returncode == 0, table.stderr
    assert f"{len(traffic.calls)} decision(s): {len(traffic.calls)} replayed" in table.stdout
    assert "no flips" in table.stdout


def test_forbidding_one_tool_flips_exactly_its_recorded_allows(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, traffic = recorded
    report = report_of(replay(gateway, candidate(gateway, "no-echo", **{"70-no-echo": FORBID_ECHO})), 0)
    assert report["flips"] == {"allow -> deny": traffic.count(tool="alpha__echo", outcome="allow")}
    assert flipped(report) == Counter({("allow -> deny", "alpha__echo", agent): traffic.count(
        tool="alpha__echo", agent=agent, outcome="allow") for agent in ("agent-a", "agent-b")})
    assert report["loosening"] == 0 and report["unchanged"] == len(traffic.calls) - report["flipped"]
    for group in report["groups"]:
        assert group["candidate_policy_ids"] == ["candidate-no-echo"]
        assert group["live_policy_ids"] == ["permit-entitled-tools"]
        assert 1 <= len(group["examples"]) <= 3
        for example in group["examples"]:
            assert set(example["arguments"]) == {"text"} and re.fullmatch(r"dec_[0-9a-f]{16}", example["decision_id"])
            assert SECRET not in json.dumps(example)  # redacted as the console redacts it


def test_a_candidate_that_only_allows_more_exits_1(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, traffic = recorded
    done = replay(gateway, candidate(gateway, "permit-c", **{"70-permit-c": PERMIT_C}))
    report = report_of(done, 1)
    # agent-c's read tools are allowed now (not its password echoes; nor prompts and resources: the candidate
    # permits tools only); its write and privileged tool step up.
    newly_allowed = traffic.count(agent="agent-c") - 2 * (4 + 8 + 7 + 3 + 3)
    assert report["flips"] == {"deny -> allow": newly_allowed, "deny -> step_up": 2 * (8 + 7)}
    assert report["loosening"] == newly_allowed
    assert report["groups"][0]["loosening"] and report["groups"][0]["candidate_policy_ids"] == ["candidate-permit-c"]
    table = replay(gateway, candidate(gateway, "permit-c-table", **{"70-permit-c": PERMIT_C}), output="table")
    assert table.returncode == 1 and "deny -> allow !" in table.stdout


def test_a_time_dependent_rule_is_replayed_at_the_recorded_time(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, traffic = recorded
    after = f"""\
@id("candidate-no-echo-from-phase-two")
forbid (principal, action == Action::"alpha__echo", resource)
when {{ context.request.time >= {traffic.phase_two_starts} }};
"""
    report = report_of(replay(gateway, candidate(gateway, "timed", **{"70-timed": after})), 0)
    phase_two = traffic.count(phase=2, tool="alpha__echo", outcome="allow")
    assert 0 < phase_two < traffic.count(tool="alpha__echo", outcome="allow")
    assert report["flips"] == {"allow -> deny": phase_two}
    assert all(e["at"] >= traffic.phase_two_starts for g in report["groups"] for e in g["examples"])


def test_one_agent_only(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, traffic = recorded
    report = report_of(replay(gateway, candidate(gateway, "no-echo-b", **{"70-no-echo": FORBID_ECHO}),
                              "--agent", "agent-b"), 0)
    assert report["decisions"] == traffic.count(agent="agent-b")
    assert flipped(report) == Counter({("allow -> deny", "alpha__echo", "agent-b"): traffic.count(
        agent="agent-b", tool="alpha__echo", outcome="allow")})


# --- refusals -------------------------------------------------------------------------------------------


def test_a_candidate_that_does_not_validate_is_refused_with_file_and_line(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, _ = recorded
    directory = candidate(gateway, "broken", **{"70-broken": BROKEN})
    done = replay(gateway, directory)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{directory}/policies/70-broken.cedar:{BROKEN_LINE}:" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "narrowgate: the candidate policy set is invalid"
    assert done.stdout == ""


def test_bad_input_is_one_line_and_exit_2(recorded: tuple[Gateway, Traffic], tmp_path: Path) -> None:
    gateway, _ = recorded
    unknown = replay(gateway, gateway.workdir / "cedar", "--agent", "agent-nobody")
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "narrowgate: no agent 'agent-nobody'")
    missing = replay(gateway, tmp_path / "nowhere")
    assert (missing.returncode, missing.stderr.strip()) == (2, f"narrowgate: no candidate policy directory "
                                                               f"{tmp_path / 'nowhere'}")
    window = replay(gateway, gateway.workdir / "cedar", "--since", "a week")
    assert window.returncode == 2 and "not a duration like 36h or 7d: 'a week'" in window.stderr


def test_replay_is_for_admins_only(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, _ = recorded
    body = {"files": {"schema.cedarschema": (gateway.workdir / "cedar" / "schema.cedarschema").read_text()}}
    for token, status in ((None, 401), (token_for("agent-a"), 403), (APPROVER_TOKEN, 403)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx2.post(f"{gateway.base}/admin/v1/policies/replay", json=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert "decisions" not in answer.text


# --- at rest ----------------------------------------------------------------------------------------------


def test_recorded_arguments_are_not_readable_in_the_database_file(recorded: tuple[Gateway, Traffic]) -> None:
    gateway, traffic = recorded
    database = gateway.workdir / "state.db"
    with sqlite3.connect(database) as conn:
        payloads = [bytes(row[0]) for row in conn.execute("SELECT payload FROM decision_inputs")]
    assert len(payloads) == len(traffic.calls)
    assert not any(b"alpha__echo" in p or b"context" in p or b"hello" in p for p in payloads)  # ciphertext only
    # The audit log shows a redacted preview; the recorded inputs hold the whole value, encrypted.
    for path in (database, database.with_name("state.db-wal")):
        if path.exists():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.fixture
def unrecorded(tmp_path: Path, behaviour_http: int) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path, behaviour_http, retention="0")
    yield gateway
    gateway.stop()


async def one_of_each(gateway: Gateway) -> list[str]:
    async with mcp_client(gateway.url, token_for("agent-a"), "legacy") as client:
        return [await outcome_of(client, tool, arguments) for tool, arguments in
                (("alpha__echo", {"text": "hi"}), ("alpha__echo", {"text": "password"}), ("alpha__whoami", {}))]


def audit_shape(gateway: Gateway) -> list[dict[str, Any]]:
    """The decision records, less what differs from one run to the next (time, ids, keyed digests, chain, the
    replica's name)."""
    volatile = {"seq", "at", "decision_id", "trace_id", "args_digest", "hash", "prev_hash"}
    done = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(gateway.workdir / "gateway.yaml")],
                          capture_output=True, text=True, timeout=60, check=True)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    shapes = [{k: v for k, v in r.items() if k not in volatile} for r in records if r["kind"] == "decision"]
    for shape in shapes:
        shape["detail"].pop("replica")
    return shapes


def test_retention_0_records_nothing_and_the_audit_records_are_the_same(
        recorded: tuple[Gateway, Traffic], unrecorded: Gateway) -> None:
    gateway, _ = recorded
    assert asyncio.run(one_of_each(unrecorded)) == ["allow", "deny", "step_up"]
    with sqlite3.connect(unrecorded.workdir / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM decision_inputs").fetchone() == (0,)
    done = replay(unrecorded, unrecorded.workdir / "cedar")
    report = report_of(done, 2)
    assert report["decisions"] == 3 and report["replayed"] == 0
    assert report["not_replayable"] == {"total": 3, "past_retention": 0, "not_recorded": 3, "unreadable": 0}
    assert "narrowgate: 3 of 3 decision(s) in the window could not be replayed" in done.stderr
    # The same calls on the recording gateway are audited exactly alike (recording adds nothing to the chain).
    start = len(audit_shape(gateway))
    asyncio.run(one_of_each(gateway))
    assert audit_shape(gateway)[start:] == audit_shape(unrecorded)


@pytest.fixture
def forgetful(tmp_path: Path, behaviour_http: int) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path, behaviour_http, retention="1s")
    yield gateway
    gateway.stop()


def test_inputs_past_retention_are_reported_as_not_replayable(forgetful: Gateway) -> None:
    empty = replay(forgetful, forgetful.workdir / "cedar")
    assert (empty.returncode, empty.stderr.strip()) == (
        2, "narrowgate: no recorded decisions in the window: nothing to replay")
    assert asyncio.run(one_of_each(forgetful)) == ["allow", "deny", "step_up"]
    # The recorder wrote the three inputs, then its sweep deleted them (retention 1 s, swept every second).
    deadline = time.monotonic() + 15
    while (recording := replay_api(forgetful)["recording"])["swept"] < 3:
        assert time.monotonic() < deadline, f"the retention sweep did not run: {recording}"
        time.sleep(0.2)
    assert recording["recorded"] == 3 and recording["lost"] == 0
    with sqlite3.connect(forgetful.workdir / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM decision_inputs").fetchone() == (0,)
    done = replay(forgetful, forgetful.workdir / "cedar")
    report = report_of(done, 2)
    assert report["replayed"] == report["unchanged"] == 0
    assert report["not_replayable"] == {"total": 3, "past_retention": 3, "not_recorded": 0, "unreadable": 0}
    assert "3 past retention" in done.stderr


def test_a_loosening_replay_with_missing_decisions_says_both(capsys: pytest.CaptureFixture[str]) -> None:
    report = {"decisions": 5, "loosening": 1, "replayable_since": None,
              "not_replayable": {"total": 2, "past_retention": 2, "not_recorded": 0, "unreadable": 0}}
    assert exit_status(report) == EXIT_LOOSENS
    assert "narrowgate: 2 of 5 decision(s) in the window could not be replayed (2 past retention" in (
        capsys.readouterr().err)
