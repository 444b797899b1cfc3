"""The catalog version: one digest of the tools agents can be offered, as reviewed.

Replicas with the same catalog, the same reviews and the same upstream definitions report the same
version (in /healthz and the `narrowgate.versions` metric); approving or quarantining a tool, or an
upstream changing a tool's definition, changes it. It covers every catalogued tool (exposed name,
server, upstream name, review status, risk, data classes, egress) and the digest of the definition
agents are shown for each tool offered now (empty for one not offered: quarantined, rejected, or its
upstream down).
"""

from __future__ import annotations

import hashlib
import json

from gateway.catalog import Catalog
from gateway.upstream.directory import Directory
from gateway.upstream.pool import UpstreamPool


def catalog_version(catalog: Catalog, directory: Directory) -> str:
    rows = []
    for exposed in sorted(catalog.tools):
        entry = catalog.tools[exposed]
        view = directory.tools.get(exposed)
        rows.append([exposed, entry.server_id, entry.name, entry.status, str(entry.risk), sorted(entry.data_classes),
                     entry.egress, "" if view is None else _digest(view.definition)])
    return _digest(rows)[:16]


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class CatalogVersion:
    """The pool's catalog version, computed again only when its catalog or directory was swapped."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._of: tuple[Catalog, Directory] | None = None
        self._version = ""

    def current(self) -> str:
        catalog, directory = self.pool.catalog, self.pool.directory
        if self._of is None or self._of[0] is not catalog or self._of[1] is not directory:
            self._version = catalog_version(catalog, directory)
            self._of = (catalog, directory)
        return self._version
