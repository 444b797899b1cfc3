"""The aggregated view over every upstream's lists: what agents can see, and where each name goes.

A Directory is immutable and swapped whole when an upstream's lists change, so request handling
reads it without locks.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from mcp.shared.inbound import find_invalid_x_mcp_header, x_mcp_header_map

from gateway.catalog.model import Catalog, ServerEntry, ToolEntry

log = logging.getLogger("narrowgate.directory")


@dataclass(slots=True)
class Listing:
    """One upstream's lists, as it last reported them."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolView:
    entry: ToolEntry
    definition: dict[str, Any]
    param_headers: dict[tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class PromptView:
    server_id: str
    upstream_name: str
    definition: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TemplateView:
    server_id: str
    pattern: re.Pattern[str]
    definition: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Directory:
    tools: dict[str, ToolView]
    prompts: dict[str, PromptView]
    resources: dict[str, str]
    templates: tuple[TemplateView, ...]
    resource_list: list[dict[str, Any]]

    def server_for_uri(self, uri: str) -> str | None:
        server_id = self.resources.get(uri)
        if server_id is not None:
            return server_id
        for template in self.templates:
            if template.pattern.fullmatch(uri):
                return template.server_id
        return None

    def server_for_template(self, uri_template: str) -> str | None:
        for template in self.templates:
            if template.definition.get("uriTemplate") == uri_template:
                return template.server_id
        return None


EMPTY = Directory({}, {}, {}, (), [])


def build_directory(catalog: Catalog, listings: dict[str, Listing]) -> Directory:
    tools: dict[str, ToolView] = {}
    prompts: dict[str, PromptView] = {}
    resources: dict[str, str] = {}
    templates: list[TemplateView] = []
    # Catalog order, not sync order, decides who wins a collision, so the answer is stable.
    ordered = [(sid, listings[sid]) for sid in catalog.servers if sid in listings]
    for server_id, listing in ordered:
        server = catalog.servers[server_id]
        _add_tools(server, listing, tools)
        _add_prompts(server, listing, prompts)
        for resource in listing.resources:
            uri = resource.get("uri")
            if isinstance(uri, str):
                resources.setdefault(uri, server_id)
        templates.extend(
            TemplateView(server_id, template_pattern(t["uriTemplate"]), t)
            for t in listing.templates
            if isinstance(t.get("uriTemplate"), str)
        )
    return Directory(
        tools=tools,
        prompts=prompts,
        resources=resources,
        templates=tuple(templates),
        resource_list=[r for server_id, listing in ordered for r in listing.resources
                       if resources.get(r.get("uri", "")) == server_id],
    )


def _add_tools(server: ServerEntry, listing: Listing, tools: dict[str, ToolView]) -> None:
    for definition in listing.tools:
        name = definition.get("name")
        entry = server.tools.get(name) if isinstance(name, str) else None
        if entry is None:
            continue  # uncatalogued: hidden (see UpstreamPool.sync, which reports it once)
        schema = definition.get("inputSchema")
        headers = x_mcp_header_map(schema) if find_invalid_x_mcp_header(schema) is None else {}
        tools[entry.exposed_name] = ToolView(entry, {**definition, "name": entry.exposed_name}, headers)


def _add_prompts(server: ServerEntry, listing: Listing, prompts: dict[str, PromptView]) -> None:
    for definition in listing.prompts:
        name = definition.get("name")
        if not isinstance(name, str):
            continue
        exposed = server.exposed(name)
        if exposed in prompts:
            log.error("prompt %r from %s collides with another upstream's; hidden", exposed, server.id)
            continue
        prompts[exposed] = PromptView(server.id, name, {**definition, "name": exposed})


def template_pattern(uri_template: str) -> re.Pattern[str]:
    """An RFC 6570 template as a regex: simple `{x}` matches one segment, operators match any run."""
    parts = re.split(r"(\{[^}]*\})", uri_template)
    regex = "".join(
        ("[^/?#]+" if part[1:2].isalnum() or part[1:2] == "_" else ".*") if part.startswith("{")
        else re.escape(part)
        for part in parts
    )
    return re.compile(regex)
