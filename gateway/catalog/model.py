"""What the catalog knows: upstream servers and the tools each may expose."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

RISK_TIERS = ("read", "write", "privileged", "destructive")
Risk = Literal["read", "write", "privileged", "destructive"]
NAMESPACE_SEPARATOR = "__"
PROTOCOL_CHOICES = ("auto", "2025-11-25", "2026-07-28")

# A field of a leased credential in `header_format` ("{username}"): checked at load, filled in per lease.
CREDENTIAL_FIELD = re.compile(r"\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True, slots=True)
class HttpTransport:
    url: str
    headers: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    protocol: str = "auto"


@dataclass(frozen=True, slots=True)
class StdioTransport:
    command: str
    args: tuple[str, ...] = ()
    env: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cwd: Path | None = None
    # Names of the gateway's own environment variables passed through to the child (e.g. HOME);
    # the child gets nothing else of the gateway's environment beyond PATH, locale and TMPDIR.
    inherit_env: tuple[str, ...] = ()


Transport = HttpTransport | StdioTransport
CREDENTIAL_MODES = ("gateway-token", "secret", "lease", "none")
SECRET_SOURCES = ("env", "file", "vault")


@dataclass(frozen=True, slots=True)
class VaultRef:
    """A HashiCorp Vault KV v2 secret: GET {address}/v1/{mount}/data/{path}, field `field`."""

    address: str
    mount: str
    path: str
    field: str
    token_env: str  # where the gateway finds its own Vault token (never in the manifest)
    namespace: str | None = None
    token_file: str = ""  # or a file holding it (token_env or token_file; the loader requires one)
    rotation: Rotation | None = None  # set when the gateway owns the secret and rotates it


@dataclass(frozen=True, slots=True)
class Rotation:
    """Scheduled rotation of a gateway-owned KV v2 secret (gateway.credentials.rotation)."""

    overlap_s: float  # how long the previous version stays valid after a new one is written
    every_s: float | None = None  # None: only on demand (CLI, admin API)
    length: int = 32  # random bytes in a new value (URL-safe base64 text)


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """A HashiCorp Vault dynamic-secrets role: GET {address}/v1/{path} leases one credential per task."""

    address: str
    path: str  # e.g. database/creds/readonly
    token_env: str = ""
    token_file: str = ""
    namespace: str | None = None
    renew_increment_s: float = 300.0  # asked for at each renewal; never past the task's deadline


@dataclass(frozen=True, slots=True)
class SecretRef:
    source: str  # env | file | vault
    name: str = ""  # env: variable name; file: path
    vault: VaultRef | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the gateway presents to the upstream on each call (never the agent's own token).

    gateway-token: a per-call RFC 9068 token minted by the gateway, audience `resource`.
    secret: a per-server secret (legacy APIs), as an HTTP header or, for stdio, an environment variable.
    lease: a credential leased from a Vault dynamic-secrets role for each task, in a header (HTTP only);
    `header_format` names the lease's data fields, e.g. "{username}:{password}".
    """

    mode: str = "gateway-token"
    resource: str = ""  # the upstream's resource URI (token audience); defaults to its URL
    secret: SecretRef | None = None
    header: str = "Authorization"
    header_format: str = "Bearer {secret}"
    env_var: str = ""
    lease: LeaseRef | None = None


@dataclass(frozen=True, slots=True)
class ToolEntry:
    """A catalogued tool: what the upstream calls it, what agents see, and who answers for it."""

    name: str
    exposed_name: str
    server_id: str
    risk: Risk
    data_classes: tuple[str, ...]
    owner: str
    # Sends data outside the organisation (mail, chat, public web): chain monitoring watches it.
    egress: bool = False
    # approved | quarantined (new or changed upstream definition, awaiting review) | rejected
    status: str = "approved"
    # The reviewed definition's hash ("sha256:..."; `definition_sha256` in the manifest, written by
    # `narrowgate catalog pin`); None: the first definition seen is taken as reviewed.
    pin: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"


@dataclass(frozen=True, slots=True)
class ServerEntry:
    """One upstream MCP server from one manifest file."""

    id: str
    namespace: str
    owner: str
    description: str
    transport: Transport
    timeout_s: float
    tools: MappingProxyType[str, ToolEntry]
    source: Path
    credentials: Credentials = field(default_factory=Credentials)

    def exposed(self, upstream_name: str) -> str:
        return f"{self.namespace}{NAMESPACE_SEPARATOR}{upstream_name}" if self.namespace else upstream_name


@dataclass(frozen=True, slots=True)
class Catalog:
    """All manifests, indexed by server id and by the tool names agents see."""

    servers: MappingProxyType[str, ServerEntry]
    tools: MappingProxyType[str, ToolEntry]

    @classmethod
    def of(cls, servers: list[ServerEntry]) -> Catalog:
        tools = {tool.exposed_name: tool for server in servers for tool in server.tools.values()}
        return cls(MappingProxyType({s.id: s for s in servers}), MappingProxyType(tools))
