"""NIST AI Risk Management Framework (AI RMF 1.0): its four functions, as far as a gateway's records speak to them."""

from __future__ import annotations

from gateway.privilege.evidence.model import ControlSpec, Framework

FRAMEWORK = Framework(
    id="nist-ai-rmf",
    title="NIST AI Risk Management Framework 1.0 (AI 100-1)",
    reference="https://www.nist.gov/itl/ai-risk-management-framework",
    controls=(
        ControlSpec("GOVERN", "Govern",
                    ("agent_accountability", "policy_tests", "tool_reviews", "approvals"),
                    "accountability (owners, purposes, expiry), policies tested like code, tools reviewed, people "
                    "approving privileged calls"),
        ControlSpec("MAP", "Map", ("catalog_inventory", "task_grants", "identity_bindings"),
                    "what each agent is, what it may reach, and every tool's risk tier and data classes"),
        ControlSpec("MEASURE", "Measure", ("audit_chain", "decisions", "detections", "unused_entitlements"),
                    "every decision recorded in a verified chain; detections and unused privilege measured"),
        ControlSpec("MANAGE", "Manage", ("kill_switch", "token_lifetimes", "rate_limits", "policy_in_force"),
                    "risks acted on at run time: the kill switch, short-lived tokens, rate limits, policy"),
    ),
)
