"""The approver console at `/console`: server-rendered pages where people decide step-up approvals
and review quarantined upstream tools, resources and templates (the catalog pages:
gateway.console.catalog).

Signing in: a person pastes their own admin or approver credential (a static token from
`admin.tokens`, or an OIDC token with the admin or approver role) into the login form. It is checked
once by `AdminAuthenticator.person_from_token` (agent credentials are refused there) and then
forgotten: the server-side session (gateway.console.sessions) keeps only the resulting Approver.
Failed sign-ins are limited per client address (10 a minute, then 429).

CSRF design:
* Every state-changing request is a POST from a console form, and every POST must come from the
  gateway's own origin (that of `settings.base_url`): a real `Origin` header must equal it; with no
  Origin (or `Origin: null`) the `Referer` must have it; with neither, the browser-set
  `Sec-Fetch-Site` must be `same-origin`. The last case is the usual one: the console's pages send
  `Referrer-Policy: no-referrer`, and under that policy browsers post even same-origin forms with
  `Origin: null` and no Referer (see gateway.console.security.same_origin). Otherwise 403.
* Signed in: each session has its own random CSRF token, rendered as the hidden `csrf` field of every
  form and compared with `hmac.compare_digest`; missing or wrong is 403 and nothing is changed.
* Signing in (no session yet): double-submit. The login page sets a random, HttpOnly, SameSite=Strict
  pre-session cookie and puts the same value in the form; the POST must carry both, equal. A cross-site
  page can neither read that cookie nor make the browser send it (SameSite=Strict), and over https the
  `__Host-` prefix stops a sibling subdomain from planting one. Together with the origin check this
  keeps another site from signing a victim in to the attacker's session (login CSRF).
* The session cookie itself is HttpOnly and SameSite=Strict; the strict CSP allows no script at all.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import Receive, Scope, Send

from gateway.admin.auth import AdminAuthenticator, AdminAuthError
from gateway.approvals.arguments import argument_summary
from gateway.approvals.model import Approval, ApprovalError, ApprovalState, Approver
from gateway.approvals.service import ApprovalService
from gateway.catalog.definitions import reveal_hidden
from gateway.config import Settings
from gateway.console.blast import BlastPages
from gateway.console.catalog import CatalogPages
from gateway.console.rightsize import RightsizePages
from gateway.console.security import (
    CookiePolicy,
    Hardened,
    Refused,
    client_address,
    origin_of,
    read_form,
    require_admin,
    safe_next,
    same_origin,
    tokens_match,
)
from gateway.console.sessions import ConsoleSession, LoginThrottle, SessionStore
from gateway.console.views import (
    RECENT_TASKS_S,
    TASKS_LIMIT,
    ApprovalLinks,
    actor_label,
    credential_expiry,
    decision_rows,
    entitlement_lines,
    pretty_json,
    recent_tasks,
    review_href,
    review_label,
    time_left,
    when,
    when_short,
)
from gateway.discovery.model import ReviewError
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.links import HOME, approval_path, segment
from gateway.privilege.blast_radius import BlastRadiusService
from gateway.privilege.rightsize import RightsizeSources
from gateway.registry.errors import Conflict, NotFound, RegistryError
from gateway.registry.model import Lifecycle
from gateway.registry.service import Registry
from gateway.state.console import ConsoleSessions, LoginFailures
from gateway.store.base import AuditQuery, Store
from gateway.tasks.model import TaskEnded, TaskError, TaskNotFound, TaskState
from gateway.tasks.service import TaskService

log = logging.getLogger("narrowgate.console")
Clock = Callable[[], float]
Endpoint = Callable[[Request], Awaitable[Response]]
PageHandler = Callable[[Request, ConsoleSession], Awaitable[Response]]
ActionHandler = Callable[[Request, ConsoleSession, dict[str, str]], Awaitable[Response]]
LOGIN_PATH = f"{HOME}/login"
DECISIONS = {"approve": True, "deny": False}
HISTORY_STATES = (ApprovalState.APPROVED, ApprovalState.DENIED, ApprovalState.USED, ApprovalState.EXPIRED,
                  ApprovalState.CANCELLED, ApprovalState.ABANDONED)
INBOX_LIMIT = 500
HISTORY_LIMIT = 200
DECISIONS_LIMIT = 100
APPROVAL_RECORDS_LIMIT = 1000  # approval audit records read to link decisions to their approvals
CALL_RECORDS_LIMIT = 200  # decision records read for one approval's page
LOGIN_HINT = ("Sign in with your own admin or approver credential: a static token from admin.tokens, or an "
              "OIDC token with the admin or approver role. Agent credentials never work here.")


class Console:
    def __init__(self, approvals: ApprovalService, registry: Registry, tasks: TaskService, store: Store,
                 auth: AdminAuthenticator, settings: Settings, reviews: ToolReviews, resource_reviews: ResourceReviews,
                 clock: Clock = time.time, sessions: ConsoleSessions[Approver, ConsoleSession] | None = None,
                 throttle: LoginFailures | None = None, blast_radius: BlastRadiusService | None = None,
                 rightsize: RightsizeSources | None = None) -> None:
        """`sessions`, `throttle`: the state seams (app.py passes them); None builds in-memory ones.
        `blast_radius`: the blast-radius pages (admins only; gateway.console.blast), left out without it.
        `rightsize`: what the right-sizing page reads (admins only; gateway.console.rightsize), likewise."""
        self.approvals = approvals
        self.registry = registry
        self.tasks = tasks
        self.store = store
        self.auth = auth
        self.clock = clock
        self.sessions: ConsoleSessions[Approver, ConsoleSession] = sessions if sessions is not None else SessionStore(
            approvals.settings.console_session_ttl_s, approvals.settings.console_idle_s, clock)
        self.throttle: LoginFailures = throttle if throttle is not None else LoginThrottle()
        self.cookies = CookiePolicy.for_base_url(settings.base_url)
        self.origin = origin_of(settings.base_url)
        self.env = Environment(loader=PackageLoader("gateway.console", "templates"), autoescape=True,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = when
        self.env.filters["when_short"] = when_short
        static_roles = {entry.name: entry.role for entry in settings.admin.tokens}
        self.env.filters["actor"] = lambda actor: actor_label(actor, static_roles)
        self.env.filters["reveal"] = reveal_hidden  # upstream tool names may hide characters
        self.env.filters["segment"] = segment
        self.env.filters["review_label"] = review_label
        self.env.filters["review_href"] = review_href
        self.catalog = CatalogPages(reviews, resource_reviews, self.render)
        self.rightsize = RightsizePages(rightsize, self.render) if rightsize is not None else None
        self.blast = BlastPages(blast_radius, self.render) if blast_radius is not None else None
        self.stylesheet_text = resources.files("gateway.console").joinpath("static/console.css").read_text("utf-8")

    def routes(self) -> list[Route | Mount]:
        """`/console` itself, and everything under it; all wrapped so every answer has the security headers."""
        root = Router(routes=[Route(HOME, self.page(self.inbox_page), methods=["GET"])], default=self.not_found)
        pages = Router(routes=[
            Route("/", self.page(self.inbox_page), methods=["GET"]),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.action(self.logout), methods=["POST"]),
            Route("/approvals/{approval_id}", self.page(self.approval_page), methods=["GET"]),
            Route("/approvals/{approval_id}/decide", self.action(self.decide), methods=["POST"]),
            Route("/history", self.page(self.history_page), methods=["GET"]),
            Route("/agents", self.page(self.agents_page), methods=["GET"]),
            Route("/agents/{agent_id}/suspend", self.action(self.suspend), methods=["POST"]),
            Route("/tasks", self.page(self.tasks_page), methods=["GET"]),
            Route("/tasks/{task_id}/revoke", self.action(self.revoke), methods=["POST"]),
            Route("/decisions", self.page(self.decisions_page), methods=["GET"]),
            *self.catalog.routes(self.page, self.action),
            *(self.rightsize.routes(self.page) if self.rightsize is not None else []),
            *(self.blast.routes(self.page) if self.blast is not None else []),
            Route("/static/console.css", self.stylesheet, methods=["GET"]),
        ], default=self.not_found)
        return [Route(HOME, Hardened(root)), Mount(HOME, app=Hardened(pages))]

    # the wrappers every page and form goes through

    def page(self, handler: PageHandler) -> Endpoint:
        """A GET page that needs a session; without one, to the login page (and back here after)."""

        async def endpoint(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None:
                return RedirectResponse(f"{LOGIN_PATH}?next={quote(request.url.path, safe='/')}", 303)
            return await self.guarded(request, session, lambda: handler(request, session))

        return endpoint

    def action(self, handler: ActionHandler) -> Endpoint:
        """A POST form: same origin, a session, and the session's CSRF token, or nothing happens."""

        async def endpoint(request: Request) -> Response:
            session = await self.session_of(request)
            if not same_origin(request, self.origin):
                log.warning("console: refused %s %s from another origin (%s)", request.method, request.url.path,
                            client_address(request))
                return self.error_page(request, session, 403, self.origin_refusal())
            if session is None:
                return RedirectResponse(LOGIN_PATH, 303)

            async def work() -> Response:
                form = await read_form(request)
                if not tokens_match(session.csrf, form.get("csrf")):
                    raise Refused(403, "The form's security token is missing or wrong: reload the page and try "
                                       "again. Nothing was changed.")
                return await handler(request, session, form)

            return await self.guarded(request, session, work)

        return endpoint

    async def guarded(self, request: Request, session: ConsoleSession | None,
                      work: Callable[[], Awaitable[Response]]) -> Response:
        """Known refusals become a page with their status and message; anything else a plain 500 page."""
        flashes = list(session.flashes) if session is not None else []
        try:
            return await work()
        except Exception as exc:
            refused = refusal_of(exc)
            if refused is None:
                log.exception("console: %s %s failed", request.method, request.url.path)
                refused = (500, "Something went wrong in the gateway; the details are in its log.")
            return self.error_page(request, session, *refused)
        finally:
            await self.keep_flashes(session, flashes)

    async def session_of(self, request: Request) -> ConsoleSession | None:
        return await self.sessions.get(request.cookies.get(self.cookies.session_name))

    async def keep_flashes(self, session: ConsoleSession | None, before: list[str]) -> None:
        """A page showed the session's messages or an action added one: the session store keeps that."""
        if session is not None and session.flashes != before:
            await self.sessions.keep_flashes(session.id, session.flashes)

    # signing in and out

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.sign_in(request)
        next_path = safe_next(request.query_params.get("next"))
        if await self.session_of(request) is not None:
            return RedirectResponse(next_path, 303)
        return self.login_page(request, next_path)

    async def sign_in(self, request: Request) -> Response:
        address = client_address(request)
        if not same_origin(request, self.origin):
            return self.error_page(request, None, 403, self.origin_refusal())
        try:
            form = await read_form(request)
        except Refused as exc:
            return self.login_page(request, HOME, exc.status, exc.message)
        next_path = safe_next(form.get("next"))
        if not tokens_match(request.cookies.get(self.cookies.login_name), form.get("csrf")):
            return self.login_page(request, next_path, 403, "The sign-in form expired or did not come from this "
                                                            "console: try again.")
        credential = form.get("credential", "").strip()
        if not credential:
            return self.login_page(request, next_path, 400, "Paste your credential to sign in.")
        ticket = await self.throttle.attempt(address)  # counted before the credential is tried
        if ticket is None:
            response = self.login_page(request, next_path, 429, "Too many failed sign-ins from your address: "
                                                               "wait a minute and try again.")
            response.headers["Retry-After"] = str(await self.throttle.retry_after_s(address))
            return response
        try:
            person = await self.auth.person_from_token(credential)
        except AdminAuthError as exc:
            log.warning("console: sign-in from %s refused (%d): %s", address, exc.status, exc.message)
            return self.login_page(request, next_path, exc.status, f"Sign-in refused: {exc.message}.")
        await self.throttle.succeeded(address, ticket)
        try:
            return await self.signed_in(request, person, credential_expiry(credential), next_path)
        except Exception as exc:  # the session could not be kept (a fleet's Redis is down): not signed in
            log.warning("console: sign-in of %s failed: %s", person.actor, type(exc).__name__)
            return self.login_page(request, next_path, 503, "Sign-in is unavailable right now: try again shortly.")

    async def signed_in(self, request: Request, person: Approver, credential_expires_at: float | None,
                        next_path: str) -> Response:
        await self.sessions.delete(request.cookies.get(self.cookies.session_name))  # never reuse an old session id
        session = await self.sessions.create(person, credential_expires_at)
        log.info("console: %s signed in from %s", person.actor, client_address(request))
        response = RedirectResponse(next_path, 303)
        self.cookies.set_session(response, session.id, int(session.expires_at - self.clock()))
        self.cookies.clear_login(response)
        return response

    async def logout(self, request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
        await self.sessions.delete(session.id)
        log.info("console: %s signed out", session.person.actor)
        response = RedirectResponse(LOGIN_PATH, 303)
        self.cookies.clear_session(response)
        return response

    # approvals

    async def inbox_page(self, request: Request, session: ConsoleSession) -> Response:
        listed = await self.approvals.list([ApprovalState.PENDING.value], limit=INBOX_LIMIT)
        pending = [a for a in listed if a.state is ApprovalState.PENDING]  # newest first, as listed
        now = self.clock()
        rows = [InboxRow(a, self.approvals.refusal(a, session.person), self.summary(a, session.person),
                         self.approvals.is_held(a.id), time_left(a.expires_at, now)) for a in pending]
        return self.render(request, "inbox.html", session, title="Inbox", nav="inbox", rows=rows)

    def summary(self, approval: Approval, person: Approver) -> str | None:
        """The inbox's one-line argument summary; None for people who may not see the arguments."""
        if not self.approvals.may_see_arguments(approval, person):
            return None
        return argument_summary(approval.preview)

    async def approval_page(self, request: Request, session: ConsoleSession) -> Response:
        approval = await self.approvals.get(request.path_params["approval_id"])
        pending = approval.state is ApprovalState.PENDING
        refusal = self.approvals.refusal(approval, session.person) if pending else None
        visible = self.approvals.may_see_arguments(approval, session.person)
        return self.render(request, "approval.html", session, title=f"Approval {approval.id}", nav="inbox",
                           approval=approval, pending=pending, refusal=refusal,
                           held=self.approvals.is_held(approval.id),
                           preview=pretty_json(approval.preview) if visible else None,
                           decisions=await self.decisions_of(approval))

    async def decisions_of(self, approval: Approval) -> list[Any]:
        """The policy decisions of the call(s) this approval was asked for, waited on and used by."""
        query = AuditQuery(kind="decision", agent_id=approval.agent_id, tool=approval.tool,
                           since=approval.created_at - 1, limit=CALL_RECORDS_LIMIT)
        records = await self.store.audit_records(query)
        links = ApprovalLinks({d: approval.id for d in (approval.decision_id, approval.used_decision_id) if d})
        return [row for row in decision_rows(records, links) if row.approval_id == approval.id]

    async def decide(self, request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
        action = form.get("action")
        if action not in DECISIONS:
            raise Refused(400, "Choose Approve or Deny.")
        approval_id = request.path_params["approval_id"]
        decided = await self.approvals.decide(approval_id, session.person, DECISIONS[action], form.get("comment", ""))
        session.flash(f"You {decided.state.value} {approval_id}.")
        return RedirectResponse(approval_path(approval_id), 303)

    async def history_page(self, request: Request, session: ConsoleSession) -> Response:
        listed = await self.approvals.list([s.value for s in HISTORY_STATES], limit=HISTORY_LIMIT)
        return self.render(request, "history.html", session, title="History", nav="history",
                           approvals=listed)

    # agents and tasks

    async def agents_page(self, request: Request, session: ConsoleSession) -> Response:
        now = self.clock()
        rows = [(agent, agent.effective_state(now), entitlement_lines(agent.entitlement))
                for agent in self.registry.agents()]
        return self.render(request, "agents.html", session, title="Agents", nav="agents", rows=rows,
                           active=Lifecycle.ACTIVE, may_suspend=session.person.is_admin)

    async def suspend(self, request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
        require_admin(session, "suspend agents")
        agent_id = request.path_params["agent_id"]
        reason = form.get("reason", "").strip()
        agent = await self.registry.suspend(agent_id, session.person.actor, reason)
        log.warning("console: %s suspended agent %s: %s", session.person.actor, agent.id, reason)
        session.flash(f"Agent {agent.id} is suspended: its sessions, tasks and open approvals have ended.")
        return RedirectResponse(f"{HOME}/agents", 303)

    async def tasks_page(self, request: Request, session: ConsoleSession) -> Response:
        now = self.clock()  # the page shows recent tasks only: load those, not the store's whole history
        tasks = recent_tasks(await self.tasks.list(limit=TASKS_LIMIT, ended_since=now - RECENT_TASKS_S), now)
        return self.render(request, "tasks.html", session, title="Tasks", nav="tasks", tasks=tasks,
                           active=TaskState.ACTIVE, may_revoke=session.person.is_admin)

    async def revoke(self, request: Request, session: ConsoleSession, form: dict[str, str]) -> Response:
        require_admin(session, "revoke tasks")
        task = await self.tasks.revoke(request.path_params["task_id"], session.person.actor,
                                       form.get("reason", "").strip())
        log.warning("console: %s revoked task %s of agent %s", session.person.actor, task.id, task.agent_id)
        session.flash(f"Task {task.id} is revoked.")
        return RedirectResponse(f"{HOME}/tasks", 303)

    # the audit log

    async def decisions_page(self, request: Request, session: ConsoleSession) -> Response:
        records = await self.store.audit_records(AuditQuery(kind="decision", newest_first=True,
                                                            limit=DECISIONS_LIMIT))
        since = min((float(r.get("at") or 0.0) for r in records), default=0.0)
        approvals = await self.store.audit_records(AuditQuery(kind="approval", since=since, newest_first=True,
                                                              limit=APPROVAL_RECORDS_LIMIT))
        return self.render(request, "decisions.html", session, title="Decisions", nav="decisions",
                           decisions=decision_rows(records, ApprovalLinks.from_audit(approvals)))

    # rendering

    def render(self, request: Request, template: str, session: ConsoleSession | None, status_code: int = 200,
               **context: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(
            person=session.person if session is not None else None,
            csrf=session.csrf if session is not None else "",
            flashes=session.take_flashes() if session is not None else [],
            pending_count=self.approvals.last_pending_count,
            quarantined_count=self.catalog.quarantined_count(),
            nav=context.pop("nav", ""),
            **context,
        )
        return HTMLResponse(body, status_code=status_code)

    def login_page(self, request: Request, next_path: str, status: int = 200, error: str | None = None) -> Response:
        token = request.cookies.get(self.cookies.login_name) or ""
        if not 32 <= len(token) <= 128:
            token = secrets.token_urlsafe(32)  # reuse a well-formed one, so two open tabs both work
        response = self.render(request, "login.html", None, status_code=status, title="Sign in", login_csrf=token,
                               next_path=next_path, error=error, hint=LOGIN_HINT)
        self.cookies.set_login(response, token)
        return response

    def error_page(self, request: Request, session: ConsoleSession | None, status: int, message: str) -> Response:
        return self.render(request, "error.html", session, status_code=status, title=f"Error {status}",
                           status=status, message=message)

    def origin_refusal(self) -> str:
        return (f"This form was not sent from the console's own pages (expected origin {self.origin}); "
                "nothing was changed.")

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        session = await self.session_of(request)
        flashes = list(session.flashes) if session is not None else []
        response = self.error_page(request, session, 404, "There is no such console page.")
        await self.keep_flashes(session, flashes)
        await response(scope, receive, send)

    async def stylesheet(self, request: Request) -> Response:
        return Response(self.stylesheet_text, media_type="text/css")


@dataclass(frozen=True, slots=True)
class InboxRow:
    approval: Approval
    refusal: str | None  # why this person may not decide it; None when they may
    summary: str | None  # the arguments in one line; None when this person may not see them
    held: bool  # a call is waiting on it right now
    expires_in: str


def refusal_of(exc: Exception) -> tuple[int, str] | None:
    """(status, message safe to show) for the refusals the console knows; None for anything else."""
    if isinstance(exc, Refused):
        return exc.status, exc.message
    if isinstance(exc, ApprovalError | ReviewError):
        return exc.status, str(exc)
    if isinstance(exc, NotFound | TaskNotFound):
        return 404, str(exc)
    if isinstance(exc, Conflict):
        return 409, str(exc)
    if isinstance(exc, TaskEnded):
        return 409, exc.reason
    if isinstance(exc, RegistryError | TaskError):
        return 400, str(exc)
    return None
