"""`narrowgate demo` (what `make run` starts): both demo upstreams served, its port chosen and checked,
its tokens kept across restarts, a workload identity path to task tokens, an admin token and the
exact lines that point every CLI at it, and a banner that says which calls ask for approval."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest

from tests.support.clients import mcp_client
from tests.support.demo import DemoProcess, clean_environment, descendants
from tests.support.processes import NARROWGATE, REPO, free_port

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    running = DemoProcess.start(tmp_path_factory.mktemp("demo"))
    yield running
    running.stop()


def cli(demo: DemoProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`narrowgate ARGS` in a shell that ran the banner's export lines, and nothing else."""
    script = "\n".join([*demo.export_lines(), 'exec narrowgate "$@"'])
    return subprocess.run(["bash", "-c", script, "narrowgate", *args], cwd=REPO, env=clean_environment(),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(90)
async def test_demo_serves_both_upstreams(demo: DemoProcess) -> None:
    children = " ".join(command for _, command in descendants(demo.process.pid))
    assert "payments_server.py" in children and "tickets_server.py" in children
    token = demo.banner_value("agent token")
    async with mcp_client(f"http://127.0.0.1:{demo.port}/mcp", token, "legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        tickets = await client.call_tool("tickets__list_tickets", {})
        balance = await client.call_tool("payments__get_balance", {"account": "acct-ops"})
    assert {"tickets__create_ticket", "payments__refund_payment"} <= names
    assert not tickets.is_error and "T-100" in tickets.content[0].text
    assert not balance.is_error and "acct-ops" in balance.content[0].text


def test_the_policy_version_is_logged_once_at_start(demo: DemoProcess) -> None:
    output = demo.output()
    assert output.count("in force") <= 1, output
    assert re.search(r"serving MCP at \S+ \(policy version [0-9a-f]+\)", output)


# --- every CLI against the running demo with only the banner's export lines ----------------------


@pytest.mark.parametrize(("command", "expected"), [
    ("agents list", "triage-bot"), ("tasks list", "PURPOSE"), ("catalog review", "no quarantined tools"),
    ("approvals list", "EXPIRES IN"), ("audit verify", "audit log ok"), ("audit search --agent demo-agent", "create"),
    ("policy validate", "policy set ok"),
])
def test_cli_commands_work_with_the_banners_exports_alone(demo: DemoProcess, command: str, expected: str) -> None:
    done = cli(demo, *command.split())
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout, done.stdout


def test_a_workload_token_becomes_a_task_token_and_the_task_is_listed(demo: DemoProcess) -> None:
    minted = cli(demo, "demo", "token", "--agent", "triage-bot")
    assert minted.returncode == 0, minted.stderr
    workload = minted.stdout.strip()
    claims = jwt.decode(workload, options={"verify_signature": False})
    assert claims["sub"] == "spiffe://narrowgate.demo/agent/triage-bot"
    assert claims["aud"] == [f"http://127.0.0.1:{demo.port}/mcp"]
    answer = httpx2.post(f"http://127.0.0.1:{demo.port}/oauth/token", data={
        "grant_type": EXCHANGE, "subject_token": workload, "subject_token_type": JWT_TYPE,
        "scope": "tickets__list_tickets", "purpose": "a demo task from a test"}, timeout=10)
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["task_id"]
    listed = cli(demo, "tasks", "list", "--agent", "triage-bot")
    assert task_id in listed.stdout and "a demo task from a test" in listed.stdout


async def test_the_task_token_sees_only_its_task(demo: DemoProcess) -> None:
    workload = cli(demo, "demo", "token", "--agent", "triage-bot").stdout.strip()
    answer = httpx2.post(f"http://127.0.0.1:{demo.port}/oauth/token", data={
        "grant_type": EXCHANGE, "subject_token": workload, "subject_token_type": JWT_TYPE,
        "scope": "tickets__list_tickets", "purpose": "look at the queue"}, timeout=10).json()
    async with mcp_client(f"http://127.0.0.1:{demo.port}/mcp", answer["access_token"], "2026-07-28") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        listed = await client.call_tool("tickets__list_tickets", {})
    assert names == {"tickets__list_tickets", "narrowgate__complete_task", "narrowgate__fail_task"}
    assert not listed.is_error


def test_a_token_for_an_agent_nobody_declared_is_refused(demo: DemoProcess) -> None:
    workload = cli(demo, "demo", "token", "--agent", "nobody").stdout.strip()
    answer = httpx2.post(f"http://127.0.0.1:{demo.port}/oauth/token", data={
        "grant_type": EXCHANGE, "subject_token": workload, "subject_token_type": JWT_TYPE,
        "scope": "tickets__list_tickets", "purpose": "x"}, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


# --- the banner says which calls ask for approval, from the policies ------------------------------


def test_the_banner_names_the_calls_that_ask_for_approval_and_why(demo: DemoProcess) -> None:
    output = demo.output()
    every = re.search(r"on every call: (.+)\n\s+why: (.+)", output)
    after_hours = re.search(r"outside working hours: (.+)\n\s+why: (.+)", output)
    assert every and after_hours, output[:3000]
    assert set(every.group(1).split(", ")) == {"payments__refund_payment", "payments__transfer_funds",
                                                "tickets__delete_all_tickets"}
    assert "step-up-privileged-destructive" in every.group(2)
    assert set(after_hours.group(1).split(", ")) == {"tickets__create_ticket", "tickets__close_ticket"}
    assert "writes outside working hours need an approval" in after_hours.group(2)
    now = re.search(r"Working hours are mon-fri 08:00-18:00 UTC; now \(\w{3} \d\d:\d\d UTC\) is (inside|outside) them",
                    output)
    assert now, output[:3000]
    assert (now.group(1) == "inside") == (time.gmtime().tm_wday < 5 and 8 <= time.gmtime().tm_hour < 18)


@pytest.mark.timeout(120)
def test_the_banner_follows_the_policies_not_a_fixed_sentence(tmp_path: Path) -> None:
    """Working hours from NARROWGATE_POLICY__WORKING_HOURS change what the banner says about now."""
    always = '{"start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}'
    demo = DemoProcess.start(tmp_path, env={"NARROWGATE_POLICY__WORKING_HOURS": always})
    try:
        output = demo.output()
    finally:
        demo.stop()
    assert "Working hours are mon-sun 00:00-23:59 UTC" in output
    assert "the calls listed outside working hours run without asking right now" in output or \
        time.strftime("%H:%M", time.gmtime()) >= "23:59"


# --- port, tokens and files -----------------------------------------------------------------------


def test_a_taken_port_is_one_plain_line_before_anything_else(demo: DemoProcess, tmp_path: Path) -> None:
    done = subprocess.run([str(NARROWGATE), "demo", "--port", str(demo.port), "--state-dir", str(tmp_path / "s")],
                          cwd=REPO, env=clean_environment(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"narrowgate: port {demo.port} on 127.0.0.1 is already in use; pick another port: narrowgate demo "
        f"--port N, make run PORT=N, or NARROWGATE_LISTEN=127.0.0.1:N"]


@pytest.mark.timeout(120)
def test_make_run_port_and_narrowgate_listen_choose_the_port(tmp_path: Path) -> None:
    taken = DemoProcess.start(tmp_path / "a")  # make run PORT=... against a taken port: refused at once
    try:
        # -o: the venv is the one running this test; never reinstall it from here.
        via_make = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed-stamp", "run",
                                   f"PORT={taken.port}"], cwd=REPO,
                                  env=clean_environment(), capture_output=True, text=True, timeout=60)
        assert via_make.returncode != 0
        assert f"port {taken.port} on 127.0.0.1 is already in use" in via_make.stderr
        assert "MCP endpoint" not in via_make.stdout
        via_env = subprocess.run([str(NARROWGATE), "demo"], cwd=REPO, capture_output=True, text=True, timeout=60,
                                 env={**clean_environment(), "NARROWGATE_LISTEN": f"127.0.0.1:{taken.port}"})
        assert via_env.returncode != 0 and f"port {taken.port} on 127.0.0.1" in via_env.stderr
    finally:
        taken.stop()
    port = free_port()
    demo = DemoProcess.start(tmp_path / "b", env={"NARROWGATE_LISTEN": f"127.0.0.1:{port}"})
    try:
        assert f"MCP endpoint : http://127.0.0.1:{port}/mcp" in demo.output()
    finally:
        demo.stop()


@pytest.mark.timeout(120)
async def test_tokens_are_kept_across_restarts_in_owner_only_files(tmp_path: Path) -> None:
    def printed_tokens(demo: DemoProcess) -> tuple[str, ...]:
        admin = re.search(r"NARROWGATE_ADMIN_TOKEN=(\S+)", demo.output())
        approver = re.search(r"approver\s*:.*, token (\S+)", demo.output())
        assert admin and approver
        return demo.banner_value("agent token"), admin.group(1), approver.group(1)

    first = DemoProcess.start(tmp_path)
    try:
        tokens = printed_tokens(first)
    finally:
        first.stop()
    second = DemoProcess.start(tmp_path)  # the same state directory
    try:
        assert printed_tokens(second) == tokens
        async with mcp_client(f"http://127.0.0.1:{second.port}/mcp", tokens[0], "legacy") as client:
            assert (await client.list_tools()).tools
    finally:
        second.stop()
    assert stat.S_IMODE(second.state_dir.stat().st_mode) == 0o700
    for name in ("tokens.json", "workload-key.pem"):
        assert stat.S_IMODE((second.state_dir / name).stat().st_mode) == 0o600, name
    assert json.loads((second.state_dir / "tokens.json").read_text())["agent"] == tokens[0]
