"""Read-only commands need none of the serving gateway's secrets (issue 13.10); `serve` still does.

`narrowgate audit verify|search|export`, `policy validate|test|explain` and `catalog validate --config`
run as the installed entry point against configs whose `token_env` variables (and a catalog's
`${VAR}` references) are unset: first the README's own example config, over a store a real gateway
wrote, then a config with every kind of secret reference. `serve` with that config must still
refuse to start, in one line naming every missing variable.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml

from gateway.config import ConfigError, load_settings
from gateway.identity.static_tokens import StaticTokenTable, token_digest
from tests.support.clients import mcp_client
from tests.support.processes import NARROWGATE, REPO, Gateway, free_port, static_agent

EXAMPLE_CONFIG = REPO / "examples" / "config" / "local.yaml"
SECRET_VARS = ("NARROWGATE_DEMO_TOKEN", "NG_RO_AGENT_TOKEN", "NG_RO_ADMIN_TOKEN", "NG_RO_UPSTREAM_URL",
               "NG_RO_UPSTREAM_KEY")


def without_secrets(**extra: str) -> dict[str, str]:
    """The test's environment minus every secret variable the configs here name (and any NARROWGATE_ override)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS and not k.startswith("NARROWGATE_")}
    return {**env, **extra}


def narrowgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NARROWGATE), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


class ExampleGateway(Gateway):
    """`narrowgate serve --config examples/config/local.yaml`, as the README runs it (port and store overridden)."""

    def write_config(self) -> Path:
        return EXAMPLE_CONFIG


@pytest.fixture(scope="module")
def example_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store written by a real gateway serving the README's example config; one agent call made."""
    workdir = tmp_path_factory.mktemp("example")
    state = f"sqlite:///{workdir / 'state.db'}"
    token = secrets.token_urlsafe(16)
    port = free_port()
    gateway = ExampleGateway(workdir, [], port=port, env={
        "NARROWGATE_DEMO_TOKEN": token, "NARROWGATE_STATE": state, "NARROWGATE_LISTEN": f"127.0.0.1:{port}",
        "DEMO_PAYMENTS_PORT": str(free_port()),  # nothing listens there: payments is simply down
    })
    gateway.start()
    try:
        anyio.run(list_tools, gateway.url, token)
    finally:
        gateway.stop()
    yield state


async def list_tools(url: str, token: str) -> None:
    async with mcp_client(url, token, "legacy") as client:
        assert "tickets__list_tickets" in {tool.name for tool in (await client.list_tools()).tools}
        await client.call_tool("tickets__list_tickets", {})


@pytest.mark.parametrize(("command", "expected"), [
    (["audit", "verify"], "audit log ok: "),
    (["audit", "search", "--kind", "decision"], "tickets__list_tickets"),
    (["audit", "export"], '"kind": "decision"'),
    (["policy", "validate"], "policy set ok: "),
    (["policy", "test"], " passed, 0 failed"),
    (["policy", "explain", "--agent", "demo-agent", "--tool", "tickets__list_tickets"], '"outcome": "allow"'),
    (["catalog", "validate"], "catalog ok: 2 server(s)"),
])
def test_the_readme_commands_run_without_the_demo_token(example_state: str, command: list[str], expected: str) -> None:
    result = narrowgate(*command, "--config", str(EXAMPLE_CONFIG), env=without_secrets(NARROWGATE_STATE=example_state))
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert "NARROWGATE_DEMO_TOKEN" not in result.stderr


def every_secret_config(tmp_path: Path) -> Path:
    """A config whose agent and admin tokens, and whose catalog's URL and header, all come from unset variables."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "crm.yaml").write_text(yaml.safe_dump({
        "id": "crm", "owner": "sales@example.com",
        "transport": {"url": "${NG_RO_UPSTREAM_URL}", "headers": {"X-Api-Key": "${NG_RO_UPSTREAM_KEY}"}},
        "credentials": {"mode": "none"},
        "tools": [{"name": "find_contact", "risk": "read", "data_classes": ["pii"]},
                  {"name": "delete_contact", "risk": "destructive"}],
    }))
    agents = tmp_path / "agents.yaml"
    agents.write_text(yaml.safe_dump({"agents": [static_agent("crm-bot", ["crm"])]}))
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{free_port()}", "catalog": "catalog", "policies": str(REPO / "cedar"),
        "state": f"sqlite:///{tmp_path / 'state.db'}", "agents_file": "agents.yaml",
        "auth": {"static_tokens": [{"agent": "crm-bot", "token_env": "NG_RO_AGENT_TOKEN"}]},
        "admin": {"tokens": [{"name": "ops", "token_env": "NG_RO_ADMIN_TOKEN"}]},
    }))
    return config


@pytest.mark.parametrize(("command", "expected"), [
    (["policy", "validate"], "policy set ok: "),
    (["policy", "test"], " passed, 0 failed"),
    (["policy", "explain", "--agent", "crm-bot", "--tool", "crm__find_contact"], '"outcome": "allow"'),
    (["policy", "explain", "--agent", "crm-bot", "--tool", "crm__delete_contact"], '"outcome": "step_up"'),
])
def test_policy_commands_need_neither_tokens_nor_transport_variables(tmp_path: Path, command: list[str],
                                                                     expected: str) -> None:
    result = narrowgate(*command, "--config", str(every_secret_config(tmp_path)), env=without_secrets())
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_audit_commands_need_no_tokens(tmp_path: Path, example_state: str) -> None:
    config = every_secret_config(tmp_path)
    for command, expected in ((["audit", "verify"], "audit log ok: "),
                              (["audit", "search", "--agent", "demo-agent"], "tickets__list_tickets")):
        result = narrowgate(*command, "--config", str(config), env=without_secrets(NARROWGATE_STATE=example_state))
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout


def test_serve_still_refuses_in_one_line_naming_every_missing_secret(tmp_path: Path) -> None:
    result = narrowgate("serve", "--config", str(every_secret_config(tmp_path)), env=without_secrets())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "narrowgate: auth.static_tokens[0]: environment variable NG_RO_AGENT_TOKEN is not set; "
        "admin.tokens[0]: environment variable NG_RO_ADMIN_TOKEN is not set"]
    assert not (tmp_path / "state.db").exists()  # refused before touching anything


def test_serve_refuses_a_catalog_variable_that_policy_commands_let_pass(tmp_path: Path) -> None:
    config = every_secret_config(tmp_path)
    env = without_secrets(NG_RO_AGENT_TOKEN="agent-secret", NG_RO_ADMIN_TOKEN="admin-secret")
    result = narrowgate("serve", "--config", str(config), env=env)
    assert result.returncode == 2
    assert "environment variable NG_RO_UPSTREAM_URL is not set and has no default" in result.stderr
    assert "agent-secret" not in result.stderr and "admin-secret" not in result.stderr


def test_tokens_are_read_from_the_given_environment_only_when_asked(tmp_path: Path) -> None:
    config = every_secret_config(tmp_path)
    resolved = load_settings(config, environ={"NG_RO_AGENT_TOKEN": "a-secret", "NG_RO_ADMIN_TOKEN": "b-secret"})
    assert resolved.auth.static_tokens[0].token == "a-secret"
    assert resolved.admin.tokens[0].token == "b-secret"
    assert StaticTokenTable(resolved.auth.static_tokens).lookup_digest(token_digest("a-secret")) == "crm-bot"

    unresolved = load_settings(config, environ={}, resolve_secrets=False)
    assert unresolved.auth.static_tokens[0].token is None
    assert unresolved.auth.static_tokens[0].token_env == "NG_RO_AGENT_TOKEN"
    # Settings without their secrets can never authenticate anyone (no empty-token match): refused outright.
    with pytest.raises(ValueError, match="NG_RO_AGENT_TOKEN was never read"):
        StaticTokenTable(unresolved.auth.static_tokens)
    with pytest.raises(ConfigError, match="NG_RO_ADMIN_TOKEN is not set"):
        load_settings(config, environ={"NG_RO_AGENT_TOKEN": "a-secret"})
