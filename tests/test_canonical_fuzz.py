"""Property tests of path canonicalization against two independent resolvers (hypothesis).

The claim under test (docs/policies.md#canonicalization): whatever spelling an agent sends, the
canonical form means what a server would take the original to mean, so a policy that judges the
canonical form judges the file or URL the upstream will touch. Two model servers read values:

- a POSIX server: percent-decodes once, then resolves like os.path.normpath (Linux: `//` is `/`);
- a URL server: splits like urllib.parse, removes dot segments the WHATWG way (`%2e` is `.`),
  then decodes and maps the path onto a POSIX file system.

Every accepted input must resolve, under both, to what its canonical form resolves to; anything
judged under /data/ must resolve under /data/; the canonical form must be a fixed point; and the
only exception canonicalization may raise is CanonicalizationError.

Runs briefly in the normal test run; NARROWGATE_FUZZ_EXAMPLES=<n> (read by `make fuzz`) runs n
examples per property instead.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from urllib.parse import unquote_to_bytes, urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.policy.canonical import canonicalize
from gateway.policy.paths import CanonicalizationError, canonical_path

EXAMPLES = int(os.environ.get("NARROWGATE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Segments chosen to hit every rule: dot segments in each spelling, escapes of every class,
# look-alikes, path parameters, trailing dots, and ordinary names.
SEGMENTS = [
    "data", "public", "secret", "a", "B", "x.txt", ".", "..", "", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "%2E%2e",
    "%41", "%7e", "%7E", "~", "x%20y", "x y", "%C3%A9", "e%CC%81", "\u00e9", "e\u0301", "%2f", "%2F", "%5c", "\\",
    "%00", "%0a", "%252e", "%25", "%2541", "..;", ".;x", "a;b", "x.", "x ", "\uff0e\uff0e", "\uff0f", "\u2215",
    "%C0%AE", "%ff", "%", "%zz", "a+b", "%2B", "%3F", "%23", "%3b", "@", ":", "\u2025", "%E2%80%A5", "...",
]
PREFIXES = ["", "/", "./", "../", "~/", "/data/", "//", "file://", "file:///", "file://localhost/", "FILE:///",
            "file:/", "https://h.example/", "HTTPS://H.Example:443/", "http://h.example:80/", "notes://Box/"]
DATA = "/data/"


@st.composite
def path_values(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(PREFIXES))
    pieces = draw(st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(min_size=1, max_size=4)), max_size=8))
    separators = draw(st.lists(st.sampled_from(["/", "//"]), min_size=len(pieces), max_size=len(pieces)))
    body = "".join(p + s for p, s in zip(pieces, separators, strict=True))
    return prefix + (body if draw(st.booleans()) else body.rstrip("/"))


# ---- the two model servers -------------------------------------------------------------------------


def decoded(text: str) -> str:
    return unicodedata.normalize("NFC", unquote_to_bytes(text).decode("utf-8"))


def posix(path: str) -> str:
    """os.path.normpath on Linux, where a leading `//` is `/` too; "" for a relative path's nothing."""
    if not path:
        return "."
    resolved = posixpath.normpath(path)
    return "/" + resolved.lstrip("/") if resolved.startswith("//") else resolved


def whatwg_dots(path: str) -> str:
    """RFC 3986 5.2.4 remove_dot_segments, with WHATWG's `%2e` spellings of `.` and `..`."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        lowered = segment.lower()
        if lowered in ("..", ".%2e", "%2e.", "%2e%2e"):
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        elif lowered in (".", "%2e"):
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)


def split_url(value: str) -> tuple[str, str, str]:
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    host = parts.netloc
    if scheme == "file" and host.lower() == "localhost":
        host = ""
    if scheme in ("http", "https"):
        host = (parts.hostname or "").rstrip(".") + (f":{parts.port}" if parts.port not in (None, 80, 443) else "")
    return scheme, host, parts.path


def posix_server(value: str) -> tuple[str, str, str]:
    """What a server that decodes and opens the path reads: (scheme, host, file)."""
    if not canonical_scheme(value):
        return "", "", posix(decoded(value))
    scheme, host, path = split_url(value)
    return scheme, host, posix(decoded(path) or "/")


def url_server(value: str) -> tuple[str, str, str]:
    """What a WHATWG-style URL parser in front of a file system reads."""
    if not canonical_scheme(value):
        return "", "", posix(decoded(value))
    scheme, host, path = split_url(value)
    return scheme, host, posix(decoded(whatwg_dots(path)) or "/")


def canonical_scheme(value: str) -> bool:
    """A URL (a scheme of two or more characters: "C:" is a drive), else a plain path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.\-]+:", value) is not None


def same_file(a: tuple[str, str, str], b: tuple[str, str, str]) -> bool:
    """Equal, ignoring a trailing slash (a directory named with or without it)."""
    return a[:2] == b[:2] and (a[2].rstrip("/") or "/") == (b[2].rstrip("/") or "/")


def canonical_or_none(value: str) -> str | None:
    try:
        return canonical_path(value)
    except CanonicalizationError:
        return None


# ---- properties ----------------------------------------------------------------------------------


@FUZZ
@given(path_values())
@example("/data/public/%2e%2e/secret")
@example("file:///data/public/..%2F..%2Fetc/passwd")
@example("https://h.example/data/.%2E/%2e%2e/x")
@example("~/a/..")
def test_canonical_form_resolves_like_the_original(value: str) -> None:
    canonical = canonical_or_none(value)
    if canonical is None:
        return
    assert canonical_path(canonical) == canonical
    for server in (posix_server, url_server):
        assert same_file(server(value), server(canonical)), (server.__name__, value, canonical)
    # The two servers agree with each other on every accepted value.
    assert same_file(posix_server(canonical), url_server(canonical)), (value, canonical)


@FUZZ
@given(path_values())
def test_judged_inside_a_prefix_means_inside_it(value: str) -> None:
    canonical = canonical_or_none(value)
    if canonical is None:
        return
    judged = posix_server(canonical)[2]
    if judged.startswith(DATA):
        for server in (posix_server, url_server):
            assert server(value)[2].startswith(DATA), (server.__name__, value, canonical)


@st.composite
def respellings(draw: st.DrawFn) -> tuple[str, str]:
    """A value and another spelling of the same thing (escapes, `./`, `x/../`, `//`, NFD, localhost)."""
    names = draw(st.lists(st.sampled_from(["data", "public", "secret", "a", "b-c", "r\u00e9sum\u00e9", "x_y"]),
                          min_size=1, max_size=5))
    prefix = draw(st.sampled_from(["/", "file:///", "https://h.example/", "/data/"]))
    original = prefix + "/".join(names)
    spelled = []
    for name in names:
        edit = draw(st.sampled_from(["same", "escape", "dot", "detour", "double", "nfd"]))
        if edit == "escape":
            case = draw(st.sampled_from(["%{:02X}", "%{:02x}"]))
            name = "".join(case.format(b) for b in name.encode("utf-8"))
        elif edit == "dot":
            name = draw(st.sampled_from(["./", "%2e/", "%2E/"])) + name
        elif edit == "detour":
            name = "elsewhere/" + draw(st.sampled_from(["..", "%2e%2e", ".%2E"])) + "/" + name
        elif edit == "double":
            name = "/" + name
        elif edit == "nfd":
            name = unicodedata.normalize("NFD", name)
        spelled.append(name)
    other = ("file://localhost/" if prefix == "file:///" and draw(st.booleans()) else prefix) + "/".join(spelled)
    return original, other


@FUZZ
@given(respellings())
def test_two_spellings_of_one_thing_canonicalize_and_resolve_equal(pair: tuple[str, str]) -> None:
    original, other = pair
    assert canonical_path(original) == canonical_path(other), pair
    for server in (posix_server, url_server):
        assert same_file(server(canonical_path(original)), server(other)), (server.__name__, pair)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
                         path_values())
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["path", "url", "text", "dir", "n"]), inner,
                                                 max_size=4)), max_leaves=12)


@FUZZ
@given(st.dictionaries(st.sampled_from(["path", "file_url", "target", "note", "items", "opts"]), JSON_VALUES,
                       max_size=5))
def test_canonicalize_arguments_refuses_or_returns_a_fixed_point(arguments: dict[str, object]) -> None:
    try:
        canonical = canonicalize(arguments, None)
    except CanonicalizationError:
        return
    assert canonicalize(canonical, None) == canonical
