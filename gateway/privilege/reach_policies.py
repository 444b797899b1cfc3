"""The relaxed copies of the live policy set the reach decides with.

Whoever holds an agent's credential picks the moment of a call, the client name it declares and, when it
grants itself a task, that task's purpose and tool list. So, as listing relaxes conditions on
`context.input` (gateway/policy/listing.py), the reach relaxes every condition reading one of those values:
in a permit it counts as met when some value could meet it, in a forbid as not met when some value escapes
it. What the reach cannot pick or model (token claims, the call history before the call) is relaxed only in
a second copy, to find the tools it would under-report: those become caveats, never silent denies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cedarpy

from gateway.policy.bundle import Bundle
from gateway.policy.listing import INPUT, ContextReads, FreePath, context_reads, reads_free, relaxed_policies

# The moment of a call: hour and weekday in the configured zone, and the epoch seconds. Working hours are
# decided both ways instead (a context each), so each context's verdict still says in or outside them.
TIME: frozenset[FreePath] = frozenset({("context", "request", "hour"), ("context", "request", "weekday"),
                                       ("context", "request", "time")})
CLIENT: frozenset[FreePath] = frozenset({("context", "request", "client")})  # the MCP clientInfo name declared
CALLER_PICKS: frozenset[FreePath] = INPUT | TIME | CLIENT
# A task the agent grants itself at the token endpoint: it names the purpose and the tools (the entitlement
# bounds the tools: the reach's gate keeps that).
OWN_TASK: frozenset[FreePath] = CALLER_PICKS | {("context", "task", "purpose"), ("context", "task", "tools")}
# What the reach does not model: the identity provider's claims (the reach's principal carries none, so
# the SPIFFE trust domain is empty too) and the calls made before this one (the reach decides a fresh
# caller, plus the sensitive-read-then-egress chain).
UNMODELED: dict[str, frozenset[FreePath]] = {
    "token claims": frozenset({("principal", "claims"), ("principal", "trust_domain")}),
    "call history": frozenset({("context", "chain")}),
}
UNMODELED_PATHS: frozenset[FreePath] = frozenset().union(*UNMODELED.values())


@dataclass(frozen=True, slots=True)
class RelaxedSet:
    policies: cedarpy.PolicySet
    reads: ContextReads  # what of the context the relaxed policies can still observe


class ReachPolicies:
    """The relaxed sets of one bundle, each built on first use. Parses the policy text: off the event loop."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        text = "\n".join(source.text for source in bundle.sources)
        self._est: dict[str, dict[str, Any]] = (
            json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"] if text.strip() else {})
        self._sets: dict[frozenset[FreePath], RelaxedSet] = {}
        # Public policy id -> what unmodeled it reads ("token claims", "call history").
        self.unmodeled: dict[str, tuple[str, ...]] = {}
        self.permits_unmodeled = False  # some permit reads them: a default deny could open
        for cedar_id, policy in self._est.items():
            found = tuple(what for what, paths in UNMODELED.items() if _reads(policy, paths))
            if found:
                self.unmodeled[bundle.public_id(cedar_id)] = found
                self.permits_unmodeled = self.permits_unmodeled or policy["effect"] == "permit"

    def relaxed(self, free: frozenset[FreePath]) -> RelaxedSet:
        known = self._sets.get(free)
        if known is None:
            text = relaxed_policies(self._est, free)
            known = RelaxedSet(cedarpy.PolicySet.from_json_str(text, release_gil=True),
                               context_reads(json.loads(text)["staticPolicies"]))
            self._sets[free] = known
        return known


def _reads(policy: dict[str, Any], paths: frozenset[FreePath]) -> bool:
    return any(reads_free(condition["body"], paths) for condition in policy.get("conditions") or [])
