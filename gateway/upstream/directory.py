"""The aggregated view over every upstream's lists: what agents can see, and where each name goes.

A Directory is immutable and swapped whole when an upstream's lists change, so request handling
reads it without locks.

Resource routing is decided on canonical URIs (gateway.policy.paths), and only approved resources
and templates take part (gateway.discovery.resources reviews them). The rule is deterministic and
independent of sync order:
- a URI that an approved template of server A matches is served by A alone, whoever else lists it;
- a URI that templates of two servers match, or that two servers list exactly (and no template
  claims), is served by nobody;
- otherwise the one server listing it exactly serves it.
A template must begin with a literal scheme (`notes://...`), so none can claim every URI.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mcp.shared.inbound import find_invalid_x_mcp_header, x_mcp_header_map

from gateway.catalog.model import Catalog, ServerEntry, ToolEntry
from gateway.policy.paths import CanonicalizationError, canonical_path

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
    # The upstream's own definition this view was made from: the next rebuild reuses the view when
    # the upstream lists the same definition again (no header analysis of thousands of schemas).
    upstream: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


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
class ResourceView:
    """An exact resource as one upstream lists it."""

    server_id: str
    uri: str  # the upstream's own spelling (canonically equal to the key it is filed under)
    definition: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResourceRoute:
    server_id: str
    upstream_uri: str  # what goes upstream: its own listed spelling, or the canonical URI


@dataclass(frozen=True, slots=True)
class Withheld:
    """A URI the gateway knows but lets nobody serve, and why (audited when an agent asks for it)."""

    reason: str  # for the agent: no server ids
    detail: str = ""  # for logs and the audit record

    @property
    def why(self) -> str:
        return self.detail or self.reason


CLAIMED_TWICE = "claimed by more than one upstream"
AWAITING_REVIEW = "awaiting review"


# (server id, "resource" | "template", canonical URI | uriTemplate) -> approved | quarantined | rejected
ResourceStatus = Callable[[str, str, str], str]
SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")


def approve_all(server_id: str, kind: str, key: str) -> str:
    return "approved"


@dataclass(frozen=True, slots=True)
class Directory:
    tools: dict[str, ToolView]
    prompts: dict[str, PromptView]
    resources: dict[str, tuple[ResourceView, ...]]  # canonical URI -> approved listings of it
    templates: tuple[TemplateView, ...]  # approved
    resource_list: list[ResourceView]  # what resources/list may show: approved and routed to its lister
    withheld: dict[str, str] = field(default_factory=dict)  # canonical URI -> why nobody serves it
    held_templates: tuple[TemplateView, ...] = ()  # awaiting review

    def route(self, canonical_uri: str) -> ResourceRoute | Withheld | None:
        """Who serves a canonical URI (see the module's rule); Withheld if nobody may, None if unknown."""
        owners = sorted({t.server_id for t in self.templates if t.pattern.fullmatch(canonical_uri)})
        listed = self.resources.get(canonical_uri, ())
        if len(owners) > 1:
            return Withheld(CLAIMED_TWICE, f"the templates of {' and '.join(owners)} both claim it")
        if owners:
            own = next((view for view in listed if view.server_id == owners[0]), None)
            return ResourceRoute(owners[0], own.uri if own is not None else canonical_uri)
        if len(listed) > 1:
            return Withheld(CLAIMED_TWICE, f"{' and '.join(sorted(v.server_id for v in listed))} both list it")
        if listed:
            return ResourceRoute(listed[0].server_id, listed[0].uri)
        reason = self.withheld.get(canonical_uri)
        if reason is None and any(t.pattern.fullmatch(canonical_uri) for t in self.held_templates):
            reason = AWAITING_REVIEW
        return Withheld(reason) if reason is not None else None

    def server_for_template(self, uri_template: str) -> str | None:
        for template in self.templates:
            if template.definition.get("uriTemplate") == uri_template:
                return template.server_id
        return None


EMPTY = Directory({}, {}, {}, (), [])


def build_directory(catalog: Catalog, listings: dict[str, Listing],
                    resource_status: ResourceStatus = approve_all, previous: Directory | None = None) -> Directory:
    """The directory for these listings; tool views of `previous` whose entry and upstream definition
    are unchanged are reused, so a change to one tool costs one tool's analysis."""
    tools: dict[str, ToolView] = {}
    earlier = previous.tools if previous is not None else {}
    prompts: dict[str, PromptView] = {}
    # Catalog order, not sync order, decides who wins a collision, so the answer is stable.
    ordered = [(sid, listings[sid]) for sid in catalog.servers if sid in listings]
    for server_id, listing in ordered:
        server = catalog.servers[server_id]
        _add_tools(server, listing, tools, earlier)
        _add_prompts(server, listing, prompts)
    resources, withheld = _resources(ordered, resource_status)
    templates, held = _templates(ordered, resource_status)
    directory = Directory(tools, prompts, resources, tuple(templates), [], withheld, tuple(held))
    routed = []
    for canonical, views in resources.items():
        route = directory.route(canonical)
        for view in views:
            if route == ResourceRoute(view.server_id, view.uri):
                routed.append(view)
            elif isinstance(route, Withheld):
                log.error("resource %s of %s is served by nobody: %s", view.uri, view.server_id, route.why)
            elif route is not None:
                log.error("resource %s of %s is inside a template of %s, which serves it", view.uri,
                          view.server_id, route.server_id)
    return Directory(tools, prompts, resources, tuple(templates), routed, withheld, tuple(held))


def canonical_uri(uri: object) -> str | None:
    """The canonical form of a URI, or None if it has no single meaning (or is not a string)."""
    if not isinstance(uri, str):
        return None
    try:
        return canonical_path(uri)
    except CanonicalizationError:
        return None


def _resources(ordered: list[tuple[str, Listing]],
               status: ResourceStatus) -> tuple[dict[str, tuple[ResourceView, ...]], dict[str, str]]:
    resources: dict[str, tuple[ResourceView, ...]] = {}
    withheld: dict[str, str] = {}
    for server_id, listing in ordered:
        for definition in listing.resources:
            canonical = canonical_uri(definition.get("uri"))
            if canonical is None:
                log.error("resource %r of %s has no single meaning; never served", definition.get("uri"), server_id)
                continue
            state = status(server_id, "resource", canonical)
            if state != "approved":
                withheld.setdefault(canonical, AWAITING_REVIEW if state == "quarantined" else "rejected in review")
                continue
            views = resources.get(canonical, ())
            if all(view.server_id != server_id for view in views):  # a server listing it twice counts once
                resources[canonical] = (*views, ResourceView(server_id, definition["uri"], definition))
    return resources, withheld


def _templates(ordered: list[tuple[str, Listing]],
               status: ResourceStatus) -> tuple[list[TemplateView], list[TemplateView]]:
    approved: list[TemplateView] = []
    held: list[TemplateView] = []
    for server_id, listing in ordered:
        for definition in listing.templates:
            uri_template = definition.get("uriTemplate")
            if not isinstance(uri_template, str) or not SCHEME_PREFIX.match(uri_template):
                log.error("resource template %r of %s does not start with a scheme; never served",
                          uri_template, server_id)
                continue
            view = TemplateView(server_id, template_pattern(uri_template), definition)
            state = status(server_id, "template", uri_template)
            if state == "approved":
                approved.append(view)
            elif state == "quarantined":
                held.append(view)
    return approved, held


def _add_tools(server: ServerEntry, listing: Listing, tools: dict[str, ToolView],
               earlier: dict[str, ToolView]) -> None:
    for definition in listing.tools:
        name = definition.get("name")
        entry = server.tools.get(name) if isinstance(name, str) else None
        if entry is None:
            continue  # uncatalogued: hidden (see UpstreamPool.sync, which reports it once)
        known = earlier.get(entry.exposed_name)
        if (known is not None and (known.entry is entry or known.entry == entry)
                and (known.upstream is definition or known.upstream == definition)):
            tools[entry.exposed_name] = known if known.entry is entry else replace(known, entry=entry)
            continue
        schema = definition.get("inputSchema")
        headers = x_mcp_header_map(schema) if find_invalid_x_mcp_header(schema) is None else {}
        tools[entry.exposed_name] = ToolView(entry, {**definition, "name": entry.exposed_name}, headers, definition)


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
