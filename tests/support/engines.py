"""Throwaway PostgreSQL and Redis for tests: started in a temporary directory on a free loopback port, stopped
and removed at the end. `NARROWGATE_TEST_POSTGRES_URL` / `NARROWGATE_TEST_REDIS_URL` name existing servers
instead. tests/provision.py installs the programs (Debian's `postgresql` and `redis-server`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.provision import postgres_bin_dir
from tests.support.processes import free_port

POSTGRES_URL_ENV = "NARROWGATE_TEST_POSTGRES_URL"
REDIS_URL_ENV = "NARROWGATE_TEST_REDIS_URL"
PIDS_FILE_ENV = "NARROWGATE_TEST_ENGINE_PIDS"  # when set, each started server appends "<name> <pid>" to this file
DATABASE = "narrowgate"
# initdb and postgres refuse to run as root: as root they run as this user, which Debian's package creates
POSTGRES_OS_USER = "postgres"
START_TIMEOUT_S = 30
LOG_TAIL_LINES = 5


class EngineError(RuntimeError):
    """An engine could not be started; the message is one line ending with the engine's log tail."""


@dataclass
class Engine:
    """A running engine: `url` to connect to; `process` and `directory` are None for a server named by env."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None = None
    directory: Path | None = None

    def stop(self) -> None:
        """Stop the server (a fast shutdown, then a kill) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            # PostgreSQL: SIGINT is its fast shutdown (ends the backends); Redis: SIGTERM is its shutdown
            self.process.send_signal(signal.SIGINT if self.name == "PostgreSQL" else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def postgres() -> Engine:
    """The server `NARROWGATE_TEST_POSTGRES_URL` names, else a throwaway one."""
    url = os.environ.get(POSTGRES_URL_ENV)
    return Engine("PostgreSQL", url) if url else start_postgres()


def redis() -> Engine:
    """The server `NARROWGATE_TEST_REDIS_URL` names, else a throwaway one."""
    url = os.environ.get(REDIS_URL_ENV)
    return Engine("Redis", url) if url else start_redis()


def start_postgres(port: int | None = None) -> Engine:
    """initdb into a temporary directory (trust auth, loopback only), start `postgres`, create the database."""
    try:
        return _start_postgres(port)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(f"PostgreSQL did not start: {exc}") from None


def start_redis(port: int | None = None, *options: str) -> Engine:
    """`redis-server` on 127.0.0.1 with persistence off, in a temporary directory; `options` are more of its flags."""
    try:
        return _start_redis(port, options)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(f"Redis did not start: {exc}") from None


def _start_postgres(port: int | None) -> Engine:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise EngineError("PostgreSQL did not start: no initdb and postgres (run `make test`, which installs them)")
    directory = Path(tempfile.mkdtemp(prefix="narrowgate-pg-"))
    engine = Engine("PostgreSQL", "", directory=directory)
    log = directory / "postgres.log"
    try:
        as_user = _postgres_os_user(directory)
        data = directory / "data"
        _run_logged([str(bin_dir / "initdb"), "-D", str(data), "-U", DATABASE, "--auth=trust", "--no-sync",
                     "--encoding=UTF8", "--locale=C"], log, directory, as_user)
        port = port or free_port()  # picked after initdb's second, so another process is unlikely to take it
        engine.url = f"postgresql://{DATABASE}@127.0.0.1:{port}/{DATABASE}"
        _launch_postgres(engine, port)
        _run_logged([str(bin_dir / "createdb"), "-h", str(directory), "-p", str(port), "-U", DATABASE, DATABASE],
                    log, directory, as_user)
    except BaseException:
        engine.stop()
        raise
    return engine


def stop_postgres_keeping_data(engine: Engine) -> None:
    """Stop a throwaway PostgreSQL (a fast shutdown, as an outage would end its connections) but keep its data,
    so restart_postgres() brings the same database back on the same port."""
    assert engine.process is not None and engine.directory is not None
    engine.process.send_signal(signal.SIGINT)
    engine.process.wait(timeout=15)
    (engine.directory / "data" / "postmaster.pid").unlink(missing_ok=True)


def restart_postgres(engine: Engine) -> None:
    """Start a PostgreSQL stopped by stop_postgres_keeping_data() again, on its port, with its data."""
    port = int(engine.url.rsplit(":", 1)[1].split("/", 1)[0])
    _launch_postgres(engine, port)


def _launch_postgres(engine: Engine, port: int) -> None:
    """Run `postgres` on engine.directory's data, on `port`, and wait until it accepts connections."""
    assert engine.directory is not None
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    data, log = engine.directory / "data", engine.directory / "postgres.log"
    with log.open("ab") as out:
        engine.process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-k", str(engine.directory), "-h", "127.0.0.1",
             "-p", str(port), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=out, stderr=subprocess.STDOUT, cwd=engine.directory, **_postgres_os_user(engine.directory))
    _record_pid(engine)
    _wait(lambda: _postgres_ready(data), engine.process, "PostgreSQL", log)


def _start_redis(port: int | None, options: tuple[str, ...] = ()) -> Engine:
    program = shutil.which("redis-server")
    if program is None:
        raise EngineError("Redis did not start: no redis-server on PATH (run `make test`, which installs it)")
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="narrowgate-redis-"))
    engine = Engine("Redis", f"redis://127.0.0.1:{port}/0", directory=directory)
    log = directory / "redis.log"
    try:
        with log.open("ab") as out:
            engine.process = subprocess.Popen(
                [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(directory), "--daemonize", "no", *options],
                stdout=out, stderr=subprocess.STDOUT, cwd=directory)
        _record_pid(engine)
        _wait(lambda: _redis_ready(port), engine.process, "Redis", log)
    except BaseException:
        engine.stop()
        raise
    return engine


def _record_pid(engine: Engine) -> None:
    """For tests/test_engines.py: which servers a pytest run started, however briefly they ran."""
    path = os.environ.get(PIDS_FILE_ENV)
    if path and engine.process is not None:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{engine.name} {engine.process.pid}\n")


def _postgres_os_user(directory: Path) -> dict[str, Any]:
    """Popen arguments that run PostgreSQL's programs as POSTGRES_OS_USER when we are root (owning `directory`)."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        raise EngineError(f"PostgreSQL did not start: running as root needs the `{POSTGRES_OS_USER}` user "
                          "(Debian's postgresql package creates it)") from None
    os.chown(directory, account.pw_uid, account.pw_gid)
    # setuid in the child, not `runuser`: the pid we hold is then the postmaster's own, so signals reach it
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _run_logged(args: list[str], log: Path, cwd: Path, as_user: dict[str, Any]) -> None:
    with log.open("ab") as out:
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, timeout=START_TIMEOUT_S,
                              check=False, **as_user)
    if done.returncode != 0:
        raise EngineError(f"PostgreSQL did not start: `{Path(args[0]).name}` exited {done.returncode}: "
                          f"{log_tail(log)}")


def _wait(ready: Any, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(f"{name} did not start: it exited {process.returncode}: {log_tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise EngineError(f"{name} did not start: not accepting connections after {START_TIMEOUT_S} s: {log_tail(log)}")


def _postgres_ready(data: Path) -> bool:
    """postmaster.pid's 8th line is `ready` once the server accepts connections (PostgreSQL 10+)."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def log_tail(log: Path) -> str:
    """The last lines of an engine's log, joined into one line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return " | ".join(lines[-LOG_TAIL_LINES:]) or "empty log"
