"""The frameworks evidence is reported against, by their --framework name; one module each."""

from __future__ import annotations

from gateway.privilege.evidence.frameworks import csa_maestro, nist_ai_rmf, nist_zero_trust, owasp_asi, owasp_nhi
from gateway.privilege.evidence.model import Framework

FRAMEWORKS: dict[str, Framework] = {module.FRAMEWORK.id: module.FRAMEWORK for module in (
    owasp_asi, owasp_nhi, nist_ai_rmf, csa_maestro, nist_zero_trust)}


def framework(name: str) -> Framework:
    """The framework called `name`; ValueError naming the known ones otherwise."""
    found = FRAMEWORKS.get(name)
    if found is None:
        raise ValueError(f"unknown framework {name!r}: choose one of {', '.join(FRAMEWORKS)}")
    return found
