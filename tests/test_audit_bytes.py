"""The audit chain's bytes and the argument digests do not change when their serializer does.

`tests/fixtures/audit_bytes.json` was written by the code on main before the per-call speed work
(issue 19) replaced stdlib `json` on these paths: every stored column of a chain of audit records
(written by the real AuditLog into a real SQLite file, with a fixed clock and digest key) and the
argument digest of a set of argument values. The inputs cover what a serializer is most likely to
spell differently: floats (exponents, -0.0, NaN and infinities), big integers, unicode (raw UTF-8,
control characters, lone surrogates, U+2028), key order, odd types normalized by `default=str`.

Regenerate only on purpose (the chain format is a compatibility promise):
`.venv/bin/python -m tests.test_audit_bytes --write`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import AuditEvent, AuditLog, redacted_preview
from gateway.audit.canonical import canonical_bytes, json_normalized
from gateway.audit.chain import RECORD_FIELDS, canonical_json
from gateway.audit.digests import DigestKey
from gateway.store import open_store
from gateway.verifier import argument_digest

FIXTURE = Path(__file__).parent / "fixtures" / "audit_bytes.json"
T0 = 1_767_225_600.123456
DIGEST_KEY = bytes(range(32))

FLOATS: list[Any] = [0.0, -0.0, 0.1, 1.0, -1.5, 1e16, 1e-7, 1.5e300, 2.5e-300, 123456789.123, 1e15, 9999999999999998.0,
                     0.0001, 0.00001, 1 / 3, 5e-324, 1.7976931348623157e308, 100.0, 12345678901234567890.0]
BIG_INTS: list[Any] = [2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**64 + 1, -(2**70), 10**30]
TEXTS: list[Any] = ["plain", "é", "naïve café", "中文", "🎉 party", "e\u0301", "\u2028\u2029", "\x00\x01\x1f\x7f",
                    'quote " and \\ backslash', "tab\tnew\nline\r", "\ud800 lone", "\ufeff bom", "/path/../x", ""]
ARGUMENTS: list[Any] = [
    None, {}, {"text": "hello"}, {"b": 1, "a": 2, "A": 3, "_": 4, "é": 5, "z": {"y": 1, "x": [3, 2, 1]}},
    {"amount": 12.5, "currency": "EUR"}, {"floats": FLOATS}, {"ints": BIG_INTS}, {"texts": TEXTS},
    {"nested": {"deep": [{"k": [None, True, False, 0, -1]}]}}, {"nan": float("nan"), "inf": float("inf"),
                                                                  "ninf": float("-inf")},
    {t: i for i, t in enumerate(TEXTS)}, {"é": 1, "e": 2, "f": 3, "\U0001f389": 4, "\uffff": 5, "ÿ": 6},
]


def events() -> list[AuditEvent]:
    base = {"kind": "decision", "action": "call", "actor": "bench-agent", "agent_id": "bench-agent",
            "owner": "owner@example.com", "task_id": None, "tool": "bench__echo", "decision": "allow",
            "policy_ids": ("shipped-permit",), "decision_id": "d-1", "trace_id": "ab" * 16}
    cases: list[dict[str, Any]] = [
        {"args_digest": argument_digest({"text": "x"}), "preview": redacted_preview({"text": "x"}, ["public"]),
         "detail": {"policy_version": "v1", "era": "2025-11-25"}},
        {"preview": redacted_preview({"password": "hunter2", "amount": 1e16, "token": "eyJabcd.efgh.ij"}, []),
         "detail": {"floats": FLOATS}},
        {"detail": {"ints": BIG_INTS, "texts": TEXTS}, "task_id": "task-é"},
        {"detail": {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf")}, "decision": "deny",
         "policy_ids": ()},
        {"detail": {"when": datetime.date(2026, 1, 2), "tuple": (1, 2.5), 7: "int key", "set": frozenset()},
         "tool": "\ud800 tool"},
        {"detail": {t: [t] for t in TEXTS if t}, "owner": None, "actor": None},
        {"kind": "approval", "action": "approve", "actor": "admin:émile", "decision": None,
         "preview": {"k": None, "b": True, "f": -0.0, "n": 2**64},
         "detail": {"nested": {"b": {"a": [{"z": 1, "a": 2}]}}}},
    ]
    return [AuditEvent(**{**base, **case, "decision_id": f"d-{n}"}) for n, case in enumerate(cases, 1)]


def ticking_clock() -> Any:
    state = {"now": T0}

    def clock() -> float:
        state["now"] += 0.001
        return state["now"]

    return clock


async def stored_columns(db: Path) -> list[list[Any]]:
    """Write `events()` through the real audit log into a fresh SQLite file; every stored column."""
    store = open_store(f"sqlite:///{db}")
    await store.migrate()
    log = AuditLog(store, ticking_clock(), digests=DigestKey(DIGEST_KEY).keyed)
    await log.open()
    for event in events():
        log.record(event)
    await log.flush()
    await log.close()
    await store.close()
    with sqlite3.connect(db) as conn:
        return [list(row) for row in conn.execute(f"SELECT {', '.join(RECORD_FIELDS)} FROM audit_log ORDER BY seq")]


def current() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(stored_columns(Path(tmp) / "audit.db"))
    return {
        "columns": list(RECORD_FIELDS),
        "rows": rows,
        "argument_digests": [argument_digest(arguments) for arguments in ARGUMENTS],
        "canonical_json": [canonical_json(arguments) for arguments in ARGUMENTS if arguments is not None],
    }


def _encoded(value: Any) -> str:
    # ASCII with escapes: the fixture holds exactly what the code produced, lone surrogates included.
    return json.dumps(value, ensure_ascii=True, indent=1)


def test_audit_chain_bytes_are_unchanged() -> None:
    recorded = json.loads(FIXTURE.read_text())
    now = json.loads(_encoded(current()))
    assert now["columns"] == recorded["columns"]
    for seq, (got, want) in enumerate(zip(now["rows"], recorded["rows"], strict=True), 1):
        assert got == want, f"audit record {seq} differs from the recorded bytes"


def test_argument_digests_are_unchanged() -> None:
    recorded = json.loads(FIXTURE.read_text())
    now = json.loads(_encoded(current()))
    assert now["argument_digests"] == recorded["argument_digests"]
    assert now["canonical_json"] == recorded["canonical_json"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_audit_bytes --write")
    FIXTURE.write_text(_encoded(current()) + "\n")
    print(f"wrote {FIXTURE}")


# Any JSON-like value, including what orjson would spell differently (tiny floats, NaN, big integers,
# lone surrogates) and what it refuses: the fast path must give stdlib's bytes or defer to stdlib.
_LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=-1e-3, max_value=1e-3)
           | st.text(st.characters(codec=None, exclude_categories=())))
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(_VALUES)
def test_fast_canonical_json_spells_values_as_stdlib_does(value: Any) -> None:
    stdlib = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(value) == stdlib.encode("utf-8", "surrogatepass")
    assert canonical_json(value) == stdlib
    record = {"detail": value}
    expected = json.loads(json.dumps(record, default=str, ensure_ascii=False).encode("utf-8", "replace").decode())
    assert json.dumps(json_normalized(record)) == json.dumps(expected)  # json.dumps: NaN compares equal as text


def test_the_fast_path_takes_ordinary_records_and_arguments() -> None:
    from gateway.audit.canonical import is_plain
    from gateway.audit.chain import unsealed_record

    assert is_plain(unsealed_record(events()[0], T0))
    assert is_plain({"text": "hello", "amount": 12.5, "ids": [1, 2**63], "nested": {"ok": None}})
    assert not is_plain({"tiny": 1e-5}) and not is_plain([float("nan")]) and not is_plain({1: "x"})
    assert not is_plain(2**64) and not is_plain(datetime.date(2026, 1, 1))
