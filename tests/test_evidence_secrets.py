"""Compliance evidence names what it found without the secrets a URL can carry.

An upstream's `transport.url` is expanded from the environment (`${VAR}`), so its user info, path or query
may hold a password or an API key; the evidence report is handed to auditors, so it names scheme, host and
port only. Real settings and a real catalog loaded from a manifest; the fact reads nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from gateway.catalog.loader import load_catalog
from gateway.config import Settings
from gateway.privilege.evidence.facts import transport_security
from gateway.privilege.evidence.model import PROBLEM
from gateway.privilege.evidence.sources import EvidenceRun, EvidenceSources

SECRET = "s3cret-upstream-key-0123"


async def test_plain_http_upstreams_are_named_without_the_secrets_in_their_urls(tmp_path: Path) -> None:
    manifest = {"id": "billing", "owner": "tests@example.com", "description": "plain HTTP across the network",
                "transport": {"url": "http://10.20.30.40:8080/mcp/${BILLING_KEY}?key=${BILLING_KEY}"},
                "tools": [{"name": "charge", "risk": "write", "data_classes": ["financial"]}]}
    (tmp_path / "billing.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    catalog = load_catalog(tmp_path, {"BILLING_KEY": SECRET})
    unused: Any = None  # the fact reads the settings and the catalog only
    settings = Settings(listen_host="0.0.0.0", public_url=f"http://gw:{SECRET}@gateway.example:8000/x?t={SECRET}")
    sources = EvidenceSources(settings,
                              unused, unused, unused, unused, lambda: catalog, time.time)
    fact = await transport_security(EvidenceRun(sources, since=time.time() - 60, now=time.time()))

    assert fact.status == PROBLEM
    assert "billing (http://10.20.30.40:8080)" in fact.statement
    assert "the gateway itself (http://gateway.example:8000)" in fact.statement
    assert SECRET not in repr(fact.to_dict())
