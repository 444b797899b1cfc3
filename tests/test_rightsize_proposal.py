"""The right-sizing proposal (gateway/privilege/proposal.py): how an entitlement narrows, and the line-preserving
edit of the agents file for each shape an entitlement is written in. The end-to-end test
(tests/test_rightsize_e2e.py) applies a proposal on a real gateway; these cover the shapes it does not."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from gateway.privilege.proposal import CannotEdit, declared_entitlement, edit_entitlement, narrow, propose
from gateway.registry.model import Agent, Entitlement, Lifecycle, WorkloadIdentity

HEAD = """\
# the fleet
agents:
  - id: bot   # a bot
    owner: o@example.com
    purpose: p
    identities: [{kind: static, issuer: narrowgate, subject: bot}]
"""
GRANTED = [("s__a", "s", True), ("s__b", "s", False), ("t__x", "t", False), ("u__q", "u", False)]


def agent(entitlement: Entitlement) -> Agent:
    return Agent("bot", "bot", "o@example.com", "p", Lifecycle.ACTIVE, 0.0, 0.0, None,
                 (WorkloadIdentity("static", "narrowgate", "bot", MappingProxyType({})),), entitlement=entitlement)


def test_server_grants_become_the_used_tools_and_unused_servers_go() -> None:
    current = Entitlement(tools=("t__x",), servers=("s", "u"))
    assert narrow(current, GRANTED, keeps_servers=False) == Entitlement(tools=("s__a",), servers=())


def test_prompt_or_resource_use_keeps_a_used_server_and_forbids_its_unused_tools_in_cedar() -> None:
    current = Entitlement(tools=("t__x",), servers=("s", "u"))
    proposal = propose(agent(current), GRANTED, True, None, None)
    assert proposal.narrowed == Entitlement(tools=(), servers=("s",))
    assert proposal.forbidden == ("s__b",)  # u: no tool used, dropped; t__x: dropped from tools
    assert proposal.managed_by == "admin_api" and proposal.cedar_file == "90-rightsize-bot.cedar"
    assert proposal.cedar_text is not None and '"s__b"' in proposal.cedar_text


def test_a_tool_granted_by_another_policy_is_forbidden_in_cedar() -> None:
    proposal = propose(agent(Entitlement(tools=("s__a",))), [("s__a", "s", True), ("v__w", "v", False)],
                       False, None, None)
    assert (proposal.changes_entitlement, proposal.forbidden) == (False, ("v__w",))


@pytest.mark.parametrize(("entitlement", "expected"), [
    ("    entitlement: {servers: [s, u], tools: [t__x]}  # flow\n",
     "    entitlement: {servers: [], tools: [s__a]}  # flow\n"),
    ("    entitlement:\n      servers: [s, u]   # both\n",
     "    entitlement:\n      tools: [s__a]\n      servers: []   # both\n"),
    ("    entitlement:\n      tools:\n        - t__x   # gone\n      servers:\n        # the s server\n        - s\n"
     "        - u\n",
     "    entitlement:\n      tools:\n        - s__a\n      servers: []\n        # the s server\n"),
])
def test_each_shape_is_edited_in_place(entitlement: str, expected: str) -> None:
    text = HEAD + entitlement
    proposal = propose(agent(declared_entitlement(text, "bot") or Entitlement()), GRANTED, False, text,
                       Path("agents.yaml"))
    assert proposal.managed_by == "agents_file", proposal.problem
    edited = edit_entitlement(text, "bot", proposal.narrowed)
    assert edited.startswith(HEAD)  # the comments and everything else before stay
    assert edited[len(HEAD):] == expected
    assert declared_entitlement(edited, "bot") == Entitlement(tools=("s__a",), servers=())
    assert proposal.patch is not None and proposal.patch.startswith("--- a/agents.yaml\n+++ b/agents.yaml\n")


def test_a_shape_it_cannot_edit_is_refused_and_the_admin_call_offered() -> None:
    text = HEAD + "    entitlement:\n      tools: s__a\n"  # not a list: the file does not even load
    with pytest.raises(CannotEdit):
        edit_entitlement(text, "bot", Entitlement())
    anchored = HEAD + "    entitlement: &grant\n      servers: [s]\n  - id: other\n    owner: o@example.com\n" \
        "    purpose: p\n    identities: [{kind: static, issuer: narrowgate, subject: other}]\n" \
        "    entitlement: *grant\n"
    proposal = propose(agent(Entitlement(servers=("s",))), [("s__a", "s", True)], False, anchored,
                       Path("agents.yaml"))
    # Editing the anchor would narrow `other` too: refused, and the admin call offered instead.
    assert proposal.managed_by == "admin_api" and proposal.patch is None
    assert proposal.problem is not None and "shared with other agents" in proposal.problem
    assert proposal.to_dict()["admin_call"]["body"]["entitlement"]["tools"] == ["s__a"]


def written_report(agent_id: str, cedar_file: str) -> dict[str, object]:
    """A right-sizing answer whose only change is a Cedar file (as /admin/v1/rightsize shapes it)."""
    kept = {"tools": ["s__a"], "servers": [], "require_task": False}
    return {"agents": [{"agent_id": agent_id, "proposal": {
        "managed_by": "admin_api", "current": kept, "narrowed": kept, "cedar_file": cedar_file,
        "cedar_text": f'forbid (principal == Agent::"{agent_id}", action, resource);\n'}}]}


@pytest.mark.parametrize(("agent_id", "cedar_file"), [
    ("bot", "../../outside.cedar"),  # the answer names a path: the CLI names the file itself
    ("../../outside", "90-rightsize-../../outside.cedar"),  # not an agent id: refused
])
def test_write_puts_cedar_files_only_in_the_policy_directory(tmp_path: Path, agent_id: str, cedar_file: str) -> None:
    from gateway.cli.rightsize import WriteRefused, write_proposals

    deploy = tmp_path / "deploy"
    (deploy / "cedar" / "policies").mkdir(parents=True)
    config = deploy / "narrowgate.yaml"
    config.write_text("policies: cedar\n", encoding="utf-8")
    report = written_report(agent_id, cedar_file)
    if agent_id == "bot":
        write_proposals(report, config)
        assert (deploy / "cedar" / "policies" / "90-rightsize-bot.cedar").is_file()
    else:
        with pytest.raises(WriteRefused, match="not an agent id"):
            write_proposals(report, config)
    outside = [p for p in tmp_path.rglob("*.cedar") if p.parent != deploy / "cedar" / "policies"]
    assert outside == []
