"""What the tool-review webhook says, and the reviewed-only view of a catalog."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from gateway.catalog.model import Catalog
from gateway.console.links import tool_path
from gateway.discovery.model import ToolReview


def review_webhook_payload(review: ToolReview, base_url: str) -> dict[str, Any]:
    return {
        "type": "tool_quarantined",
        "server_id": review.server_id,
        "tool": review.exposed_name,
        "upstream_name": review.name,
        "change": review.change,
        "owner": review.owner,
        "definition_sha256": review.current_hash,
        "approved_sha256": review.approved_hash,
        "flags": [f["code"] for f in review.flags],
        "url": base_url + tool_path(review.server_id, review.name),
    }


def approved_only(catalog: Catalog) -> Catalog:
    servers = [replace(s, tools=MappingProxyType({n: t for n, t in s.tools.items() if t.approved}))
               for s in catalog.servers.values()]
    return Catalog.of(servers)
