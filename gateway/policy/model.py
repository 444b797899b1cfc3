"""The catalog-derived half of the Cedar model: generated actions, input types and entity JSON.

Everything here is computed once per catalog (or per tool schema change) so that a decision only
joins pre-serialized strings: its cost does not depend on how many tools or servers exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from gateway.catalog.model import RISK_TIERS, Catalog, ToolEntry
from gateway.json_values import JsonValue
from gateway.policy.typing_ import CedarType, cedar_string, has_escape_names, input_type, placeholder

CONTEXT_COMMON = "request: RequestInfo, approval: Approval, task: TaskInfo, chain: ChainInfo, user: UserInfo"
RESERVED_ACTIONS = ("call_tool", "get_prompt", "read_resource")


@dataclass(frozen=True, slots=True)
class ToolModel:
    entry: ToolEntry
    input_schema: Mapping[str, Any] | None
    input_type: CedarType
    uid: Mapping[str, str]
    entity_json: str  # the Tool entity; its McpServer parent is in ServerModel.entity_json
    action_json: str  # the Action entity with its groups as parents (see evaluation note in engine.py)
    placeholder_input: JsonValue  # a value of input_type for listing mode
    # context.input goes to Cedar whole, never pruned to what policies read (see context.py).
    input_whole: bool = False


@dataclass(frozen=True, slots=True)
class ServerModel:
    id: str
    entity_json: str
    prompt_action_json: str
    resource_action_json: str


@dataclass(frozen=True, slots=True)
class CatalogModel:
    tools: Mapping[str, ToolModel]
    servers: Mapping[str, ServerModel]
    schema_text: str  # Cedar schema text for the generated actions
    problems: tuple[str, ...]  # catalog names Cedar cannot model (reported as load problems)
    server_ids: tuple[str, ...]  # the servers' ids, made once (a principal's entity JSON reads them per call)


def tool_uid(tool: ToolEntry) -> dict[str, str]:
    return {"type": "Tool", "id": f"{tool.server_id}/{tool.name}"}


def tool_action(tool: ToolEntry) -> str:
    return tool.exposed_name


def prompt_action(server_id: str) -> str:
    return f"get_prompt:{server_id}"


def resource_action(server_id: str) -> str:
    return f"read_resource:{server_id}"


def build_catalog_model(catalog: Catalog, tool_schemas: Mapping[str, Mapping[str, Any] | None]) -> CatalogModel:
    servers = {
        sid: ServerModel(
            sid,
            _server_json(sid, s.owner),
            action_json(prompt_action(sid), ("get_prompt", f"server:{sid}")),
            action_json(resource_action(sid), ("read_resource", f"server:{sid}")),
        )
        for sid, s in catalog.servers.items()
    }
    tools = {name: _tool_model(tool, tool_schemas.get(name)) for name, tool in catalog.tools.items()}
    problems = tuple(
        f"catalog: tool {name!r} has the name of a built-in action group; rename or namespace it"
        for name in tools
        if name in RESERVED_ACTIONS
    )
    return CatalogModel(MappingProxyType(tools), MappingProxyType(servers), _schema_text(servers, tools), problems,
                        tuple(servers))


def _tool_model(tool: ToolEntry, schema: Mapping[str, Any] | None) -> ToolModel:
    if not isinstance(schema, Mapping):
        schema = None  # an upstream may publish any JSON as inputSchema; only an object types anything
    typed = input_type(dict(schema) if schema is not None else None)
    uid = tool_uid(tool)
    entity = {
        "uid": uid,
        "attrs": {
            "server": tool.server_id,
            "name": tool.name,
            "exposed_name": tool.exposed_name,
            "risk": tool.risk,
            "status": tool.status,  # approved, or quarantined / rejected (gateway.discovery)
            "owner": tool.owner,
            "data_classes": list(tool.data_classes),
            "egress": tool.egress,
        },
        "parents": [{"type": "McpServer", "id": tool.server_id}],
    }
    groups = ("call_tool", f"server:{tool.server_id}", f"risk:{tool.risk}")
    return ToolModel(tool, schema, typed, MappingProxyType(uid), orjson.dumps(entity).decode(),
                     action_json(tool_action(tool), groups), placeholder(typed), has_escape_names(typed))


def action_json(action: str, groups: tuple[str, ...]) -> str:
    entity = {
        "uid": {"type": "Action", "id": action},
        "attrs": {},
        "parents": [{"type": "Action", "id": g} for g in groups],
    }
    return orjson.dumps(entity).decode()


def _server_json(server_id: str, owner: str) -> str:
    entity = {"uid": {"type": "McpServer", "id": server_id}, "attrs": {"owner": owner}, "parents": []}
    return orjson.dumps(entity).decode()


def _sentinels() -> list[str]:
    """One never-requested action in each built-in group, so a policy scoped to a group stays valid
    (the validator rejects a scope no action can match) whatever tiers the catalog has today."""
    lines = []
    tool_context = f"{{ input: {{}}, {CONTEXT_COMMON} }}"
    for tier in RISK_TIERS:
        lines.append(
            f'action "sentinel:risk:{tier}" in ["call_tool", "risk:{tier}"] appliesTo '
            f"{{ principal: [Agent], resource: [Tool], context: {tool_context} }};"
        )
    for group, resource in (("get_prompt", "Prompt"), ("read_resource", "Resource")):
        lines.append(
            f'action "sentinel:{group}" in ["{group}"] appliesTo '
            f"{{ principal: [Agent], resource: [{resource}], context: {{ {CONTEXT_COMMON} }} }};"
        )
    return lines


def _schema_text(servers: Mapping[str, ServerModel], tools: Mapping[str, ToolModel]) -> str:
    lines = ["// generated from the catalog at load time", *_sentinels()]
    for sid in servers:
        group = cedar_string(f"server:{sid}")
        lines.append(f"action {group};")
        lines.append(
            f"action {cedar_string(prompt_action(sid))} in [\"get_prompt\", {group}] appliesTo "
            f"{{ principal: [Agent], resource: [Prompt], context: {{ {CONTEXT_COMMON} }} }};"
        )
        lines.append(
            f"action {cedar_string(resource_action(sid))} in [\"read_resource\", {group}] appliesTo "
            f"{{ principal: [Agent], resource: [Resource], context: {{ {CONTEXT_COMMON} }} }};"
        )
    for model in tools.values():
        if model.entry.exposed_name in RESERVED_ACTIONS or model.entry.server_id not in servers:
            continue
        groups = ", ".join(
            cedar_string(g) for g in ("call_tool", f"server:{model.entry.server_id}", f"risk:{model.entry.risk}")
        )
        lines.append(
            f"action {cedar_string(tool_action(model.entry))} in [{groups}] appliesTo {{ principal: [Agent], "
            f"resource: [Tool], context: {{ input: {model.input_type.render()}, {CONTEXT_COMMON} }} }};"
        )
    return "\n".join(lines) + "\n"
