"""Per-server secrets for upstreams that cannot verify gateway tokens (issue 5), end to end.

One real gateway subprocess sits in front of the behaviour upstream (over Streamable HTTP and
over stdio), with `credentials: {mode: secret}` read from an environment variable, a file and
HashiCorp Vault KV v2. A real `mcp` client calls `whoami`, which returns what the upstream
received (HTTP headers; on stdio, environment variable names) and `env_value` (one variable's value).

Vault: HashiCorp Vault cannot run on this machine (it is not packaged for Debian and there is
no network), so tests/support/vault_standin.py is a STAND-IN for Vault: a small stdlib HTTP
server that implements the few documented Vault API requests the gateway makes (here the KV v2
read `GET /v1/secret/data/<path>`, with the `X-Vault-Token` check). It is not Vault.

The gateway caches Vault values for 30 s (not configurable), so the "Vault down with an expired
cache" test polls, with a bounded deadline, until the entry read at gateway start has expired.
It and the log check run last, in file order: the log check must see every secret used above.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import TOKEN
from tests.support.clients import ERAS, mcp_client
from tests.support.processes import (
    BEHAVIOUR_SERVER,
    NARROWGATE,
    Gateway,
    behaviour_manifest,
    start_listening,
    stdio_behaviour_transport,
    stop,
)
from tests.support.vault_standin import VaultStandIn

UNAVAILABLE = -32010
VAULT_CACHE_S = 30.0  # SecretResolver's fixed Vault cache lifetime
EXPIRY_DEADLINE_S = VAULT_CACHE_S + 20.0

ENV_SECRET = "env-secret-5b1c9e2f"
FILE_SECRET_V1 = "file-secret-one-7d3a"
FILE_SECRET_V2 = "file-secret-two-e41c"
VAULT_SECRET = "vault-secret-a9f0c2"
VAULT_OTHER_SECRET = "vault-other-secret-33de"
VAULT_DOWN_SECRET = "vault-down-secret-81b7"
VAULT_REVOKED_SECRET = "vault-revoked-secret-6c2d"
STDIO_SECRET = "stdio-secret-c0ffee42"
VAULT_TOKEN = "hvs.fake-vault-token-1f2e3d"
WRONG_VAULT_TOKEN = "hvs.wrong-token-9a8b7c"
ALL_SECRETS = (ENV_SECRET, FILE_SECRET_V1, FILE_SECRET_V2, VAULT_SECRET, VAULT_OTHER_SECRET,
               VAULT_DOWN_SECRET, VAULT_REVOKED_SECRET, STDIO_SECRET, VAULT_TOKEN, WRONG_VAULT_TOKEN)


def vault_credentials(vault: VaultStandIn, path: str, token_env: str) -> dict[str, Any]:
    return {"mode": "secret", "secret": {"vault": {
        "address": vault.address, "mount": "secret", "path": path, "field": "api_key", "token_env": token_env}}}


# Fixtures ----------------------------------------------------------------------------------------


@dataclass
class Setup:
    gateway: Gateway
    secret_file: Path
    vault: VaultStandIn
    vault_down: VaultStandIn
    vault_revoking: VaultStandIn


def with_credentials(manifest: dict[str, Any], credentials: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "credentials": credentials}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("upstream-secrets")
    secret_file = work / "upstream.secret"
    secret_file.write_text(FILE_SECRET_V1 + "\n")
    vault = VaultStandIn(VAULT_TOKEN, {"narrowgate/upstream": {"api_key": VAULT_SECRET},
                                       "narrowgate/other": {"api_key": VAULT_OTHER_SECRET}}).start()
    vault_down = VaultStandIn(VAULT_TOKEN, {"narrowgate/down": {"api_key": VAULT_DOWN_SECRET}}).start()
    vault_revoking = VaultStandIn(VAULT_TOKEN, {"narrowgate/revoked": {"api_key": VAULT_REVOKED_SECRET}}).start()
    upstream, port = start_listening([sys.executable, str(BEHAVIOUR_SERVER), "--port", "0"])
    url = {"url": f"http://127.0.0.1:{port}/mcp"}
    tools = ("echo", "whoami")
    manifests = [
        with_credentials(behaviour_manifest("envkey", url, timeout_s=10, tools=tools), {
            "mode": "secret", "secret": {"env": "UPSTREAM_API_KEY"}, "header": "X-Api-Key", "format": "{secret}"}),
        with_credentials(behaviour_manifest("filekey", url, timeout_s=10, tools=tools), {
            "mode": "secret", "secret": {"file": str(secret_file)}}),
        with_credentials(behaviour_manifest("vaultkey", url, timeout_s=10, tools=tools),
                         vault_credentials(vault, "narrowgate/upstream", "VAULT_TOKEN")),
        with_credentials(behaviour_manifest("vaultbad", url, timeout_s=10, tools=tools),
                         vault_credentials(vault, "narrowgate/other", "WRONG_VAULT_TOKEN")),
        with_credentials(behaviour_manifest("vaultdown", url, timeout_s=10, tools=tools),
                         vault_credentials(vault_down, "narrowgate/down", "VAULT_TOKEN")),
        with_credentials(behaviour_manifest("vaultrevoked", url, timeout_s=10, tools=tools),
                         vault_credentials(vault_revoking, "narrowgate/revoked", "VAULT_TOKEN")),
        with_credentials(behaviour_manifest("pipe", stdio_behaviour_transport(), timeout_s=10,
                                            tools=("echo", "whoami", "env_value")), {
            "mode": "secret", "secret": {"env": "STDIO_SECRET"}, "env_var": "API_TOKEN"}),
    ]
    env = {"UPSTREAM_API_KEY": ENV_SECRET, "STDIO_SECRET": STDIO_SECRET, "VAULT_TOKEN": VAULT_TOKEN,
           "WRONG_VAULT_TOKEN": WRONG_VAULT_TOKEN}
    gw = Gateway(work / "gateway", manifests, env=env)
    try:
        gw.start()
        yield Setup(gw, secret_file, vault, vault_down, vault_revoking)
    finally:
        gw.stop()
        stop(upstream)
        vault.stop()
        vault_down.stop()
        vault_revoking.stop()


async def whoami(client: Client, tool: str) -> dict[str, Any]:
    result = await client.call_tool(tool, {})
    assert not result.is_error, result
    answer: dict[str, Any] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return answer


async def call_error(url: str, tool: str) -> MCPError:
    async with mcp_client(url, TOKEN, "legacy") as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(tool, {})
    return caught.value


def assert_no_secret_in(text: str) -> None:
    leaked = [secret for secret in ALL_SECRETS if secret in text]
    assert not leaked, f"secret value(s) {leaked} appear in: {text}"


# 1. Environment variable, custom header ------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_env_secret_arrives_in_its_own_header_and_no_token_does(setup: Setup, mode: str) -> None:
    async with mcp_client(setup.gateway.url, TOKEN, mode) as client:
        answer = await whoami(client, "envkey__whoami")
    headers = answer["headers"]
    assert answer["transport"] == "http"
    assert headers["x-api-key"] == ENV_SECRET
    assert "authorization" not in headers  # neither a gateway token nor the agent's token
    assert not any(TOKEN in value for value in headers.values())


# 2. File, default header, rotation without a restart -------------------------------------------------


async def test_file_secret_uses_the_default_bearer_header_and_rotates_without_restart(setup: Setup) -> None:
    pid = setup.gateway.process.pid if setup.gateway.process else None
    async with mcp_client(setup.gateway.url, TOKEN, "legacy") as client:
        before = (await whoami(client, "filekey__whoami"))["headers"]
        # Rotate the way an operator would: write a new file and move it over the old one.
        staged = setup.secret_file.with_suffix(".new")
        staged.write_text(FILE_SECRET_V2 + "\n")
        staged.replace(setup.secret_file)
        after = (await whoami(client, "filekey__whoami"))["headers"]
    assert before["authorization"] == f"Bearer {FILE_SECRET_V1}"
    assert after["authorization"] == f"Bearer {FILE_SECRET_V2}"
    assert setup.gateway.process is not None and setup.gateway.process.pid == pid
    assert setup.gateway.process.poll() is None  # same gateway process, no restart


# 3. Vault KV v2 (through the stand-in) ---------------------------------------------------------------


async def test_vault_secret_arrives_upstream(setup: Setup) -> None:
    async with mcp_client(setup.gateway.url, TOKEN, "legacy") as client:
        headers = (await whoami(client, "vaultkey__whoami"))["headers"]
    assert headers["authorization"] == f"Bearer {VAULT_SECRET}"
    reads = setup.vault.paths_seen("/v1/secret/data/narrowgate/upstream")
    assert reads and all(r.token == VAULT_TOKEN and r.status == 200 for r in reads)


async def test_wrong_vault_token_fails_the_call_naming_upstream_and_vault(setup: Setup) -> None:
    error = (await call_error(setup.gateway.url, "vaultbad__whoami")).error
    assert error.code == UNAVAILABLE
    assert "vaultbad" in error.message
    assert "Vault" in error.message, error.message
    assert_no_secret_in(error.message)
    refused = setup.vault.paths_seen("/v1/secret/data/narrowgate/other")
    assert refused and all(r.status == 403 for r in refused)  # Vault was asked, and said no


# 4. stdio: the secret as an environment variable -----------------------------------------------------


async def test_stdio_secret_is_in_the_child_environment(setup: Setup) -> None:
    async with mcp_client(setup.gateway.url, TOKEN, "legacy") as client:
        answer = await whoami(client, "pipe__whoami")
        value = await client.call_tool("pipe__env_value", {"name": "API_TOKEN"})
    assert answer["transport"] == "stdio"
    assert "API_TOKEN" in answer["env_keys"]
    assert not value.is_error
    assert value.content[0].text == STDIO_SECRET  # type: ignore[union-attr]


# 6. Catalog validation -------------------------------------------------------------------------------

BAD_MANIFESTS = {
    # name: (manifest text, the line the problem must be reported on, a phrase of the message)
    "no-secret": ("""id: no-secret
owner: t@example.com
transport:
  url: http://127.0.0.1:1/mcp
credentials:
  mode: secret
tools: []
""", 6, "secret must be one of"),
    "empty-env": ("""id: empty-env
owner: t@example.com
transport:
  url: http://127.0.0.1:1/mcp
credentials:
  mode: secret
  secret:
    env: ""
tools: []
""", 8, "secret.env must be a non-empty string"),
    "vault-key": ("""id: vault-key
owner: t@example.com
transport:
  url: http://127.0.0.1:1/mcp
credentials:
  mode: secret
  secret:
    vault:
      address: http://127.0.0.1:8200
      path: app/db
      field: password
      token_env: VAULT_TOKEN
      role: reader
tools: []
""", 13, "unknown vault key 'role'"),
    "stdio-no-env-var": ("""id: stdio-no-env-var
owner: t@example.com
transport:
  command: /bin/true
credentials:
  mode: secret
  secret:
    env: SOME_SECRET
tools: []
""", 6, "stdio upstream gets its secret as an environment variable"),
    "lease-stdio": ("""id: lease-stdio
owner: t@example.com
transport:
  command: /bin/true
credentials:
  mode: lease
  format: "{username}:{password}"
  vault:
    address: http://127.0.0.1:8200
    path: database/creds/readonly
    token_env: VAULT_TOKEN
tools: []
""", 6, "a leased credential needs an HTTP upstream"),
    "lease-no-format": ("""id: lease-no-format
owner: t@example.com
transport:
  url: http://127.0.0.1:1/mcp
credentials:
  mode: lease
  format: "Bearer token"
  vault:
    address: http://127.0.0.1:8200
    path: database/creds/readonly
    token_env: VAULT_TOKEN
    role: readonly
tools: []
""", 7, "mode: lease needs a format naming the leased credential's fields"),
    "lease-unknown-key": ("""id: lease-unknown-key
owner: t@example.com
transport:
  url: http://127.0.0.1:1/mcp
credentials:
  mode: lease
  format: "{username}:{password}"
  vault:
    address: http://127.0.0.1:8200
    path: database/creds/readonly
    token_file: vault.token
    role: readonly
tools: []
""", 12, "unknown vault key 'role'"),
    "vault-two-tokens": ("""id: vault-two-tokens
owner: t@example.com
transport:
  url: http://127.0.0.1:1/mcp
credentials:
  mode: secret
  secret:
    vault:
      address: http://127.0.0.1:8200
      path: app/db
      field: password
      token_env: VAULT_TOKEN
      token_file: vault.token
tools: []
""", 9, "token_env or token_file (one of them)"),
    "rotate-overlap": ("""id: rotate-overlap
owner: t@example.com
transport:
  url: http://127.0.0.1:1/mcp
credentials:
  mode: secret
  secret:
    vault:
      address: http://127.0.0.1:8200
      path: app/db
      field: password
      token_env: VAULT_TOKEN
      rotate:
        every_s: 600
        overlap_s: 900
tools: []
""", 14, "rotate.every_s must be longer than overlap_s"),
    # A stdio child reads its secret once, at start: a rotated secret would leave it on the retired version.
    "stdio-rotate": ("""id: stdio-rotate
owner: t@example.com
transport:
  command: /bin/true
credentials:
  mode: secret
  env_var: API_KEY
  secret:
    vault:
      rotate: {overlap_s: 30}
      field: api_key
      token_file: vault.token
      path: stdio/api
      address: https://vault.example:8200
tools: []
""", 10, "rotate needs an HTTP upstream"),
    "stdio-gateway-token": ("""id: stdio-gateway-token
owner: t@example.com
transport:
  command: /bin/true
credentials:
  mode: gateway-token
tools: []
""", 6, "gateway-token needs an HTTP upstream"),
}


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    catalog = tmp_path_factory.mktemp("bad-secret-catalog")
    for name, (text, _, _) in BAD_MANIFESTS.items():
        (catalog / f"{name}.yaml").write_text(text)
    result = subprocess.run([str(NARROWGATE), "catalog", "validate", "--catalog", str(catalog)],
                            capture_output=True, text=True, timeout=60)
    return catalog, result


def test_validate_exits_2_on_bad_credentials(validation: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = validation
    assert result.returncode == 2, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS))
def test_validate_reports_each_credentials_problem_with_file_and_line(
    validation: tuple[Path, subprocess.CompletedProcess[str]], name: str
) -> None:
    catalog, result = validation
    _, line, phrase = BAD_MANIFESTS[name]
    prefix = f"{catalog.resolve() / name}.yaml:{line}: "
    matching = [row for row in result.stdout.splitlines() if row.startswith(prefix) and phrase in row]
    assert matching, f"expected {prefix}...{phrase} in:\n{result.stdout}"


# 3 (continued). Once the cache has expired: Vault down, or the token revoked -> fail closed ----------


async def refusal_after_cache_expiry(url: str, tool: str, secret: str, deadline: float) -> Any:
    """Call `tool` until the gateway refuses; every answer before that must carry `secret`."""
    while True:
        async with mcp_client(url, TOKEN, "legacy") as client:
            try:
                headers = (await whoami(client, tool))["headers"]
            except MCPError as exc:
                return exc.error
        # Until the cached value expires, calls still carry it; never a call without it.
        assert headers.get("authorization") == f"Bearer {secret}", headers
        assert time.monotonic() < deadline, f"the Vault cache did not expire within {EXPIRY_DEADLINE_S}s"
        await anyio.sleep(0.5)


async def test_vault_down_or_token_revoked_after_cache_expiry_fails_closed(setup: Setup) -> None:
    url = setup.gateway.url
    async with mcp_client(url, TOKEN, "legacy") as client:  # the gateway read both secrets at start
        down = (await whoami(client, "vaultdown__whoami"))["headers"]
        revoked = (await whoami(client, "vaultrevoked__whoami"))["headers"]
    assert down["authorization"] == f"Bearer {VAULT_DOWN_SECRET}"
    assert revoked["authorization"] == f"Bearer {VAULT_REVOKED_SECRET}"
    setup.vault_down.stop()
    setup.vault_revoking.token = "hvs.a-token-the-gateway-does-not-have"  # VAULT_TOKEN is now refused
    deadline = time.monotonic() + EXPIRY_DEADLINE_S
    errors = {
        "vaultdown": await refusal_after_cache_expiry(url, "vaultdown__whoami", VAULT_DOWN_SECRET, deadline),
        "vaultrevoked": await refusal_after_cache_expiry(url, "vaultrevoked__whoami", VAULT_REVOKED_SECRET,
                                                         deadline),
    }
    for upstream, error in errors.items():
        assert error.code == UNAVAILABLE, error
        assert upstream in error.message and "Vault" in error.message, error.message
        assert_no_secret_in(error.message)
    assert "unreachable" in errors["vaultdown"].message
    assert "403" in errors["vaultrevoked"].message
    assert setup.vault_revoking.seen[-1].status == 403  # Vault was asked again, and refused
    # And it stays closed: the next call is refused too, not sent without credentials.
    for upstream in errors:
        again = (await call_error(url, f"{upstream}__whoami")).error
        assert again.code == UNAVAILABLE and "Vault" in again.message, again.message


# 5. Secrets never logged (runs last: after every secret above was used) ------------------------------


def test_gateway_log_contains_no_secret(setup: Setup) -> None:
    log = setup.gateway.log_text()
    assert "envkey" in log and "vaultdown" in log  # the log is the debug log of this gateway
    assert_no_secret_in(log)
