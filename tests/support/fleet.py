"""Several real `narrowgate serve` replicas sharing one store and one Redis: a fleet on loopback.

Every replica has its own port and work directory but the same catalog, agents, `public_url` (so a token
minted for the fleet is good on any replica, as behind a load balancer), store URL and `cluster:` section.
Each fleet gets its own Redis key prefix and its own PostgreSQL database, so fleets in one test run never
see each other's state.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import Gateway, free_port
from tests.support.store_backends import create_database, drop_database


@dataclass
class Fleet:
    replicas: list[Gateway] = field(default_factory=list)
    key_prefix: str = ""
    database_url: str | None = None  # the fleet's own PostgreSQL database, dropped by stop()

    def __iter__(self) -> Iterator[Gateway]:
        return iter(self.replicas)

    def __getitem__(self, index: int) -> Gateway:
        return self.replicas[index]

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        if self.database_url is not None:
            in_thread(drop_database(self.database_url))
            self.database_url = None


def in_thread(coroutine: Any) -> Any:
    """Run `coroutine` to its end from sync code, also when called inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def start_fleet(workdir: Path, manifests: list[dict[str, Any]], *, redis_url: str, postgres_url: str,
                replicas: int = 2, extra_config: dict[str, Any] | None = None,
                replica_cluster: Mapping[int, Mapping[str, Any]] | None = None, **gateway_args: Any) -> Fleet:
    """`replicas` gateways on one new database of the PostgreSQL server `postgres_url` and one Redis.

    `public_url` is the first replica's address for all of them; `replica_cluster` overrides a replica's
    `cluster:` keys by index (its own path to Redis); `gateway_args` go to each `Gateway` (tokens, env,
    open_loopback)."""
    key_prefix = f"test-{uuid.uuid4().hex[:12]}"
    first_port = free_port()
    fleet = Fleet(key_prefix=key_prefix, database_url=in_thread(create_database(postgres_url, migrated=True)))
    shared = {"state": fleet.database_url, "public_url": f"http://127.0.0.1:{first_port}", **(extra_config or {})}
    try:
        for index in range(replicas):
            cluster = {"redis_url": redis_url, "key_prefix": key_prefix, "replica_id": f"replica-{index}",
                       **(replica_cluster or {}).get(index, {})}
            replica = Gateway(workdir / f"replica-{index}", manifests, port=first_port if index == 0 else 0,
                              extra_config={**shared, "cluster": cluster}, **gateway_args)
            fleet.replicas.append(replica.start())
    except BaseException:
        fleet.stop()
        raise
    return fleet
