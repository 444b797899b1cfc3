"""NIST SP 800-207 Zero Trust Architecture: its seven tenets (section 2.1)."""

from __future__ import annotations

from gateway.privilege.evidence.model import ControlSpec, Framework

FRAMEWORK = Framework(
    id="nist-sp-800-207",
    title="NIST SP 800-207 Zero Trust Architecture: the seven tenets",
    reference="https://csrc.nist.gov/pubs/sp/800/207/final",
    controls=(
        ControlSpec("T1", "All data sources and computing services are considered resources", ("catalog_inventory",),
                    "every upstream tool is a catalogued resource with an owner, a risk tier and data classes"),
        ControlSpec("T2", "All communication is secured regardless of network location", ("transport_security",),
                    "TLS for every connection that leaves the host; loopback and stdio stay on it"),
        ControlSpec("T3", "Access to individual enterprise resources is granted on a per-session basis",
                    ("token_lifetimes", "task_grants"),
                    "a per-call token for one tool and one upstream; task grants end with their task"),
        ControlSpec("T4", "Access to resources is determined by dynamic policy", ("policy_in_force", "policy_tests"),
                    "Cedar decides every call at request time from the agent, the tool, the task and the arguments"),
        ControlSpec("T5", "The enterprise monitors and measures the integrity and security posture of all owned and "
                          "associated assets", ("tool_reviews", "audit_chain"),
                    "tool definitions pinned and reviewed; the audit chain verified; the hosts themselves are "
                    "outside the gateway's sight"),
        ControlSpec("T6", "All resource authentication and authorization are dynamic and strictly enforced before "
                          "access is allowed", ("agent_authentication", "policy_in_force", "decisions"),
                    "every request authenticated and decided before anything reaches an upstream"),
        ControlSpec("T7", "The enterprise collects as much information as possible about the current state of assets, "
                          "network infrastructure and communications and uses it to improve its security posture",
                    ("audit_chain", "detections", "unused_entitlements"),
                    "every decision recorded; detections and unused privilege fed back into grants and policy"),
    ),
)
