"""`narrowgate serve --workers N`, what /healthz says about a replica, and refusals that are one line.

Real processes throughout: `narrowgate serve` with two workers on a real Redis (tests/support/engines.py)
and a real stdio upstream per worker; two replicas of a fleet (tests/support/fleet.py). The workers test
shows both workers answering /mcp calls (each decision's audit record names the replica that made it),
a killed worker replaced, and SIGTERM on the parent ending every process it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
import yaml
from starlette.applications import Starlette

from gateway.cluster.connection import ClusterUnavailable
from gateway.config import ConfigError, load_settings
from gateway.serving import DrainingServer, StartRefused, bind_listener
from tests.support.admin import bearer
from tests.support.clients import mcp_client
from tests.support.demo import descendants, wait_gone
from tests.support.engines import start_redis
from tests.support.fleet import Fleet, start_fleet
from tests.support.processes import (
    ADMIN_TOKEN,
    NARROWGATE,
    Gateway,
    behaviour_manifest,
    child_pids,
    free_port,
    running,
    stdio_behaviour_transport,
)

PASSWORD = "s3cret-redis-pass"


def healthz(base: str) -> dict[str, Any]:
    """/healthz over a new connection each time (urllib keeps none), so the kernel picks a worker afresh."""
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def replica_ids_seen(base: str, want: int, timeout_s: float = 20) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < want and time.monotonic() < deadline:
        try:
            seen.add(healthz(base)["replica_id"])
        except OSError:
            time.sleep(0.1)
    return seen


def audit_records(workdir: Path, config: Path) -> list[dict[str, Any]]:
    exported = subprocess.run([str(NARROWGATE), "audit", "export", "--config", str(config)], cwd=workdir,
                              capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in exported.stdout.splitlines()]


def serve_command(config: Path, *args: str) -> list[str]:
    return [str(NARROWGATE), "serve", "--config", str(config), *args]


def live_workers(parent: int, want: int, timeout_s: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = child_pids(parent)
        if len(workers) == want and all(descendants(pid) for pid in workers):  # each with its upstream child
            return workers
        time.sleep(0.1)
    raise AssertionError(f"expected {want} workers with upstreams under {parent}, found {child_pids(parent)}")


async def call_echo(url: str, text: str) -> None:
    # 2026-07-28: no session, so any worker can answer any request (shared sessions are another seam's work)
    async with mcp_client(url, "token-agent-a", "2026-07-28") as client:
        result = await client.call_tool("w__echo", {"text": text})
        assert not result.is_error, result


@pytest.mark.timeout(180)
async def test_two_workers_answer_mcp_calls_are_replaced_when_killed_and_all_stop_on_sigterm(
        tmp_path: Path, redis_url: str) -> None:
    manifest = behaviour_manifest("w", stdio_behaviour_transport(), tools=("echo",))
    cluster = {"redis_url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:12]}"}
    gw = Gateway(tmp_path, [manifest], extra_config={"cluster": cluster}, serve_args=("--workers", "2")).start(60)
    assert gw.process is not None
    try:
        parent = gw.process.pid
        first = live_workers(parent, 2)
        ids = await asyncio.to_thread(replica_ids_seen, gw.base, 2)
        assert len(ids) == 2, ids  # two processes answer on one port
        for n in range(16):  # fresh connections: the kernel spreads them over both workers' sockets
            await call_echo(gw.url, f"call {n}")
        records = await asyncio.to_thread(audit_records, tmp_path, tmp_path / "gateway.yaml")
        deciders = {r["detail"].get("replica") for r in records if r["kind"] == "decision" and r["tool"] == "w__echo"}
        assert deciders == ids, (deciders, ids)

        victim = first[0]
        upstream_of_victim = [pid for pid, _ in descendants(victim)]
        os.kill(victim, signal.SIGKILL)
        assert not wait_gone(upstream_of_victim, timeout_s=15), "a killed worker's upstream child outlived it"
        replaced = live_workers(parent, 2)
        assert victim not in replaced and gw.process.poll() is None
        assert "exited" in gw.log_text() or "killed by SIGKILL" in gw.log_text()
        await call_echo(gw.url, "after the replacement")

        everything = [pid for pid, _ in descendants(parent)]
        assert len(everything) >= 4, everything  # two workers, each with its stdio upstream
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(timeout=40) == 0, gw.log_text()[-3000:]
    finally:
        gw.stop()
    assert not wait_gone(everything, timeout_s=15), "outlived the gateway"
    assert not [pid for pid in everything if running(pid)]
    log = gw.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert log.count("SIGTERM received: stopping 2 worker(s)") == 1
    stopped = "\n".join(line for line in log.splitlines() if " DEBUG " not in line)
    # Each worker serving at the end drained and said so (the killed one had no chance to).
    assert log.count("SIGTERM received: stopping (new connections refused") == 2, stopped
    assert log.count("audit log flushed; upstreams stopped") == 2, stopped


@pytest.mark.timeout(120)
def test_a_killed_supervisor_leaves_no_worker_and_no_upstream_behind(tmp_path: Path, redis_url: str) -> None:
    manifest = behaviour_manifest("w", stdio_behaviour_transport(), tools=("echo",))
    cluster = {"redis_url": redis_url, "key_prefix": f"test-{uuid.uuid4().hex[:12]}"}
    gw = Gateway(tmp_path, [manifest], extra_config={"cluster": cluster}, serve_args=("--workers", "2")).start(60)
    assert gw.process is not None
    try:
        live_workers(gw.process.pid, 2)
        everything = [pid for pid, _ in descendants(gw.process.pid)]
        gw.process.kill()  # no clean-up code runs in the supervisor: Linux tells each worker (PDEATHSIG)
        gw.process.wait(timeout=10)
        assert not wait_gone(everything, timeout_s=20), "outlived a SIGKILLed supervisor"
    finally:
        gw.stop()


# --- refusals: one line, exit 2 ----------------------------------------------------------------------


def minimal_config(tmp_path: Path, **extra: Any) -> Path:
    config = {"listen": f"127.0.0.1:{free_port()}", "catalog": str(tmp_path / "catalog"),
              "policies": str(Path(__file__).resolve().parents[1] / "cedar"),
              "state": f"sqlite:///{tmp_path / 'state.db'}", **extra}
    (tmp_path / "catalog").mkdir(exist_ok=True)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def refused(command: list[str]) -> str:
    """The one line `command` printed when it refused to start with exit code 2."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip()


@pytest.mark.parametrize("where", ["config", "flag"])
def test_more_than_one_worker_without_redis_is_refused_in_one_line(tmp_path: Path, where: str) -> None:
    config = minimal_config(tmp_path, **({"workers": 3} if where == "config" else {}))
    line = refused(serve_command(config, *(["--workers", "3"] if where == "flag" else [])))
    assert line.startswith("narrowgate: refusing to start: 3 workers need cluster.redis_url"), line


def test_more_than_one_worker_on_a_private_memory_store_is_refused(tmp_path: Path, redis_url: str) -> None:
    config = minimal_config(tmp_path, state="sqlite:///:memory:", cluster={"redis_url": redis_url})
    line = refused(serve_command(config, "--workers", "2"))
    assert line == ("narrowgate: refusing to start: 2 workers need a store they share: sqlite:///:memory: is "
                    "private to each process"), line


def test_the_flag_overrides_the_config(tmp_path: Path) -> None:
    config = minimal_config(tmp_path, workers=4)
    assert "4 workers need" in refused(serve_command(config))
    assert "2 workers need" in refused(serve_command(config, "--workers", "2"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unreachable_redis_is_refused_in_one_line_without_its_password(tmp_path: Path, workers: str) -> None:
    port = free_port()  # nothing listens there
    config = minimal_config(tmp_path, cluster={"redis_url": f"redis://user:{PASSWORD}@127.0.0.1:{port}/0"})
    line = refused(serve_command(config, "--workers", workers))
    assert line == f"narrowgate: refusing to start: cannot reach Redis at redis://127.0.0.1:{port}/0: ConnectionError"
    assert PASSWORD not in line


def test_a_redis_that_may_evict_keys_is_refused_in_one_line(tmp_path: Path) -> None:
    """Evicted rate windows, budgets or used-approval marks would fail open."""
    redis = start_redis(None, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    try:
        config = minimal_config(tmp_path, cluster={"redis_url": redis.url})
        line = refused(serve_command(config))
    finally:
        redis.stop()
    assert line.startswith(f"narrowgate: refusing to start: Redis at {redis.url} may evict keys (maxmemory 67108864, "
                           "maxmemory-policy allkeys-lru)"), line
    assert line.endswith("set maxmemory-policy noeviction"), line


def test_a_refusal_raised_while_the_app_starts_is_one_line_not_a_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """Redis gone between the pre-flight check and the lifespan: the server run ends with StartRefused."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        raise ClusterUnavailable("cannot reach Redis at redis://127.0.0.1:1/0: ConnectionError")
        yield

    async def no_drain() -> None:
        return None

    config = uvicorn.Config(Starlette(lifespan=lifespan), lifespan="on", log_level="warning")
    listener = bind_listener("127.0.0.1", 0)
    with listener, pytest.raises(StartRefused, match=re.escape("cannot reach Redis at redis://127.0.0.1:1/0")):
        DrainingServer(config, on_stop=no_drain, refusals=(ClusterUnavailable,)).run(sockets=[listener])
    output = capfd.readouterr()
    assert "Traceback" not in output.err + output.out and "startup failed" not in output.err, output.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers: 0\n", "workers must be a whole number from 1 to 64, got 0"),
        ("workers: x\n", "workers must be a whole number from 1 to 64, got 'x'"),
        ("workers: 65\n", "workers must be a whole number from 1 to 64"),
        ("workers: true\n", "workers must be a whole number"),
        ("cluster: {key_prefix: 'has space'}\n", "cluster.key_prefix must be 1-64 characters"),
        ("cluster: {key_prefix: 'a*'}\n", "cluster.key_prefix must be 1-64 characters"),
        ("cluster: {key_prefix: 'ng:notices'}\n", "cluster.key_prefix must be 1-64 characters"),
        ("cluster: {replica_id: 'r/1'}\n", "cluster.replica_id must be 1-64 characters"),
        (f"cluster: {{redis_url: 'http://u:{PASSWORD}@h:6379/0'}}\n", "must be a redis://, rediss:// or unix:// URL"),
        ("cluster: {redis_url: 'redis://h:notaport/0'}\n", "cluster.redis_url has an invalid port"),
        ("cluster: {redis_url: 'localhost:6379'}\n", "must be a redis://, rediss:// or unix:// URL"),
        ("cluster: {colour: blue}\n", "colour"),
        ("cluster: [redis]\n", "cluster must be a mapping"),
    ],
)
def test_bad_workers_and_cluster_settings_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refusal:
        load_settings(path, environ={})
    assert message in str(refusal.value)
    assert PASSWORD not in str(refusal.value)


def test_a_bad_cluster_section_stops_serve_in_one_line_without_the_password(tmp_path: Path) -> None:
    config = minimal_config(tmp_path, cluster={"redis_url": f"http://u:{PASSWORD}@127.0.0.1:6379/0"})
    line = refused(serve_command(config))
    assert "cluster.redis_url must be a redis://, rediss:// or unix:// URL, got scheme 'http'" in line
    assert PASSWORD not in line


@pytest.mark.parametrize("value", ["0", "x", "65"])
def test_a_bad_workers_flag_is_refused(tmp_path: Path, value: str) -> None:
    result = subprocess.run(serve_command(minimal_config(tmp_path), "--workers", value), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert f"--workers: must be a whole number from 1 to 64, got '{value}'" in result.stderr


# --- /healthz and the versions metric across two replicas ---------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str, behaviour_http: int) -> Any:
    manifest = behaviour_manifest("v", {"url": f"http://127.0.0.1:{behaviour_http}/mcp"}, tools=("echo", "log"))
    manifest["tools"][1]["definition_sha256"] = "sha256:" + "1" * 64  # `log` differs: quarantined on sight
    started = start_fleet(tmp_path_factory.mktemp("fleet"), [manifest], redis_url=redis_url, postgres_url=postgres_url)
    yield started
    started.stop()


def versions_metric(base: str) -> str:
    text = httpx2.get(f"{base}/metrics", timeout=10).text
    return next(line for line in text.splitlines() if line.startswith("narrowgate_versions{"))


def test_healthz_names_the_replica_and_the_versions_both_replicas_agree_on(fleet: Fleet) -> None:
    first, second = (healthz(replica.base) for replica in fleet)
    assert (first["replica_id"], second["replica_id"]) == ("replica-0", "replica-1")
    assert first["policy_version"] == first["policy"]["version"] == second["policy_version"]
    assert len(first["catalog_version"]) == 16 and first["catalog_version"] == second["catalog_version"]
    for replica, health in zip(fleet, (first, second), strict=True):
        line = versions_metric(replica.base)
        assert f'narrowgate_replica="{health["replica_id"]}"' in line, line
        assert f'narrowgate_policy_version="{health["policy_version"]}"' in line
        assert f'narrowgate_catalog_version="{health["catalog_version"]}"' in line
        assert line.endswith(" 1.0"), line


async def test_decisions_record_the_replica_and_policy_version_that_made_them(fleet: Fleet) -> None:
    for replica in fleet:
        async with mcp_client(replica.url, "token-agent-a", "legacy") as client:
            assert not (await client.call_tool("v__echo", {"text": replica.base})).is_error
    records = await asyncio.to_thread(audit_records, fleet[0].workdir, fleet[0].workdir / "gateway.yaml")
    decisions = {r["detail"]["replica"]: r["detail"]["policy_version"] for r in records
                 if r["kind"] == "decision" and r["tool"] == "v__echo"}
    assert decisions == {replica["replica_id"]: replica["policy_version"]
                         for replica in (healthz(r.base) for r in fleet)}


def test_approving_a_tool_changes_the_catalog_version_on_every_replica(fleet: Fleet) -> None:
    before = {healthz(replica.base)["catalog_version"] for replica in fleet}
    assert len(before) == 1
    tool = f"{fleet[0].base}/admin/v1/catalog/tools/v/log"
    review = httpx2.get(tool, headers=bearer(ADMIN_TOKEN), timeout=10).json()
    assert review["status"] == "quarantined", review
    approved = httpx2.post(f"{tool}/approve", headers=bearer(ADMIN_TOKEN), timeout=10,
                           json={"comment": "checked", "expected_sha256": review["current_hash"]})
    assert approved.status_code == 200, approved.text
    deadline = time.monotonic() + 10  # the review reaches the other replica through Redis (within 2 s)
    after = [healthz(replica.base)["catalog_version"] for replica in fleet]
    while (after[0] in before or after[1] != after[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
        after = [healthz(replica.base)["catalog_version"] for replica in fleet]
    assert after[0] not in before and after[1] == after[0], (before, after)
    for replica in fleet:
        assert f'narrowgate_catalog_version="{after[0]}"' in versions_metric(replica.base)
