"""Listing mode: decide visibility without arguments.

A list request has no arguments, yet policies may read `context.input`. Listing evaluates a
rewritten copy of the policy set in which every condition that reads `context.input` is replaced
by its most permissive value: in a permit it becomes `true` where that widens the permit and in a
forbid `false` where that narrows the forbid (through `&&`, `||`, `!` and `if`). So a tool is
hidden only when no arguments at all could make the call allowed or step-up; input-dependent
policies never hide a tool, and the call itself is still decided with the real arguments.

Listing also sends Cedar only the parts of the context that the (rewritten) policies can observe
(`context_reads`, `prune_context`): Cedar parses the context once per tool, which was most of the
cost of listing thousands of tools, and the pruned context is what a cached listing is keyed by,
so a fact no policy reads (the exact time, a call counter) does not defeat the cache.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

from gateway.json_values import JsonValue

TRUE: dict[str, Any] = {"Value": True}
FALSE: dict[str, Any] = {"Value": False}


# A value some condition may read: ("context", "input") is `context.input` and everything under it.
FreePath = tuple[str, ...]
INPUT: frozenset[FreePath] = frozenset({("context", "input")})


def listing_policies(est_policies: dict[str, dict[str, Any]]) -> str:
    """A Cedar JSON policy set (for PolicySet.from_json_str) with input-dependent conditions relaxed."""
    return relaxed_policies(est_policies, INPUT)


def relaxed_policies(est_policies: dict[str, dict[str, Any]], free: frozenset[FreePath]) -> str:
    """A Cedar JSON policy set in which every condition reading one of the `free` paths is relaxed as
    listing relaxes input conditions: met for some value of what it reads (the reach relaxes the time and
    the caller-declared facts too, see gateway/privilege/reach.py)."""
    rewritten = {pid: _rewrite_policy(policy, free) for pid, policy in est_policies.items()}
    return json.dumps({"staticPolicies": rewritten, "templates": {}, "templateLinks": []})


def _rewrite_policy(policy: dict[str, Any], free: frozenset[FreePath]) -> dict[str, Any]:
    permit = policy["effect"] == "permit"
    conditions = []
    for condition in policy.get("conditions") or []:
        # A permit's `when` and a forbid's `unless` should hold as often as possible.
        widen = permit == (condition["kind"] == "when")
        conditions.append({"kind": condition["kind"], "body": _bound(condition["body"], widen, free)})
    return {**policy, "conditions": conditions}


def _bound(expr: dict[str, Any], high: bool, free: frozenset[FreePath]) -> dict[str, Any]:
    """`high`: an expression true whenever `expr` could be true for some value of the free paths; else one
    true only when `expr` is true for every value."""
    if not reads_free(expr, free):
        return expr
    (op, arg), = expr.items()
    if op in ("&&", "||"):
        return {op: {"left": _bound(arg["left"], high, free), "right": _bound(arg["right"], high, free)}}
    if op == "!":
        return {"!": {"arg": _bound(arg["arg"], not high, free)}}
    if op == "if-then-else":
        then, other = _bound(arg["then"], high, free), _bound(arg["else"], high, free)
        if reads_free(arg["if"], free):
            return {("||" if high else "&&"): {"left": then, "right": other}}
        return {"if-then-else": {"if": arg["if"], "then": then, "else": other}}
    return TRUE if high else FALSE


def reads_input(expr: object) -> bool:
    """Whether an EST expression reads `context.input` (or uses `context` as a whole)."""
    return reads_free(expr, INPUT)


def reads_free(expr: object, free: frozenset[FreePath]) -> bool:
    """Whether an EST expression reads one of the `free` paths (or a record holding one, as a whole)."""
    if isinstance(expr, dict):
        path = _var_path(expr)
        if path is None:
            node = expr.get("has")
            left = _var_path(node.get("left")) if isinstance(node, dict) else None
            if left is not None:
                assert isinstance(node, dict)
                path = (*left, str(node.get("attr")))
        if path is not None:
            # The path itself or a record holding it (`context`, `context.request` used whole).
            return any(path[:len(f)] == f or f[:len(path)] == path for f in free)
        return any(reads_free(value, free) for value in expr.values())
    if isinstance(expr, list):
        return any(reads_free(item, free) for item in expr)
    return False


def _var_path(expr: object) -> tuple[str, ...] | None:
    """`context.a.b` as ("context", "a", "b"), `principal.claims` as ("principal", "claims"); None for
    anything that is not a variable or an attribute chain on one."""
    if not isinstance(expr, dict):
        return None
    var = expr.get("Var")
    if isinstance(var, str):
        return (var,)
    node = expr.get(".")
    if isinstance(node, dict):
        left = _var_path(node.get("left"))
        if left is not None:
            return (*left, str(node.get("attr")))
    return None


# What of a record the policies can observe: True for all of it, else attribute -> what of that attribute.
ContextReads: TypeAlias = "bool | dict[str, ContextReads]"


def context_reads(est_policies: dict[str, dict[str, Any]]) -> ContextReads:
    """The context paths any condition of these policies reads.

    A record attribute can only be observed by `.attr`, `has attr`, or by using a record holding it
    as a value (compared, put in a set...); the last reads the whole record. `has` is taken to read
    the attribute's whole value, so keeping what is read keeps every answer the same.
    """
    reads: dict[str, ContextReads] = {}
    for policy in est_policies.values():
        for condition in policy.get("conditions") or []:
            if _collect(condition["body"], reads):
                return True
    user = reads.get("user")
    if isinstance(user, dict):  # a reauth step-up tells a person from a workload by it (engine._freshly_signed_in)
        user.setdefault("present", True)
    return reads


def prune_context(context: dict[str, Any], reads: ContextReads) -> dict[str, Any]:
    """`context` with only what `reads` covers (every answer of the policies stays the same)."""
    if reads is True:
        return context
    assert isinstance(reads, dict)
    return {name: _prune_value(context[name], sub) for name, sub in reads.items() if name in context}


def _prune_value(value: object, reads: ContextReads) -> JsonValue:
    return prune_context(value, reads) if isinstance(value, dict) and reads is not True else value


def _collect(expr: object, reads: dict[str, ContextReads]) -> bool:
    """Record what `expr` reads of the context into `reads`; True when it reads the whole context."""
    if isinstance(expr, list):
        return any(_collect(item, reads) for item in expr)
    if not isinstance(expr, dict) or "Value" in expr:
        return False
    path = _context_path(expr)
    if path is not None:
        return _mark(reads, path)
    node = expr.get("has")
    if isinstance(node, dict):
        left = _context_path(node.get("left"))
        if left is not None:
            return _mark(reads, [*left, str(node.get("attr"))])
    return any(_collect(value, reads) for value in expr.values())


def _context_path(expr: object) -> list[str] | None:
    """`context.a.b` as ["a", "b"] (`context` itself as []); None for anything else."""
    if expr == {"Var": "context"}:
        return []
    node = expr.get(".") if isinstance(expr, dict) else None
    if isinstance(node, dict):
        left = _context_path(node.get("left"))
        if left is not None:
            return [*left, str(node.get("attr"))]
    return None


def _mark(reads: dict[str, ContextReads], path: list[str]) -> bool:
    """Mark `path` as read whole; True when that is the whole context."""
    if not path:
        return True
    node = reads
    for name in path[:-1]:
        child = node.get(name)
        if child is True:
            return False  # an enclosing record is read whole already
        if child is None:
            child = node[name] = {}
        assert isinstance(child, dict)
        node = child
    node[path[-1]] = True
    return False
