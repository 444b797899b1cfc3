"""What the review webhooks say (a tool, resource or template entering quarantine), and the
reviewed-only view of a catalog.

Payloads name what is waiting and where to review it, never what a resource holds: the gateway never
reads a resource to review it, and the webhook's receiver need not be trusted with it.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from gateway.catalog.model import Catalog
from gateway.discovery.model import CAP_REACHED, ResourceReview, ToolReview
from gateway.links import resource_path, tool_path


def review_webhook_payload(review: ToolReview, base_url: str) -> dict[str, Any]:
    """A tool quarantined, or (`tool_review_cap_reached`, naming the first refused tool) its server at
    discovery.max_pending_reviews_per_server: new names it lists are refused until some are reviewed."""
    capped = any(flag["code"] == CAP_REACHED for flag in review.flags)
    return {
        "type": "tool_review_cap_reached" if capped else "tool_quarantined",
        "server_id": review.server_id,
        "tool": review.exposed_name,
        "upstream_name": review.name,
        **_review_facts(review, base_url + tool_path(review.server_id, review.name)),
    }


def resource_webhook_payload(review: ResourceReview, base_url: str) -> dict[str, Any]:
    """A resource (`uri`) or template (`uri_template`) quarantined; `id` is what the CLI and admin API take."""
    return {
        "type": "resource_quarantined",
        "server_id": review.server_id,
        "kind": review.kind,
        "uri" if review.kind == "resource" else "uri_template": review.key,
        "id": review.id,
        **_review_facts(review, base_url + resource_path(review.id)),
    }


def _review_facts(review: ToolReview | ResourceReview, url: str) -> dict[str, Any]:
    return {
        "change": review.change,
        "owner": review.owner,
        "definition_sha256": review.current_hash,
        "approved_sha256": review.approved_hash,
        "flags": [f["code"] for f in review.flags],
        "url": url,
    }


def approved_only(catalog: Catalog) -> Catalog:
    servers = [replace(s, tools=MappingProxyType({n: t for n, t in s.tools.items() if t.approved}))
               for s in catalog.servers.values()]
    return Catalog.of(servers)
