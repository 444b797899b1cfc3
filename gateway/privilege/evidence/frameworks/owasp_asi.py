"""OWASP Top 10 for Agentic Applications (2026): the mapping of docs/security.md, as facts."""

from __future__ import annotations

from gateway.privilege.evidence.model import ControlSpec, Framework

FRAMEWORK = Framework(
    id="owasp-asi-2026",
    title="OWASP Top 10 for Agentic Applications (2026)",
    reference="https://genai.owasp.org/resource/owasp-top-10-for-agentic-applications-for-2026/",
    controls=(
        ControlSpec("ASI01", "Agent Goal Hijack",
                    ("task_grants", "policy_in_force", "approvals", "unused_entitlements", "detections"),
                    "least agency bounds what a hijacked agent can do; the gateway does not filter prompts or "
                    "tool results for injected instructions"),
        ControlSpec("ASI02", "Tool Misuse and Exploitation", ("policy_in_force", "policy_tests", "decisions"),
                    "Cedar over typed, canonicalized arguments; the upstream receives exactly what was judged"),
        ControlSpec("ASI03", "Identity and Privilege Abuse",
                    ("agent_accountability", "agent_authentication", "identity_bindings", "token_lifetimes"),
                    "every agent its own identity; per-call tokens for one tool, one upstream, at most 60 s"),
        ControlSpec("ASI04", "Agentic Supply Chain Vulnerabilities", ("tool_reviews", "catalog_inventory"),
                    "new and changed upstream tools are quarantined until reviewed"),
        ControlSpec("ASI05", "Unexpected Code Execution (RCE)", ("catalog_inventory", "tool_reviews"),
                    "the gateway executes nothing it receives; stdio upstreams run only the command a reviewed "
                    "manifest names; what a tool does with its arguments is the tool's business"),
        ControlSpec("ASI06", "Memory & Context Poisoning", ("tool_reviews",),
                    "only reviewed tool definitions reach an agent's context through the gateway; the agent's own "
                    "memory is out of the gateway's sight"),
        ControlSpec("ASI07", "Insecure Inter-Agent Communication", ("agent_authentication", "identity_bindings"),
                    "every request authenticated on its own, sessions bound to their principal; agent-to-agent "
                    "delegation is refused, not supported"),
        ControlSpec("ASI08", "Cascading Failures", ("rate_limits",),
                    "timeouts, reply caps, session caps and rate limits keep one fault from fanning out"),
        ControlSpec("ASI09", "Human-Agent Trust Exploitation", ("approvals",),
                    "approvals bound to the exact call, used once, decided by the owner or a named group"),
        ControlSpec("ASI10", "Rogue Agents", ("kill_switch", "agent_accountability", "audit_chain", "detections"),
                    "suspension and the kill switch end an agent's access at once; everything is in the "
                    "hash-chained audit log"),
    ),
)
