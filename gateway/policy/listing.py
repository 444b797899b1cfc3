"""Listing mode: decide visibility without arguments.

A list request has no arguments, yet policies may read `context.input`. Listing evaluates a
rewritten copy of the policy set in which every condition that reads `context.input` is replaced
by its most permissive value: in a permit it becomes `true` where that widens the permit and in a
forbid `false` where that narrows the forbid (through `&&`, `||`, `!` and `if`). So a tool is
hidden only when no arguments at all could make the call allowed or step-up; input-dependent
policies never hide a tool, and the call itself is still decided with the real arguments.
"""

from __future__ import annotations

import json
from typing import Any

TRUE: dict[str, Any] = {"Value": True}
FALSE: dict[str, Any] = {"Value": False}


def listing_policies(est_policies: dict[str, dict[str, Any]]) -> str:
    """A Cedar JSON policy set (for PolicySet.from_json_str) with input-dependent conditions relaxed."""
    rewritten = {pid: _rewrite_policy(policy) for pid, policy in est_policies.items()}
    return json.dumps({"staticPolicies": rewritten, "templates": {}, "templateLinks": []})


def _rewrite_policy(policy: dict[str, Any]) -> dict[str, Any]:
    permit = policy["effect"] == "permit"
    conditions = []
    for condition in policy.get("conditions") or []:
        # A permit's `when` and a forbid's `unless` should hold as often as possible.
        widen = permit == (condition["kind"] == "when")
        body = _maximize(condition["body"]) if widen else _minimize(condition["body"])
        conditions.append({"kind": condition["kind"], "body": body})
    return {**policy, "conditions": conditions}


def _maximize(expr: dict[str, Any]) -> dict[str, Any]:
    """An expression true whenever `expr` could be true for some input."""
    return _bound(expr, high=True)


def _minimize(expr: dict[str, Any]) -> dict[str, Any]:
    """An expression true only when `expr` is true for every input."""
    return _bound(expr, high=False)


def _bound(expr: dict[str, Any], high: bool) -> dict[str, Any]:
    if not reads_input(expr):
        return expr
    (op, arg), = expr.items()
    if op in ("&&", "||"):
        return {op: {"left": _bound(arg["left"], high), "right": _bound(arg["right"], high)}}
    if op == "!":
        return {"!": {"arg": _bound(arg["arg"], not high)}}
    if op == "if-then-else":
        then, other = _bound(arg["then"], high), _bound(arg["else"], high)
        if reads_input(arg["if"]):
            return {("||" if high else "&&"): {"left": then, "right": other}}
        return {"if-then-else": {"if": arg["if"], "then": then, "else": other}}
    return TRUE if high else FALSE


def reads_input(expr: Any) -> bool:
    """Whether an EST expression reads `context.input` (or uses `context` as a whole)."""
    if isinstance(expr, dict):
        if expr.get("Var") == "context":
            return True  # reached only when `context` is not under a `.`/`has` we could inspect
        for op in (".", "has"):
            node = expr.get(op)
            if isinstance(node, dict) and node.get("left") == {"Var": "context"}:
                return node.get("attr") == "input"
        return any(reads_input(value) for value in expr.values())
    if isinstance(expr, list):
        return any(reads_input(item) for item in expr)
    return False
