"""A STAND-IN for HashiCorp Vault, for tests: Vault cannot run on this machine (not packaged, no network).

It is not Vault. It is a small stdlib HTTP server on a free 127.0.0.1 port that implements, in the
shapes of Vault's documented HTTP API, only the requests the gateway makes:

- the token check: `X-Vault-Token` must be the configured token, else 403 `permission denied`; with a
  namespace configured (Vault Enterprise), `X-Vault-Namespace` must name it too (403 otherwise: the
  token and the paths live in that namespace);
- KV version 2 at the mount `secret`: `GET /v1/secret/data/<path>[?version=N]` (404 for a deleted or
  destroyed version), `POST|PUT /v1/secret/data/<path>` with `{"data": ..., "options": {"cas": N}}`
  (400 `check-and-set parameter did not match the current version` on a lost race),
  `GET /v1/secret/metadata/<path>`, `POST|PUT /v1/secret/metadata/<path>` with
  `{"delete_version_after": "<Go duration>"}` (each version written from then on gets a FUTURE
  `deletion_time`, created + that duration, and counts as deleted only once that time has come, as
  Vault does), `POST|PUT /v1/secret/delete/<path>` and `.../destroy/<path>` with `{"versions": [...]}`;
- a dynamic-secrets role (like the database engine's `database/creds/<role>`): `GET /v1/<role path>`
  answers `{"lease_id", "lease_duration", "renewable", "data": {"username", "password"}}`;
- `PUT /v1/sys/leases/renew` `{"lease_id", "increment"}` (the new TTL is the increment, capped by the
  role's max TTL; a role's `renew_floor_s` makes it grant more than a shorter increment, as some engines
  do; 400 for an expired or revoked lease) and `PUT /v1/sys/leases/revoke` `{"lease_id"}`
  (204, also for a lease it does not know, as Vault does);
- leases expire: a credential is valid from its lease until its expiry or revocation.

Beside Vault's API, one stand-in-only endpoint plays the database the role's credentials are for:
`POST /standin/database/login` `{"username", "password"}` -> 200 if that leased credential is live
now, 401 otherwise. Test upstreams call it to check what the gateway injected.

`stop()` takes it down (the port stops accepting connections); `start()` brings it back on the same port.
Test controls (not Vault's API; Vault can be slow): `issue_gate` / `revoke_gate` (threading.Events, open by
default) hold lease requests / revocations while cleared, `kv_answer_gate` holds the answer to a KV read
(already read and in `seen`) while cleared, `arrived` lists the paths of requests that came in
(before any hold), and `writes_after_metadata[path] = n` plays another writer that adds a version right
after each of the next n metadata reads of `path`.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KV_MOUNT = "secret"
DURATION = re.compile(r"(\d+)([hms])")
UNIT_S = {"h": 3600, "m": 60, "s": 1}


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def seconds_of(duration: str) -> float:
    """A Go duration as Vault takes it ("1h0m0s", "90s", "0s") in seconds."""
    return float(sum(int(n) * UNIT_S[unit] for n, unit in DURATION.findall(duration)))


def go_duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}h{whole % 3600 // 60}m{whole % 60}s"


@dataclass
class KvVersion:
    data: dict[str, str]
    created: float
    deletion_time: float | None = None  # deleted from then on (a delete sets now; delete_version_after the future)
    destroyed: bool = False

    @property
    def deleted(self) -> bool:
        return self.deletion_time is not None and self.deletion_time <= time.time()

    @property
    def live(self) -> bool:
        return not self.deleted and not self.destroyed


@dataclass
class Role:
    ttl_s: float = 3600.0
    max_ttl_s: float = 86400.0
    renew_floor_s: float = 0.0  # a renewal grants at least this, whatever the increment (as some engines do)


@dataclass
class StandInLease:
    lease_id: str
    role: str
    username: str
    password: str
    issued: float
    expires: float
    revoked: float | None = None
    renewals: list[int] = field(default_factory=list)  # the increments asked for

    def live(self, now: float) -> bool:
        return self.revoked is None and now < self.expires


@dataclass
class Seen:
    method: str
    path: str
    token: str
    status: int
    body: dict[str, Any]


class VaultStandIn:
    """The stand-in (see the module docstring). Its state is read and changed by tests directly."""

    def __init__(self, token: str, kv: dict[str, dict[str, str]] | None = None,
                 roles: dict[str, Role] | None = None, namespace: str | None = None) -> None:
        self.token = token
        self.namespace = namespace
        self.kv: dict[str, dict[int, KvVersion]] = {}
        self.delete_after: dict[str, float] = {}  # path -> its metadata's delete_version_after (s; 0: never)
        for path, data in (kv or {}).items():
            self.kv_put(path, data)
        self.roles = roles or {}
        self.leases: dict[str, StandInLease] = {}
        self.seen: list[Seen] = []
        self.arrived: list[str] = []
        self.issue_gate, self.revoke_gate = threading.Event(), threading.Event()
        self.issue_gate.set()
        self.revoke_gate.set()
        self.kv_answer_gate = threading.Event()
        self.kv_answer_gate.set()
        self.writes_after_metadata: dict[str, int] = {}
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        # While down, the port stays bound but not listening: connections are refused, and no other test's
        # server can take the port meanwhile and answer in Vault's place.
        self.reserved: socket.socket | None = None

    # running

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VaultStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.handle(self, "GET")

            def do_POST(self) -> None:
                standin.handle(self, "POST")

            def do_PUT(self) -> None:
                standin.handle(self, "PUT")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        if self.reserved is not None:
            self.reserved.close()
            self.reserved = None
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Vault goes down: the port stops accepting connections (start() brings it back on the same port)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
            self.reserved = socket.socket()
            self.reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.reserved.bind(("127.0.0.1", self.port))

    # state, for tests

    def kv_put(self, path: str, data: dict[str, str], created: float | None = None) -> int:
        """Write a version of `secret/<path>` (`created` back-dates it: a secret written long ago)."""
        versions = self.kv.setdefault(path, {})
        version = max(versions, default=0) + 1
        created = time.time() if created is None else created
        after = self.delete_after.get(path, 0.0)
        versions[version] = KvVersion(dict(data), created, created + after if after else None)
        return version

    def kv_live(self, path: str) -> dict[int, dict[str, str]]:
        """version -> data of every version neither deleted nor destroyed."""
        return {v: version.data for v, version in self.kv.get(path, {}).items() if version.live}

    def leases_of(self, role: str) -> list[StandInLease]:
        with self.lock:
            return [lease for lease in self.leases.values() if lease.role == role]

    def paths_seen(self, prefix: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.startswith(prefix)]

    # the HTTP API

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        token = request.headers.get("X-Vault-Token", "")
        namespace = request.headers.get("X-Vault-Namespace")
        url = urlsplit(request.path)
        self.hold(method, url.path)
        with self.lock:
            if url.path.startswith("/standin/"):
                status, answer = self.database_login(body)
            elif token != self.token or namespace != self.namespace:
                status, answer = 403, {"errors": ["permission denied"]}
            else:
                status, answer = self.route(method, url.path.removeprefix("/v1/"), parse_qs(url.query), body)
            self.seen.append(Seen(method, url.path, token, status, body))
        if method == "GET" and url.path.startswith(f"/v1/{KV_MOUNT}/data/"):
            self.kv_answer_gate.wait()  # read (and seen) already: a slow answer brings what was read then
        payload = b"" if status == 204 else json.dumps(answer).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def hold(self, method: str, path: str) -> None:
        """The test controls: note the request, then wait while its gate is closed."""
        with self.lock:
            self.arrived.append(path)
        inner = path.removeprefix("/v1/")
        if inner in self.roles and method == "GET":
            self.issue_gate.wait()
        elif inner == "sys/leases/revoke":
            self.revoke_gate.wait()

    def route(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any],
              ) -> tuple[int, dict[str, Any]]:
        mount, _, rest = path.partition("/")
        if mount == KV_MOUNT:
            kind, _, secret_path = rest.partition("/")
            return self.kv_request(method, kind, secret_path, query, body)
        if path in self.roles and method == "GET":
            return self.issue(path)
        if path == "sys/leases/renew" and method in ("PUT", "POST"):
            return self.renew(str(body.get("lease_id") or ""), int(body.get("increment") or 0))
        if path == "sys/leases/revoke" and method in ("PUT", "POST"):
            lease = self.leases.get(str(body.get("lease_id") or ""))
            if lease is not None and lease.revoked is None:
                lease.revoked = time.time()
            return 204, {}
        return 404, {"errors": []}

    def kv_request(self, method: str, kind: str, path: str, query: dict[str, list[str]], body: dict[str, Any],
                   ) -> tuple[int, dict[str, Any]]:
        versions = self.kv.get(path)
        if kind == "metadata" and method in ("POST", "PUT"):
            self.delete_after[path] = seconds_of(str(body.get("delete_version_after") or "0s"))
            return 204, {}
        if kind == "data" and method in ("POST", "PUT"):
            current = max(versions, default=0) if versions else 0
            cas = (body.get("options") or {}).get("cas")
            if cas is not None and int(cas) != current:
                return 400, {"errors": ["check-and-set parameter did not match the current version"]}
            version = self.kv_put(path, dict(body.get("data") or {}))
            return 200, {"data": self.version_metadata(path, version)}
        if not versions:
            return 404, {"errors": []}
        if kind == "data" and method == "GET":
            version = int(query.get("version", [max(versions)])[0])
            entry = versions.get(version)
            if entry is None or not entry.live:
                return 404, {"errors": []}
            return 200, {"request_id": secrets.token_hex(8), "lease_id": "", "renewable": False, "lease_duration": 0,
                         "data": {"data": entry.data, "metadata": self.version_metadata(path, version)},
                         "wrap_info": None, "warnings": None}
        if kind == "metadata" and method == "GET":
            answer = {"data": {"current_version": max(versions), "oldest_version": min(versions),
                               "delete_version_after": go_duration(self.delete_after.get(path, 0.0)),
                               "versions": {str(v): self.version_metadata(path, v) for v in versions}}}
            if self.writes_after_metadata.get(path, 0) > 0:  # another writer, right after this read
                self.writes_after_metadata[path] -= 1
                self.kv_put(path, {**versions[max(versions)].data, "by": "another writer"})
            return 200, answer
        if kind in ("delete", "destroy") and method in ("POST", "PUT"):
            for version in body.get("versions") or []:
                entry = versions.get(int(version))
                if entry is not None and kind == "delete":
                    entry.deletion_time = time.time()
                elif entry is not None:
                    entry.destroyed = True
            return 204, {}
        return 404, {"errors": []}

    def version_metadata(self, path: str, version: int) -> dict[str, Any]:
        entry = self.kv[path][version]
        deletion = "" if entry.deletion_time is None else rfc3339(entry.deletion_time)
        return {"created_time": rfc3339(entry.created), "deletion_time": deletion, "destroyed": entry.destroyed,
                "version": version}

    def issue(self, role_path: str) -> tuple[int, dict[str, Any]]:
        role = self.roles[role_path]
        now = time.time()
        lease = StandInLease(f"{role_path}/{secrets.token_hex(12)}", role_path, f"v-token-{secrets.token_hex(6)}",
                             secrets.token_urlsafe(18), now, now + role.ttl_s)
        self.leases[lease.lease_id] = lease
        return 200, {"request_id": secrets.token_hex(8), "lease_id": lease.lease_id, "renewable": True,
                     "lease_duration": int(role.ttl_s), "data": {"username": lease.username,
                                                                 "password": lease.password},
                     "wrap_info": None, "warnings": None}

    def renew(self, lease_id: str, increment: int) -> tuple[int, dict[str, Any]]:
        lease = self.leases.get(lease_id)
        now = time.time()
        if lease is None or not lease.live(now):
            return 400, {"errors": ["lease not found or lease is not renewable"]}
        lease.renewals.append(increment)
        role = self.roles[lease.role]
        asked = float(increment) if increment > 0 else role.ttl_s
        ttl = min(max(asked, role.renew_floor_s), lease.issued + role.max_ttl_s - now)
        lease.expires = now + ttl
        return 200, {"lease_id": lease_id, "renewable": True, "lease_duration": int(ttl), "data": None}

    def database_login(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        now = time.time()
        ok = any(lease.username == body.get("username") and lease.password == body.get("password") and lease.live(now)
                 for lease in self.leases.values())
        return (200, {"ok": True}) if ok else (401, {"ok": False})
