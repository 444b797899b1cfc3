"""Two deployments sharing one Redis under different `cluster.key_prefix`es never see each other's state
(issue 15, bad input): the same agent id is counted, revoked and told separately in each."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.changes import SHIFTING_SERVER
from tests.support.fleet import Fleet, start_fleet
from tests.support.processes import start_listening, stop
from tests.test_cluster_limits import PER_AGENT, calls_until_limited, executed, fleet_config, fleet_manifests, token_for

AGENT = "shared-name"


@pytest.fixture(scope="module")
def upstream_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefix-upstream") / "calls.jsonl"


@pytest.fixture(scope="module")
def upstream(upstream_log: Path) -> Iterator[int]:
    process, port = start_listening([sys.executable, str(SHIFTING_SERVER), "--port", "0"],
                                    env={"SHIFTING_LOG": str(upstream_log)})
    yield port
    stop(process)


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory, upstream: int, redis_url: str,
                postgres_url: str) -> Iterator[list[Fleet]]:
    """Two one-replica deployments on one Redis, each with its own database; start_fleet gives each its own prefix."""
    fleets: list[Fleet] = []
    try:
        for name in ("blue", "green"):
            fleets.append(start_fleet(tmp_path_factory.mktemp(name), fleet_manifests(upstream), redis_url=redis_url,
                                      postgres_url=postgres_url, replicas=1, tokens={AGENT: token_for(AGENT)},
                                      extra_config=fleet_config()))
        yield fleets
    finally:
        for fleet in fleets:
            fleet.stop()


async def test_the_same_agent_is_counted_separately_in_each_deployment(
        deployments: list[Fleet], upstream_log: Path, redis_url: str) -> None:
    blue, green = deployments
    assert blue.key_prefix != green.key_prefix
    marker_blue, marker_green = uuid.uuid4().hex, uuid.uuid4().hex
    ran_blue, _ = await calls_until_limited([blue[0].url], AGENT, marker_blue)
    ran_green, _ = await calls_until_limited([green[0].url], AGENT, marker_green)  # blue's count is not green's
    assert ran_blue == ran_green == PER_AGENT
    assert executed(upstream_log, marker_blue) == executed(upstream_log, marker_green) == PER_AGENT
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key.decode() for key in client.scan_iter(match="*", count=1000)]
    finally:
        client.close()
    ours = [k for k in keys if k.startswith((f"{blue.key_prefix}:", f"{green.key_prefix}:"))]
    assert any(k.startswith(f"{blue.key_prefix}:") for k in ours) and any(
        k.startswith(f"{green.key_prefix}:") for k in ours)
    assert not [k for k in keys if AGENT in k and k not in ours], "every key of a deployment is under its prefix"
