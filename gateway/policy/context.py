"""The Cedar context of one decision, holding only what the policy set reads.

Cedar parses each request's context from JSON, and that parse was most of a decision's cost: with
the chain history a running gateway carries (64 recorded calls) about 80 % of `is_authorized_batch`
(see bench/policy.py). An attribute no policy reads cannot change a decision, so a decision's context
carries only the paths the policy set reads (`context_reads`: `.attr`, `has attr`, or a record used
as a whole value), and only those sections are built at all. Set-typed signals go as distinct values
in sorted order (`chain.tools` lists every tool called, in order, repeats included).

Decisions stay identical: Cedar evaluates without a schema (see engine.py), so dropping an unread
attribute cannot make a request schema-invalid either. The only values that can make Cedar refuse
a context are records with Cedar's JSON escape keys (`__extn`, `__entity`, `__expr`); the gateway's
own sections never have them, and a tool input whose type could (an upstream named an argument so)
is sent whole, so a request Cedar refused before is refused still.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.identity.user import UserIdentity
from gateway.json_values import JsonValue
from gateway.policy.hours import WorkingHours
from gateway.policy.listing import ContextReads, prune_context


@dataclass(frozen=True, slots=True)
class RequestFacts:
    now: float  # epoch seconds
    era: str  # "2025-11-25" | "2026-07-28"
    client: str = ""  # clientInfo name or ""
    # None (the normal case): computed from `now` and the engine's WorkingHours. A bool overrides it.
    working_hours: bool | None = None
    # The caller's task ({id, purpose, tools, chain, depth, root, delegator}), or None for a bare workload token.
    task: Mapping[str, Any] | None = None
    # Chain monitoring's signals for this caller (gateway.chain.ChainTracker.context), if any.
    chain: Mapping[str, Any] | None = None
    # The person the call is made for (a person's MCP client), or None for workloads.
    user: UserIdentity | None = None


NO_CHAIN_AGENT: dict[str, str] = {"agent": "", "owner": ""}
NO_TASK: dict[str, Any] = {"present": False, "id": "", "purpose": "", "tools": [], "chain": [], "depth": 0,
                           "root": NO_CHAIN_AGENT, "delegator": NO_CHAIN_AGENT}
NO_AGENT_CHAIN: dict[str, Any] = {"data_classes": [], "sensitive_read": False, "calls_last_minute": 0,
                                  "writes_last_minute": 0, "denials_last_minute": 0}
NO_CHAIN: dict[str, Any] = {"data_classes": [], "sensitive_read": False, "tools": [], "previous_tool": "",
                            "calls_last_minute": 0, "writes_last_minute": 0, "denials_last_minute": 0,
                            "agent": NO_AGENT_CHAIN}
NO_USER: dict[str, Any] = {"present": False, "sub": "", "issuer": "", "email": "", "email_verified": False,
                           "groups": [], "client_id": "", "auth_time": 0, "acr": "", "amr": []}
ESCAPE_PREFIX = "__"  # Cedar's JSON escapes (__extn, __entity, __expr) all start so
PLANS_KEPT = 16  # read sets with a plan (a bundle's whole one and its tool kinds' own: a few), least recent out
SHAPES_KEPT = 4096  # distinct contexts remembered per plan (the shipped policies have 32)
# The agent controls some read strings (clientInfo name, task purpose: up to the body size), so only
# contexts of short strings are remembered, and a plan's contexts are capped in bytes too.
PLANNED_STRING_MAX = 256  # characters; a longer string read makes the context built plainly
SHAPE_BYTES_KEPT = 1 << 20  # all plans' remembered contexts' JSON bytes together (the shipped policies' 32: ~8 KiB)
_MISSING = object()  # a read path that ends at an absent attribute
_SCALARS = (bool, int, str)  # not float: 0.0 and -0.0 are one key but two spellings


class ContextBuilder:
    """Builds decision contexts for one engine (its working hours); safe to share between threads."""

    def __init__(self, working_hours: WorkingHours) -> None:
        self.working_hours = working_hours
        # The request facts of the last (second, era, client, override) asked for: calls in the same
        # second share them. One tuple, replaced whole, so a concurrent reader sees a consistent pair.
        self._last_request: tuple[_RequestKey, dict[str, Any]] | None = None
        # A plan per read set object (one per bundle, or a few: scoped.py gives each kind of tool its own),
        # by id, least recently used first; each entry holds its read set, so the id is not reused while it is
        # here. At most PLANS_KEPT, and SHAPE_BYTES_KEPT of remembered contexts across all of them.
        self._plans: OrderedDict[int, tuple[ContextReads, _Plan | None]] = OrderedDict()
        self.shape_bytes = 0  # the JSON bytes of the contexts all plans remember (approximate under threads)
        # whole_json's own last request facts, as JSON: the recorder's (an earlier second, written on the loop
        # between calls) must not push the live calls' out of _last_request.
        self._last_request_json: tuple[_RequestKey, bytes] | None = None

    def full(self, facts: RequestFacts, approved: bool) -> dict[str, Any]:
        """Every section but `input` (listing prunes this itself)."""
        return {"request": self.request_facts(facts), "approval": {"granted": bool(approved)},
                "task": task_context(facts), "chain": facts.chain or NO_CHAIN, "user": user_context(facts)}

    def build_json(self, reads: ContextReads, facts: RequestFacts, approved: bool, cedar_input: object = None,
                   input_whole: bool = False) -> tuple[dict[str, Any], bytes]:
        """build(), and its JSON for Cedar. A context of scalars alone (no tool input in it: what the shipped
        policies read) is one of a few, so each is built and serialized once per plan and found again
        from the values read (_Plan); the same dict and bytes as build() and orjson.dumps would give."""
        plan = self._plan(reads) if cedar_input is None or not input_whole else None
        if plan is not None and (cedar_input is None or not plan.reads_input):
            known = plan.known(self, facts, approved)
            if known is not None:
                return known
        context = self.build(reads, facts, approved, cedar_input, input_whole)
        return context, orjson.dumps(context)

    def _plan(self, reads: ContextReads) -> _Plan | None:
        """The plan of a read set (a bundle's, or one of its tool groups'; a reload brings others)."""
        if not isinstance(reads, dict):
            return None
        key = id(reads)
        known = self._plans.get(key)
        if known is not None and known[0] is reads:
            try:  # noqa: SIM105 (per call: no context manager)
                self._plans.move_to_end(key)
            except KeyError:  # pushed out meanwhile by another thread: the plan is still whole
                pass
            return known[1]
        known = self._plans[key] = (reads, _Plan.of(reads))
        while len(self._plans) > PLANS_KEPT:  # the least recently used goes (an old bundle's, a kind not called)
            _, (_, plan) = self._plans.popitem(last=False)
            if plan is not None:
                self.shape_bytes -= plan.forget()
        return known[1]

    def _room(self, size: int) -> None:
        """Make room for `size` more bytes of remembered contexts: when they would pass SHAPE_BYTES_KEPT across
        all plans, every plan forgets its own (the ones in use fill again)."""
        if self.shape_bytes + size > SHAPE_BYTES_KEPT:
            for _, plan in list(self._plans.values()):
                if plan is not None:
                    plan.forget()
            self.shape_bytes = 0

    def remembered(self, reads: ContextReads) -> tuple[int, int]:
        """(contexts, their JSON bytes) remembered for `reads` (for tests and benchmarks). Only looks: a read
        set not used yet has nothing remembered, and asking does not make a plan for it."""
        known = self._plans.get(id(reads))
        return (0, 0) if known is None or known[0] is not reads or known[1] is None else known[1].known_size()

    def build(self, reads: ContextReads, facts: RequestFacts, approved: bool, cedar_input: object = None,
              input_whole: bool = False) -> dict[str, Any]:
        """The context with only what `reads` covers; `cedar_input` is context.input (tools only), sent
        whole when `input_whole` (its type has escape-named attributes, see ToolModel.input_whole)."""
        context = self._read(reads, facts, approved, cedar_input, input_whole)
        if "chain" in context:
            context["chain"] = _chain_whole(context["chain"])
        return context

    def _read(self, reads: ContextReads, facts: RequestFacts, approved: bool, cedar_input: object,
              input_whole: bool) -> dict[str, Any]:
        if reads is True:
            context = self.full(facts, approved)
            if cedar_input is not None:
                context["input"] = cedar_input
            return context
        assert isinstance(reads, dict)
        context = {}
        for name, sub in reads.items():
            if name == "input":
                if cedar_input is not None:
                    context["input"] = cedar_input if input_whole else _pruned(cedar_input, sub)
                continue
            section = self._section(name, facts, approved)
            if section is not None:
                context[name] = _pruned(section, sub)
        if cedar_input is not None and "input" not in reads and input_whole:
            context["input"] = cedar_input
        return context

    def _section(self, name: str, facts: RequestFacts, approved: bool) -> JsonValue:
        if name == "request":
            return self.request_facts(facts)
        if name == "approval":
            return {"granted": bool(approved)}
        if name == "task":
            return task_context(facts)
        if name == "chain":
            return facts.chain or NO_CHAIN
        if name == "user":
            return user_context(facts)
        return None  # not a context attribute (validation rejects such a policy at load)

    def whole_json(self, facts: RequestFacts, approved: bool, cedar_input: object = None) -> bytes:
        """orjson.dumps(self.build(True, facts, approved, cedar_input)), the same bytes, without building that
        context: the whole one is what a decision's replay record keeps (the recorder asks for it off the
        request path, per decision). The sections that are one of a few (approval, no task, no user, no chain,
        the request facts of the second) come serialized already; the others are serialized as build() makes
        them."""
        key = _request_key(facts)
        last = self._last_request_json
        if last is None or last[0] != key:
            last = self._last_request_json = (key, orjson.dumps(self._request_section(key)))
        parts = [b'{"request":', last[1], b',"approval":', _APPROVAL_JSON[bool(approved)],
                 b',"task":', _NO_TASK_JSON if facts.task is None else orjson.dumps(task_context(facts)),
                 b',"chain":', _NO_CHAIN_JSON if not facts.chain else orjson.dumps(_chain_whole(facts.chain)),
                 b',"user":', _NO_USER_JSON if facts.user is None else orjson.dumps(user_context(facts))]
        if cedar_input is not None:
            parts += (b',"input":', orjson.dumps(cedar_input))
        parts.append(b"}")
        return b"".join(parts)

    def request_facts(self, facts: RequestFacts) -> dict[str, Any]:
        """context.request; shared between calls, never to be modified."""
        key = _request_key(facts)
        last = self._last_request
        if last is not None and last[0] == key:
            return last[1]
        value = self._request_section(key)
        self._last_request = (key, value)
        return value

    def _request_section(self, key: _RequestKey) -> dict[str, Any]:
        now, era, client, working_hours = key
        # Working hours start and end on whole minutes, so the local clock truncated to the second
        # gives the same hour, weekday and in-hours answer as the exact one.
        local = self.working_hours.local(float(now))
        return {"time": now, "hour": local.hour, "weekday": local.weekday,
                "working_hours": local.working_hours if working_hours is None else working_hours,
                "era": era, "client": nfc(client)}


_RequestKey = tuple[int, str, str, bool | None]  # what context.request is made of: second, era, client, in hours


def _request_key(facts: RequestFacts) -> _RequestKey:
    return (int(facts.now), facts.era, facts.client, facts.working_hours)


class _Plan:
    """One read set's contexts, remembered by the values read.

    A pruned context is determined by what each read path finds: the scalar at its end, an absent
    attribute, or a scalar where a record was expected (sent whole). When every path finds a scalar,
    the tuple of what they found (with its type: True, 1 and 1.0 are equal keys otherwise) picks a
    context built and serialized before; anything else (a set, a record read whole) is built as usual."""

    def __init__(self, reads: dict[str, ContextReads], sections: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]
                 ) -> None:
        self.reads = reads
        self.sections = sections  # (section name, its read paths below it)
        self.reads_input = "input" in reads
        self._known: dict[tuple[object, ...], tuple[dict[str, Any], bytes]] = {}
        self._known_bytes = 0  # JSON bytes of the contexts in _known

    @classmethod
    def of(cls, reads: dict[str, ContextReads]) -> _Plan | None:
        sections = []
        for name, sub in reads.items():
            if name == "input":
                continue
            paths = _paths(sub)
            if paths is None:
                return None
            sections.append((name, paths))
        return cls(reads, tuple(sections))

    def known(self, builder: ContextBuilder, facts: RequestFacts,
              approved: bool) -> tuple[dict[str, Any], bytes] | None:
        key = self._key(builder, facts, approved)
        if key is None:
            return None
        found = self._known.get(key)
        if found is None:
            context = builder.build(self.reads, facts, approved)
            found = (context, orjson.dumps(context))
            self._remember(builder, key, found)
        return found

    def _remember(self, builder: ContextBuilder, key: tuple[object, ...], found: tuple[dict[str, Any], bytes]) -> None:
        """Keep a context unless it holds a long string (checked here, on a miss: a hit holds nothing new)."""
        if any(type(part) is str and len(part) > PLANNED_STRING_MAX for part in key):
            return  # the agent's own long text (a client name, a task purpose): not one of a few
        if len(self._known) >= SHAPES_KEPT:
            builder.shape_bytes -= self.forget()
        builder._room(len(found[1]))
        self._known[key] = found
        self._known_bytes += len(found[1])
        builder.shape_bytes += len(found[1])

    def forget(self) -> int:
        """Drop the remembered contexts; their JSON bytes."""
        size = self._known_bytes
        self._known = {}
        self._known_bytes = 0
        return size

    def known_size(self) -> tuple[int, int]:
        """(contexts remembered, their JSON bytes)."""
        return len(self._known), self._known_bytes

    def _key(self, builder: ContextBuilder, facts: RequestFacts, approved: bool) -> tuple[object, ...] | None:
        parts: list[object] = []  # per path: how far it got (a scalar or a gap higher up shapes the context
        for name, paths in self.sections:  # differently), and the type and value it found there
            section = builder._section(name, facts, approved)
            for path in paths:
                value: object = section
                depth = 0
                for attr in path:
                    if not isinstance(value, dict):
                        break
                    value = value.get(attr, _MISSING)
                    depth += 1
                kind = type(value)
                if kind not in _SCALARS and value is not _MISSING:
                    return None  # a set or a whole record: not one of a few
                parts += (depth, kind, value)
        return tuple(parts)


def _paths(reads: ContextReads) -> tuple[tuple[str, ...], ...] | None:
    """The attribute paths `reads` covers below a section, () for the section whole; None for an empty
    record read (which keeps a record's shape but none of its values: not worth a plan)."""
    if reads is True:
        return ((),)
    if not isinstance(reads, dict) or not reads:
        return None
    paths: list[tuple[str, ...]] = []
    for attr, sub in reads.items():
        below = _paths(sub)
        if below is None:
            return None
        paths.extend((attr, *path) for path in below)
    return tuple(paths)


def _chain_whole(chain: Mapping[str, Any]) -> Mapping[str, Any]:
    """context.chain as build() sends it whole: chain.tools as distinct values, sorted."""
    if isinstance(chain, dict) and "tools" in chain:
        return {**chain, "tools": sorted(set(chain["tools"]))}
    return chain


# whole_json's sections that are one of a few, serialized once.
_APPROVAL_JSON = {approved: orjson.dumps({"granted": approved}) for approved in (False, True)}
_NO_TASK_JSON = orjson.dumps(NO_TASK)
_NO_CHAIN_JSON = orjson.dumps(_chain_whole(NO_CHAIN))
_NO_USER_JSON = orjson.dumps(NO_USER)


def task_context(facts: RequestFacts) -> dict[str, Any]:
    task = facts.task
    if task is None:
        return NO_TASK
    return {"present": True, "id": str(task["id"]), "purpose": nfc(str(task["purpose"])),
            "tools": list(task["tools"]), "chain": list(task.get("chain", ())), "depth": int(task.get("depth", 0)),
            "root": dict(task.get("root", NO_CHAIN_AGENT)), "delegator": dict(task.get("delegator", NO_CHAIN_AGENT))}


def user_context(facts: RequestFacts) -> dict[str, Any]:
    """context.user: the person, or present false (and empty values) for a workload."""
    user = facts.user
    if user is None:
        return NO_USER
    return {"present": True, "sub": user.subject, "issuer": user.issuer, "email": user.email,
            "email_verified": user.email_verified, "groups": sorted(set(user.groups)), "client_id": user.client_id,
            "auth_time": user.auth_time or 0, "acr": user.acr, "amr": sorted(set(user.amr))}


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _pruned(value: object, reads: ContextReads) -> JsonValue:
    return prune_context(value, reads) if isinstance(value, dict) and reads is not True else value
