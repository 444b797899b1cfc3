"""What of the context one tool's calls can have read: the paths read by the policies that can apply to it.

Cedar evaluates a policy as one conjunction, left to right, stopping at the first false part: principal scope,
action scope, resource scope, then each `when` and the negation of each `unless`, in order (cedar-policy-core's
`Template::condition`; `&&`, `||` and `if` short-circuit). What comes after a part that is false is never
evaluated, so nothing it would read of the context can change the policy's value or raise its error.

For a tools/call the action (with its groups) and the resource (the tool, its attributes and its server) are
fixed per tool: the entity JSON the request sends. So per tool, once per bundle and catalog, this decides the
action and resource scopes from that JSON (`==`, `in`, `in [..]`, `is`, `is .. in`) and evaluates the plain
leading parts of each condition over the tool's own attributes (`resource.egress && ...`): literals,
`resource.<attr>` holding a bool, a number or a string, `!`, `&&`, `||`, `if`, `==` and `!=`. What a policy
can still read up to where it must stop is what the tool's context keeps (`context_reads` over those parts).

Anything not recognized here counts as unknown, and unknown keeps everything it and the rest of the policy
read: an unknown scope form (a template slot, an entity spelled otherwise) or expression can only keep more
of the context, never less. Nothing is skipped: entity JSON in any form not known here (a record that is not
a mapping, a uid or parent spelled otherwise, such as `{"__entity": ...}`, which Cedar accepts, two records
with one uid, no record for the action or the resource) makes the tool's target unknown, and a policy whose
conditions are in a form not known here makes every read count: then every policy and the whole read set
are kept. The principal scope is never decided (it varies by agent; it reads no context).
Decisions stay identical: each policy that can be evaluated past a point sees every context value it reads
(tests/test_scoped_reads.py compares Cedar's answers, reasons and errors with the whole context).

Cost: a tool's scope is worked out on its first call after a reload or a catalog change, on the caller's thread
(the event loop): its kind from its entity JSON (~50 us), the analysis once per kind (~150 us for the shipped
policies; 3-5 ms per kind with bench/policy.py's 103 policies, 90 kinds over 1,000 tools), and a subset's parse
once (GIL released). Accepted on the loop: it is once per kind of tool per bundle or catalog, not per call (a
reload itself compiles for far longer, off the loop), it is pure CPU on data in memory (no I/O, nothing to
wait for), and moving it to a thread would make each first call await a hop for less work than the hop.

Memory: the parsed subsets alive are at most POLICY_SETS_KEPT (least recently used out; a scope names its set
by key, and holds none); the per-tool memo is one catalog's (a new catalog starts a new one, so an old
catalog's models and input schemas are not held); kinds and read sets at most TOOLS_KEPT each.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy
import orjson

from gateway.policy.listing import ContextReads, context_reads
from gateway.policy.model import ServerModel, ToolModel

Uid = tuple[str, str]  # (entity type, id)
Known = tuple[type, object]  # a value known ahead of the call, with its type (True and 1 are different values)
TOOLS_KEPT = 16384  # tools whose scope is remembered per bundle (each entry is three references)
POLICY_SETS_KEPT = 64  # distinct sets of applicable policies kept parsed (tools of one kind share one), LRU
# A set pushed out of the kept ones is parsed again only on every REBUILD_AFTER_MISSES-th call that misses it
# (the calls in between use the whole set: the same answers): with more sets in use than kept, no call parses
# one each time, and a set in steady use comes back.
REBUILD_AFTER_MISSES = 64
_RECORD_KEYS = frozenset(("uid", "attrs", "parents"))  # what model.py writes; a record with more is unknown
_SCALARS = (bool, int, str)
_FALSE: Known = (bool, False)
_TRUE: Known = (bool, True)


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's action and resource are, as the entity JSON it sends to Cedar says."""

    action: Uid
    resource: Uid
    ancestors: Mapping[Uid, frozenset[Uid]]  # each entity's ancestors (transitively), from the records' parents
    resource_attrs: Mapping[str, Any]

    @classmethod
    def of(cls, action: Uid, resource: Uid, records: Iterable[object]) -> Target | None:
        """None (unknown: keep every policy and every read) unless each record is a mapping of a uid, attrs and
        parents spelled as known here ({"type", "id"}), no two share a uid, and the action and resource have one:
        a uid or parent skipped would make a scope look as if it could not match."""
        parents: dict[Uid, list[Uid]] = {}
        attrs: Mapping[str, Any] | None = None
        for record in records:
            if not isinstance(record, Mapping) or not set(record) <= _RECORD_KEYS:
                return None
            uid, given, values = _uid(record.get("uid")), record.get("parents", []), record.get("attrs", {})
            if uid is None or uid in parents or not isinstance(given, list) or not isinstance(values, Mapping):
                return None
            parents[uid] = [parent for parent in map(_uid, given) if parent is not None]
            if len(parents[uid]) != len(given):
                return None
            if uid == resource:
                attrs = values
        if attrs is None or action not in parents:
            return None
        return cls(action, resource, {uid: _closure(uid, parents) for uid in parents}, attrs)

    def within(self, uid: Uid, ancestor: Uid) -> bool:
        return uid == ancestor or ancestor in self.ancestors.get(uid, frozenset())


@dataclass(frozen=True, slots=True)
class ToolScope:
    """What one tool's calls are decided with: the context paths they can read, and the ids of the policies that
    can apply (None: all of them, the bundle's own set) with the key their parsed set is kept under
    (ToolScopes.policy_set; a scope holds no parsed set, so the ones alive are bounded)."""

    reads: ContextReads
    policies: tuple[str, ...] | None
    key: int = -1


class ToolScopes:
    """One policy set's scope per tool, worked out on a tool's first call and remembered (bounded). Equal read
    sets are one object (`full` itself when nothing can be left out: the context builder keeps one plan per read
    set object), and equal sets of applicable policies one key (one parsed PolicySet while it is kept: see
    policy_set)."""

    def __init__(self, policies: Mapping[str, Mapping[str, Any]], full: ContextReads) -> None:
        self.policies = policies  # Cedar's JSON (EST) of the static policies, by Cedar's id ("policyN")
        self.full = full  # what all of them read
        self._everything = ToolScope(full, None)  # an unknown target's: every policy, every read
        # Per tool, for one catalog (the one in force: a new one starts a new memo, and the old one's models go).
        self._memo: tuple[object, dict[int, tuple[ToolModel, ServerModel, ToolScope]]] = (None, {})
        self._by_kind: dict[tuple[object, ...], ToolScope] = {}
        # (the others read none; one in a form not known here counts as reading: live_parts says so)
        self._reading = [p for pid, p in policies.items()
                         if _conditions(p) is None or context_reads({pid: dict(p)}) != {}]
        # What the scopes and conditions name (see _kind).
        self._actions = frozenset(u for p in policies.values() for u in _scope_uids(p.get("action")))
        self._resources = frozenset(u for p in policies.values() for u in _scope_uids(p.get("resource")))
        self._attrs = tuple(sorted({a for p in policies.values() for body in _conditions(p) or ()
                                    for a in _resource_attrs(body)}))
        self._reads: dict[bytes, ContextReads] = {}
        self._keys: dict[tuple[str, ...], int] = {}  # each distinct set of applicable ids: its key
        self._serial = itertools.count()
        self._sets: OrderedDict[int, cedarpy.PolicySet] = OrderedDict()  # parsed, least recently used first
        self._missed: dict[int, int] = {}  # keys parsed once: misses since (see REBUILD_AFTER_MISSES)
        self.sets_parsed = 0  # subsets parsed so far (for tests and benchmarks)
        self._lock = threading.Lock()

    def for_tool(self, model: ToolModel, server: ServerModel, catalog: object) -> ToolScope:
        """The scope of a call of `model` (served by `server`, both of `catalog`, the one in force); remembered for
        these very objects (a new catalog brings new ones, so an attribute changed there, such as `egress`, is
        never read from an old one), and only for the catalog last asked about."""
        memo = self._memo
        if memo[0] is not catalog:
            memo = self._memo = (catalog, {})  # the old catalog's entries (its models, their schemas) go
        known = memo[1].get(id(model))
        if known is not None and known[0] is model and known[1] is server:
            return known[2]
        scope = self._scope(tool_target(model, server))
        with self._lock:
            if len(memo[1]) >= TOOLS_KEPT:
                memo[1].clear()
            memo[1][id(model)] = (model, server, scope)  # holding model keeps its id from being reused
        return scope

    def _scope(self, target: Target | None) -> ToolScope:
        if target is None:
            return self._everything
        kind = self._kind(target)
        scope = self._by_kind.get(kind)
        if scope is None:
            ids = self.applicable(target)
            scope = ToolScope(self._intern(self.reads(target)), ids, self._key(ids))
            with self._lock:
                if len(self._by_kind) >= TOOLS_KEPT:
                    self._by_kind.clear()
                self._by_kind[kind] = scope
        return scope

    def _kind(self, target: Target) -> tuple[object, ...]:
        """What of `target` this policy set can tell apart: whether its action and resource are or are within each
        entity a scope names, the resource's type, and each resource attribute a condition reads (known only as a
        scalar). Targets alike in all of it have one scope (the analysis reads nothing else of them): worked out
        once per kind of tool, not per tool."""
        action, resource = target.action, target.resource
        attrs = target.resource_attrs
        return (action[0], action if action in self._actions else None,
                frozenset(u for u in self._actions if target.within(action, u)),
                resource[0], resource if resource in self._resources else None,
                frozenset(u for u in self._resources if target.within(resource, u)),
                tuple((type(attrs[a]), attrs[a]) if a in attrs and type(attrs[a]) in _SCALARS else None
                      for a in self._attrs))

    def reads(self, target: Target | None) -> ContextReads:
        """What the policies can read for `target`; all they read when it is unknown (None) or a policy's
        conditions are in a form not known here."""
        if target is None:
            return self.full
        parts: list[Any] = []
        for policy in self._reading:
            live = live_parts(policy, target)
            if live is None:
                return self.full
            parts.extend(live)
        return context_reads({"live": {"conditions": [{"kind": "when", "body": p} for p in parts]}})

    def applicable(self, target: Target | None) -> tuple[str, ...]:
        """The ids of the policies that can be satisfied or raise an error for `target`: all but those known false
        (all of them when it is unknown, None)."""
        if target is None:
            return tuple(self.policies)
        return tuple(pid for pid, policy in self.policies.items() if not known_false(policy, target))

    def _intern(self, reads: ContextReads) -> ContextReads:
        if reads is True or reads == self.full:
            return self.full
        key = orjson.dumps(reads, option=orjson.OPT_SORT_KEYS)
        with self._lock:
            if len(self._reads) >= TOOLS_KEPT:
                self._reads.clear()
            return self._reads.setdefault(key, reads)

    def _key(self, ids: tuple[str, ...]) -> int:
        """The key of a set of applicable ids (-1: all of them); equal sets have one (while remembered)."""
        if len(ids) == len(self.policies):
            return -1
        with self._lock:
            key = self._keys.get(ids)
            if key is None:
                if len(self._keys) >= TOOLS_KEPT:
                    self._keys.clear()
                    self._missed.clear()
                key = self._keys[ids] = next(self._serial)
            return key

    def policy_set(self, scope: ToolScope) -> cedarpy.PolicySet | None:
        """The policies `scope` names as one PolicySet under their own ids (so reasons and errors name them as the
        whole set does); None for the bundle's whole set: when all apply, or (see REBUILD_AFTER_MISSES) while a
        set pushed out of the kept ones is not parsed again. The whole set answers the same: a policy left out
        of a subset is false for the tool before it reads any context. Parsed on a set's first use."""
        key = scope.key
        if key < 0 or scope.policies is None:
            return None
        known = self._sets.get(key)
        if known is not None:
            try:  # noqa: SIM105 (per call: no context manager)
                self._sets.move_to_end(key)
            except KeyError:  # pushed out meanwhile by another thread: still a whole, valid set
                pass
            return known
        return self._parse(key, scope.policies)

    def _parse(self, key: int, ids: tuple[str, ...]) -> cedarpy.PolicySet | None:
        with self._lock:
            missed = self._missed.get(key)
            self._missed[key] = 0 if missed is None else missed + 1
            if missed is not None and (missed + 1) % REBUILD_AFTER_MISSES:
                return None  # parsed before and pushed out: the whole set, this time
        text = json.dumps({"staticPolicies": {pid: self.policies[pid] for pid in ids}, "templates": {},
                           "templateLinks": []})
        parsed = cedarpy.PolicySet.from_json_str(text, release_gil=True)
        with self._lock:
            self.sets_parsed += 1
            self._sets[key] = parsed
            while len(self._sets) > POLICY_SETS_KEPT:
                self._sets.popitem(last=False)
        return parsed


def tool_target(model: ToolModel, server: ServerModel) -> Target | None:
    """A tools/call's action and resource, from the entity JSON its requests send (engine._tool_entities); None
    when that is in a form not known here."""
    records = [orjson.loads(text) for text in (model.entity_json, server.entity_json, model.action_json)]
    return Target.of(("Action", model.entry.exposed_name), (model.uid["type"], model.uid["id"]), records)


def live_parts(policy: Mapping[str, Any], target: Target) -> list[Any] | None:
    """The expressions of `policy` (EST) Cedar can evaluate for `target`, whose context reads count: none when a
    scope cannot match, else its conditions up to the first one known to be false (that one's evaluated part too);
    None (all it reads counts) when its conditions are in a form not known here."""
    conditions = _conditions(policy)
    if conditions is None:
        return None
    if _cannot_match(policy, target):
        return []
    parts: list[Any] = []
    for body in conditions:
        value, kept = _evaluate(body, target)
        parts.extend(kept)
        if value == _FALSE:
            break
    return parts


def known_false(policy: Mapping[str, Any], target: Target) -> bool:
    """Whether `policy` (EST) is false for `target` without an error whatever the principal and the context: a scope
    that cannot match, or conditions known true up to one known false (all evaluated on the tool's own data)."""
    conditions = _conditions(policy)
    if conditions is None:
        return False
    if _cannot_match(policy, target):
        return True
    for body in conditions:
        value, _ = _evaluate(body, target)
        if value != _TRUE:
            return value == _FALSE
    return False


def _conditions(policy: object) -> list[Any] | None:
    """A policy's conditions in Cedar's order as expressions that must be true (`unless` negated); None when the
    policy or any condition is in a form not known here (another kind, not a mapping): unknown."""
    if not isinstance(policy, Mapping):
        return None
    conditions = policy.get("conditions", [])
    if not isinstance(conditions, list):
        return None
    bodies: list[Any] = []
    for condition in conditions:
        if not isinstance(condition, Mapping) or condition.get("kind") not in ("when", "unless"):
            return None
        body = condition.get("body")
        bodies.append(body if condition["kind"] == "when" else {"!": {"arg": body}})
    return bodies


def _cannot_match(policy: Mapping[str, Any], target: Target) -> bool:
    """The action or the resource scope cannot match (neither reads the context nor errs)."""
    return (_scope(policy.get("action"), target.action, target) is False
            or _scope(policy.get("resource"), target.resource, target) is False)


def _scope(scope: object, uid: Uid, target: Target) -> bool | None:
    """Whether a scope constraint (action or resource) matches the request's `uid`; None when its form (a template
    slot among them) is not one known here."""
    if not isinstance(scope, Mapping):
        return None
    op = scope.get("op")
    if op == "All":
        return True
    if op == "is" and isinstance(scope.get("entity_type"), str):
        if scope["entity_type"] != uid[0]:
            return False
        inside = scope.get("in")
        return True if inside is None else _scope({**inside, "op": "in"} if isinstance(inside, Mapping) else None,
                                                  uid, target)
    if op not in ("==", "in"):
        return None
    given = scope.get("entities") if op == "in" and "entities" in scope else [scope.get("entity")]
    uids = [_uid(e) for e in given] if isinstance(given, list) else [None]
    if not uids or any(other is None for other in uids):
        return None
    if op == "==":
        return len(uids) == 1 and uids[0] == uid
    return any(target.within(uid, other) for other in uids if other is not None)


def _evaluate(expr: object, target: Target) -> tuple[Known | None, list[Any]]:
    """What `expr` evaluates to for `target` when that is known without the context and cannot be an error (else
    None), and the parts of it Cedar can evaluate whose context reads count (a superset is always safe)."""
    if not isinstance(expr, Mapping) or len(expr) != 1:
        return None, [expr]
    ((op, arg),) = expr.items()
    if op == "Value":
        return ((type(arg), arg), []) if type(arg) in _SCALARS else (None, [expr])
    if op == "." and isinstance(arg, Mapping) and arg.get("left") == {"Var": "resource"}:
        attrs, attr = target.resource_attrs, arg.get("attr")
        if isinstance(attr, str) and attr in attrs and type(attrs[attr]) in _SCALARS:
            return (type(attrs[attr]), attrs[attr]), []
        return None, [expr]
    if not isinstance(arg, Mapping):
        return None, [expr]
    if op == "!":
        value, kept = _evaluate(arg.get("arg"), target)
        return ((bool, not value[1]) if value is not None and value[0] is bool else None), kept
    if op in ("&&", "||"):
        return _logical(op == "&&", arg.get("left"), arg.get("right"), target)
    if op == "if-then-else":
        test, kept = _evaluate(arg.get("if"), target)
        if test in (_TRUE, _FALSE):
            value, branch = _evaluate(arg.get("then" if test == _TRUE else "else"), target)
            return value, kept + branch
        return None, kept + _evaluate(arg.get("then"), target)[1] + _evaluate(arg.get("else"), target)[1]
    if op in ("==", "!="):
        (left, left_kept), (right, right_kept) = _evaluate(arg.get("left"), target), _evaluate(arg.get("right"), target)
        if left is None or right is None:  # `==` never errs: what either side reads is what it reads
            return None, left_kept + right_kept
        return (bool, (left == right) == (op == "==")), left_kept + right_kept
    return None, [expr]


def _logical(conjunction: bool, left_expr: object, right_expr: object,
             target: Target) -> tuple[Known | None, list[Any]]:
    """`&&` (conjunction) or `||`: the right side is evaluated only when the left one does not decide."""
    stop = _FALSE if conjunction else _TRUE
    left, kept = _evaluate(left_expr, target)
    if left == stop:
        return stop, kept
    right, right_kept = _evaluate(right_expr, target)
    known = left is not None and left[0] is bool and right is not None and right[0] is bool
    return (right if known else None), kept + right_kept


def _scope_uids(scope: object) -> list[Uid]:
    """The entities a scope constraint names (`==`, `in`, `in [..]`, `is .. in`)."""
    if not isinstance(scope, Mapping):
        return []
    entities = scope.get("entities")
    named = [scope.get("entity"), *(entities if isinstance(entities, list) else ())]
    # (`is .. in` is decided as an `in` scope: whatever that names counts, as _scope reads it)
    return [uid for uid in map(_uid, named) if uid is not None] + _scope_uids(scope.get("in"))


def _resource_attrs(expr: object) -> set[str]:
    """The names of the resource's attributes `_evaluate` can read in `expr` (`resource.<name>` where it looks:
    under `!`, `&&`, `||`, `if`, `==` and `!=`; not inside anything else, which it leaves unknown)."""
    if not isinstance(expr, Mapping) or len(expr) != 1:
        return set()
    ((op, arg),) = expr.items()
    if not isinstance(arg, Mapping):
        return set()
    if op == ".":
        return {arg["attr"]} if arg.get("left") == {"Var": "resource"} and isinstance(arg.get("attr"), str) else set()
    below = _EVALUATED.get(op, ())
    return set().union(*(_resource_attrs(arg.get(name)) for name in below))


_EVALUATED = {"!": ("arg",), "&&": ("left", "right"), "||": ("left", "right"), "==": ("left", "right"),
              "!=": ("left", "right"), "if-then-else": ("if", "then", "else")}  # what _evaluate looks into


def _uid(value: object) -> Uid | None:
    if isinstance(value, Mapping) and set(value) == {"type", "id"}:
        kind, ident = value["type"], value["id"]
        if isinstance(kind, str) and isinstance(ident, str):
            return (kind, ident)
    return None


def _closure(start: Uid, parents: Mapping[Uid, list[Uid]]) -> frozenset[Uid]:
    seen: set[Uid] = set()
    todo = list(parents.get(start, ()))
    while todo:
        uid = todo.pop()
        if uid not in seen:
            seen.add(uid)
            todo.extend(parents.get(uid, ()))
    return frozenset(seen)
