"""Real processes for tests: upstream MCP servers and the gateway itself, on loopback ports."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BEHAVIOUR_SERVER = REPO / "tests" / "fixtures" / "upstreams" / "behaviour_server.py"
NARROWGATE = Path(sys.executable).parent / "narrowgate"
ADMIN_TOKEN = "admin-token-for-tests"
BEHAVIOUR_TOOLS = ("echo", "slow", "progress", "log", "crash", "whoami")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_REFUSING: list[socket.socket] = []  # kept bound for the whole test run


def closed_port() -> int:
    """A loopback port where connections are refused for the rest of the run: bound, never listening, so
    no other test's server can take it and answer in place of the dead peer a test means."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return int(sock.getsockname()[1])


class SilentPeer:
    """A loopback server that accepts connections, reads what arrives and never answers: a stuck peer (a
    collector or upstream that hangs). `requests_seen` counts connections that sent something; `still_open`
    counts those the client has not given up on."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._connections: list[socket.socket] = []
        self._seen: set[socket.socket] = set()
        self._closed: set[socket.socket] = set()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    conn, _ = sock.accept()
                    self._connections.append(conn)
                    self._selector.register(conn, selectors.EVENT_READ)
                elif sock.recv(65536):
                    self._seen.add(sock)
                else:  # the client closed its end
                    self._closed.add(sock)
                    self._selector.unregister(sock)

    @property
    def requests_seen(self) -> int:
        return len(self._seen)

    @property
    def still_open(self) -> int:
        return len(self._seen - self._closed)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=10)
        for sock in [self._listener, *self._connections]:
            sock.close()


def start_listening(cmd: list[str], env: dict[str, str] | None = None, timeout_s: float = 20) -> tuple[
    subprocess.Popen[bytes], int
]:
    """Start a server that prints `LISTENING <port>` once ready; return it and the port."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=REPO)
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.2):
            if process.poll() is not None:
                break
            continue
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        for line in buffer.decode(errors="replace").splitlines():
            if line.startswith("LISTENING "):
                return process, int(line.split()[1])
    stop(process)
    raise RuntimeError(f"{cmd} did not start: {buffer.decode(errors='replace')[-2000:]}")


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(process: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, log_text: Callable[[], str],
               timeout_s: float) -> None:
    """Poll `ready` until it says yes; if `process` exits first or time runs out (then it is stopped), raise with
    the tail of its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}: {log_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{what} did not become ready: {log_text()[-3000:]}")


def child_pids(parent: int) -> list[int]:
    """The live child processes of `parent` (from /proc; Linux)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it exited while we looked
        if int(fields[1]) == parent and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return children


def descendants(pid: int) -> dict[int, str]:
    """The live descendants of `pid` and their program names (from /proc; Linux)."""
    found: dict[int, str] = {}
    parents = [pid]
    while parents:
        for child in child_pids(parents.pop()):
            try:
                found[child] = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue  # it exited while we looked
            parents.append(child)
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def behaviour_manifest(server_id: str, transport: dict[str, Any], timeout_s: float = 30,
                       tools: tuple[str, ...] = BEHAVIOUR_TOOLS) -> dict[str, Any]:
    return {
        "id": server_id,
        "owner": "tests@example.com",
        "description": "behaviour test upstream",
        "transport": transport,
        "timeout_s": timeout_s,
        "tools": [{"name": name, "risk": "read", "data_classes": ["internal"]} for name in tools],
    }


def stdio_behaviour_transport(log_path: Path | None = None) -> dict[str, Any]:
    transport: dict[str, Any] = {"command": "${PYTHON}", "args": [str(BEHAVIOUR_SERVER), "--stdio"]}
    if log_path is not None:
        transport["env"] = {"BEHAVIOUR_LOG": str(log_path)}
    return transport


def cedar_copy(target: Path, drop: tuple[str, ...] = (), **extra_files: str) -> Path:
    """A copy of the shipped cedar/ directory, minus `drop`, plus (or replacing) policies/<name>.cedar."""
    shutil.copytree(REPO / "cedar", target)
    for name in drop:
        (target / "policies" / name).unlink()
    for name, text in extra_files.items():
        (target / "policies" / f"{name}.cedar").write_text(text, encoding="utf-8")
    return target


def static_agent(agent_id: str, servers: list[str]) -> dict[str, Any]:
    """An active agent record for a development static token, entitled to the given servers."""
    return {
        "id": agent_id,
        "owner": "tests@example.com",
        "purpose": f"test agent {agent_id}",
        "state": "active",
        "identities": [{"kind": "static", "issuer": "narrowgate", "subject": agent_id}],
        # Development tokens are bare workload tokens: calls within the entitlement need no task.
        "entitlement": {"servers": servers, "require_task": False},
    }


@dataclass
class Gateway:
    """A `narrowgate serve` subprocess with its own config and catalog directory."""

    workdir: Path
    manifests: list[dict[str, Any]]
    tokens: dict[str, str] = field(default_factory=lambda: {"agent-a": "token-agent-a"})
    extra_config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    open_loopback: bool = False
    serve_args: tuple[str, ...] = ()  # more `narrowgate serve` options, e.g. ("--workers", "2")
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        catalog = self.workdir / "catalog"
        catalog.mkdir(parents=True, exist_ok=True)
        for manifest in self.manifests:
            (catalog / f"{manifest['id']}.yaml").write_text(yaml.safe_dump(manifest))
        self.port = self.port or free_port()
        agents_file = self.workdir / "agents.yaml"
        servers = [m["id"] for m in self.manifests]
        agents_file.write_text(yaml.safe_dump({"agents": [static_agent(a, servers) for a in self.tokens]}))
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "catalog": "catalog",
            "policies": str(REPO / "cedar"),
            "state": f"sqlite:///{self.workdir / 'state.db'}",
            "agents_file": str(agents_file),
            "auth": {"static_tokens": [{"agent": a, "token": t} for a, t in self.tokens.items()]},
            "admin": {"tokens": [{"name": "test-admin", "token": ADMIN_TOKEN}]},
            # Shared test agents make many odd calls on purpose; monitoring tests turn these back on.
            "monitoring": {"kill_switch_severity": "off", "per_agent": None, "per_task": None},
            **self.extra_config,
        }
        path = self.workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout_s: float = 30) -> Gateway:
        cmd = [str(NARROWGATE), "--log-level", "debug", "serve", "--config", str(self.write_config())]
        if self.open_loopback:
            cmd.append("--open-loopback")
        cmd.extend(self.serve_args)
        self.log_path = self.workdir / "gateway.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                        cwd=self.workdir)
        wait_ready(self.process, self.healthy, "gateway", self.log_text, timeout_s)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logged(self, text: str, timeout_s: float = 20) -> bool:
        """Whether `text` reaches the gateway's log within `timeout_s` (logs are written off the event loop, so a
        line can land just after the answer that it explains)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log_text():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
