"""A tool decision's audit record made from its shape (gateway.audit.shape, kept by the Authorizer per agent, tool
and answer) says what the record made in full says, and is stored with the same bytes: the same rows and hashes
in the audit log, call after call, for allows, denials, step-ups and a person's calls, with the replica in each
record's detail."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditEvent, AuditLog, redacted_preview
from gateway.audit.chain import RECORD_FIELDS
from gateway.audit.digests import DigestKey
from gateway.catalog.model import Catalog
from gateway.identity.user import UserIdentity
from gateway.policy.authorizer import Authorizer
from gateway.policy.engine import Decision, PolicyEngine
from gateway.policy.reauth import ReauthTerms
from gateway.store import open_store
from gateway.verifier import argument_digest
from tests.test_audit_bytes import DIGEST_KEY, ticking_clock
from tests.test_policy_engine import REPO_CEDAR, agent_principal, engine_for, facts, write_catalog

SHARED = ("kind", "action", "actor", "agent_id", "owner", "task_id", "tool", "decision", "policy_ids", "detail")
PERSON = UserIdentity("person-1", "https://idp.example", "", False, (), "client", None, "", ())
CALLS = [  # agent, servers it may use, tool, arguments, person
    ("a1", ("files",), "files__read_file", {"path": "/a"}, None),
    ("a1", ("files",), "files__read_file", {"path": "/b", "token": "ghp_abcdefghijklmnop"}, None),
    ("a1", ("files",), "payments__get_balance", {}, None),  # denied
    ("a1", ("files",), "files__wipe", {"path": "/"}, None),  # destructive: step-up or deny
    ("a2", ("files",), "files__write_file", {"path": "/c"}, None),  # the same agent and tool, not for a person
    ("a2", ("files",), "files__write_file", {"path": "/c", "text": "x" * 300}, PERSON),
    ("a2", ("files",), "files__write_file", {"path": "/d"}, PERSON),
]


@pytest.fixture
def policy(tmp_path: Path) -> tuple[PolicyEngine, Catalog]:
    """The shipped policies over test_policy_engine's catalog."""
    shutil.copytree(REPO_CEDAR, tmp_path / "cedar", ignore=shutil.ignore_patterns("tests", "README.md"))
    catalog = write_catalog(tmp_path / "catalog")
    return engine_for(tmp_path / "cedar", catalog), catalog


def decided(engine: PolicyEngine, catalog: Catalog) -> list[tuple[Any, ...]]:
    cases = []
    for agent_id, servers, tool, arguments, person in CALLS * 2:  # twice: the second time from the kept shape
        principal = dataclasses.replace(agent_principal(agent_id, servers=servers), user=person)
        entry = catalog.tools[tool]
        cases.append((engine.decide_tool(principal, entry, arguments, facts()), principal, entry, arguments))
    return cases


def full_event(authorizer: Authorizer, decision: Decision, principal: Any, entry: Any,
               arguments: dict[str, Any]) -> AuditEvent:
    """The event as made before shapes: every value of it from the decision, the principal and the facts."""
    canonical = decision.canonical_arguments
    return authorizer.event(decision, principal, facts(), entry.exposed_name, "ab" * 16,
                            args_digest=decision.args_digest or argument_digest(arguments),
                            preview=redacted_preview(canonical if canonical is not None else arguments,
                                                     entry.data_classes))


async def stored(path: Path, events: list[AuditEvent]) -> list[tuple[Any, ...]]:
    store = open_store(f"sqlite:///{path}")
    await store.migrate()
    log = AuditLog(store, ticking_clock(), digests=DigestKey(DIGEST_KEY).keyed)
    await log.open()
    for event in events:
        log.record(event)
    await log.close()
    await store.close()
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {', '.join(RECORD_FIELDS)} FROM audit_log ORDER BY seq").fetchall()


async def test_shaped_tool_records_are_the_full_records(policy: tuple[PolicyEngine, Catalog], tmp_path: Path) -> None:
    engine, catalog = policy
    authorizer = Authorizer(engine, AuditLog(open_store(f"sqlite:///{tmp_path / 'unused.db'}")), replica="r-1")
    cases = decided(engine, catalog)
    shaped = [authorizer.tool_event(decision, principal, entry, arguments, facts(), None, "ab" * 16)[0]
              for decision, principal, entry, arguments in cases]
    full = [full_event(authorizer, *case) for case in cases]
    assert {event.decision for event in shaped} >= {"allow", "deny"}
    assert all(event.shape is not None for event in shaped)
    for event in shaped:  # the shape's own objects, so the audit log takes it (gateway.audit.prepared._shaped)
        assert all(getattr(event, name) is getattr(event.shape, name) for name in SHARED), event
    assert shaped == full  # what each record says (the shape is not part of it)
    half = len(CALLS)
    assert all(later.shape is earlier.shape for earlier, later in zip(shaped[:half], shaped[half:], strict=True))
    assert shaped[5].detail == {"policy_version": engine.version, "era": "2026-07-28", "replica": "r-1",
                                "user": "person-1", "user_issuer": "https://idp.example"}
    assert await stored(tmp_path / "shaped.db", shaped) == await stored(tmp_path / "full.db", full)


async def test_an_approved_call_and_a_delegated_task_are_recorded_in_full(policy: tuple[PolicyEngine, Catalog],
                                                                        tmp_path: Path) -> None:
    engine, catalog = policy
    authorizer = Authorizer(engine, AuditLog(open_store(f"sqlite:///{tmp_path / 'unused.db'}")))
    decision, principal, entry, arguments = decided(engine, catalog)[0]
    approved, durable = authorizer.tool_event(decision, principal, entry, arguments, facts(), None, None, "apr_1")
    assert durable and approved.shape is None and approved.detail["approval_id"] == "apr_1"
    task = {"depth": 1, "chain": [{"agent": "root-agent"}, {"agent": "a1"}]}
    delegated = dataclasses.replace(facts(), task=task)
    event, _ = authorizer.tool_event(decision, principal, entry, arguments, delegated, None)
    assert event.shape is None and event.detail["chain"] == ["root-agent", "a1"]


def _other(value: Any) -> Any:
    """A value of the same kind that differs from `value` (None where there is no such kind)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return (*value, "other")
    if isinstance(value, Mapping):
        return {**value, "other": 1}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        first = dataclasses.fields(value)[0].name
        return dataclasses.replace(value, **{first: _other(getattr(value, first))})
    return None


NONE_REPLACED = {"reauth": ReauthTerms(("phr",), 60), "task": {"id": "t", "depth": 0, "chain": []},
                 "chain": {"calls": 1}, "working_hours": True, "approvers": "admins", "step_up_mode": "pending",
                 "approval_ttl_s": 60.0, "canonical_arguments": {"path": "/other"}, "args_digest": "0" * 64,
                 "expires_at": 1e10}


def _variants(obj: Any) -> list[tuple[str, Any]]:
    """`obj` with one field changed, for each field that can be."""
    changed = []
    for f in dataclasses.fields(obj):
        current = getattr(obj, f.name)
        value = NONE_REPLACED.get(f.name) if current is None else _other(current)
        if value is not None:
            changed.append((f.name, dataclasses.replace(obj, **{f.name: value})))
    return changed


async def test_every_input_of_a_record_is_in_its_shape_key(policy: tuple[PolicyEngine, Catalog],
                                                           tmp_path: Path) -> None:
    """A kept shape is never used for a call whose record would say something else: change any one field of
    the decision, the principal (its agent and person too) or the facts, and the record from the warmed cache
    is still the record made in full. Fails if Authorizer.event reads an input the shape key leaves out."""
    engine, catalog = policy
    authorizer = Authorizer(engine, AuditLog(open_store(f"sqlite:///{tmp_path / 'unused.db'}")), replica="r-1")
    decision, principal, entry, arguments = decided(engine, catalog)[0]
    principal = dataclasses.replace(principal, user=PERSON, task_id="task-1")
    base = facts()
    variants = ([(f"decision.{n}", v, principal, base) for n, v in _variants(decision)]
                + [(f"principal.{n}", decision, v, base) for n, v in _variants(principal)]
                + [(f"principal.agent.{n}", decision, dataclasses.replace(principal, agent=v), base)
                   for n, v in _variants(principal.agent)]
                + [(f"principal.user.{n}", decision, dataclasses.replace(principal, user=v), base)
                   for n, v in _variants(PERSON)]
                + [(f"facts.{n}", decision, principal, v) for n, v in _variants(base)])
    assert len(variants) > 30
    for name, variant_decision, variant_principal, variant_facts in variants:
        authorizer.tool_event(decision, principal, entry, arguments, base, None)  # the base call's shape kept
        shaped, _ = authorizer.tool_event(variant_decision, variant_principal, entry, arguments, variant_facts, None)
        full = authorizer.event(variant_decision, variant_principal, variant_facts, entry.exposed_name, None,
                                args_digest=shaped.args_digest, preview=shaped.preview)
        assert {n: getattr(shaped, n) for n in SHARED} == {n: getattr(full, n) for n in SHARED}, name
