"""Several real `narrowgate serve` replicas sharing one store and one Redis: a fleet on loopback.

Every replica has its own port and work directory but the same catalog, agents, `public_url` (so a token
minted for the fleet is good on any replica, as behind a load balancer), store URL and `cluster:` section.
Each fleet gets its own Redis key prefix, so fleets in one test run never see each other's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import Gateway, free_port


@dataclass
class Fleet:
    replicas: list[Gateway] = field(default_factory=list)
    key_prefix: str = ""

    def __iter__(self) -> Iterator[Gateway]:
        return iter(self.replicas)

    def __getitem__(self, index: int) -> Gateway:
        return self.replicas[index]

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


def start_fleet(workdir: Path, manifests: list[dict[str, Any]], *, redis_url: str, state_url: str | None = None,
                replicas: int = 2, extra_config: dict[str, Any] | None = None, **gateway_args: Any) -> Fleet:
    """`replicas` gateways on one store (default: one SQLite file they share) and one Redis.

    `public_url` is the first replica's address for all of them; `gateway_args` go to each `Gateway`
    (tokens, env, open_loopback)."""
    key_prefix = f"test-{uuid.uuid4().hex[:12]}"
    first_port = free_port()
    shared = {
        "state": state_url or f"sqlite:///{workdir / 'fleet-state.db'}",
        "public_url": f"http://127.0.0.1:{first_port}",
        **(extra_config or {}),
    }
    fleet = Fleet(key_prefix=key_prefix)
    try:
        for index in range(replicas):
            cluster = {"redis_url": redis_url, "key_prefix": key_prefix, "replica_id": f"replica-{index}"}
            replica = Gateway(workdir / f"replica-{index}", manifests, port=first_port if index == 0 else 0,
                              extra_config={**shared, "cluster": cluster}, **gateway_args)
            fleet.replicas.append(replica.start())
    except BaseException:
        fleet.stop()
        raise
    return fleet
