"""What the catalog lets an HTTP upstream's requests carry: headers the gateway can send as they are
(token names, values without CR/LF/NUL) and none that frame the message or the connection; and a URL
with a password is refused without being echoed, whatever its scheme."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.catalog.loader import CatalogError, load_catalog

SECRET = "hunter2-never-echoed"


def manifest(tmp_path: Path, transport: dict[str, object], credentials: dict[str, object] | None = None) -> None:
    doc: dict[str, object] = {"id": "up", "owner": "t@example.com", "transport": transport, "tools": []}
    if credentials is not None:
        doc["credentials"] = credentials
    (tmp_path / "up.yaml").write_text(yaml.safe_dump(doc))


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    assert SECRET not in str(caught.value)
    return [problem.message for problem in caught.value.problems]


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("X-Team", f"{SECRET}\r\nX-Injected: 1", "header 'X-Team' holds a line break or NUL (its value is not shown)"),
    ("X-Team", f"{SECRET}\0", "X-Team must not contain a NUL character"),
    ("X Team", SECRET, "header name 'X Team' is not an HTTP token"),
    ("X-Team\r\nX-Injected", SECRET, "is not an HTTP token"),
    ("Content-Length", "999", "header 'Content-Length' frames the message or the connection"),
    ("transfer-encoding", "chunked", "header 'transfer-encoding' frames the message or the connection"),
    ("Connection", "close", "header 'Connection' frames the message or the connection"),
])
def test_a_catalog_header_the_gateway_cannot_send_as_is_is_refused(
        tmp_path: Path, name: str, value: str, expected: str) -> None:
    manifest(tmp_path, {"url": "https://upstream.example/mcp", "headers": {name: value}})
    [message] = problems(tmp_path)
    assert expected in message


def test_catalog_headers_that_can_be_sent_load(tmp_path: Path) -> None:
    manifest(tmp_path, {"url": "https://upstream.example/mcp", "headers": {"X-Team": "blue", "Host": "svc.example"}},
             {"mode": "secret", "secret": {"env": "UP_TOKEN"}, "header": "X-Api-Key"})
    transport = load_catalog(tmp_path, {"UP_TOKEN": "t"}).servers["up"].transport
    assert dict(transport.headers) == {"X-Team": "blue", "Host": "svc.example"}  # type: ignore[union-attr]


@pytest.mark.parametrize(("header", "expected"), [
    ("Content-Length", "header 'Content-Length' frames the message or the connection"),
    ("X Api Key", "header name 'X Api Key' is not an HTTP token"),
])
def test_a_credentials_header_that_frames_the_message_or_is_no_token_is_refused(
        tmp_path: Path, header: str, expected: str) -> None:
    manifest(tmp_path, {"url": "https://upstream.example/mcp"},
             {"mode": "secret", "secret": {"env": "UP_TOKEN"}, "header": header})
    messages = problems(tmp_path)
    assert any(expected in message for message in messages), messages


@pytest.mark.parametrize("url", [f"ftp://svc:{SECRET}@upstream.example/mcp", f"svc:{SECRET}@upstream.example/mcp"])
def test_a_url_with_a_password_is_refused_unechoed_whatever_its_scheme(tmp_path: Path, url: str) -> None:
    manifest(tmp_path, {"url": url})
    assert problems(tmp_path) == [
        "url must not carry credentials (user:password@): put them in headers or credentials"]


@pytest.mark.parametrize(("url", "shown"), [
    ("ftp://upstream.example/mcp?api_key=${UP_KEY}", "got scheme 'ftp'"),
    ("upstream.example/mcp?api_key=${UP_KEY}", "got no scheme"),
])
def test_a_url_of_another_scheme_is_refused_naming_only_its_scheme(tmp_path: Path, url: str, shown: str) -> None:
    """The URL is expanded from the environment first: a secret in its query must not reach the error."""
    manifest(tmp_path, {"url": url})
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path, {"UP_KEY": SECRET})
    assert SECRET not in str(caught.value)
    assert [problem.message for problem in caught.value.problems] == [f"url must be http:// or https://, {shown}"]
