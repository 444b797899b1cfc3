"""A narrowed grant a person can review and apply: the agent's `entitlement` cut down to the tools it
used, as a patch to the agents file (comments and layout kept) or as the admin API call for an agent
managed through the API, plus a Cedar file forbidding what the entitlement alone cannot take away.

How the entitlement narrows, for granted tools (reach `allow` or `step_up`) with their use:
- `tools:` keeps the used ones;
- a server grant whose tools went unused is dropped; one with used tools becomes those tools by name,
  unless the agent read prompts or resources in the window (a server grant covers those too, and a
  decision record does not name their server): then the server stays, and its unused tools are
  forbidden in Cedar;
- a granted tool the entitlement does not cover (another permit grants it) is forbidden in Cedar.
Nothing here applies anything: the caller shows or writes the texts, a person applies them.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.registry.agents_file import parse_agents_file
from gateway.registry.model import Agent, Entitlement
from gateway.registry.spec import ID_PATTERN

CEDAR_FILE = "90-rightsize-{agent}.cedar"
ENTITLEMENT_KEYS = ("tools", "servers")


class CannotEdit(ValueError):
    """The agents file's entry has a shape the line-preserving edit does not handle."""


@dataclass(frozen=True, slots=True)
class Proposal:
    agent_id: str
    current: Entitlement
    narrowed: Entitlement
    forbidden: tuple[str, ...]  # granted, unused tools the narrowed entitlement cannot take away
    managed_by: str  # "agents_file" | "admin_api"
    agents_file: str | None = None
    base_sha256: str | None = None  # of the agents file the patch was made against
    patch: str | None = None  # unified diff of the agents file
    problem: str | None = None  # why the agents file could not be edited in place (then: the admin call)

    @property
    def changes_entitlement(self) -> bool:
        return self.narrowed != self.current

    @property
    def changed(self) -> bool:
        return self.changes_entitlement or bool(self.forbidden)

    @property
    def cedar_file(self) -> str | None:
        return CEDAR_FILE.format(agent=self.agent_id) if self.forbidden else None

    @property
    def cedar_text(self) -> str | None:
        return cedar_forbid(self.agent_id, self.forbidden) if self.forbidden else None

    @property
    def admin_call(self) -> dict[str, Any] | None:
        if not self.changes_entitlement:
            return None
        return {"method": "PATCH", "path": f"/admin/v1/agents/{self.agent_id}",
                "body": {"entitlement": entitlement_dict(self.narrowed),
                         "reason": "right-sized to the tools used (narrowgate rightsize)"}}

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "managed_by": self.managed_by,
            "current": entitlement_dict(self.current),
            "narrowed": entitlement_dict(self.narrowed),
            "removed_tools": [t for t in self.current.tools if t not in self.narrowed.tools],
            "removed_servers": [s for s in self.current.servers if s not in self.narrowed.servers],
            "added_tools": [t for t in self.narrowed.tools if t not in self.current.tools],
            "forbidden": list(self.forbidden),
            "agents_file": self.agents_file,
            "base_sha256": self.base_sha256,
            "patch": self.patch,
            "problem": self.problem,
            "admin_call": self.admin_call if self.managed_by == "admin_api" else None,
            "cedar_file": self.cedar_file,
            "cedar_text": self.cedar_text,
        }


def entitlement_dict(entitlement: Entitlement) -> dict[str, Any]:
    return {"tools": list(entitlement.tools), "servers": list(entitlement.servers),
            "require_task": entitlement.require_task}


def propose(agent: Agent, granted: Sequence[tuple[str, str, bool]], keeps_servers: bool,
            agents_text: str | None, agents_file: Path | None,
            declared: Mapping[str, Entitlement] | None = None) -> Proposal:
    """The proposal for `agent` from its granted tools as (tool, server, used). `declared`: the agents file's
    entitlements (declared_entitlements of `agents_text`), read once for a fleet rather than once per agent."""
    current = agent.entitlement
    narrowed = narrow(current, granted, keeps_servers)
    forbidden = tuple(sorted(tool for tool, server, used in granted
                             if not used and (narrowed.allows(tool, server) or not current.allows(tool, server))))
    if agents_text is None or agents_file is None:
        return Proposal(agent.id, current, narrowed, forbidden, "admin_api")
    declared = declared_entitlements(agents_text) if declared is None else declared
    if agent.id not in declared:
        return Proposal(agent.id, current, narrowed, forbidden, "admin_api")
    base = hashlib.sha256(agents_text.encode()).hexdigest()
    try:
        patched = edit_entitlement(agents_text, agent.id, narrowed, declared)
    except CannotEdit as exc:
        return Proposal(agent.id, current, narrowed, forbidden, "admin_api", str(agents_file), base,
                        problem=str(exc))
    return Proposal(agent.id, current, narrowed, forbidden, "agents_file", str(agents_file), base,
                    unified_patch(agents_text, patched, agents_file.name))


def narrow(current: Entitlement, granted: Sequence[tuple[str, str, bool]], keeps_servers: bool) -> Entitlement:
    used = [(tool, server) for tool, server, was_used in granted if was_used]
    tools = [t for t in current.tools if any(t == u for u, _ in used)]
    servers = []
    for server in current.servers:
        used_here = [tool for tool, s in used if s == server]
        if keeps_servers and used_here:
            servers.append(server)
            continue
        tools += [t for t in used_here if t not in tools]
    return Entitlement(tools=tuple(tools), servers=tuple(servers), require_task=current.require_task)


def cedar_file_name(agent_id: str) -> str:
    """The Cedar file of `agent_id`'s proposal; ValueError unless the id is an agent id (then it names no
    directory: `--write` puts the file in the policy directory and nowhere else)."""
    if not ID_PATTERN.fullmatch(agent_id):
        raise ValueError(f"{agent_id!r} is not an agent id")
    return CEDAR_FILE.format(agent=agent_id)


def cedar_forbid(agent_id: str, tools: Sequence[str]) -> str:
    """A forbid by exposed name rather than by action: a tool that later leaves the catalog leaves a policy
    that still validates (an `Action::"..."` of a tool gone would stop the whole set loading)."""
    names = ",\n    ".join(_cedar_string(t) for t in tools)
    return (f"// Generated by `narrowgate rightsize` for agent {agent_id}: tools it was granted and did not call in\n"
            f"// the window. Review before applying; delete this file to give them back.\n"
            f'@id({_cedar_string(f"rightsize-{agent_id}")})\n'
            f'@reason({_cedar_string(f"right-sized: {agent_id} did not use this tool")})\n'
            f'forbid (principal == Agent::{_cedar_string(agent_id)}, action in Action::"call_tool", resource is Tool)\n'
            f"when {{ [\n    {names}\n  ].contains(resource.exposed_name) }};\n")


def _cedar_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unified_patch(before: str, after: str, name: str) -> str:
    """A diff `git apply` and `patch -p1` take, from the agents file's directory."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        f"a/{name}", f"b/{name}"))


def declared_entitlements(text: str) -> dict[str, Entitlement]:
    """Every agent's entitlement the agents file declares (none when the file does not load)."""
    parsed = parse_agents_file(text, "agents file", 0.0)
    return {} if parsed.problems else {e.spec.id: e.spec.fields.entitlement for e in parsed.entries}


def declared_entitlement(text: str, agent_id: str) -> Entitlement | None:
    """The entitlement an agents file declares for `agent_id` (None: not declared, or the file does not load)."""
    return declared_entitlements(text).get(agent_id)


# ---- the line-preserving edit -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Edit:
    start: int  # character offsets into the text
    end: int
    text: str


def edit_entitlement(text: str, agent_id: str, narrowed: Entitlement,
                     declared: Mapping[str, Entitlement] | None = None) -> str:
    """`text` with the entitlement of `agent_id` replaced by `narrowed`, everything else (comments,
    order, quoting, other agents) as it was. Checked: the result parses and declares `narrowed`.
    `declared`: what `text` declares, when the caller has read it already."""
    entitlement = _entitlement_node(yaml.compose(text, Loader=yaml.SafeLoader), agent_id)
    if entitlement.flow_style:
        edits = [_Edit(entitlement.start_mark.index, entitlement.end_mark.index, _flow_mapping(entitlement, narrowed))]
    else:
        edits = _block_edits(text, entitlement, narrowed)
    result = text
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        result = result[:edit.start] + edit.text + result[edit.end:]
    _check(text, result, agent_id, narrowed, declared)
    return result


def _entitlement_node(root: yaml.Node | None, agent_id: str) -> yaml.MappingNode:
    agents = _value(root, "agents")
    if not isinstance(agents, yaml.SequenceNode):
        raise CannotEdit("the agents file has no `agents` list")
    for item in agents.value:
        id_node = _value(item, "id")
        if isinstance(id_node, yaml.ScalarNode) and id_node.value == agent_id:
            node = _value(item, "entitlement")
            if not isinstance(node, yaml.MappingNode):
                raise CannotEdit(f"agent {agent_id!r} has no `entitlement` mapping to narrow")
            return node
    raise CannotEdit(f"the agents file does not declare {agent_id!r}")


def _value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _key(node: yaml.MappingNode, key: str) -> yaml.ScalarNode | None:
    return next((k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _flow_mapping(node: yaml.MappingNode, narrowed: Entitlement) -> str:
    """A flow mapping (`{servers: [a]}`) rewritten whole, its keys in their order: it has no comments inside."""
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    keys += [key for key in ENTITLEMENT_KEYS if key not in keys and getattr(narrowed, key)]
    parts = [f"{key}: {_flow_list(getattr(narrowed, key))}" if key in ENTITLEMENT_KEYS
             else f"{key}: {str(narrowed.require_task).lower()}" for key in keys]
    return "{" + ", ".join(parts) + "}"


def _flow_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _block_edits(text: str, entitlement: yaml.MappingNode, narrowed: Entitlement) -> list[_Edit]:
    edits: list[_Edit] = []
    for key in ENTITLEMENT_KEYS:
        wanted: tuple[str, ...] = getattr(narrowed, key)
        key_node, value = _key(entitlement, key), _value(entitlement, key)
        if key_node is None:
            if wanted:
                edits.append(_new_key(text, entitlement, key, wanted))
        elif isinstance(value, yaml.SequenceNode) and not value.flow_style:
            edits += _block_list(text, key_node, value, wanted)
        elif value is not None and (isinstance(value, yaml.SequenceNode) or value.tag == "tag:yaml.org,2002:null"):
            edits.append(_replace_value(text, key_node, value, wanted))
        else:
            raise CannotEdit(f"entitlement.{key} is not a list")
    return edits


def _replace_value(text: str, key_node: yaml.Node, value: yaml.Node, wanted: Sequence[str]) -> _Edit:
    """A flow list (or an empty value) replaced by a flow list, comments after it untouched."""
    if value.start_mark.index == value.end_mark.index:  # `tools:` with nothing after it
        colon = text.index(":", key_node.end_mark.index)
        return _Edit(colon + 1, colon + 1, f" {_flow_list(wanted)}")
    return _Edit(value.start_mark.index, value.end_mark.index, _flow_list(wanted))


def _block_list(text: str, key_node: yaml.Node, value: yaml.SequenceNode, wanted: Sequence[str]) -> list[_Edit]:
    """A block list: drop the lines of items not wanted, add lines for new ones after the last item."""
    edits: list[_Edit] = []
    present = []
    for item in value.value:
        if not isinstance(item, yaml.ScalarNode):
            raise CannotEdit("an entitlement list holds something other than names")
        present.append(item.value)
        if item.value not in wanted:
            start = _line_start(text, item.start_mark.index)
            edits.append(_Edit(start, _line_end(text, item.end_mark.index), ""))
    added = [w for w in wanted if w not in present]
    if added:
        last = value.value[-1]
        dash = _line_start(text, last.start_mark.index)
        indent = text[dash:last.start_mark.index]  # e.g. "      - "
        at = _line_end(text, last.end_mark.index)
        edits.append(_Edit(at, at, "".join(f"{indent}{name}\n" for name in added)))
    if not wanted:
        colon = text.index(":", key_node.end_mark.index)
        edits.append(_Edit(colon + 1, colon + 1, " []"))
    return edits


def _new_key(text: str, entitlement: yaml.MappingNode, key: str, wanted: Sequence[str]) -> _Edit:
    """A key the entry did not have, as a line before the entitlement's first key, at its indent."""
    first = entitlement.value[0][0]
    start = _line_start(text, first.start_mark.index)
    indent = " " * first.start_mark.column
    prefix = text[start:first.start_mark.index]
    if prefix.strip():  # the first key shares its line with something (`- entitlement: {...}` is flow)
        raise CannotEdit("the entitlement's first key does not start its line")
    return _Edit(start, start, f"{indent}{key}: {_flow_list(wanted)}\n")


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """The offset just after the newline ending the line that holds `index` (a scalar's end)."""
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _check(before: str, after: str, agent_id: str, narrowed: Entitlement,
           declared: Mapping[str, Entitlement] | None) -> None:
    """The edit loads, gives `agent_id` the narrowed entitlement, and changes no other agent's (an entitlement
    shared through a YAML anchor would narrow every agent using it)."""
    parsed = parse_agents_file(after, "agents file", 0.0)
    if parsed.problems:
        raise CannotEdit(f"the edited agents file would not load: {parsed.problems[0]}")
    was = declared if declared is not None else \
        {e.spec.id: e.spec.fields.entitlement for e in parse_agents_file(before, "agents file", 0.0).entries}
    now = {e.spec.id: e.spec.fields.entitlement for e in parsed.entries}
    if now.get(agent_id) != narrowed:
        raise CannotEdit("the edited agents file would not declare the narrowed entitlement")
    if {k: v for k, v in now.items() if k != agent_id} != {k: v for k, v in was.items() if k != agent_id}:
        raise CannotEdit("the entitlement is shared with other agents (a YAML anchor): narrowing it in place "
                         "would narrow them too")
