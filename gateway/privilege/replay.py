"""What-if replay: decide every recorded decision of a window again with a candidate policy set.

The candidate is compiled once against the live catalog (so it is validated exactly as a reload
would be) into an engine of its own: the live engine, its caches and the store are only read. Each
recorded input (gateway.policy.recorded) is decided again at its recorded time and compared with
what was decided live; every difference is a flip, grouped by flip, policies, tool and agent with a
few examples whose arguments are redacted as the console redacts them (gateway.audit.redact).

Which decisions the window holds comes from the audit log, so a decision whose input is gone (past
retention, recorded while recording was off, lost) is reported as not replayable, never as unchanged.
CPU-heavy work (compiling, opening and deciding) runs on worker threads, a page at a time.
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
from gateway.store.base import AuditQuery, AuditStore, DecisionInputQuery, DecisionInputRow, DecisionInputStore

PAGE = 1000
EXAMPLES = 3
# Recorded inputs are stamped with the request time, the audit record a moment later: inputs this much
# before the window are read too, so a decision at the window's start is matched, not "not recorded".
EDGE_S = 300.0
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
    outcomes: Counter[str] = field(default_factory=Counter)  # the live outcomes of what was replayed
    flips: Counter[str] = field(default_factory=Counter)
    groups: dict[GroupKey, Group] = field(default_factory=dict)
    seen_ids: set[str] = field(default_factory=set)
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
                 window: Window, cutoff: float, live_version: str, examples: int = EXAMPLES) -> None:
        self.candidate = candidate
        self.cipher = cipher
        self.audit = audit
        self.inputs = inputs
        self.window = window
        self.cutoff = cutoff  # inputs recorded before it are past retention
        self.live_version = live_version
        self.examples = examples
        self.tally = Tally()

    async def run(self) -> dict[str, Any]:
        audited = await self._audited_decisions()
        await self._replay_recorded(audited)
        return self._report(audited)

    async def _audited_decisions(self) -> dict[str, float]:
        """The decisions the audit log holds for the window: decision id -> when."""
        window, after = self.window, 0
        ids: dict[str, float] = {}
        while True:
            page = await self.audit.audit_records(AuditQuery(after_seq=after, kind="decision", since=window.since,
                                                             until=window.until, agent_id=window.agent_id, limit=PAGE))
            if not page:
                return ids
            ids.update((str(r["decision_id"]), float(r["at"])) for r in page if r.get("decision_id"))
            after = page[-1]["seq"]

    async def _replay_recorded(self, audited: Mapping[str, float]) -> None:
        window, after = self.window, 0
        while True:
            page = await self.inputs.decision_inputs(DecisionInputQuery(
                since=window.since - EDGE_S, until=window.until, agent_id=window.agent_id, after_seq=after,
                limit=PAGE))
            if not page:
                return
            rows = [r for r in page if r.at >= window.since or r.decision_id in audited]
            await asyncio.to_thread(self._replay_page, rows, audited)
            after = page[-1].seq

    def _replay_page(self, rows: list[DecisionInputRow], audited: Mapping[str, float]) -> None:
        """On a worker thread: open each input and decide it again."""
        tally = self.tally
        for row in rows:
            if row.decision_id in tally.seen_ids:
                continue
            tally.seen_ids.add(row.decision_id)
            # Past retention by the audit record's time, as the window and the missing inputs are judged: a
            # decision requested a moment before the line and audited after it is in the window, input kept.
            if audited.get(row.decision_id, row.at) < self.cutoff:
                tally.past_retention += 1
                continue
            try:
                recorded = self.cipher.open(row.decision_id, row.payload)
            except UnreadableRecord:
                tally.unreadable += 1
                continue
            self._replay_one(row, recorded)

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
        if len(group.examples) < self.examples:
            group.examples.append(_example(row, recorded))

    def _report(self, audited: Mapping[str, float]) -> dict[str, Any]:
        tally, window = self.tally, self.window
        # An audited decision with no input: deleted after retention if it is that old, else never recorded.
        missing = [at for decision_id, at in audited.items() if decision_id not in tally.seen_ids]
        expired = sum(at < self.cutoff for at in missing)
        tally.past_retention += expired
        not_recorded = len(missing) - expired
        loosening = sum(n for flip, n in tally.flips.items() if tuple(flip.split(" -> ")) in LOOSENING)
        groups = sorted(tally.groups.values(), key=lambda g: (tuple(g.flip.split(" -> ")) not in LOOSENING,
                                                               -g.count, g.flip, g.tool, g.agent_id))
        not_replayable = tally.past_retention + tally.unreadable + not_recorded
        return {
            "window": {"since": window.since, "until": window.until, "agent": window.agent_id},
            "live_policy_version": self.live_version,
            "candidate_policy_version": self.candidate.version,
            "decisions": len(audited.keys() | tally.seen_ids),
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


def window_for(since_s: float, agent_id: str | None, now: float | None = None) -> Window:
    until = time.time() if now is None else now
    return Window(until - since_s, until, agent_id)
