"""The MCP conformance suite passes through the gateway, in both protocol eras.

The fixture upstream runs as a real subprocess; the gateway runs in front of it with
`--open-loopback` (the suite cannot present a bearer token) and the conformance catalog, which
exposes the fixture's names bare (`namespace: ""`) because the suite calls them by fixed names.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.runner import SPEC_VERSIONS, assert_clean_pass, conformance_gateway, ensure_suite, run_suite

# The suite waits 5 s for a resumed stream's reply (server-sse-polling) and 2 s for other streams' first events:
# run alone, not beside another xdist worker (docs/development.md).
pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ensure_suite()
    with conformance_gateway(tmp_path_factory.mktemp("conformance-gateway")) as gateway:
        yield gateway.url


@pytest.mark.timeout(900)
@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
def test_gateway_passes_conformance_suite(gateway_url: str, spec_version: str) -> None:
    assert_clean_pass(run_suite(gateway_url, spec_version, timeout_s=600))
