"""The hash chain: how a record is sealed, and how a sequence of records is checked.

A record is a plain dict with RECORD_FIELDS. Its hash is

    sha256(prev_hash + canonical_json(record without "hash")).hexdigest()

with canonical_json = json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False),
and the first record's prev_hash is GENESIS_HASH (64 zeros). Because seq and prev_hash are
inside the hashed text, changing, removing, inserting or reordering a record breaks either
its own hash or the link of the record after it.

What a bare chain cannot show: records cut off the end, or a log rewritten from some point on
by someone who recomputes every later hash. Against that, keep the head (`narrowgate audit
verify` prints it) somewhere the database's owner cannot write, and compare later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.canonical import canonical_bytes, canonical_text, json_normalized
from gateway.audit.model import AuditEvent

GENESIS_HASH = "0" * 64
RECORD_FIELDS: tuple[str, ...] = (
    "seq", "at", "kind", "action", "actor", "agent_id", "owner", "task_id", "tool", "decision",
    "policy_ids", "decision_id", "trace_id", "args_digest", "preview", "detail", "prev_hash", "hash",
)
TEXT_FIELDS = ("kind", "action", "actor", "agent_id", "owner", "task_id", "tool", "decision",
               "decision_id", "trace_id", "args_digest")


def canonical_json(value: object) -> str:
    """json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), computed fast
    (gateway.audit.canonical)."""
    return canonical_text(value)


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash `record` should carry: over its prev_hash and every field but `hash`."""
    body = {name: value for name, value in record.items() if name != "hash"}
    # surrogatepass: a tampered record with a lone surrogate must give a mismatch, not a crash.
    prefix = str(record.get("prev_hash")).encode("utf-8", "surrogatepass")
    return hashlib.sha256(prefix + canonical_bytes(body)).hexdigest()


def unsealed_record(event: AuditEvent, at: float) -> dict[str, Any]:
    """The record of `event` without seq, prev_hash and hash (the writer adds those in commit order).

    Everything is normalized here, at enqueue time, to what the database stores and gives back
    (JSON types, valid UTF-8), so the hash computed now matches the record read later, and one
    odd value can never make a whole batch fail forever.
    """
    return json_normalized(raw_record(event, at))


def raw_record(event: AuditEvent, at: float) -> dict[str, Any]:
    """unsealed_record before normalization: the event's fields as text, lists and (copied) dicts."""
    record: dict[str, Any] = {"at": float(at)}
    for name in TEXT_FIELDS:
        value = getattr(event, name)
        record[name] = None if value is None else str(value)
    if record["actor"] is None:
        record["actor"] = ""
    record["policy_ids"] = [str(policy_id) for policy_id in event.policy_ids]
    record["preview"] = None if event.preview is None else dict(event.preview)
    record["detail"] = dict(event.detail)
    return record


def seal(record: Mapping[str, Any], seq: int, prev_hash: str) -> dict[str, Any]:
    """`record` (from unsealed_record) as entry `seq` of the chain, after the record hashed `prev_hash`."""
    sealed = {**record, "seq": seq, "prev_hash": prev_hash}
    sealed["hash"] = record_hash(sealed)
    return sealed


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int | None  # where it is found (the record after a removal, say); None if the seq is unreadable
    kind: str  # "modified" | "gap" | "broken_link" | "duplicate" | "out_of_order" | "malformed"
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.message}"


@dataclass(slots=True)
class ChainVerifier:
    """Checks records one at a time (in stored seq order), so a long log is verified in pages."""

    problems: list[ChainProblem] = field(default_factory=list)
    count: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH

    def check(self, row: Mapping[str, Any]) -> None:
        seq = row.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            self._problem(None, "malformed", f"record after seq {self.last_seq} has no integer seq ({seq!r})")
            return
        self._check_position(seq)
        self._check_link(seq, row.get("prev_hash"))
        self._check_hash(seq, row)
        self.count += 1
        # Follow the stored chain from here on, so one tampered record is reported once,
        # not as a cascade of every record after it.
        self.last_seq = seq
        self.last_hash = str(row.get("hash"))

    def _check_position(self, seq: int) -> None:
        expected = self.last_seq + 1
        if seq == self.last_seq and self.count:
            self._problem(seq, "duplicate", f"seq {seq} appears twice (a record was inserted)")
        elif seq < expected:
            self._problem(seq, "out_of_order", f"seq {seq} comes after seq {self.last_seq} (records reordered)")
        elif seq > expected:
            missing = str(expected) if seq == expected + 1 else f"{expected}..{seq - 1}"
            self._problem(seq, "gap", f"seq {missing} missing before seq {seq} (records removed)")

    def _check_link(self, seq: int, prev_hash: object) -> None:
        if prev_hash != self.last_hash:
            before = f"seq {self.last_seq}" if self.count else "the genesis"
            self._problem(seq, "broken_link", f"prev_hash does not match the hash of {before} "
                                              "(a record before it was removed, inserted or reordered)")

    def _check_hash(self, seq: int, row: Mapping[str, Any]) -> None:
        try:
            computed = record_hash(row)
        except (TypeError, ValueError) as exc:
            self._problem(seq, "malformed", f"cannot hash the record: {exc}")
            return
        if computed != row.get("hash"):
            self._problem(seq, "modified", "hash mismatch: the record's content differs from what was written")

    def _problem(self, seq: int | None, kind: str, message: str) -> None:
        self.problems.append(ChainProblem(seq, kind, message))


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> list[ChainProblem]:
    """Every problem in `rows` (records in stored order, oldest first); empty when the chain is intact."""
    verifier = ChainVerifier()
    for row in rows:
        verifier.check(row)
    return verifier.problems
