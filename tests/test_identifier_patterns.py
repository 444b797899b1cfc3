"""Identifiers are checked whole: `$` in a Python pattern also matches before a final newline, so
`^[a-z]+$` accepted "bot\\n" as an agent id (and a server id, tool name, SPIFFE path...). Every
anchored validation pattern ends in `\\Z`; each check below refuses a trailing newline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.catalog.loader import CatalogError, load_catalog
from gateway.identity.spiffe import parse_spiffe_id
from gateway.registry.errors import RegistryError
from gateway.registry.spec import parse_create

AGENT = {"id": "bot", "owner": "team@example.com", "purpose": "tests",
         "identities": [{"kind": "spiffe", "issuer": "spiffe://example.org", "subject": "spiffe://example.org/bot"}]}


def manifest(server_id: str = "files", tool: str = "read", namespace: str = "files") -> dict[str, object]:
    return {"id": server_id, "owner": "tests@example.com", "namespace": namespace, "description": "files",
            "transport": {"url": "http://127.0.0.1:9/mcp"}, "tools": [{"name": tool, "risk": "read"}]}


def test_a_well_formed_agent_and_catalog_load(tmp_path: Path) -> None:
    assert parse_create(AGENT, 0).id == "bot"
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(manifest()), encoding="utf-8")
    assert list(load_catalog(tmp_path, {}).servers) == ["files"]


def test_an_agent_id_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(RegistryError, match="id"):
        parse_create({**AGENT, "id": "bot\n"}, 0)


def test_a_server_id_is_read_stripped(tmp_path: Path) -> None:
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(manifest(server_id="files\n")), encoding="utf-8")
    assert list(load_catalog(tmp_path, {}).servers) == ["files"]


@pytest.mark.parametrize("field", ["tool", "namespace"])
def test_catalog_names_with_a_trailing_newline_are_refused(tmp_path: Path, field: str) -> None:
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(manifest(**{field: "files\n"})), encoding="utf-8")
    with pytest.raises(CatalogError):
        load_catalog(tmp_path, {})


def test_a_spiffe_id_with_a_trailing_newline_is_not_one() -> None:
    assert parse_spiffe_id("spiffe://example.org/agents/bot") == ("example.org", "/agents/bot")
    assert parse_spiffe_id("spiffe://example.org/agents/bot\n") is None
    assert parse_spiffe_id("spiffe://example.org\n/agents/bot") is None
