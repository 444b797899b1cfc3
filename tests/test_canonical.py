"""Canonical arguments: what policies see cannot be walked around with spelling tricks."""

from __future__ import annotations

import copy
import re
import unicodedata

import pytest

from gateway.policy.canonical import CanonicalizationError, canonicalize, is_path_name, normalize_path
from gateway.verifier import argument_digest


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/data/public/../secret/x", "/data/secret/x"),
        ("/a/../../b", "/b"),
        ("//data//public///x", "/data/public/x"),
        ("/data/./public/./x", "/data/public/x"),
        ("./a/b/../c", "a/c"),
        ("../up/x", "../up/x"),
        ("~/docs/../.ssh/id", "~/.ssh/id"),
        ("/data/public/", "/data/public/"),
        ("/", "/"),
        ("https://h.example/a/./b/../c?q=/x/../y#f", "https://h.example/a/c?q=/x/../y#f"),
        ("https://h.example/a/%2e%2e/%2E%2E/secret", "https://h.example/secret"),
        ("file:///data/public/../../etc/passwd", "file:///etc/passwd"),
        # Escapes are decoded once before `..` is resolved, in plain paths and URLs alike.
        ("/data/public/%2e%2e/secret", "/data/secret"),
        ("/data/public/.%2E/secret", "/data/secret"),
        ("/data/%41%7e", "/data/A~"),
        ("file:///data/public/%2E%2e/secret", "file:///data/secret"),
        ("https://h.example/a/%2e/b", "https://h.example/a/b"),
        # One spelling: escape case, reserved characters kept encoded, the rest bare or encoded.
        ("https://h.example/a%3fb/%3B", "https://h.example/a%3Fb/%3B"),
        ("file:///data/my file", "file:///data/my%20file"),
        ("file:///data/r%c3%a9sum%c3%a9", "file:///data/r%C3%A9sum%C3%A9"),
        ("file:///data/re\u0301sume\u0301", "file:///data/r%C3%A9sum%C3%A9"),
        ("file:///data/a%2Bb", "file:///data/a+b"),
        ("file:///data/100%", "file:///data/100%25"),
        # file:// host forms, scheme and web host case, default ports.
        ("file://localhost/data/x", "file:///data/x"),
        ("file:/data/x", "file:///data/x"),
        ("FILE:///data/x", "file:///data/x"),
        ("HTTPS://H.Example:443/x", "https://h.example/x"),
        ("http://h.example:8080", "http://h.example:8080/"),
        ("https://evil.example./x", "https://evil.example/x"),
        # Other schemes' authorities are the upstream's business: compared as written.
        ("behaviour://status", "behaviour://status"),
        ("notes://Work/a/../b", "notes://Work/b"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
        # RFC 3986 5.2.4: a URL path ending in a dot segment names the directory.
        ("https://h.example/a/b/..", "https://h.example/a/"),
        ("/data/x/..", "/data"),
    ],
)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected
    assert normalize_path(expected) == expected  # the canonical form is its own canonical form


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("file:///data/public/..%2F..%2Fetc/passwd", "encoded '/'"),
        ("/data/public/%2e%2e%2fsecret", "encoded '/'"),
        ("https://h.example/data/%2e%2e%2Fsecret", "encoded '/'"),
        ("/data/public/..\\secret", "backslash"),
        ("file:///data/public/%5c..%5csecret", "backslash"),
        ("https://h.example\\@evil.example/", "backslash"),
        ("/data/x%00.txt", "control character"),
        ("/data/x\x00/../../etc/passwd", "control character"),
        ("/data/public\n", "whitespace"),
        ("/data/x%0a", "control character"),
        ("https://h.example/se\tcret", "control character"),
        ("/data/public/%252e%252e/secret", "double percent-encoding"),
        ("/data/%25%32%65", "double percent-encoding"),
        ("/data/public/%C0%AE%C0%AE/secret", "not valid UTF-8"),
        ("/data/%ff", "not valid UTF-8"),
        ("/data/public/\uff0e\uff0e/secret", "U+FF0E"),
        ("/data/public\uff0fsecret", "U+FF0F"),
        ("/data/public\u2215secret", "U+2215"),
        ("/data/public/\u2025/secret", "U+2025"),
        ("/data/public/%EF%BC%8E%EF%BC%8E/secret", "U+FF0E"),
        ("/data/public/..;x/secret", "'..;'"),
        ("https://h.example/data/secret;jsessionid=1/x", "path parameter"),
        ("/data/secret./x", "ending in '.'"),
        ("/data/secret /x", "ending in '.' or ' '"),
        ("/data/public/.../x", "ending in '.'"),
        (" /etc/passwd", "whitespace"),
        ("~/../other/.ssh/id_rsa", "another user's home"),
        ("file://fileserver/share/x", "network share"),
        ("file:data/x", "absolute path"),
        ("https://ex%2Fample.com/", "host"),
        ("https://h.example:99999/", "port"),
    ],
)
def test_ambiguous_forms_are_refused(raw: str, why: str) -> None:
    with pytest.raises(CanonicalizationError, match=re.escape(why)):
        normalize_path(raw)


def test_a_refusal_names_the_argument() -> None:
    with pytest.raises(CanonicalizationError, match=r"^path: an encoded '/'"):
        canonicalize({"path": "/data/public/..%2fsecret"}, None)


@pytest.mark.parametrize(
    ("name", "path_like"),
    [("path", True), ("file_path", True), ("filePath", True), ("sourceURL", True), ("output_dir", True),
     ("file_name", True), ("uris", True), ("target_directory", True),
     ("file_content", False), ("profile", False), ("security_note", False), ("dirty", False),
     ("url_template", False), ("fileId", False), ("text", False)],
)
def test_path_like_names_are_words_not_substrings(name: str, path_like: bool) -> None:
    assert is_path_name(name) is path_like


def test_url_shaped_values_are_canonical_whatever_their_name() -> None:
    out = canonicalize({"target": "file:///data/public/%2e%2e/secret", "link": "HTTPS://H.example/a/../b"}, None)
    assert out == {"target": "file:///data/secret", "link": "https://h.example/b"}
    with pytest.raises(CanonicalizationError):
        canonicalize({"target": "https://h.example/data/..%2fsecret"}, None)


def test_path_like_by_prefix_name_and_format() -> None:
    schema = {
        "type": "object",
        "properties": {"target": {"type": "string", "format": "uri"}, "note": {"type": "string"}},
    }
    out = canonicalize(
        {"target": "s3://b/k/../x", "file_name": "a/../b", "note": "/x/../y", "text": "a/../b"}, schema
    )
    assert out == {"target": "s3://b/x", "file_name": "b", "note": "/y", "text": "a/../b"}


def test_nested_and_arrays() -> None:
    schema = {
        "type": "object",
        "properties": {
            "opts": {"type": "object", "properties": {"dir": {"type": "string"}, "n": {"type": "integer"}}},
            "paths": {"type": "array", "items": {"type": "string"}},
        },
    }
    out = canonicalize({"opts": {"dir": "/a//b/", "n": 3.0}, "paths": ["x/./y", "/p/../q"]}, schema)
    assert out == {"opts": {"dir": "/a/b/", "n": 3}, "paths": ["x/y", "/q"]}


def test_unicode_nfc_on_values_and_keys() -> None:
    nfd_key = unicodedata.normalize("NFD", "café")
    out = canonicalize({nfd_key: unicodedata.normalize("NFD", "/données/é")}, None)
    assert out == {"café": "/données/é"}
    assert all(unicodedata.is_normalized("NFC", k) for k in out)


def test_nfc_key_collision_is_refused() -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize({"café": 1, unicodedata.normalize("NFD", "café"): 2}, None)


def test_numbers_typed_by_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"i": {"type": "integer"}, "n": {"type": "number"}, "m": {"type": "number"}},
    }
    out = canonicalize({"i": 5.0, "n": 2.0, "m": 2.5, "free": 7.0, "flag": True}, schema)
    assert out == {"i": 5, "n": 2, "m": 2.5, "free": 7.0, "flag": True}
    assert type(out["i"]) is int and type(out["n"]) is int and type(out["free"]) is float
    assert out["flag"] is True


def test_never_mutates_input_and_returns_new_dict() -> None:
    args = {"path": "/a/../b", "nested": {"file": "./x"}, "list": ["/a/./b"]}
    snapshot = copy.deepcopy(args)
    out = canonicalize(args, None)
    assert args == snapshot
    assert out is not args and out["nested"] is not args["nested"]


def test_empty_and_none() -> None:
    assert canonicalize(None, None) == {}
    assert canonicalize({}, {"type": "object"}) == {}


def test_digest_is_key_order_independent() -> None:
    a = canonicalize({"b": 1, "a": "/x/../y"}, None)
    b = canonicalize({"a": "/y", "b": 1}, None)
    assert argument_digest(a) == argument_digest(b)
    assert len(argument_digest(a)) == 64
    assert argument_digest(a) != argument_digest({"a": "/y", "b": 2})
