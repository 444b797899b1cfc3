"""Reads `tool_catalog/*.yaml` into a Catalog, reporting every problem with file and line."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gateway.catalog.model import (
    CREDENTIAL_FIELD,
    CREDENTIAL_MODES,
    NAMESPACE_SEPARATOR,
    PROTOCOL_CHOICES,
    RISK_TIERS,
    SECRET_SOURCES,
    Catalog,
    Credentials,
    HttpTransport,
    LeaseRef,
    Rotation,
    SecretRef,
    ServerEntry,
    StdioTransport,
    ToolEntry,
    Transport,
    VaultRef,
)
from gateway.catalog.yaml_lines import LinedDocument, load_lined
from gateway.file_problems import FileProblem, joined
from gateway.protocol.http_token import FRAMING_HEADERS, breaks_header, is_token

RESERVED_NAMESPACE = "narrowgate"  # narrowgate__complete_task and friends
ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,47}\Z")
NAMESPACE_PATTERN = re.compile(r"^([a-z][a-z0-9-]{0,47})?\Z")
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # RFC 3986 3.1
SERVER_KEYS = frozenset({"id", "namespace", "owner", "description", "transport", "timeout_s", "tools",
                         "credentials"})
CREDENTIAL_KEYS = frozenset({"mode", "resource", "secret", "header", "format", "env_var", "vault"})
VAULT_KEYS = frozenset({"address", "mount", "path", "field", "token_env", "token_file", "namespace", "rotate"})
LEASE_KEYS = frozenset({"address", "path", "token_env", "token_file", "namespace", "renew_increment_s"})
ROTATE_KEYS = frozenset({"every_s", "overlap_s", "length"})
TOOL_KEYS = frozenset({"name", "risk", "data_classes", "owner", "egress", "definition_sha256"})
PIN_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
GATEWAY_ENV_PREFIX = "NARROWGATE_"  # the gateway's own settings and secrets: never a child's
# How a message is framed and the connection kept: the upstream client's alone, never the catalog's.
CONNECTION_HEADERS = FRAMING_HEADERS | {"connection", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"}


CatalogProblem = FileProblem


def has_userinfo(url: str) -> bool:
    """Whether a URL (of any scheme, or none) names a user or password before its host."""
    rest = url.partition("://")[2] if "://" in url else url
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return "@" in authority


def header_name_problem(name: str) -> str | None:
    """Why `name` cannot be an upstream request header the catalog sets, if it cannot."""
    if not is_token(name):
        return f"header name {name!r} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"
    if name.lower() in CONNECTION_HEADERS:
        return f"header {name!r} frames the message or the connection: the gateway sets it, not the catalog"
    return None


class CatalogError(Exception):
    """The catalog is invalid; `problems` lists every problem found, not just the first."""

    def __init__(self, problems: list[CatalogProblem]) -> None:
        super().__init__(joined(problems))
        self.problems = problems


def load_catalog(directory: Path, environ: Mapping[str, str] | None = None, *, strict_env: bool = True) -> Catalog:
    """Load every manifest in `directory`; raise CatalogError listing all problems.

    With `strict_env=False` a `${VAR}` that is unset and has no default stays as written instead of
    being a problem: for commands that use the tools (policy) and never reach an upstream, so they
    need not be given the transports' variables.
    """
    env = dict(os.environ if environ is None else environ)
    env.setdefault("PYTHON", sys.executable)
    problems: list[CatalogProblem] = []
    if not directory.is_dir():
        raise CatalogError([CatalogProblem(directory, 0, "catalog directory does not exist")])
    servers = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        server = _load_manifest(path, env, problems, strict_env)
        if server is not None:
            servers.append(server)
    _check_across_manifests(servers, problems)
    if problems:
        raise CatalogError(problems)
    return Catalog.of(servers)


def _load_manifest(path: Path, env: dict[str, str], problems: list[CatalogProblem],
                   strict_env: bool = True) -> ServerEntry | None:
    try:
        doc = load_lined(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        problems.append(CatalogProblem(path, line, f"invalid YAML: {exc.problem}"))
        return None
    except (OSError, yaml.YAMLError) as exc:
        problems.append(CatalogProblem(path, 1, f"cannot read manifest: {exc}"))
        return None
    return _ManifestReader(path, doc, env, problems, strict_env).read()


class _ManifestReader:
    """Validates one manifest document, appending problems rather than stopping at the first."""

    def __init__(self, path: Path, doc: LinedDocument, env: dict[str, str], problems: list[CatalogProblem],
                 strict_env: bool = True):
        self.path = path
        self.doc = doc
        self.env = env
        self.strict_env = strict_env
        self.problems = problems
        self.count_before = len(problems)

    def problem(self, where: tuple[str | int, ...], message: str) -> None:
        self.problems.append(CatalogProblem(self.path, self.doc.line(where), message))

    def read(self) -> ServerEntry | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problem((), "a manifest must be a mapping with id, owner, transport and tools")
            return None
        for key in sorted(set(data) - SERVER_KEYS, key=str):
            self.problem((key,), f"unknown key {key!r}")
        server_id = self.required_str(data, ("id",))
        if server_id and not ID_PATTERN.match(server_id):
            self.problem(("id",), f"id {server_id!r} must be lowercase letters, digits and '-', starting with a letter")
        namespace = data.get("namespace", server_id)
        if not isinstance(namespace, str) or not NAMESPACE_PATTERN.match(namespace):
            self.problem(("namespace",), f"namespace {namespace!r} must be like an id, or \"\" for bare names")
            namespace = ""
        if RESERVED_NAMESPACE in (server_id, namespace):
            self.problem(("namespace",), f"{RESERVED_NAMESPACE!r} is reserved for the gateway's own tools")
        owner = self.required_str(data, ("owner",))
        description = data.get("description") or ""
        transport = self.transport(data.get("transport"))
        timeout_s = self.timeout(data.get("timeout_s", 30))
        credentials = self.credentials(data.get("credentials"), transport)
        if len(self.problems) > self.count_before or server_id is None or owner is None or transport is None:
            self.tools(data.get("tools"), server_id or "", namespace or "", owner or "")
            return None
        tools = self.tools(data.get("tools"), server_id, namespace, owner)
        if len(self.problems) > self.count_before:
            return None
        return ServerEntry(
            id=server_id,
            namespace=namespace,
            owner=owner,
            description=str(description),
            transport=transport,
            timeout_s=timeout_s,
            tools=MappingProxyType(tools),
            source=self.path,
            credentials=credentials,
        )

    def required_str(self, data: dict[str, Any], where: tuple[str | int, ...]) -> str | None:
        value = data.get(str(where[-1]))
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"{where[-1]} is required and must be a non-empty string")
            return None
        return value.strip()

    def timeout(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            self.problem(("timeout_s",), f"timeout_s must be a positive number, got {value!r}")
            return 30.0
        return float(value)

    def expand(self, value: object, where: tuple[str | int, ...]) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            if not self.strict_env:
                return match.group(0)
            self.problem(where, f"environment variable {name} is not set and has no default")
            return ""

        expanded = ENV_REFERENCE.sub(substitute, str(value))
        return self.without_nul(expanded, where)

    def without_nul(self, text: str, where: tuple[str | int, ...]) -> str:
        """Commands, paths and environment values cannot hold NUL (the OS refuses them later, loudly)."""
        if "\0" in text:
            self.problem(where, f"{'.'.join(map(str, where))} must not contain a NUL character")
            return text.replace("\0", "")
        return text

    def transport(self, raw: object) -> Transport | None:
        if not isinstance(raw, dict):
            self.problem(("transport",), "transport is required: {url: ...} or {command: ..., args: [...]}")
            return None
        if ("url" in raw) == ("command" in raw):
            self.problem(("transport",), "transport needs exactly one of url (Streamable HTTP) or command (stdio)")
            return None
        protocol = raw.get("protocol", "auto")
        if protocol not in PROTOCOL_CHOICES:
            self.problem(("transport", "protocol"), f"protocol must be one of {', '.join(PROTOCOL_CHOICES)}")
        if "url" in raw:
            return self.http_transport(raw, str(protocol))
        return self.stdio_transport(raw)

    def http_transport(self, raw: dict[str, Any], protocol: str) -> HttpTransport | None:
        url = self.expand(raw["url"], ("transport", "url"))
        unresolved = not self.strict_env and ENV_REFERENCE.search(url) is not None
        if has_userinfo(url):  # checked first: no message below may echo a URL that carries a password
            # The upstream client sends no URL credentials, and a secret in a URL ends up in logs: say so (the
            # message leaves the URL out).
            self.problem(("transport", "url"), "url must not carry credentials (user:password@): put them in "
                                               "headers or credentials")
            return None
        if not url.startswith(("http://", "https://")) and not unresolved:
            # Only the scheme is shown: the rest of the URL may hold a secret from the environment (?api_key=).
            scheme = URL_SCHEME.match(url)
            self.problem(("transport", "url"), "url must be http:// or https://, got "
                                               + (f"scheme {scheme.group(1)!r}" if scheme else "no scheme"))
            return None
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict):
            self.problem(("transport", "headers"), "headers must be a mapping")
            headers = {}
        expanded = {str(k): self.expand(v, ("transport", "headers", k)) for k, v in headers.items()}
        for name, value in expanded.items():
            self.check_header(("transport", "headers", name), name, value)
        return HttpTransport(url=url, headers=MappingProxyType(expanded), protocol=protocol)

    def check_header(self, where: tuple[str | int, ...], name: str, value: str | None) -> None:
        """A header the gateway will send upstream: a token name that does not frame the message, and a
        value without CR, LF or NUL (which would end the header early). Messages never show the value."""
        if (problem := header_name_problem(name)) is not None:
            self.problem(where, problem)
        if value is not None and breaks_header(value):
            self.problem(where, f"header {name!r} holds a line break or NUL (its value is not shown)")

    def stdio_transport(self, raw: dict[str, Any]) -> StdioTransport | None:
        command = self.expand(raw["command"], ("transport", "command"))
        args = raw.get("args") or []
        env = raw.get("env") or {}
        if not isinstance(args, list) or not isinstance(env, dict):
            self.problem(("transport",), "args must be a list and env a mapping")
            return None
        cwd_raw = raw.get("cwd")
        cwd = self.path.parent if cwd_raw is None else (self.path.parent / self.expand(cwd_raw, ("transport", "cwd")))
        return StdioTransport(
            command=command,
            args=tuple(self.expand(a, ("transport", "args", i)) for i, a in enumerate(args)),
            env=MappingProxyType({str(k): self.expand(v, ("transport", "env", k)) for k, v in env.items()}),
            cwd=cwd.resolve(),
            inherit_env=self.inherit_env(raw.get("inherit_env") or []),
        )

    def inherit_env(self, raw: object) -> tuple[str, ...]:
        """Names of gateway environment variables a stdio child may see (values are read at spawn)."""
        where: tuple[str | int, ...] = ("transport", "inherit_env")
        if not isinstance(raw, list):
            self.problem(where, "inherit_env must be a list of environment variable names")
            return ()
        names: list[str] = []
        for index, name in enumerate(raw):
            if not isinstance(name, str) or not ENV_NAME_PATTERN.match(name):
                self.problem((*where, index), f"{name!r} is not an environment variable name")
            elif name.upper().startswith(GATEWAY_ENV_PREFIX):
                self.problem((*where, index), f"{name} is the gateway's own setting; it is never passed to a child")
            else:
                names.append(name)
        return tuple(names)

    def credentials(self, raw: object, transport: Transport | None) -> Credentials:
        """How the upstream is authenticated: a per-call gateway token (HTTP default) or a vaulted secret."""
        is_http = isinstance(transport, HttpTransport)
        default = Credentials(mode="gateway-token" if is_http else "none",
                              resource=transport.url if isinstance(transport, HttpTransport) else "")
        if raw is None:
            return default
        where: tuple[str | int, ...] = ("credentials",)
        if not isinstance(raw, dict):
            self.problem(where, "credentials must be a mapping")
            return default
        for key in sorted(set(raw) - CREDENTIAL_KEYS, key=str):
            self.problem((*where, key), f"unknown credentials key {key!r}")
        mode = raw.get("mode", default.mode)
        if mode not in CREDENTIAL_MODES:
            self.problem((*where, "mode"), f"credentials.mode must be one of {', '.join(CREDENTIAL_MODES)}")
            return default
        if mode == "gateway-token" and not is_http:
            self.problem((*where, "mode"), "gateway-token needs an HTTP upstream; use secret (env_var) for stdio")
        secret = self.secret_ref(raw.get("secret"), (*where, "secret")) if mode == "secret" else None
        if secret is not None and secret.vault is not None and secret.vault.rotation is not None and not is_http:
            self.problem((*where, "secret", "vault", "rotate"), "rotate needs an HTTP upstream: a stdio child reads "
                         "its secret once, when it starts, so it would keep the retired version")
        env_var = str(raw.get("env_var") or "")
        if mode == "secret" and not is_http and not env_var:
            self.problem((*where, "env_var"), "a stdio upstream gets its secret as an environment variable")
        lease = self.lease_ref(raw, is_http) if mode == "lease" else None
        if "header" in raw:
            self.check_header((*where, "header"), str(raw["header"]), None)
        if "vault" in raw and mode != "lease":
            self.problem((*where, "vault"), "credentials.vault is for mode: lease (a KV secret goes under secret)")
        return Credentials(
            mode=mode,
            resource=self.expand(raw.get("resource", default.resource), (*where, "resource")),
            secret=secret,
            header=str(raw.get("header") or "Authorization"),
            header_format=str(raw.get("format") or "Bearer {secret}"),
            env_var=env_var,
            lease=lease,
        )

    def lease_ref(self, raw: dict[str, Any], is_http: bool) -> LeaseRef | None:
        """mode: lease: a Vault dynamic-secrets role, one credential per task, in a header (HTTP only)."""
        where: tuple[str | int, ...] = ("credentials", "vault")
        if not is_http:
            self.problem(("credentials", "mode"), "a leased credential needs an HTTP upstream: one stdio child "
                                                  "serves every task, so it cannot hold one task's credential")
        if not isinstance(raw.get("format"), str) or not CREDENTIAL_FIELD.search(raw["format"]):
            self.problem(("credentials", "format"), "mode: lease needs a format naming the leased credential's "
                                                    "fields, e.g. \"{username}:{password}\"")
        value = raw.get("vault")
        if not isinstance(value, dict):
            self.problem(where, "mode: lease needs vault: {address, path, token_env or token_file}")
            return None
        for key in sorted(set(value) - LEASE_KEYS, key=str):
            self.problem((*where, key), f"unknown vault key {key!r}")
        missing = [k for k in ("address", "path") if not value.get(k)]
        if missing:
            self.problem(where, f"credentials.vault needs {', '.join(missing)}")
            return None
        increment = value.get("renew_increment_s", 300)
        if isinstance(increment, bool) or not isinstance(increment, int | float) or not 1 <= increment <= 86400:
            self.problem((*where, "renew_increment_s"), "renew_increment_s must be a number of seconds, 1 to 86400")
            increment = 300
        token_env, token_file = self.vault_token(value, where)
        return LeaseRef(address=self.expand(value["address"], (*where, "address")).rstrip("/"),
                        path=str(value["path"]).strip("/"), token_env=token_env, token_file=token_file,
                        namespace=value.get("namespace"), renew_increment_s=float(increment))

    def vault_token(self, value: dict[str, Any], where: tuple[str | int, ...]) -> tuple[str, str]:
        """Where the gateway finds its own Vault token: an environment variable or a file, exactly one."""
        token_env, token_file = str(value.get("token_env") or ""), str(value.get("token_file") or "")
        if bool(token_env) == bool(token_file):
            self.problem(where, "name the gateway's Vault token with token_env or token_file (one of them)")
        if token_file:
            token_file = str((self.path.parent / token_file).resolve())
        return token_env, token_file

    def rotation(self, raw: object, where: tuple[str | int, ...]) -> Rotation | None:
        """secret.vault.rotate: the gateway owns this KV v2 secret and writes its new versions."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.problem(where, "rotate must be a mapping with overlap_s (and every_s for a schedule)")
            return None
        for key in sorted(set(raw) - ROTATE_KEYS, key=str):
            self.problem((*where, key), f"unknown rotate key {key!r}")
        numbers: dict[str, float] = {}
        for key, low in (("every_s", 60.0), ("overlap_s", 1.0), ("length", 16.0)):
            number = raw.get(key)
            if number is None and key != "overlap_s":
                continue
            if isinstance(number, bool) or not isinstance(number, int | float) or not low <= number <= 365 * 86400:
                self.problem((*where, key), f"rotate.{key} must be a number, at least {low:.0f}")
                return None
            numbers[key] = float(number)
        every = numbers.get("every_s")
        if every is not None and every <= numbers["overlap_s"]:
            self.problem((*where, "every_s"), "rotate.every_s must be longer than overlap_s")
        return Rotation(overlap_s=numbers["overlap_s"], every_s=every, length=int(numbers.get("length", 32)))

    def secret_ref(self, raw: object, where: tuple[str | int, ...]) -> SecretRef | None:
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in SECRET_SOURCES:
            self.problem(where, "secret must be one of {env: NAME}, {file: PATH} or {vault: {...}}")
            return None
        source, value = next(iter(raw.items()))
        if source != "vault":
            if not isinstance(value, str) or not value:
                self.problem((*where, source), f"secret.{source} must be a non-empty string")
                return None
            value = self.without_nul(value, (*where, source))
            name = value if source == "env" else str((self.path.parent / value).resolve())
            return SecretRef(source=source, name=name)
        if not isinstance(value, dict):
            self.problem((*where, "vault"), "secret.vault must be a mapping")
            return None
        for key in sorted(set(value) - VAULT_KEYS, key=str):
            self.problem((*where, "vault", key), f"unknown vault key {key!r}")
        missing = [k for k in ("address", "path", "field") if not value.get(k)]
        if missing:
            self.problem((*where, "vault"), f"secret.vault needs {', '.join(missing)}")
            return None
        token_env, token_file = self.vault_token(value, (*where, "vault"))
        vault = VaultRef(
            address=self.expand(value["address"], (*where, "vault", "address")).rstrip("/"),
            mount=str(value.get("mount") or "secret"), path=str(value["path"]), field=str(value["field"]),
            token_env=token_env, namespace=value.get("namespace"), token_file=token_file,
            rotation=self.rotation(value.get("rotate"), (*where, "vault", "rotate")),
        )
        return SecretRef(source="vault", vault=vault)

    def tools(self, raw: object, server_id: str, namespace: str, owner: str) -> dict[str, ToolEntry]:
        if not isinstance(raw, list):
            self.problem(("tools",), "tools must be a list (it may be empty)")
            return {}
        tools: dict[str, ToolEntry] = {}
        for index, item in enumerate(raw):
            tool = self.tool(item, ("tools", index), server_id, namespace, owner)
            if tool is None:
                continue
            if tool.name in tools:
                self.problem(("tools", index, "name"), f"tool {tool.name!r} is listed twice")
            tools[tool.name] = tool
        return tools

    def tool(
        self, item: object, where: tuple[str | int, ...], server_id: str, namespace: str, owner: str
    ) -> ToolEntry | None:
        if not isinstance(item, dict):
            self.problem(where, "each tool must be a mapping with name and risk")
            return None
        for key in sorted(set(item) - TOOL_KEYS, key=str):
            self.problem((*where, key), f"unknown tool key {key!r}")
        name = item.get("name")
        if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
            self.problem((*where, "name"), f"tool name {name!r} must be 1-128 of A-Z a-z 0-9 _ - .")
            return None
        risk = item.get("risk")
        if risk not in RISK_TIERS:
            self.problem((*where, "risk"), f"tool {name!r}: risk must be one of {', '.join(RISK_TIERS)}")
            return None
        classes = item.get("data_classes") or []
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            self.problem((*where, "data_classes"), f"tool {name!r}: data_classes must be a list of strings")
            return None
        egress = item.get("egress", False)
        if not isinstance(egress, bool):
            self.problem((*where, "egress"), f"tool {name!r}: egress must be true or false")
            return None
        pin = item.get("definition_sha256")
        if pin is not None and not (isinstance(pin, str) and PIN_PATTERN.fullmatch(pin)):
            self.problem((*where, "definition_sha256"),
                         f"tool {name!r}: definition_sha256 must be sha256:<64 hex digits> (narrowgate catalog pin)")
            return None
        exposed = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
        return ToolEntry(
            name=name,
            exposed_name=exposed,
            server_id=server_id,
            risk=risk,
            data_classes=tuple(classes),
            owner=str(item.get("owner") or owner),
            egress=egress,
            pin=pin,
        )


def _check_across_manifests(servers: list[ServerEntry], problems: list[CatalogProblem]) -> None:
    by_id: dict[str, ServerEntry] = {}
    by_exposed: dict[str, ServerEntry] = {}
    for server in servers:
        if server.id in by_id:
            problems.append(
                CatalogProblem(server.source, 1, f"id {server.id!r} is also used by {by_id[server.id].source}")
            )
        by_id[server.id] = server
        for tool in server.tools.values():
            other = by_exposed.get(tool.exposed_name)
            if other is not None:
                problems.append(
                    CatalogProblem(
                        server.source, 1, f"tool name {tool.exposed_name!r} collides with one from {other.source}"
                    )
                )
            by_exposed[tool.exposed_name] = server
