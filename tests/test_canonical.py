"""Canonical arguments: what policies see cannot be walked around with spelling tricks."""

from __future__ import annotations

import copy
import unicodedata

import pytest

from gateway.policy.canonical import CanonicalizationError, canonicalize, normalize_path
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
        ("~/../../etc", "~/etc"),
        ("/data/public/", "/data/public/"),
        ("/", "/"),
        ("https://h.example/a/./b/../c?q=/x/../y#f", "https://h.example/a/c?q=/x/../y#f"),
        ("https://h.example/a/%2e%2e/%2E%2E/secret", "https://h.example/secret"),
        ("file:///data/public/../../etc/passwd", "file:///etc/passwd"),
    ],
)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


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
