"""OWASP Non-Human Identities Top 10 (2025): the mapping of docs/security.md, as facts."""

from __future__ import annotations

from gateway.privilege.evidence.model import ControlSpec, Framework

FRAMEWORK = Framework(
    id="owasp-nhi-2025",
    title="OWASP Non-Human Identities Top 10 (2025)",
    reference="https://owasp.org/www-project-non-human-identities-top-10/2025/",
    controls=(
        ControlSpec("NHI1", "Improper Offboarding", ("agent_accountability",),
                    "agent lifecycle with an expiry; an expired agent is treated as retired; ending a task revokes "
                    "its upstream tokens"),
        ControlSpec("NHI2", "Secret Leakage", ("config_secrets", "upstream_credentials"),
                    "tokens are scrubbed from logs, spans and audit previews; the agent's token is never forwarded"),
        ControlSpec("NHI3", "Vulnerable Third-Party NHI", ("upstream_credentials", "token_lifetimes"),
                    "an upstream holds only a per-call token for itself; legacy upstreams with a static secret hold "
                    "that secret"),
        ControlSpec("NHI4", "Insecure Authentication", ("agent_authentication",),
                    "asymmetric, pinned algorithms, audience and issuer checked; static agent tokens are shared "
                    "secrets for development"),
        ControlSpec("NHI5", "Overprivileged NHI", ("task_grants", "unused_entitlements"),
                    "entitlements per agent, task grants narrower still, Cedar for everything else"),
        ControlSpec("NHI6", "Insecure Cloud Deployment Configurations", ("agent_authentication", "transport_security"),
                    "workload identity federation instead of stored keys; forwarding headers trusted only from "
                    "configured proxies"),
        ControlSpec("NHI7", "Long-Lived Secrets", ("token_lifetimes", "upstream_credentials"),
                    "task tokens at most 15 minutes, upstream tokens at most 60 s; static development tokens and "
                    "per-server secrets are as long-lived as the operator makes them"),
        ControlSpec("NHI8", "Environment Isolation", ("identity_bindings", "upstream_credentials"),
                    "every upstream token names that upstream's audience; claim pins keep test workloads from "
                    "production agents; one gateway serving several environments shares one signing key"),
        ControlSpec("NHI9", "NHI Reuse", ("identity_bindings", "token_lifetimes"),
                    "one identity binds to exactly one agent; every call gets its own single-use token"),
        ControlSpec("NHI10", "Human Use of NHI", ("agent_authentication",),
                    "agent credentials are refused by the admin API and the console; a person holding an agent's "
                    "static token can call as that agent"),
    ),
)
