"""One canonical spelling for every path-, URI- and URL-shaped value, or a refusal.

The rule: decode once what a server would decode (percent-escapes, `%2e` as `.`), resolve `.`,
`..` and empty segments on the decoded meaning, and refuse outright every form that servers
read differently from one another (an encoded `/`, a backslash, NUL or control characters,
double encoding, invalid UTF-8, look-alike dots and slashes, `..;` path parameters, trailing
dots or spaces). The result is what policies judge and what the upstream receives, so the call
that runs is the call that was decided. docs/policies.md#canonicalization says what a server is
assumed to do with each form.

Plain paths come back decoded (`/data/%41` is `/data/A`); URLs come back in URI form: unreserved
characters and sub-delimiters bare, everything else percent-encoded with upper-case hex
(`file:///data/r%C3%A9sum%C3%A9`).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# A URL scheme of two or more characters, so a Windows drive letter ("C:") is not taken for one.
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
ESCAPE_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
ESCAPE_ANY_CASE = re.compile(r"%([0-9A-Fa-f]{2})")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
# Bare in a canonical URL path: RFC 3986 unreserved, sub-delims but ";" (a path parameter to
# Tomcat, Jetty and Spring), ":" and "@". Everything else is percent-encoded.
URL_PATH_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@")
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}
# Web schemes whose servers strip `;params` from path segments (`/secret;x/f` is `/secret/f`).
PATH_PARAMETER_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# Slash and dot look-alikes that no NFKC mapping catches, but "best fit" code-page conversion does.
LOOKALIKES = frozenset("\u2215\u2044\u29f8\u2571\u29f5\u29f9")
HOST_DOTS = frozenset("\u3002\uff61")  # ideographic full stops: label separators to IDNA
# Never bare in a host: they end it or mean something else in a URL.
NOT_IN_HOST = frozenset("/\\?#@% <>\"^`{|}")
STRUCTURAL = frozenset("/\\.%")


class CanonicalizationError(ValueError):
    """A value with no single meaning: the message says which form and why (safe to show the agent)."""


def canonical_path(value: str) -> str:
    """The canonical form of a path, URI or URL; CanonicalizationError if servers could read it two ways."""
    text = unicodedata.normalize("NFC", value)
    _check_raw(text)
    scheme = URL_SCHEME.match(text)
    if scheme is None:
        return _plain_path(text)
    return _url(text, scheme.group(1).lower())


# ---- characters -------------------------------------------------------------------------------


def _check_raw(text: str) -> None:
    if text != text.strip():
        raise CanonicalizationError("leading or trailing whitespace in a path is stripped by some servers")
    control = CONTROL.search(text)
    if control is not None:
        raise CanonicalizationError(f"control character U+{ord(control.group()):04X} in a path")


@lru_cache(maxsize=4096)
def _is_lookalike(char: str) -> bool:
    """A non-ASCII character that some server reads as `/`, `\\`, `.` or `%` (fullwidth, NFKC, best fit)."""
    if char.isascii():
        return False
    return char in LOOKALIKES or any(c in STRUCTURAL for c in unicodedata.normalize("NFKC", char))


def _check_segment(segment: str) -> None:
    """Refuse a decoded path segment that servers do not agree on."""
    if "/" in segment:
        raise CanonicalizationError("an encoded '/' (%2F) is a separator to some servers and a character to others")
    if "\\" in segment:
        raise CanonicalizationError("a backslash in a path is a separator to Windows and URL parsers; use '/'")
    control = CONTROL.search(segment)
    if control is not None:
        raise CanonicalizationError(f"an encoded control character (U+{ord(control.group()):04X}) in a path")
    lookalike = None if segment.isascii() else next((c for c in segment if _is_lookalike(c)), None)
    if lookalike is not None:
        raise CanonicalizationError(f"U+{ord(lookalike):04X} looks like a slash or a dot to some servers")
    if ESCAPE.search(segment):
        raise CanonicalizationError("double percent-encoding (such as %252e) in a path")
    base, semicolon, _ = segment.partition(";")
    if semicolon and base in (".", ".."):
        raise CanonicalizationError(f"'{base};' is the dot segment '{base}' to servers that strip path parameters")
    if segment not in (".", "..") and segment.endswith((".", " ")):
        raise CanonicalizationError("a path segment ending in '.' or ' ' names another file on Windows")


def _decode(segment: str) -> str:
    """Percent-decode one segment once; invalid or overlong UTF-8 is refused, not replaced."""
    def run(match: re.Match[str]) -> str:
        try:
            return bytes.fromhex(match.group(0).replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            raise CanonicalizationError("percent-escapes that are not valid UTF-8 (overlong or truncated)") from None

    return unicodedata.normalize("NFC", ESCAPE_RUN.sub(run, segment))


# ---- paths ------------------------------------------------------------------------------------


def _plain_path(text: str) -> str:
    if "\\" in text:
        raise CanonicalizationError("a backslash in a path is a separator to Windows and URL parsers; use '/'")
    if text.startswith("~/"):
        root, rest = "~/", text[2:]
    elif text.startswith("/"):
        root, rest = "/", text
    else:
        root, rest = "", text
    segments = [_decode(s) for s in rest.split("/")]
    for segment in segments:
        _check_segment(segment)
    resolved = _resolve(segments, root, home=root == "~/")
    joined = root + "/".join(resolved)
    if not joined:
        return "."
    trailing = text.endswith("/") and resolved and not joined.endswith("/")
    return joined + "/" if trailing else joined


def _resolve(segments: list[str], root: str, home: bool = False) -> list[str]:
    """Drop empty and `.` segments and resolve `..` (never above an absolute root).

    A file system reads `//` as `/`, a URL parser as an empty segment that `..` climbs out of:
    `/a//..` is `/` to one and `/a/` to the other, so a `..` that would climb an empty segment
    is refused.
    """
    resolved: list[str] = []
    url_view: list[str] = []  # the same walk keeping empty segments, as URL parsers do
    body = segments[1:] if root == "/" else segments  # segments[0] is the root's own ""
    for segment in body:
        if segment == ".":
            continue
        if segment == "..":
            if url_view and url_view[-1] == "":
                raise CanonicalizationError("'..' after '//' climbs differently in URL parsers and file systems")
            if resolved and resolved[-1] != "..":
                resolved.pop()
                url_view.pop()
            elif home:
                raise CanonicalizationError("'..' above '~/' names another user's home")
            elif not root:
                resolved.append("..")  # a relative path may climb; it cannot be resolved here
                url_view.append("..")
            continue
        url_view.append(segment)
        if segment:
            resolved.append(segment)
    return resolved


# ---- URLs -------------------------------------------------------------------------------------


def _url(text: str, scheme: str) -> str:
    rest = text[len(scheme) + 1:]
    rest, hash_sep, fragment = rest.partition("#")
    rest, query_sep, query = rest.partition("?")
    tail = (f"?{_escape_case(query)}" if query_sep else "") + (f"#{_escape_case(fragment)}" if hash_sep else "")
    if scheme == "file":
        return f"file://{_file_path(rest)}{tail}"
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
        if not path and scheme in DEFAULT_PORTS:
            path = "/"  # an empty path is "/" to every web server
        return f"{scheme}://{_authority(authority, scheme)}{_url_path(path, scheme)}{tail}"
    if rest.startswith("/"):
        return f"{scheme}:{_url_path(rest, scheme)}{tail}"
    # Opaque (mailto:, urn:, data:, scheme:rootless): no path to resolve.
    if "\\" in rest:
        raise CanonicalizationError("a backslash in a URI is a separator to URL parsers; use '/'")
    return f"{scheme}:{_escape_case(rest)}{tail}"


def _file_path(rest: str) -> str:
    """`file:///p`, `file://localhost/p` and `file:/p` are one local file; any other host is refused."""
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host.lower() not in ("", "localhost"):
            raise CanonicalizationError("a file URI naming a host is a network share on some systems")
        rest = slash + path
    if not rest.startswith("/"):
        raise CanonicalizationError("a file URI needs an absolute path (file:///...)")
    return _url_path(rest, "file")


def _url_path(path: str, scheme: str) -> str:
    if not path:
        return ""
    if "\\" in path:
        raise CanonicalizationError("a backslash in a URL path is a separator to URL parsers; use '/'")
    if ";" in path and scheme in PATH_PARAMETER_SCHEMES:
        raise CanonicalizationError("';' in a URL path starts a path parameter some servers strip; use %3B")
    raw = path.split("/")
    segments = [_decode(s) for s in raw]
    for segment in segments:
        _check_segment(segment)
    resolved = _resolve(segments, "/")
    # RFC 3986 5.2.4: a path ending in a segment, `.` or `..` still names a directory ("/a/b/.." is "/a/").
    trailing = raw[-1] in ("", ".", "..") and bool(resolved)
    return "/" + "/".join(_encode(s) for s in resolved) + ("/" if trailing else "")


def _encode(segment: str) -> str:
    return "".join(char if char in URL_PATH_BARE else _percent(char) for char in segment)


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _authority(authority: str, scheme: str) -> str:
    userinfo, at, hostport = authority.rpartition("@")
    if "\\" in authority:
        raise CanonicalizationError("a backslash in a URL's host is a separator to URL parsers")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise CanonicalizationError("an unclosed '[' in a URL's host")
        host, port_part = hostport[: end + 1], hostport[end + 1:]
    else:
        host, colon, port = hostport.partition(":")
        port_part = colon + port
    host = _host(host, scheme)
    port = _port(port_part, scheme)
    return f"{_escape_case(userinfo)}{at}{host}{port}"


def _host(host: str, scheme: str) -> str:
    decoded = _decode(host)
    if CONTROL.search(decoded) or any(c in NOT_IN_HOST for c in decoded):
        raise CanonicalizationError("a URL's host holds characters no host name has")
    if any(_is_lookalike(c) or c in HOST_DOTS for c in decoded):
        raise CanonicalizationError("a URL's host holds a look-alike of '.' or '/'")
    if scheme not in DEFAULT_PORTS:
        return decoded  # another scheme's authority is the upstream's to read: compared as written
    decoded = decoded.lower()
    if decoded.endswith("."):
        decoded = decoded[:-1]  # "example.com." is "example.com" to DNS
    if decoded.endswith(".") or ".." in decoded:
        raise CanonicalizationError("a URL's host has an empty label")
    return decoded


def _port(port_part: str, scheme: str) -> str:
    if not port_part:
        return ""
    digits = port_part[1:]
    if not port_part.startswith(":") or (digits and not digits.isdigit()) or (digits and int(digits) > 65535):
        raise CanonicalizationError("a URL's port is not a number from 0 to 65535")
    if not digits or str(int(digits)) == DEFAULT_PORTS.get(scheme):
        return ""
    return f":{int(digits)}"


def _escape_case(text: str) -> str:
    """Upper-case hex in escapes (RFC 3986 6.2.2.1): `%2f` and `%2F` are one spelling."""
    return ESCAPE_ANY_CASE.sub(lambda m: "%" + m.group(1).upper(), text)
