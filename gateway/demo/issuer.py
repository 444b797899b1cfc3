"""The demo's workload identity: a development SPIFFE trust domain whose key lives in the state directory.

It plays the part SPIRE (or Kubernetes, or GitHub Actions) plays in production: it signs short
JWT-SVIDs naming a workload, `spiffe://narrowgate.demo/agent/<agent id>`, for the gateway's
audience. The gateway verifies them exactly as it would real ones, against the trust bundle file
written next to the key (`identity.spiffe_trust_domains`, docs/identity.md). Agents present such a
token on `/mcp`, or exchange it at `/oauth/token` for a task token (docs/tasks.md).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.credentials.keys import _thumbprint
from gateway.demo.state import DemoState, DemoStateError, read_private, write_private

TRUST_DOMAIN = "narrowgate.demo"
KEY_FILE = "workload-key.pem"
BUNDLE_FILE = "workload-bundle.json"
ALGORITHM = "ES256"
DEFAULT_TTL_S = 900


def spiffe_id(agent_id: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/agent/{agent_id}"


class DevelopmentIssuer:
    def __init__(self, key: ec.EllipticCurvePrivateKey, kid: str, bundle_file: Path) -> None:
        self.key = key
        self.kid = kid
        self.bundle_file = bundle_file

    @classmethod
    def open(cls, state: DemoState, create: bool = True) -> DevelopmentIssuer:
        """The issuer of this state directory: its key (made on first use) and a current bundle file."""
        key_file = state.directory / KEY_FILE
        if key_file.exists():
            key = serialization.load_pem_private_key(read_private(key_file), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise DemoStateError(f"{key_file} is not an EC private key; delete it to make a new one")
        elif create:
            key = ec.generate_private_key(ec.SECP256R1())
            write_private(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        else:
            raise DemoStateError(f"no demo workload key in {state.directory}: start the demo first (make run)")
        issuer = cls(key, _thumbprint(key.public_key()), state.directory / BUNDLE_FILE)
        if create:
            issuer.write_bundle()
        return issuer

    def write_bundle(self) -> None:
        """The trust bundle (JWKS, `use: jwt-svid`) the gateway verifies this issuer's tokens with."""
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, use="jwt-svid", alg=ALGORITHM)
        bundle = {"keys": [jwk], "spiffe_sequence": 1}
        write_private(self.bundle_file, json.dumps(bundle, indent=2).encode())

    def trust_domain(self) -> dict[str, Any]:
        """The gateway's `identity.spiffe_trust_domains` entry for this issuer."""
        return {"trust_domain": TRUST_DOMAIN, "bundle_file": str(self.bundle_file), "algorithms": [ALGORITHM]}

    def mint(self, agent_id: str, audience: str, ttl_s: int = DEFAULT_TTL_S) -> str:
        """A JWT-SVID for the agent's workload, good for `ttl_s` seconds at `audience`."""
        now = int(time.time())
        claims = {"sub": spiffe_id(agent_id), "aud": [audience], "iat": now, "exp": now + ttl_s,
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": "JWT"})
