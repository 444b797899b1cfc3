"""Listing by classes: tools that no listing policy can tell apart are decided once.

Cedar compares strings only for equality, apart from `like` patterns and extension functions
(`ip`, `decimal`, ...). So renaming strings that no policy names, that the principal and the
context do not hold, and that `like` patterns judge alike cannot change any answer. A tool's
identity (its name, exposed name and uid) is such a string for almost every tool: two tools whose
entities are equal once their identities are replaced by placeholders ("the signature"), with
equal `like` answers on those identities, get the same listing answer. At 5,000 tools that differ
in name only, a cold listing asks Cedar a handful of questions instead of 5,000.

A tool is decided on its own ("singular") when its identity appears anywhere the renaming would
touch: in a listing policy (`resource == Tool::"x"`, `resource.name == "x"`), in the principal's
entities (an entitlement naming it, a claim or tag equal to it) or in the listing context (the
task's tools, the chain's tools). When some extension function reads a request entity, every tool
is singular (the exact, per-tool answer).

The same argument lets agents share listings: an agent's id renamed to a placeholder, two agents
whose principal entities are then equal see the same tools, unless the id appears in a policy, the
catalog or the context, or a `like` pattern tells the ids apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cedarpy
import orjson

from gateway.json_values import JsonValue
from gateway.policy.listing import listing_policies
from gateway.policy.listing_memo import ListingKey
from gateway.policy.model import CatalogModel, ToolModel

# Placeholders for renamed identities; \x00 never appears in a catalog name or an agent id, and an
# entity that holds one anyway (a claim value, a description) is not renamed at all.
TOOL_MARKS = ("\x00uid", "\x00exposed", "\x00name")
AGENT_MARK = "\x00agent"
REQUEST_VARS = frozenset({"principal", "action", "resource"})
# Keys whose value is a list in the policy JSON without being an extension function call.
LIST_KEYS = frozenset({"Set", "pattern", "conditions", "entities"})

Signature = tuple[str, str, str, tuple[bool, ...]]  # renamed Tool JSON, renamed Action JSON, McpServer JSON, likes


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """What the listing policies can tell apart about strings."""

    strings: frozenset[str]  # every string in the policies (literals, entity ids, attribute names)
    patterns: tuple[re.Pattern[str], ...]  # every `like` pattern
    generic: bool  # False: an extension function reads a request entity, so nothing may be renamed

    def likes(self, values: Iterable[str]) -> tuple[bool, ...]:
        return tuple(p.fullmatch(v) is not None for v in values for p in self.patterns)


def policy_facts(policy_texts: Iterable[str]) -> PolicyFacts:
    """Analyse the listing policy set (input-dependent conditions relaxed, as listing evaluates it)."""
    text = "\n".join(policy_texts)
    est = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"] if text.strip() else {}
    listing = json.loads(listing_policies(est))["staticPolicies"]
    strings: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    generic = _walk_policies(listing, strings, patterns)
    return PolicyFacts(frozenset(strings), tuple(dict.fromkeys(patterns)), generic)


def _walk_policies(node: object, strings: set[str], patterns: list[re.Pattern[str]]) -> bool:
    """Collect strings and patterns; False when an extension function call reads a request entity."""
    generic = True
    if isinstance(node, dict):
        like = node.get("like")
        if isinstance(like, dict) and isinstance(like.get("pattern"), list):
            patterns.append(_pattern(like["pattern"]))
        for key, value in node.items():
            strings.add(key)
            if isinstance(value, list) and key not in LIST_KEYS and _reads_request(value):
                generic = False  # ip(resource.name), decimal(...): the string's content matters
            generic = _walk_policies(value, strings, patterns) and generic
    elif isinstance(node, list):
        for item in node:
            generic = _walk_policies(item, strings, patterns) and generic
    elif isinstance(node, str):
        strings.add(node)
    return generic


def _reads_request(node: object) -> bool:
    if isinstance(node, dict):
        if node.get("Var") in REQUEST_VARS:
            return True
        return any(_reads_request(v) for v in node.values())
    if isinstance(node, list):
        return any(_reads_request(v) for v in node)
    return False


def _pattern(elements: list[Any]) -> re.Pattern[str]:
    parts = [".*" if e == "Wildcard" else re.escape(str(e.get("Literal", ""))) for e in elements]
    return re.compile("".join(parts), re.DOTALL)


def strings_in(blob: str | bytes) -> set[str]:
    """Every string (keys and values) in a JSON text or a comma-joined run of JSON objects."""
    text = blob.decode() if isinstance(blob, bytes) else blob
    found: set[str] = set()
    _collect_strings(orjson.loads("[" + text + "]"), found)
    return found


def _collect_strings(node: object, found: set[str]) -> None:
    if isinstance(node, str):
        found.add(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            _collect_strings(value, found)
    elif isinstance(node, list):
        for item in node:
            _collect_strings(item, found)


def _renamed(node: object, marks: dict[str, str]) -> JsonValue:
    if isinstance(node, str):
        return marks.get(node, node)
    if isinstance(node, dict):
        return {marks.get(k, k): _renamed(v, marks) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(item, marks) for item in node]
    return node


def identities(model: ToolModel) -> tuple[str, str, str]:
    entry = model.entry
    return model.uid["id"], entry.exposed_name, entry.name


@dataclass(frozen=True, slots=True)
class ToolIndex:
    """One catalog model's tools, grouped for listing under one policy set."""

    catalog: CatalogModel
    facts: PolicyFacts
    models: tuple[ToolModel, ...]
    signatures: tuple[Signature | None, ...]  # None: always decided on its own
    by_identity: dict[str, tuple[int, ...]]  # an identity string -> the tools that have it
    strings: frozenset[str]  # every string of the catalog's entities (agents named alike do not share)
    groups: dict[ListingKey, tuple[int, ...]]  # memo key (a signature, or a singular tool's entities) -> its tools

    def own_key(self, i: int) -> tuple[str, str, str]:
        """The memo key of tool `i` decided on its own: its Tool, Action and McpServer JSON."""
        model = self.models[i]
        return model.entity_json, model.action_json, self.catalog.servers[model.entry.server_id].entity_json

    def groups_for(self, singular: set[int]) -> dict[ListingKey, tuple[int, ...]]:
        """The groups for one caller: tools its principal or context names are split off on their own."""
        moved = {i for i in singular if self.signatures[i] is not None}
        if not moved:
            return self.groups
        groups = dict(self.groups)
        for signature in {s for i in moved if (s := self.signatures[i]) is not None}:
            kept = tuple(i for i in groups[signature] if i not in moved)
            if kept:
                groups[signature] = kept
            else:
                del groups[signature]
        groups.update((self.own_key(i), (i,)) for i in moved)
        return groups

    def singular(self, strings: Iterable[str]) -> set[int]:
        """The tools whose identity is among `strings` (of a principal or a context)."""
        found: set[int] = set()
        for s in strings:
            hit = self.by_identity.get(s)
            if hit is not None:
                found.update(hit)
        return found


@dataclass(frozen=True, slots=True)
class ToolShape:
    """What of a tool's entities does not depend on the policies: computed once per entity JSON."""

    ids: tuple[str, str, str]  # uid, exposed name, name
    renamed: tuple[str, str] | None  # Tool and Action JSON with the identity replaced; None: it cannot be
    strings: frozenset[str]  # every string of its entities (and its server's)


ShapeCache = dict[tuple[str, str, str], ToolShape]  # (Tool, Action, McpServer JSON) -> shape


def build_index(catalog: CatalogModel, facts: PolicyFacts, shapes: ShapeCache | None = None) -> ToolIndex:
    """Signatures for every tool, reusing `shapes` (kept across policy and catalog changes, so after a
    one-tool change only that tool's entities are looked at again). Pure Python: run it off the loop."""
    shapes = {} if shapes is None else shapes
    models = tuple(catalog.tools.values())
    signatures: list[Signature | None] = []
    by_identity: dict[str, list[int]] = {}
    strings: set[str] = set()
    for i, model in enumerate(models):
        server_json = catalog.servers[model.entry.server_id].entity_json
        key = (model.entity_json, model.action_json, server_json)
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = tool_shape(model, server_json)
        signatures.append(signature(shape, server_json, facts))
        for identity in shape.ids:
            by_identity.setdefault(identity, []).append(i)
        strings |= shape.strings
    groups: dict[ListingKey, list[int]] = {}
    for i, (model, found) in enumerate(zip(models, signatures, strict=True)):
        group: ListingKey = found if found is not None else (
            model.entity_json, model.action_json, catalog.servers[model.entry.server_id].entity_json)
        groups.setdefault(group, []).append(i)
    return ToolIndex(catalog, facts, models, tuple(signatures), {k: tuple(v) for k, v in by_identity.items()},
                     frozenset(strings), {k: tuple(v) for k, v in groups.items()})


def tool_shape(model: ToolModel, server_json: str) -> ToolShape:
    """The identity is replaced where the entities hold it (Tool uid, `exposed_name`, `name`, Action
    uid); equal identities share a placeholder. Should an identity still appear anywhere (equal to an
    owner, a server, a group, an attribute name), it cannot be renamed: the tool is singular."""
    ids = identities(model)
    own = strings_in(model.entity_json) | strings_in(model.action_json) | strings_in(server_json)
    if any(mark in text for text in own for mark in TOOL_MARKS):
        return ToolShape(ids, None, frozenset(own))  # a placeholder already present: renaming could merge two tools
    marks: dict[str, str] = {}
    for identity, mark in zip(ids, TOOL_MARKS, strict=True):
        marks.setdefault(identity, mark)
    entity, action = orjson.loads(model.entity_json), orjson.loads(model.action_json)
    attrs = entity.get("attrs", {})
    if (entity["uid"].get("id"), attrs.get("exposed_name"), attrs.get("name"), action["uid"].get("id")) != (
            ids[0], ids[1], ids[2], ids[1]):
        return ToolShape(ids, None, frozenset(own))  # not the layout this module knows
    entity["uid"]["id"], attrs["exposed_name"], attrs["name"] = marks[ids[0]], marks[ids[1]], marks[ids[2]]
    action["uid"]["id"] = marks[ids[1]]
    renamed = orjson.dumps(entity).decode(), orjson.dumps(action).decode()
    rest = strings_in(",".join(renamed)) | strings_in(server_json)
    return ToolShape(ids, None if any(i in rest for i in ids) else renamed, frozenset(own))


def signature(shape: ToolShape, server_json: str, facts: PolicyFacts) -> Signature | None:
    """What decides this tool's listing besides its identity; None when its identity itself may."""
    if shape.renamed is None or not facts.generic or any(i in facts.strings for i in shape.ids):
        return None
    return shape.renamed[0], shape.renamed[1], server_json, facts.likes(shape.ids[1:])


def has_nul(entities_json: str) -> bool:
    """A NUL in the JSON (a claim value is the issuer's to choose) could already spell the placeholder."""
    return "\\u0000" in entities_json or "\x00" in entities_json


def principal_key(principal_json: str, agent_id: str, context_strings: set[str], index: ToolIndex) -> str:
    """The principal's entities with its id renamed, when no policy, catalog entity or context string
    and no `like` pattern can tell the id apart; else the entities as they are (nothing shared)."""
    facts = index.facts
    if (not facts.generic or has_nul(principal_json) or agent_id in facts.strings or agent_id in index.strings
            or agent_id in context_strings or any(facts.likes([agent_id]))):
        return principal_json
    return orjson.dumps(_renamed(orjson.loads("[" + principal_json + "]"), {agent_id: AGENT_MARK})).decode()
