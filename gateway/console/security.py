"""The console's browser-facing defences: cookies, same-origin and CSRF checks, safe redirects, headers.

Every console response carries a strict Content-Security-Policy (no scripts at all, styles only from
the console's own stylesheet), refuses framing, sends no Referer and is never cached.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console.sessions import ConsoleSession
from gateway.links import HOME

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
DEFAULT_PORTS = {"http": 80, "https": 443}
# A console path made of plain segments: no scheme, host, backslash, encoded characters or dot segments.
_NEXT_PATH = re.compile(r"/console(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?")
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 20
LOGIN_COOKIE_MAX_AGE_S = 3600


class Refused(Exception):
    """A console request refused; the message is safe to show the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Hardened:
    """ASGI wrapper: adds SECURITY_HEADERS to every response of the wrapped app (404s and 405s too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_hardened(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_hardened)
        except HTTPException as exc:
            # Starlette's routers raise 405s inside an app; answer them here, so they carry the headers too.
            if started:
                raise
            response = PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
            await response(scope, receive, send_hardened)


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """Cookie names and flags. Over https: Secure and the `__Host-` prefix, which the browser enforces
    (no Domain, Path=/, Secure), so a sibling subdomain can neither set nor shadow them. Over plain http
    (a loopback development gateway) neither is possible, and the cookies are scoped to /console."""

    secure: bool

    @classmethod
    def for_base_url(cls, base_url: str) -> CookiePolicy:
        return cls(secure=base_url.lower().startswith("https://"))

    @property
    def session_name(self) -> str:
        return "__Host-narrowgate_console" if self.secure else "narrowgate_console"

    @property
    def login_name(self) -> str:
        return "__Host-narrowgate_console_login" if self.secure else "narrowgate_console_login"

    @property
    def session_path(self) -> str:
        return "/" if self.secure else "/console"

    @property
    def login_path(self) -> str:
        return "/" if self.secure else "/console/login"

    def set_session(self, response: Response, session_id: str, max_age_s: int) -> None:
        self._set(response, self.session_name, session_id, max_age_s, self.session_path)

    def clear_session(self, response: Response) -> None:
        self._set(response, self.session_name, "", 0, self.session_path)

    def set_login(self, response: Response, token: str) -> None:
        self._set(response, self.login_name, token, LOGIN_COOKIE_MAX_AGE_S, self.login_path)

    def clear_login(self, response: Response) -> None:
        self._set(response, self.login_name, "", 0, self.login_path)

    def _set(self, response: Response, name: str, value: str, max_age_s: int, path: str) -> None:
        # Starlette types samesite as lowercase only but writes it as given; "Strict" is the spelling
        # browsers document and our tests read (attribute values are case-insensitive anyway).
        response.set_cookie(name, value, max_age=max(0, max_age_s), path=path, secure=self.secure,
                            httponly=True, samesite="Strict")  # type: ignore[arg-type]


def origin_of(url: str | None) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL (default ports left out); None otherwise."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port in (None, DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def same_origin(request: Request, expected: str | None) -> bool:
    """The request came from a page of `expected` (the gateway's own origin).

    A real Origin must equal it. Without one (absent, or `null`), the Referer must have it; without
    that too, the browser's own Sec-Fetch-Site must say `same-origin`. That last case is how browsers
    post the console's forms: its pages send `Referrer-Policy: no-referrer`, under which a browser
    sends `Origin: null` and no Referer even to the same origin, and pages can never set Sec-Fetch-Site.
    Anything else (another origin, or no evidence at all) is refused.
    """
    if expected is None:
        return False
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        return origin_of(origin) == expected
    referer = request.headers.get("referer")
    if referer:
        return origin_of(referer) == expected
    return request.headers.get("sec-fetch-site") == "same-origin"


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path, never elsewhere (no open redirect)."""
    if value and _NEXT_PATH.fullmatch(value):
        return value
    return HOME


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def read_form(request: Request) -> dict[str, str]:
    """The first value of each field of an urlencoded form, read with a size cap."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, "the form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form could not be read") from None
    return {name: values[0] for name, values in fields.items() if values}


def require_admin(session: ConsoleSession, what: str) -> None:
    """Admin-only pages and actions: an approver's session is refused, saying what only admins may do."""
    if not session.person.is_admin:
        raise Refused(403, f"Only admins may {what}; approvers see this page read-only.")
