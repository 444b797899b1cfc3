"""What-if replay: decide every recorded decision of a window again with a candidate policy set.

The candidate is compiled once against the live catalog (so it is validated exactly as a reload
would be) into an engine of its own: the live engine, its caches and the store are only read. Each
recorded input (gateway.policy.recorded) is decided again at its recorded time and compared with
what was decided live; every difference is a flip, grouped by flip, policies, tool and agent with a
few examples whose arguments are redacted as the console redacts them (gateway.audit.redact).

Which decisions the window holds comes from the audit log, so a decision whose input is gone (past
retention, recorded while recording was off, lost) is reported as not replayable, never as unchanged.
CPU-heavy work (compiling, opening and deciding) runs on worker threads, a page at a time.

The window is walked in time slices (SLICE_S): per slice only the audited (decision id, time) pairs of the
slice and the inputs recorded from EDGE_S before it are held, so memory is bounded by the slice, not the
window. An input recorded just before a slice's start whose audit record is in the slice is matched there.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gateway.audit.redact import redacted_preview
from gateway.policy.engine import PolicyEngine, PolicyLoadError
from gateway.policy.recorded import InputCipher, UnreadableRecord
from gateway.policy.sources import POLICY_SUBDIR, SCHEMA_FILE
from gateway.store.base import (
    AuditedDecisionQuery,
    AuditStore,
    DecisionInputQuery,
    DecisionInputRow,
    DecisionInputStore,
)

PAGE = 1000
EXAMPLES = 3
# Recorded inputs are stamped with the request time, the audit record a moment later: inputs this much
# before the window are read too, so a decision at the window's start is matched, not "not recorded".
EDGE_S = 300.0
SLICE_S = 600.0  # a slice's audited ids and inputs are all that is held at once (~6,000 at 10 decisions/s)
LOOSENING = frozenset({("deny", "allow"), ("step_up", "allow")})
MAX_CANDIDATE_FILES = 2000


class CandidateInvalid(ValueError):
    """The candidate policy set does not parse or validate; `problems` name file:line (relative to it)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the candidate policy set is invalid")
        self.problems = problems


GroupKey = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]  # flip, target, agent, live and candidate ids


@dataclass(frozen=True, slots=True)
class Window:
    since: float
    until: float
    agent_id: str | None = None


@dataclass(slots=True)
class Group:
    """Decisions that flipped the same way, for the same tool and agent, under the same policies."""

    flip: str
    tool: str
    agent_id: str
    live_policy_ids: tuple[str, ...]
    candidate_policy_ids: tuple[str, ...]
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"flip": self.flip, "loosening": tuple(self.flip.split(" -> ")) in LOOSENING, "tool": self.tool,
                "agent": self.agent_id, "live_policy_ids": list(self.live_policy_ids),
                "candidate_policy_ids": list(self.candidate_policy_ids), "count": self.count,
                "examples": self.examples}


@dataclass(slots=True)
class Tally:
    """What one replay found so far."""

    replayed: int = 0
    unchanged: int = 0
    before_policy: int = 0  # refused before Cedar: no policy set changes these
    past_retention: int = 0
    unreadable: int = 0
    not_recorded: int = 0
    decisions: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # the live outcomes of what was replayed
    flips: Counter[str] = field(default_factory=Counter)
    groups: dict[GroupKey, Group] = field(default_factory=dict)
    first_replayable: float | None = None


def compile_candidate(live: PolicyEngine, files: Mapping[str, str]) -> PolicyEngine:
    """The candidate set in `files` (relative path -> text) as an engine of its own, compiled against the
    live catalog. Blocking (runs on a worker thread). CandidateInvalid with file:line problems."""
    problems = [f"{name}: not a candidate file (only {SCHEMA_FILE} and {POLICY_SUBDIR}/**/*.cedar)"
                for name in files if not _candidate_path(name)]
    if len(files) > MAX_CANDIDATE_FILES:
        problems.append(f"too many files ({len(files)}; at most {MAX_CANDIDATE_FILES})")
    if problems:
        raise CandidateInvalid(problems)
    with tempfile.TemporaryDirectory(prefix="narrowgate-candidate-") as scratch:
        root = Path(scratch)
        _write_candidate(root, files)
        try:
            return PolicyEngine(root, live.bundle.catalog, working_hours=live.working_hours)
        except PolicyLoadError as exc:
            # Problems name the scratch copy: say them relative to the candidate directory instead.
            raise CandidateInvalid([p.replace(f"{root}/", "").replace(str(root), ".") for p in exc.problems]) from None


def _write_candidate(root: Path, files: Mapping[str, str]) -> None:
    """Copy the candidate's files under `root`; a name no file can have is the candidate's problem (not a 500)."""
    for name, text in files.items():
        path = root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except (OSError, ValueError) as exc:  # a NUL in the name, a file where a directory must go, too long
            raise CandidateInvalid([f"{name!r}: cannot be written ({type(exc).__name__})"]) from None


def _candidate_path(name: str) -> bool:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or any(part.startswith(".") for part in path.parts):
        return False
    return name == SCHEMA_FILE or (path.parts[0] == POLICY_SUBDIR and path.suffix == ".cedar" and len(path.parts) > 1)


class Replay:
    """One replay of a window with one candidate; `run` returns the report (a JSON-ready dict)."""

    def __init__(self, candidate: PolicyEngine, cipher: InputCipher, audit: AuditStore, inputs: DecisionInputStore,
                 window: Window, cutoff: float, live_version: str, examples: int = EXAMPLES,
                 slice_s: float = SLICE_S) -> None:
        self.candidate = candidate
        self.cipher = cipher
        self.audit = audit
        self.inputs = inputs
        self.window = window
        self.cutoff = cutoff  # inputs recorded before it are past retention
        self.live_version = live_version
        self.examples = examples
        self.slice_s = slice_s
        self.tally = Tally()
        # Inputs already replayed that the next slice's edge read sees again: id -> recorded time (pruned per slice).
        self._done: dict[str, float] = {}

    async def run(self) -> dict[str, Any]:
        start, until = self.window.since, self.window.until
        while start < until:
            end = min(start + self.slice_s, until)
            await self._replay_slice(start, end, last=end >= until)
            start = end
        return self._report()

    async def _replay_slice(self, start: float, end: float, last: bool) -> None:
        audited = await self._audited_decisions(start, end)
        self._done = {decision_id: at for decision_id, at in self._done.items() if at >= start - EDGE_S}
        matched: set[str] = set()
        after: tuple[float, int] | None = None
        while True:
            page = await self.inputs.decision_inputs(DecisionInputQuery(
                since=start - EDGE_S, until=end, agent_id=self.window.agent_id, limit=PAGE, by_time=True, after=after))
            if not page:
                break
            await asyncio.to_thread(self._replay_page, page, audited, matched, end, last)
            after = (page[-1].at, page[-1].seq)
        await asyncio.to_thread(self._count_missing, audited, matched)

    async def _audited_decisions(self, start: float, end: float) -> dict[str, float]:
        """The decisions the audit log holds for [start, end): decision id -> when."""
        ids: dict[str, float] = {}
        after: tuple[float, int] | None = None
        while True:
            page = await self.audit.audited_decisions(AuditedDecisionQuery(start, end, self.window.agent_id, after,
                                                                            PAGE))
            if not page:
                return ids
            ids.update((d.decision_id, d.at) for d in page if d.decision_id)
            after = (page[-1].at, page[-1].seq)

    def _replay_page(self, rows: list[DecisionInputRow], audited: Mapping[str, float], matched: set[str],
                     end: float, last: bool) -> None:
        """On a worker thread: open each input of the slice and decide it again."""
        tally = self.tally
        for row in rows:
            audited_at = audited.get(row.decision_id)
            if audited_at is not None:
                matched.add(row.decision_id)
            if row.decision_id in self._done:
                continue
            if audited_at is None:
                # Not audited in this slice: before the window (its audit record, if any, is too), or audited in
                # the next slice (whose edge read sees it again): leave it; else it is this slice's, unaudited.
                if row.at < self.window.since or (not last and row.at >= end - EDGE_S):
                    continue
                tally.decisions += 1
            self._done[row.decision_id] = row.at
            # Past retention by the audit record's time, as the window and the missing inputs are judged: a
            # decision requested a moment before the line and audited after it is in the window, input kept.
            if (row.at if audited_at is None else audited_at) < self.cutoff:
                tally.past_retention += 1
                continue
            try:
                recorded = self.cipher.open(row.decision_id, row.payload)
            except UnreadableRecord:
                tally.unreadable += 1
                continue
            self._replay_one(row, recorded)

    def _count_missing(self, audited: Mapping[str, float], matched: set[str]) -> None:
        """An audited decision of the slice with no input: deleted after retention if it is that old, else never
        recorded."""
        tally = self.tally
        tally.decisions += len(audited)
        for decision_id, at in audited.items():
            if decision_id not in matched:
                if at < self.cutoff:
                    tally.past_retention += 1
                else:
                    tally.not_recorded += 1

    def _replay_one(self, row: DecisionInputRow, recorded: dict[str, Any]) -> None:
        tally = self.tally
        if tally.first_replayable is None or row.at < tally.first_replayable:
            tally.first_replayable = row.at
        if recorded.get("before_policy"):
            tally.before_policy += 1
            return
        tally.replayed += 1
        tally.outcomes[row.outcome] += 1
        decision = self.candidate.redecide(recorded)
        if decision.outcome == row.outcome:
            tally.unchanged += 1
            return
        flip = f"{row.outcome} -> {decision.outcome}"
        tally.flips[flip] += 1
        live_ids = tuple(recorded.get("live", {}).get("policy_ids", ()))
        key = (flip, row.target, row.agent_id, live_ids, decision.policy_ids)
        group = tally.groups.get(key)
        if group is None:
            group = tally.groups[key] = Group(flip, row.target, row.agent_id, live_ids, decision.policy_ids)
        group.count += 1
        # The earliest few: the same examples however the window is sliced or its inputs paged.
        if len(group.examples) < self.examples or (row.at, row.decision_id) < _example_key(group.examples[-1]):
            group.examples.append(_example(row, recorded))
            group.examples.sort(key=_example_key)
            del group.examples[self.examples:]

    def _report(self) -> dict[str, Any]:
        tally, window = self.tally, self.window
        not_recorded = tally.not_recorded
        loosening = sum(n for flip, n in tally.flips.items() if tuple(flip.split(" -> ")) in LOOSENING)
        groups = sorted(tally.groups.values(), key=lambda g: (tuple(g.flip.split(" -> ")) not in LOOSENING,
                                                               -g.count, g.flip, g.tool, g.agent_id,
                                                               g.live_policy_ids, g.candidate_policy_ids))
        not_replayable = tally.past_retention + tally.unreadable + not_recorded
        return {
            "window": {"since": window.since, "until": window.until, "agent": window.agent_id},
            "live_policy_version": self.live_version,
            "candidate_policy_version": self.candidate.version,
            "decisions": tally.decisions,
            "replayed": tally.replayed,
            "replayed_outcomes": dict(sorted(tally.outcomes.items())),
            "unchanged": tally.unchanged,
            "flipped": sum(tally.flips.values()),
            "loosening": loosening,
            "before_policy": tally.before_policy,
            "not_replayable": {"total": not_replayable, "past_retention": tally.past_retention,
                               "not_recorded": not_recorded, "unreadable": tally.unreadable},
            "replayable_since": tally.first_replayable,
            "flips": dict(sorted(tally.flips.items())),
            "groups": [g.to_dict() for g in groups],
        }


def _example(row: DecisionInputRow, recorded: Mapping[str, Any]) -> dict[str, Any]:
    """One flipped decision as a person may see it: arguments redacted as the console shows them."""
    arguments = recorded.get("arguments")
    return {"decision_id": row.decision_id, "at": row.at, "task_id": recorded.get("task_id"),
            "arguments": redacted_preview(arguments if isinstance(arguments, dict) else None,
                                          tuple(recorded.get("data_classes") or ()))}


def _example_key(example: Mapping[str, Any]) -> tuple[float, str]:
    return float(example["at"]), str(example["decision_id"])


def window_for(since_s: float, agent_id: str | None, now: float | None = None) -> Window:
    until = time.time() if now is None else now
    return Window(until - since_s, until, agent_id)
