"""CSA MAESTRO (agentic AI threat modelling): its seven layers, and which of them a gateway touches."""

from __future__ import annotations

from gateway.privilege.evidence.model import ControlSpec, Framework

FRAMEWORK = Framework(
    id="csa-maestro",
    title="CSA MAESTRO: Agentic AI Threat Modeling Framework (seven layers)",
    reference="https://cloudsecurityalliance.org/blog/2025/02/06/agentic-ai-threat-modeling-framework-maestro",
    controls=(
        ControlSpec("L1", "Foundation Models",
                    not_applicable="the gateway never hosts, calls or sees a model; it sits between agents and tools"),
        ControlSpec("L2", "Data Operations",
                    not_applicable="the gateway runs no data pipeline, vector store or retrieval; it records its own "
                                   "decisions only"),
        ControlSpec("L3", "Agent Frameworks", ("task_grants", "policy_in_force", "unused_entitlements"),
                    "the framework's tool calls are bounded by grants and decided by policy; its planning and memory "
                    "are out of the gateway's sight"),
        ControlSpec("L4", "Deployment and Infrastructure",
                    ("agent_authentication", "transport_security", "config_secrets", "upstream_credentials"),
                    "workload identity, TLS across the network, no secrets in config, per-call upstream tokens"),
        ControlSpec("L5", "Evaluation and Observability", ("audit_chain", "decisions", "detections"),
                    "a verified audit chain of every decision, and chain-monitoring detections"),
        ControlSpec("L6", "Security and Compliance",
                    ("policy_in_force", "policy_tests", "approvals", "token_lifetimes", "kill_switch"),
                    "policy enforcement, tested policies, human approval, short-lived credentials, the kill switch"),
        ControlSpec("L7", "Agent Ecosystem",
                    ("tool_reviews", "catalog_inventory", "agent_accountability", "identity_bindings"),
                    "a reviewed tool catalog and an agent registry with owners; agent-to-agent delegation is refused"),
    ),
)
