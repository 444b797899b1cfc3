"""`POST /oauth/token`: a workload token in, a task token out.

Two grants, one outcome (a new task and a task token bound to it):
- RFC 8693 token exchange: `subject_token` is the workload JWT (OIDC or JWT-SVID). With an
  `actor_token` it is delegation instead (gateway/oauth/delegation.py): `subject_token` is the
  delegating agent's task token, `actor_token` the other agent's workload JWT, and the new task is
  a child of that task, for the actor's agent.
- RFC 6749 client credentials with an RFC 7523 JWT client assertion: `client_assertion` is the
  workload JWT, so MCP clients with OAuth support get tokens on their own.

Task parameters ride along as extra form parameters: `scope` (the tools, space-separated),
`purpose` (required), `deadline` or `expires_in` (seconds from now), `budget`, `trim`.

Errors follow RFC 6749 section 5.2 (JSON `error`, `error_description`; 400, or 401 for
invalid_client). Descriptions and logs carry reasons, tool names and ids, never a token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.identity.jwks import parse_unverified
from gateway.identity.verified import TokenRejected, VerifiedToken
from gateway.identity.verifier import TokenVerifier
from gateway.oauth.delegation import JWT_TOKEN_TYPES, DelegationError, DelegationParties, is_delegation
from gateway.registry.model import Agent
from gateway.registry.service import IdentityRefused, Registry
from gateway.settings.identity import IdentitySettings
from gateway.state.budgets import BudgetUnavailable
from gateway.store.base import StoreError
from gateway.tasks.delegation import DelegationRefused
from gateway.tasks.model import AgentNotActive, Task, TaskEnded, TaskError, ToolsRefused
from gateway.tasks.service import SYSTEM_ACTOR, TaskService
from gateway.tasks.tokens import TaskTokenIssuer

log = logging.getLogger("narrowgate.oauth")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = JWT_TOKEN_TYPES
REQUESTED_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"})
TOKEN_PATH = "/oauth/token"
MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 50
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 error response; `description` is shown to the client, so it never holds secrets."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers=NO_STORE)


@dataclass(frozen=True, slots=True)
class TaskRequest:
    tools: tuple[str, ...]
    purpose: str
    deadline_s: float | None
    budget: int | None
    trim: bool


class TokenEndpoint:
    """The Starlette endpoint. `resource` is this gateway's /mcp resource (the task token audience
    and the only acceptable `resource`/`audience` parameter); `token_url` is this endpoint's own
    absolute URL, which RFC 7523 assertions may name as their audience instead.

    `assertion_verifier`, when given, is a TokenVerifier whose audience is `token_url` (see
    `settings_for_audience`); without one, client assertions must carry the resource audience.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        registry: Registry,
        tasks: TaskService,
        issuer: TaskTokenIssuer,
        *,
        resource: str,
        token_url: str,
        assertion_verifier: TokenVerifier | None = None,
        delegation: DelegationParties | None = None,
    ) -> None:
        self.verifier = verifier
        self.registry = registry
        self.tasks = tasks
        self.issuer = issuer
        self.resource = resource
        self.token_url = token_url
        self.assertion_verifier = assertion_verifier
        self.delegation = delegation  # None: actor_token is refused

    def routes(self) -> list[Route]:
        return [Route(TOKEN_PATH, self.handle, methods=["POST"])]

    async def handle(self, request: Request) -> JSONResponse:
        try:
            form = await _read_form(request)
            return await self._grant(form)
        except OAuthError as exc:
            log.info("token request refused: %s: %s", exc.error, exc.description)
            return exc.response()

    async def _grant(self, form: Mapping[str, str]) -> JSONResponse:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type == TOKEN_EXCHANGE and is_delegation(form):
            return await self._delegate(form)
        if grant_type == TOKEN_EXCHANGE:
            agent, verified = await self._exchange_subject(form)
            started_by = f"token-exchange:{verified.subject}"
            extra = {"issued_token_type": ACCESS_TOKEN_TYPE}
        elif grant_type == CLIENT_CREDENTIALS:
            agent, verified = await self._client_assertion_subject(form)
            started_by = f"client-credentials:{verified.subject}"
            extra = {}
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type[:100]!r} is not supported; use "
                             f"{TOKEN_EXCHANGE} or {CLIENT_CREDENTIALS}")
        self._check_target(form)
        # The workload identity the agent proved rides in the task token as RFC 8693 `act`, so the
        # per-call upstream tokens minted under the task name it (not the gateway) as the actor.
        actor = {"sub": verified.subject, "iss": verified.issuer}
        return await self._issue(agent, started_by, _task_request(form), extra, actor)

    async def _delegate(self, form: Mapping[str, str]) -> JSONResponse:
        """Token exchange with an actor token: a child task of the subject token's task, for the actor's agent."""
        if self.delegation is None:
            raise OAuthError("invalid_request", "delegation (actor_token) is not supported")
        if not form.get("subject_token") or not form.get("subject_token_type"):
            raise OAuthError("invalid_request", "subject_token and subject_token_type are required")
        if form["subject_token_type"] not in SUBJECT_TOKEN_TYPES:
            raise OAuthError("invalid_request", f"subject_token_type {form['subject_token_type'][:100]!r} is not "
                             f"supported; send your task token as {ACCESS_TOKEN_TYPE}")
        _check_requested(form)
        try:
            parties = await self.delegation(form)
        except DelegationError as exc:
            raise OAuthError(exc.error, exc.description) from None
        except StoreError:
            log.exception("could not record the use of an actor token")
            raise OAuthError("server_error", "the actor token's use could not be recorded; try again", 500) from None
        self._check_target(form)
        started_by = f"delegation:{parties.parent.agent_id}:{parties.actor.subject}"
        return await self._issue(parties.agent, started_by, _task_request(form),
                                 {"issued_token_type": ACCESS_TOKEN_TYPE}, parties.act(), parties.parent.id)

    # the two ways to name the agent

    async def _exchange_subject(self, form: Mapping[str, str]) -> tuple[Agent, VerifiedToken]:
        token = form.get("subject_token")
        token_type = form.get("subject_token_type")
        if not token or not token_type:
            raise OAuthError("invalid_request", "subject_token and subject_token_type are required")
        if token_type not in SUBJECT_TOKEN_TYPES:
            raise OAuthError("invalid_request", f"subject_token_type {token_type[:100]!r} is not supported; "
                             "send a JWT (urn:ietf:params:oauth:token-type:jwt)")
        _check_requested(form)
        try:
            verified = await self.verifier.verify(token)
        except TokenRejected as exc:
            raise OAuthError("invalid_grant", f"subject_token refused: {exc}") from None
        return self._agent(verified, "invalid_grant", 400), verified

    async def _client_assertion_subject(self, form: Mapping[str, str]) -> tuple[Agent, VerifiedToken]:
        assertion_type = form.get("client_assertion_type")
        assertion = form.get("client_assertion")
        if not assertion or not assertion_type:
            raise OAuthError("invalid_client", "client authentication is required: client_assertion_type "
                             f"{JWT_BEARER_ASSERTION} and client_assertion", 401)
        if assertion_type != JWT_BEARER_ASSERTION:
            raise OAuthError("invalid_client", f"client_assertion_type must be {JWT_BEARER_ASSERTION}", 401)
        try:
            verified = await self._assertion_verifier(assertion).verify(assertion)
        except TokenRejected as exc:
            raise OAuthError("invalid_client", f"client_assertion refused: {exc}", 401) from None
        # RFC 6749 2.3: the client is the one authenticated; an unknown or inactive one is invalid_client.
        agent = self._agent(verified, "invalid_client", 401)
        client_id = form.get("client_id")
        if client_id and client_id != agent.id:
            raise OAuthError("invalid_client", "client_id does not match the client assertion", 401)
        return agent, verified

    def _assertion_verifier(self, assertion: str) -> TokenVerifier:
        """Assertions addressed to the token endpoint go to the verifier for that audience.

        Routing by the unverified `aud` only picks the verifier; that verifier then checks `aud`.
        """
        if self.assertion_verifier is None:
            return self.verifier
        try:
            audience = parse_unverified(assertion).claims.get("aud")
        except TokenRejected:
            return self.verifier  # it will refuse the token with the precise reason
        audiences = audience if isinstance(audience, list) else [audience]
        return self.assertion_verifier if self.token_url in audiences else self.verifier

    def _agent(self, verified: VerifiedToken, error: str, status: int) -> Agent:
        if verified.user is not None:  # a task for the client's agent would drop the person (and their admission)
            raise OAuthError(error, "a person's client access token cannot be exchanged for a task token", status)
        try:
            return self.registry.resolve(verified.kind, verified.issuer, verified.subject, verified.claims)
        except IdentityRefused as exc:
            raise OAuthError(error, f"identity refused: {exc.reason}", status) from None

    # the task and its token

    def _check_target(self, form: Mapping[str, str]) -> None:
        for name in ("resource", "audience"):
            value = form.get(name)
            if value and value.rstrip("/") != self.resource.rstrip("/"):
                # RFC 8693 2.2.2: a target we will not issue for is invalid_target.
                raise OAuthError("invalid_target", f"{name} must be this gateway's resource {self.resource}")

    async def _issue(
        self, agent: Agent, started_by: str, request: TaskRequest, extra: Mapping[str, str],
        actor: Mapping[str, Any] | None = None, parent_id: str | None = None,
    ) -> JSONResponse:
        try:
            task = await self.tasks.start(
                agent.id, request.purpose, request.tools, started_by=started_by,
                deadline_s=request.deadline_s, budget=request.budget, trim=request.trim, parent_id=parent_id,
            )
        except ToolsRefused as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        except (AgentNotActive, DelegationRefused) as exc:
            raise OAuthError("invalid_grant", exc.message) from None
        except BudgetUnavailable:
            raise OAuthError("temporarily_unavailable", "the parent task's call count cannot be reached right now "
                             "(shared state unreachable); retry shortly", 503) from None
        except TaskError as exc:
            raise OAuthError("invalid_request", exc.message) from None
        except StoreError:
            log.exception("could not record a new task for agent %s", agent.id)
            raise OAuthError("server_error", "the task could not be recorded; try again", 500) from None
        token, expires_in = await self._token_for(task, agent, actor)
        log.info("task token issued: agent %s, task %s, %d tool(s), expires in %d s%s",
                 agent.id, task.id, len(task.tools), expires_in,
                 "" if parent_id is None else f", delegated from task {parent_id}")
        body: dict[str, Any] = {
            "access_token": token,
            **extra,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": " ".join(task.tools),
            "task_id": task.id,
        }
        return JSONResponse(body, headers=NO_STORE)


    async def _token_for(self, task: Task, agent: Agent, actor: Mapping[str, Any] | None) -> tuple[str, int]:
        """The task token; if none can be issued, the task just started is revoked (no orphans)."""
        try:
            return self.issuer.issue(task, agent, actor=actor)
        except TaskEnded as exc:
            await self.tasks.revoke(task.id, SYSTEM_ACTOR, f"no task token could be issued: {exc.reason}")
            raise OAuthError("invalid_request", f"{exc.reason}; ask for a later deadline") from None
        except Exception:
            log.exception("could not sign a task token for task %s", task.id)
            await self.tasks.revoke(task.id, SYSTEM_ACTOR, "no task token could be signed")
            raise OAuthError("server_error", "the task token could not be signed; try again", 500) from None


def settings_for_audience(settings: IdentitySettings, audience: str) -> IdentitySettings:
    """Identity settings like `settings` but for another audience: build the assertion verifier
    with `TokenVerifier(settings_for_audience(settings, token_url), http_session)` and start()/close()
    it along with the main one (it fetches the same issuers' keys on its own). People's access tokens
    are for /mcp only: their authorization servers are left out, so no such token is an assertion or an actor."""
    return replace(settings, audience=audience, authorization_servers=())


async def _read_form(request: Request) -> dict[str, str]:
    """The urlencoded body, size-capped; a repeated parameter is refused (RFC 6749 3.2)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OAuthError("invalid_request", f"the request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the request body is not valid form data") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name[:50]!r} is repeated")
        form[name] = value
    return form


def _check_requested(form: Mapping[str, str]) -> None:
    requested = form.get("requested_token_type")
    if requested and requested not in REQUESTED_TOKEN_TYPES:
        raise OAuthError("invalid_request", f"requested_token_type {requested[:100]!r} is not supported; "
                         f"this endpoint issues {ACCESS_TOKEN_TYPE}")


def _task_request(form: Mapping[str, str]) -> TaskRequest:
    scope = form.get("scope", "").split()
    if not scope:
        raise OAuthError("invalid_scope", "scope is required: the exposed names of the tools the task needs")
    purpose = form.get("purpose", "").strip()
    if not purpose:
        raise OAuthError("invalid_request", "purpose is required: say what the task is for")
    if "deadline" in form and "expires_in" in form:
        raise OAuthError("invalid_request", "give deadline or expires_in, not both")
    raw_deadline = form.get("deadline", form.get("expires_in"))
    return TaskRequest(
        tools=tuple(scope),
        purpose=purpose,
        deadline_s=None if raw_deadline is None else _positive_number(raw_deadline, "deadline"),
        budget=None if form.get("budget") in (None, "") else _positive_int(form["budget"], "budget"),
        trim=_boolean(form.get("trim", "false"), "trim"),
    )


def _positive_number(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise OAuthError("invalid_request", f"{name} must be a positive number of seconds")
    return value


def _positive_int(raw: str, name: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise OAuthError("invalid_request", f"{name} must be a positive whole number")
    return int(raw)


def _boolean(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", ""):
        raise OAuthError("invalid_request", f"{name} must be true or false")
    return value == "true"
