"""The conformance fixture passes every server scenario of the MCP conformance suite, directly.

Starts tests/fixtures/conformance_server.py as a real subprocess on a free port and runs
`conformance server --suite all` at both protocol eras against it. This shows the fixture is right, so
a failure of the through-the-gateway variant points at the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    from conformance.runner import SPEC_VERSIONS, assert_clean_pass, ensure_suite, fixture_server, run_suite
except ImportError:  # tests/ imported as a package
    from tests.conformance.runner import SPEC_VERSIONS, assert_clean_pass, ensure_suite, fixture_server, run_suite


@pytest.fixture(scope="module")
def fixture_url() -> Iterator[str]:
    ensure_suite()  # npm ci on first use, outside the per-run timeout
    with fixture_server() as port:
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("spec_version", SPEC_VERSIONS)
def test_fixture_passes_conformance_suite(fixture_url: str, spec_version: str) -> None:
    assert_clean_pass(run_suite(fixture_url, spec_version, timeout_s=600))
