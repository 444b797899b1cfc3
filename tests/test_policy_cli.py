"""`narrowgate policy validate|test|explain` as operators and CI run them: real subprocesses, real files.

The config is the one the gateway test helper writes (catalog, agents file, state store, inline
static tokens, so no `token_env` variable is needed); the policy directory is a temporary copy of
the shipped cedar/ plus whatever a test adds. No gateway runs: these commands work offline.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import NARROWGATE, REPO, Gateway, behaviour_manifest, cedar_copy

RISKS = {"echo": "read", "progress": "read", "whoami": "privileged"}
CLI_POLICIES = """\
// A deny with a determining policy, so explain has something to point at.
@id("cli-no-progress")
@reason("progress is off for the CLI tests")
forbid (principal, action == Action::"alpha__progress", resource);
"""
CLI_POLICY_LINE = 2
BROKEN = """\
@id("fine")
permit (principal, action, resource) when { true };

@id("broken")
permit (principal, action, resource) when { principal.nope == 1 };
"""
BROKEN_LINE = 4
FAILING_CASES = {
    "agents": {"reader": {"entitled_servers": ["alpha"]}},
    "cases": [
        {"name": "reader may echo", "agent": "reader", "tool": "alpha__echo", "args": {"text": "x"},
         "expect": "allow"},
        {"name": "wrong on purpose", "agent": "reader", "tool": "alpha__echo", "args": {"text": "x"},
         "expect": "deny"},
    ],
}
VERSION = re.compile(r"version ([0-9a-f]{16})")


def write_setup(workdir: Path, policies: Path) -> Path:
    """A gateway config (not started) with server alpha and agent-a entitled to it; returns its path."""
    manifest = behaviour_manifest("alpha", {"url": "http://127.0.0.1:9/mcp"}, tools=tuple(RISKS))
    for tool in manifest["tools"]:
        tool["risk"] = RISKS[tool["name"]]
    return Gateway(workdir, [manifest], extra_config={"policies": str(policies)}).write_config()


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), "policy", *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=config.parent)


def explain(config: Path, tool: str, arguments: str = "{}", *extra: str) -> dict[str, Any]:
    done = run(config, "explain", "--agent", "agent-a", "--tool", tool, "--args", arguments, *extra)
    assert done.returncode == 0, done
    body: dict[str, Any] = json.loads(done.stdout)
    return body


@pytest.fixture(scope="module")
def cedar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cedar_copy(tmp_path_factory.mktemp("cli-cedar") / "cedar", **{"60-cli": CLI_POLICIES})


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, cedar: Path) -> Path:
    return write_setup(tmp_path_factory.mktemp("cli-setup"), cedar)


# --- validate ------------------------------------------------------------------------------------------


def test_validate_accepts_a_good_set_and_prints_its_version(config: Path, cedar: Path) -> None:
    done = run(config, "validate")
    assert done.returncode == 0, done
    policies = sum(f.read_text().count("@id(") for f in (cedar / "policies").glob("*.cedar"))
    assert f"policy set ok: {policies} policies" in done.stdout
    version = VERSION.search(done.stdout)
    assert version is not None, done.stdout
    # The same set judged by explain carries the same version.
    assert explain(config, "alpha__echo", '{"text": "x"}')["decision"]["policy_version"] == version.group(1)


def test_validate_rejects_a_broken_set_with_file_and_line(tmp_path: Path) -> None:
    cedar = cedar_copy(tmp_path / "cedar", **{"60-broken": BROKEN})
    done = run(write_setup(tmp_path, cedar), "validate")
    assert done.returncode == 2, done
    broken = cedar / "policies" / "60-broken.cedar"
    lines = done.stdout.splitlines()
    assert any(line.startswith(f"{broken}:{BROKEN_LINE}:") and "nope" in line for line in lines), done
    assert "1 problem(s)" in done.stderr
    assert "policy set ok" not in done.stdout


def test_validate_rejects_a_syntax_error(tmp_path: Path) -> None:
    syntax = '\n\n@id("s") permit (principal, action, resource) when { 1 + };\n'
    cedar = cedar_copy(tmp_path / "cedar", **{"60-syntax": syntax})
    done = run(write_setup(tmp_path, cedar), "validate")
    assert done.returncode == 2, done
    assert f"{cedar / 'policies' / '60-syntax.cedar'}:3:" in done.stdout


# --- test --------------------------------------------------------------------------------------------------


def test_shipped_cases_pass(tmp_path: Path) -> None:
    # The shipped cedar/ itself (its case file brings its own catalog, which knows no alpha__progress).
    done = run(write_setup(tmp_path, REPO / "cedar"), "test")
    assert done.returncode == 0, done
    cases = yaml.safe_load((REPO / "cedar" / "tests" / "defaults.yaml").read_text())["cases"]
    assert f"{len(cases)} passed, 0 failed" in done.stdout
    assert done.stdout.count("PASS defaults.yaml: ") == len(cases)
    assert "FAIL" not in done.stdout


def test_a_failing_case_fails_the_run(tmp_path: Path) -> None:
    cedar = cedar_copy(tmp_path / "cedar")
    (cedar / "tests" / "zz-failing.yaml").write_text(yaml.safe_dump(FAILING_CASES))
    done = run(write_setup(tmp_path, cedar), "test")
    assert done.returncode == 1, done
    assert "PASS zz-failing.yaml: reader may echo" in done.stdout
    assert re.search(r"FAIL zz-failing\.yaml: wrong on purpose\s+expected deny, got allow", done.stdout), done.stdout
    shipped = len(yaml.safe_load((REPO / "cedar" / "tests" / "defaults.yaml").read_text())["cases"])
    assert f"{shipped + 1} passed, 1 failed" in done.stdout


# --- explain -----------------------------------------------------------------------------------------------


def determining(body: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(p["id"], Path(p["file"]).name, p["line"]) for p in body["policies"]]


def test_explain_allow(config: Path) -> None:
    body = explain(config, "alpha__echo", '{"text": "/data/public/../x"}')
    assert body["decision"]["outcome"] == "allow"
    assert re.fullmatch(r"dec_[0-9a-f]{16}", body["decision"]["decision_id"])
    assert (body["agent"], body["tool"]) == ("agent-a", "alpha__echo")
    assert determining(body) == [("permit-entitled-tools", "00-entitlement.cedar", 4)]
    assert body["policies"][0]["effect"] == "permit"
    assert "principal.entitled_servers.contains(resource.server)" in body["policies"][0]["source"]
    # What the policies judged (and what the gateway would forward): the canonical arguments.
    assert body["canonical_arguments"] == {"text": "/data/x"}


def test_explain_deny(config: Path) -> None:
    body = explain(config, "alpha__progress", '{"steps": 2}')
    assert body["decision"]["outcome"] == "deny"
    assert body["decision"]["reason"] == "progress is off for the CLI tests"
    assert determining(body) == [("cli-no-progress", "60-cli.cedar", CLI_POLICY_LINE)]
    assert body["policies"][0]["effect"] == "forbid"


def test_explain_step_up_and_approved(config: Path) -> None:
    body = explain(config, "alpha__whoami")
    assert body["decision"]["outcome"] == "step_up"
    assert body["decision"]["step_up_mode"] == ""  # approvals.default_mode decides
    assert determining(body) == [("step-up-privileged-destructive", "30-step-up-risk.cedar", 2)]
    approved = explain(config, "alpha__whoami", "{}", "--approved")
    assert approved["decision"]["outcome"] == "allow"
    assert determining(approved) == [("permit-entitled-tools", "00-entitlement.cedar", 4)]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"a string"', "3"])
def test_explain_rejects_arguments_that_are_not_a_json_object(config: Path, arguments: str) -> None:
    done = run(config, "explain", "--agent", "agent-a", "--tool", "alpha__echo", "--args", arguments)
    assert done.returncode == 2, done
    assert done.stderr.startswith("narrowgate: --args"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("agent", "tool", "message"), [
    ("agent-a", "alpha__no_such_tool", "no catalogued tool 'alpha__no_such_tool'"),
    ("nobody", "alpha__echo", "no agent 'nobody'"),
])
def test_explain_rejects_unknown_tool_or_agent(config: Path, agent: str, tool: str, message: str) -> None:
    done = run(config, "explain", "--agent", agent, "--tool", tool)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert done.stdout == ""
