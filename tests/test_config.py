"""Config loading: YAML, NARROWGATE_* overrides, and refusals that keep development modes local."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gateway.config import AdminToken, ConfigError, load_settings, settings_from_mapping
from gateway.settings.approvals import ApprovalSettings
from tests.support.processes import NARROWGATE, REPO


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_values_and_paths_relative_to_the_config_file(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.yaml", "listen: 0.0.0.0:9000\ncatalog: cat/\nlimits: {max_body_bytes: 1024}\n")
    settings = load_settings(config, environ={})
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9000)
    assert settings.catalog_dir == (tmp_path / "cat").resolve()
    assert settings.limits.max_body_bytes == 1024
    assert settings.limits.max_json_depth == 64


def test_environment_overrides_nested_keys_with_types(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.yaml", "listen: 127.0.0.1:8080\n")
    environ = {
        "NARROWGATE_LISTEN": "127.0.0.1:9999",
        "NARROWGATE_LIMITS__MAX_JSON_DEPTH": "12",
        "NARROWGATE_AUTH__OPEN_LOOPBACK": "true",
        "NARROWGATE_DEMO_TOKEN": "not-a-config-key",
    }
    settings = load_settings(config, environ=environ)
    assert settings.listen_port == 9999
    assert settings.limits.max_json_depth == 12
    assert settings.auth.open_loopback is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: nowhere\n", "listen must be HOST:PORT"),
        ("colour: blue\n", "unknown config key(s): colour"),
        ("limits: {max_body_bytes: -1}\n", "max_body_bytes must be positive"),
        ("auth: {static_tokens: [{token: x}]}\n", "needs an agent"),
        ("auth: {static_tokens: [{agent: a, token_env: NG_TEST_UNSET_VAR}]}\n", "NG_TEST_UNSET_VAR is not set"),
        ("[1, 2]\n", "must hold a mapping"),
    ],
)
def test_bad_config_is_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(write(tmp_path / "gw.yaml", text), environ={})


def test_open_loopback_is_refused_on_a_non_loopback_bind(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.yaml", f"listen: 0.0.0.0:0\ncatalog: {REPO / 'tool_catalog'}\n"
                   f"policies: {REPO / 'cedar'}\nstate: sqlite:///{tmp_path / 'state.db'}\n")
    result = subprocess.run([str(NARROWGATE), "serve", "--config", str(config), "--open-loopback"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "open loopback mode is refused on a non-loopback bind address" in result.stderr


def test_help_documents_every_command() -> None:
    result = subprocess.run([str(NARROWGATE), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("serve", "demo", "catalog"):
        assert command in result.stdout
    nested = subprocess.run([str(NARROWGATE), "catalog", "validate", "--help"], capture_output=True, text=True,
                            timeout=30)
    assert "--catalog" in nested.stdout


def test_token_lifetimes_are_configurable_within_caps(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path / "gw.yaml", "tokens: {upstream_ttl_s: 30, task_ttl_s: 300}\n"), {})
    assert (settings.tokens.upstream_ttl_s, settings.tokens.task_ttl_s) == (30, 300)
    with pytest.raises(ConfigError, match="between 1 and 60"):
        load_settings(write(tmp_path / "gw.yaml", "tokens: {upstream_ttl_s: 120}\n"), {})
    with pytest.raises(ConfigError, match="between 60 and 900"):
        load_settings(write(tmp_path / "gw.yaml", "tokens: {task_ttl_s: 3600}\n"), {})


def test_delegation_depth_defaults_to_2_and_is_bounded(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path / "gw.yaml", "{}\n"), {}).tokens.max_delegation_depth == 2
    for depth in (0, 5):
        config = write(tmp_path / "gw.yaml", f"tokens: {{max_delegation_depth: {depth}}}\n")
        assert load_settings(config, {}).tokens.max_delegation_depth == depth
    for bad in ("-1", "9", "two", "true", "1.5"):
        with pytest.raises(ConfigError, match=r"tokens\.max_delegation_depth must be a whole number from 0 to 8"):
            load_settings(write(tmp_path / "gw.yaml", f"tokens: {{max_delegation_depth: {bad}}}\n"), {})


# --- approvals and approvers ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["listen: 127.0.0.1:8080\n", "approvals:\n", "approvals: {}\n"])
def test_approvals_have_safe_defaults(tmp_path: Path, text: str) -> None:
    approvals = load_settings(write(tmp_path / "gw.yaml", text), environ={}).approvals
    assert approvals == ApprovalSettings()
    assert (approvals.ttl_s, approvals.hold_timeout_s, approvals.keepalive_s) == (900, 900, 15)
    assert approvals.default_mode == "auto"  # hold only clients that can be sent to the console
    assert approvals.forbid_self_approval is False and approvals.admins_may_approve is False
    assert approvals.webhook_url is None and approvals.webhook_secret_env is None


@pytest.mark.parametrize(("value", "seconds"), [
    ("15m", 900), ("90s", 90), ("30", 30), ("1h", 3600), ("1d", 86400), ("2.5m", 150), ("0.5", 0.5), ("' 10M '", 600),
])
@pytest.mark.parametrize(("key", "field"), [
    ("ttl", "ttl_s"), ("hold_timeout", "hold_timeout_s"), ("keepalive", "keepalive_s"),
    ("console_session_ttl", "console_session_ttl_s"), ("console_idle", "console_idle_s"),
])
def test_approval_durations_take_units(tmp_path: Path, key: str, field: str, value: str, seconds: float) -> None:
    settings = load_settings(write(tmp_path / "gw.yaml", f"approvals: {{{key}: {value}}}\n"), environ={})
    assert getattr(settings.approvals, field) == seconds


def test_approvals_section_is_read_in_full_and_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.yaml", "approvals:\n  default_mode: pending\n  forbid_self_approval: true\n"
                                         "  admins_may_approve: true\n  webhook_url: https://hooks.test/approvals\n"
                                         "  webhook_secret_env: HOOK_SECRET\n  ttl: 10m\n")
    approvals = load_settings(config, environ={"NARROWGATE_APPROVALS__HOLD_TIMEOUT": "2m",
                                               "NARROWGATE_APPROVALS__TTL": "45"}).approvals
    assert approvals.default_mode == "pending"
    assert approvals.forbid_self_approval is True and approvals.admins_may_approve is True
    assert approvals.webhook_url == "https://hooks.test/approvals" and approvals.webhook_secret_env == "HOOK_SECRET"
    assert (approvals.ttl_s, approvals.hold_timeout_s) == (45, 120)  # the environment wins


@pytest.mark.parametrize(("text", "message"), [
    ("approvals: [ttl]\n", "approvals must be a mapping"),
    ("approvals: {default_mode: maybe}\n", "approvals.default_mode must be one of auto, hold, pending"),
    ("approvals: {ttl: soon}\n", "approvals.ttl must be a duration"),
    ("approvals: {ttl: 15x}\n", "approvals.ttl must be a duration"),
    ("approvals: {ttl: m}\n", "approvals.ttl must be a duration"),
    ("approvals: {ttl: 0}\n", "approvals.ttl must be a duration"),
    ("approvals: {hold_timeout: -5m}\n", "approvals.hold_timeout must be a duration"),
    ("approvals: {keepalive: true}\n", "approvals.keepalive must be a duration"),
    ("approvals: {console_idle: 400d}\n", "approvals.console_idle must be a duration"),
    ("approvals: {console_session_ttl: .nan}\n", "approvals.console_session_ttl must be a duration"),
    ("approvals: {colour: blue, ttl: 1m}\n", "unknown approvals key(s): colour"),
    ("approvals: {webhook_url: ftp://hooks.test/x}\n", "approvals.webhook_url must be an http(s) URL"),
    ("approvals: {webhook_url: hooks.test}\n", "approvals.webhook_url must be an http(s) URL"),
    ("approvals: {forbid_self_approval: 'yes'}\n", "approvals.forbid_self_approval must be true or false"),
    ("approvals: {admins_may_approve: 1}\n", "approvals.admins_may_approve must be true or false"),
])
def test_bad_approvals_settings_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(write(tmp_path / "gw.yaml", text), environ={})


def test_admin_tokens_carry_a_role_and_groups(tmp_path: Path) -> None:
    digest = "a" * 64
    config = write(tmp_path / "gw.yaml", "admin:\n  tokens:\n"
                                         "    - {name: root, token: t1}\n"
                                         "    - {name: carol@example.com, token: t2, role: approver,"
                                         " groups: [payments-leads, sre]}\n"
                                         f"    - {{name: dave, token_sha256: {digest}, role: admin, groups: []}}\n")
    root, carol, dave = load_settings(config, environ={}).admin.tokens
    assert (root.role, root.groups) == ("admin", ())
    assert carol == AdminToken(name="carol@example.com", token="t2", role="approver",
                               groups=("payments-leads", "sre"))
    assert (dave.role, dave.groups, dave.token, dave.token_sha256) == ("admin", (), None, digest)


@pytest.mark.parametrize(("entry", "message"), [
    ("{name: x, token: t, role: owner}", "admin.tokens[0].role must be one of admin, approver"),
    ("{name: x, token: t, role: Admin}", "admin.tokens[0].role must be one of admin, approver"),
    ("{name: x, token: t, groups: sre}", "admin.tokens[0].groups must be a list of group names"),
    ("{name: x, token: t, groups: [sre, '']}", "admin.tokens[0].groups must be a list of group names"),
    ("{name: x, token: t, groups: [1]}", "admin.tokens[0].groups must be a list of group names"),
    ("{name: x, token: t, team: sre}", "unknown admin.tokens[0] key(s): team"),
    ("{token: t, role: approver}", "admin.tokens[0] needs a name"),
    ("{name: x, role: approver}", "admin.tokens[0] needs token_env, token_sha256 or token"),
])
def test_bad_admin_token_roles_and_groups_are_refused(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(write(tmp_path / "gw.yaml", f"admin: {{tokens: [{entry}]}}\n"), environ={})


# --- discovery (tool quarantine) -----------------------------------------------------------------


@pytest.mark.parametrize("text", ["listen: 127.0.0.1:8080\n", "discovery: {}\n",
                                  "discovery: {webhook_url: 'https://hooks.example.com/x'}\n"])
def test_discovery_defaults_hold_for_keys_not_given(tmp_path: Path, text: str) -> None:
    discovery = load_settings(write(tmp_path / "gw.yaml", text), environ={}).discovery
    assert discovery.resync_interval_s == 300


def test_discovery_section_is_read(tmp_path: Path) -> None:
    text = "discovery: {resync_interval: 1m, webhook_url: 'http://127.0.0.1:9/h', webhook_secret_env: HOOK}\n"
    discovery = load_settings(write(tmp_path / "gw.yaml", text), environ={}).discovery
    assert (discovery.resync_interval_s, discovery.webhook_url, discovery.webhook_secret_env) == (
        60, "http://127.0.0.1:9/h", "HOOK")


@pytest.mark.parametrize(("text", "message"), [
    ("discovery: {resync_interval: soon}\n", "discovery.resync_interval"),
    ("discovery: {webhook_url: ftp://x}\n", "discovery.webhook_url"),
    ("discovery: {resync: 5}\n", "unknown discovery key"),
    ("discovery: [1]\n", "discovery must be a mapping"),
])
def test_bad_discovery_settings_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(write(tmp_path / "gw.yaml", text), environ={})


def test_the_settings_repr_never_shows_a_store_or_redis_password(tmp_path: Path) -> None:
    settings = settings_from_mapping({"state": "postgresql://gw:s3cret-pg@db:5432/narrowgate",
                                      "cluster": {"redis_url": "redis://:s3cret-redis@cache:6379/0"}},
                                     tmp_path, resolve_secrets=False)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


@pytest.mark.parametrize("value", ["0", "0s", "0m", "0h", "0d", "0.0", "' 0S '", "0.0s"])
def test_a_zero_record_retention_in_any_spelling_turns_recording_off(tmp_path: Path, value: str) -> None:
    settings = load_settings(write(tmp_path / "gw.yaml", f"policy: {{record_retention: {value}}}\n"), environ={})
    assert settings.policy.record_retention_s == 0.0


@pytest.mark.parametrize("value", ["-1s", "0x", "s", "''"])
def test_a_bad_record_retention_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"policy\.record_retention"):
        load_settings(write(tmp_path / "gw.yaml", f"policy: {{record_retention: {value}}}\n"), environ={})


def test_the_delegation_audience_defaults_under_the_public_url_and_never_names_another_tokens(
    tmp_path: Path,
) -> None:
    settings = settings_from_mapping({"public_url": "https://gw.example"}, tmp_path, resolve_secrets=False)
    assert settings.identity.delegation_audience == "https://gw.example/oauth/delegate"
    for taken in ("https://gw.example/mcp", "https://gw.example/oauth/token/", "https://aud.example"):
        with pytest.raises(ConfigError, match=r"identity\.delegation_audience .* must differ"):
            settings_from_mapping({"public_url": "https://gw.example", "identity": {
                "audience": "https://aud.example", "delegation_audience": taken}}, tmp_path, resolve_secrets=False)
