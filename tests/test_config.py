"""Config loading: YAML, NARROWGATE_* overrides, and refusals that keep development modes local."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
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
