"""Workload token verification against a real JWKS endpoint and real SPIFFE bundle files.

Every bad input of the identity issue is its own test and goes through `TokenVerifier`, the same
object the request path uses. The OIDC issuer is `TestIdentityProvider`, an HTTP server on
loopback; SPIFFE bundles are files written by the test (or served over HTTP where noted).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from gateway.config import ConfigError
from gateway.identity.jwks import decode_with_key, parse_jwks
from gateway.identity.spiffe import parse_spiffe_id
from gateway.identity.verified import TokenRejected, VerifiedToken
from gateway.identity.verifier import TokenVerifier
from gateway.settings.identity import IdentitySettings, OidcIssuer, identity_settings_from_mapping
from tests.support.identity_provider import (
    TestIdentityProvider,
    TestTrustDomain,
    forge,
    forge_hmac,
    generate_key,
)

AUDIENCE = "https://gateway.test"
TRUST_DOMAIN = "example.org"


@pytest.fixture
def idp() -> Iterator[TestIdentityProvider]:
    provider = TestIdentityProvider(AUDIENCE, keys=[generate_key("RS256"), generate_key("ES256")])
    yield provider
    provider.close()


@pytest.fixture
def domain() -> TestTrustDomain:
    return TestTrustDomain(TRUST_DOMAIN, AUDIENCE, keys=[generate_key("ES256"), generate_key("RS256")])


@pytest.fixture
def bundle_file(tmp_path: Path, domain: TestTrustDomain) -> Path:
    return domain.write_bundle(tmp_path / "bundle.json")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def identity_config(idp: TestIdentityProvider | None = None, bundle: Path | None = None, **overrides: Any) -> dict:
    raw: dict[str, Any] = {"clock_skew_s": 5, "key_refresh_min_interval_s": 60}
    if idp is not None:
        raw["oidc_issuers"] = [{"issuer": idp.issuer, "jwks_uri": idp.jwks_uri, "required_claims": ["iat"]}]
    if bundle is not None:
        raw["spiffe_trust_domains"] = [{"trust_domain": TRUST_DOMAIN, "bundle_file": str(bundle)}]
    raw.update(overrides)
    return raw


class Verifiers:
    """Builds started verifiers and closes them at the end of the test."""

    def __init__(self, http: aiohttp.ClientSession, base_dir: Path) -> None:
        self.http, self.base_dir, self.started = http, base_dir, []

    async def __call__(self, raw: dict[str, Any], *, start: bool = True) -> TokenVerifier:
        settings = identity_settings_from_mapping(raw, self.base_dir, default_audience=AUDIENCE)
        verifier = TokenVerifier(settings, self.http)
        self.started.append(verifier)
        if start:
            await verifier.start()
        return verifier


@pytest.fixture
async def make_verifier(http: aiohttp.ClientSession, tmp_path: Path) -> AsyncIterator[Verifiers]:
    verifiers = Verifiers(http, tmp_path)
    yield verifiers
    for verifier in verifiers.started:
        await verifier.close()


@pytest.fixture
async def verifier(make_verifier: Verifiers, idp: TestIdentityProvider, bundle_file: Path) -> TokenVerifier:
    return await make_verifier(identity_config(idp, bundle_file))


async def rejected(verifier: TokenVerifier, token: str, *fragments: str) -> str:
    """Assert refusal with a message naming the reason; the message never carries the token or its signature."""
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    message = str(caught.value)
    assert len(token) < 8 or token not in message
    signature = token.rpartition(".")[2]
    assert len(signature) < 8 or signature not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- accepted tokens ---------------------------------------------------------------------------


async def test_valid_oidc_rs256_token_is_accepted(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    token = idp.mint(repository_id="42")
    verified = await verifier.verify(token)
    assert isinstance(verified, VerifiedToken)
    assert verified.kind == "oidc"
    assert verified.issuer == idp.issuer
    assert verified.subject == "repo:example/app:ref:refs/heads/main"
    assert verified.claims["repository_id"] == "42"
    assert verified.claims["aud"] == AUDIENCE
    assert verified.expires_at == float(verified.claims["exp"])


async def test_valid_oidc_es256_token_is_accepted(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    verified = await verifier.verify(idp.mint(key=idp.keys[1], sub="system:serviceaccount:ns:sa"))
    assert (verified.kind, verified.subject) == ("oidc", "system:serviceaccount:ns:sa")


async def test_valid_svid_is_accepted(verifier: TokenVerifier, domain: TestTrustDomain) -> None:
    for key in domain.keys:  # ES256 and RS256 bundle keys
        verified = await verifier.verify(domain.mint_svid("/ns/prod/sa/agent", key=key))
        assert verified.kind == "spiffe"
        assert verified.issuer == "spiffe://example.org"
        assert verified.subject == "spiffe://example.org/ns/prod/sa/agent"
        assert verified.claims["aud"] == [AUDIENCE]
        assert verified.expires_at == float(verified.claims["exp"])


async def test_svid_with_an_iss_claim_is_still_routed_by_its_spiffe_id(
    verifier: TokenVerifier, domain: TestTrustDomain
) -> None:
    verified = await verifier.verify(domain.mint_svid(iss="https://oidc-discovery.example.org"))
    assert verified.kind == "spiffe"


async def test_expiry_within_the_clock_skew_is_accepted(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    now = int(time.time())
    await verifier.verify(idp.mint(iat=now - 60, exp=now - 2))  # skew is 5 s


async def test_verified_tokens_are_cached_until_exp(
    make_verifier: Verifiers, idp: TestIdentityProvider
) -> None:
    verifier = await make_verifier(identity_config(idp, clock_skew_s=0))
    token = idp.mint(exp=int(time.time()) + 2)
    first = await verifier.verify(token)
    idp.stop()  # the cache answers without keys or I/O
    assert await verifier.verify(token) is first
    await asyncio.sleep(max(0.0, first.expires_at - time.time()) + 0.1)
    await rejected(verifier, token, "expired")


# --- refused tokens: the bad-input list of the issue ---------------------------------------------


async def test_expired_token_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    now = int(time.time())
    await rejected(verifier, idp.mint(iat=now - 600, exp=now - 60), "expired")


async def test_not_yet_valid_token_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    now = int(time.time())
    await rejected(verifier, idp.mint(nbf=now + 120, exp=now + 600), "not yet valid")


async def test_token_issued_in_the_future_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    now = int(time.time())
    await rejected(verifier, idp.mint(iat=now + 120, exp=now + 600), "not yet valid")


async def test_wrong_issuer_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    await rejected(verifier, idp.mint(iss="https://evil.example.com"), "not trusted")


async def test_token_without_issuer_or_spiffe_id_is_refused(
    verifier: TokenVerifier, idp: TestIdentityProvider
) -> None:
    await rejected(verifier, idp.mint(iss=None), "no trusted issuer")


async def test_token_of_another_idp_claiming_our_issuer_is_refused(
    verifier: TokenVerifier, idp: TestIdentityProvider
) -> None:
    stranger = generate_key("RS256", kid=idp.keys[0].kid)  # same kid, different key
    await rejected(verifier, idp.mint(key=stranger), "signature is invalid")


async def test_wrong_audience_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    await rejected(verifier, idp.mint(aud="https://other-gateway.test"), "audience")


async def test_missing_audience_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    await rejected(verifier, idp.mint(aud=None), "'aud'")


async def test_svid_for_another_audience_is_refused(verifier: TokenVerifier, domain: TestTrustDomain) -> None:
    await rejected(verifier, domain.mint_svid(aud=["spiffe://example.org/some/other/service"]), "audience")


async def test_unknown_kid_is_refused_after_one_refresh(
    verifier: TokenVerifier, idp: TestIdentityProvider
) -> None:
    before = idp.jwks_fetches
    await rejected(verifier, idp.mint(key=generate_key("RS256", kid="never-published")), "unknown", "never-published")
    assert idp.jwks_fetches == before  # warm-up fetch just happened; the refresh is rate-limited


async def test_unknown_kid_triggers_a_refresh_once_the_interval_has_passed(
    make_verifier: Verifiers, idp: TestIdentityProvider
) -> None:
    verifier = await make_verifier(identity_config(idp, key_refresh_min_interval_s=0.2))
    await asyncio.sleep(0.25)
    before = idp.jwks_fetches
    await rejected(verifier, idp.mint(key=generate_key("RS256", kid="never-published")), "unknown")
    assert idp.jwks_fetches == before + 1


async def test_tampered_signature_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    header, payload, signature = idp.mint().split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    await rejected(verifier, f"{header}.{payload}.{flipped}", "signature is invalid")


async def test_tampered_claims_are_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    header, _, signature = idp.mint(sub="agent-a").split(".")
    _, payload, _ = forge({}, idp.claims(sub="agent-admin")).split(".")
    await rejected(verifier, f"{header}.{payload}.{signature}", "signature is invalid")


async def test_alg_none_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    before = idp.jwks_fetches
    for alg in ("none", "None", "NONE"):
        unsigned = forge({"alg": alg, "typ": "JWT", "kid": idp.keys[0].kid}, idp.claims())
        await rejected(verifier, unsigned, "not allowed")
        await rejected(verifier, unsigned + "c2lnbmF0dXJl", "not allowed")
    assert idp.jwks_fetches == before  # refused before any key is looked up


async def test_alg_none_svid_is_refused(verifier: TokenVerifier, domain: TestTrustDomain) -> None:
    claims = {"sub": domain.spiffe_id(), "aud": [AUDIENCE], "exp": int(time.time()) + 300}
    await rejected(verifier, forge({"alg": "none", "kid": domain.keys[0].kid}, claims), "not allowed")


async def test_hs256_signed_with_the_public_key_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    rsa_key, ec_key = idp.keys
    for key in (rsa_key, ec_key):
        for secret in (key.public_pem(), json.dumps(key.public_jwk()).encode()):
            await rejected(verifier, forge_hmac(idp.claims(), secret, kid=key.kid), "'HS256' is not allowed")


async def test_hs256_is_refused_even_if_a_settings_object_allowed_it(
    make_verifier: Verifiers, http: aiohttp.ClientSession, idp: TestIdentityProvider
) -> None:
    """Defence in depth: keys are bound to their own algorithm family, whatever the allow-list says."""
    issuer = OidcIssuer(issuer=idp.issuer, jwks_uri=idp.jwks_uri, algorithms=("HS256", "RS256", "ES256"))
    verifier = TokenVerifier(IdentitySettings(audience=AUDIENCE, oidc_issuers=(issuer,)), http)
    make_verifier.started.append(verifier)
    await verifier.start()
    forged = forge_hmac(idp.claims(), idp.keys[0].public_pem(), kid=idp.keys[0].kid)
    await rejected(verifier, forged, "does not match its key")
    # ...and an RSA key cannot be made to verify ES256, nor an EC key RS256.
    await rejected(verifier, idp.mint(key=idp.keys[1], kid=idp.keys[0].kid), "does not match its key")
    await rejected(verifier, forge({"alg": "RS256", "kid": idp.keys[1].kid}, idp.claims(), b"x" * 256),
                   "does not match its key")


async def test_algorithm_outside_the_issuer_allow_list_is_refused(
    make_verifier: Verifiers, idp: TestIdentityProvider
) -> None:
    raw = identity_config(idp)
    raw["oidc_issuers"][0]["algorithms"] = ["RS256"]
    verifier = await make_verifier(raw)
    await verifier.verify(idp.mint())
    await rejected(verifier, idp.mint(key=idp.keys[1]), "'ES256' is not allowed")
    await rejected(verifier, idp.mint(alg="PS256"), "'PS256' is not allowed")


async def test_missing_sub_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    await rejected(verifier, idp.mint(sub=None), "'sub'")
    await rejected(verifier, idp.mint(sub=""), "'sub'")


async def test_missing_configured_required_claim_is_refused(
    verifier: TokenVerifier, idp: TestIdentityProvider
) -> None:
    await rejected(verifier, idp.mint(iat=None), "'iat'")


async def test_missing_exp_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider, domain: TestTrustDomain
                                      ) -> None:
    await rejected(verifier, idp.mint(exp=None), "'exp'")
    await rejected(verifier, domain.mint_svid(exp=None), "'exp'")


async def test_svid_from_a_foreign_trust_domain_is_refused(verifier: TokenVerifier, tmp_path: Path) -> None:
    foreign = TestTrustDomain("evil.example", AUDIENCE)
    foreign.write_bundle(tmp_path / "evil-bundle.json")  # exists, but is not configured
    await rejected(verifier, foreign.mint_svid(), "'evil.example' is not trusted")


async def test_svid_is_checked_with_its_own_trust_domains_keys_only(
    make_verifier: Verifiers, domain: TestTrustDomain, bundle_file: Path, tmp_path: Path
) -> None:
    """Both domains are trusted, but a key of one can never vouch for an identity in the other."""
    other = TestTrustDomain("partner.example", AUDIENCE)
    raw = identity_config(bundle=bundle_file)
    raw["spiffe_trust_domains"].append(
        {"trust_domain": "partner.example", "bundle_file": str(other.write_bundle(tmp_path / "partner.json"))}
    )
    verifier = await make_verifier(raw)
    assert (await verifier.verify(other.mint_svid())).issuer == "spiffe://partner.example"
    impersonation = other.mint_svid(sub=domain.spiffe_id("/ns/prod/sa/admin"))
    await rejected(verifier, impersonation, "unknown to SPIFFE trust domain example.org")


async def test_svid_with_an_invalid_spiffe_id_is_refused(verifier: TokenVerifier, domain: TestTrustDomain) -> None:
    for sub in ("spiffe://example.org", "spiffe://example.org/", "spiffe://example.org/a/../b",
                "spiffe://Example.org/a", "spiffe://example.org:443/a", "spiffe://example.org/a?b=c"):
        await rejected(verifier, domain.mint_svid(sub=sub), "not a valid SPIFFE ID")


async def test_bundle_keys_without_jwt_svid_use_are_ignored(
    make_verifier: Verifiers, domain: TestTrustDomain, tmp_path: Path
) -> None:
    bundle = domain.write_bundle(tmp_path / "x509-only.json", use="x509-svid")
    verifier = await make_verifier(identity_config(bundle=bundle))
    await rejected(verifier, domain.mint_svid(), "unknown to SPIFFE trust domain")


async def test_malformed_tokens_are_refused(verifier: TokenVerifier) -> None:
    for token in ("", "abc", "a.b", "a.b.c.d", "!!!.???.sig", "W10.W10.c2ln", "e30.e30.c2ln", "x" * 20000):
        await rejected(verifier, token, "malformed")


async def test_token_without_kid_is_refused(verifier: TokenVerifier, idp: TestIdentityProvider) -> None:
    token = jwt.encode(idp.claims(), idp.keys[0].private_key, algorithm="RS256")
    await rejected(verifier, token, "no key (kid)")


# --- keys: rotation, rate-limited refresh, outages, discovery ------------------------------------


async def test_rotation_mid_test_is_picked_up_without_restart(
    make_verifier: Verifiers, idp: TestIdentityProvider
) -> None:
    verifier = await make_verifier(identity_config(idp, key_refresh_min_interval_s=0.2))
    old_key = idp.keys[0]
    await verifier.verify(idp.mint())
    new_key = idp.rotate()
    await asyncio.sleep(0.25)
    verified = await verifier.verify(idp.mint(key=new_key, sub="after-rotation"))
    assert verified.subject == "after-rotation"
    # The old key was withdrawn by the refresh: new tokens signed with it no longer pass.
    await rejected(verifier, idp.mint(key=old_key, sub="old-key"), "unknown", old_key.kid)


async def test_unknown_kid_refresh_is_rate_limited(make_verifier: Verifiers, idp: TestIdentityProvider) -> None:
    verifier = await make_verifier(identity_config(idp, key_refresh_min_interval_s=0.5))
    await asyncio.sleep(0.55)
    idp.jwks_delay_s = 0.1  # hold the fetch open so the burst overlaps it
    before = idp.jwks_fetches
    burst = [idp.mint(key=generate_key("ES256", kid=f"made-up-{i}")) for i in range(50)]
    results = await asyncio.gather(*(verifier.verify(t) for t in burst), return_exceptions=True)
    assert all(isinstance(r, TokenRejected) for r in results)
    assert idp.jwks_fetches == before + 1
    for token in burst:  # a sequential burst within the interval fetches nothing more
        await rejected(verifier, token, "unknown")
    assert idp.jwks_fetches == before + 1
    await asyncio.sleep(0.55)
    await rejected(verifier, burst[0], "unknown")
    assert idp.jwks_fetches == before + 2  # one more per interval


async def test_concurrent_first_lookups_share_one_fetch(make_verifier: Verifiers, idp: TestIdentityProvider) -> None:
    verifier = await make_verifier(identity_config(idp), start=False)
    idp.jwks_delay_s = 0.2
    tokens = [idp.mint(sub=f"agent-{i}") for i in range(20)]
    results = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert [r.subject for r in results] == [f"agent-{i}" for i in range(20)]
    assert idp.jwks_fetches == 1


async def test_jwks_endpoint_down_cached_keys_keep_working(
    make_verifier: Verifiers, idp: TestIdentityProvider
) -> None:
    verifier = await make_verifier(identity_config(idp, key_refresh_min_interval_s=0.1))
    idp.stop()
    await asyncio.sleep(0.15)
    await rejected(verifier, idp.mint(key=generate_key("RS256", kid="during-outage")), "unknown")  # refresh fails
    assert (await verifier.verify(idp.mint(sub="still-works"))).subject == "still-works"
    idp.start()
    await asyncio.sleep(0.15)
    new_key = idp.add_key(generate_key("RS256"))
    assert (await verifier.verify(idp.mint(key=new_key))).kind == "oidc"  # back up: refresh works again


async def test_jwks_endpoint_down_and_no_cached_keys_means_refusal(
    make_verifier: Verifiers, idp: TestIdentityProvider
) -> None:
    idp.stop()
    verifier = await make_verifier(identity_config(idp))  # start() logs the failure and does not raise
    await rejected(verifier, idp.mint(), "no verification keys are available")


async def test_missing_bundle_file_means_refusal_not_a_crash(
    make_verifier: Verifiers, domain: TestTrustDomain, tmp_path: Path
) -> None:
    verifier = await make_verifier(identity_config(bundle=tmp_path / "absent.json"))
    await rejected(verifier, domain.mint_svid(), "no verification keys are available", "cannot read")


async def test_discovery_finds_the_jwks_uri(make_verifier: Verifiers, idp: TestIdentityProvider) -> None:
    verifier = await make_verifier({"oidc_issuers": [{"issuer": idp.issuer}]})
    assert (idp.discovery_fetches, idp.jwks_fetches) == (1, 1)
    assert (await verifier.verify(idp.mint())).issuer == idp.issuer


async def test_explicit_jwks_uri_skips_discovery(make_verifier: Verifiers, idp: TestIdentityProvider) -> None:
    verifier = await make_verifier(identity_config(idp))
    assert (idp.discovery_fetches, idp.jwks_fetches) == (0, 1)
    await verifier.verify(idp.mint())


async def test_discovery_document_for_another_issuer_is_refused(
    make_verifier: Verifiers, idp: TestIdentityProvider
) -> None:
    idp.discovery_issuer = "https://impostor.example.com"
    verifier = await make_verifier({"oidc_issuers": [{"issuer": idp.issuer}]})
    assert idp.jwks_fetches == 0
    await rejected(verifier, idp.mint(), "no verification keys", "not the configured one")


async def test_spiffe_bundle_from_a_url(make_verifier: Verifiers, idp: TestIdentityProvider,
                                        domain: TestTrustDomain) -> None:
    idp.documents["/bundle.json"] = domain.bundle
    verifier = await make_verifier(
        {"spiffe_trust_domains": [{"trust_domain": TRUST_DOMAIN, "bundle_url": f"{idp.issuer}/bundle.json"}]}
    )
    assert (await verifier.verify(domain.mint_svid())).subject == domain.spiffe_id()


# --- building blocks ----------------------------------------------------------------------------


def test_jwks_parsing_refuses_symmetric_private_and_weak_keys() -> None:
    rsa_key, ec_key = generate_key("RS256"), generate_key("ES384")
    private = {**rsa_key.public_jwk(), "kid": "private", "d": "AAAA"}
    document = {"keys": [
        rsa_key.public_jwk(), ec_key.public_jwk(), private,
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**generate_key("RS256").public_jwk(), "kid": "enc", "use": "enc"},
        {**generate_key("RS256").public_jwk(), "kid": "mismatch", "alg": "ES256"},
    ]}
    keys = parse_jwks(document, required_use=None, source="test")
    assert set(keys) == {rsa_key.kid, ec_key.kid}
    assert keys[ec_key.kid].algorithms == frozenset({"ES384"})
    assert "HS256" not in keys[rsa_key.kid].algorithms
    with pytest.raises(TokenRejected, match="does not match"):
        decode_with_key("a.b.c", "HS256", keys[rsa_key.kid], audience=AUDIENCE, leeway=0, required_claims=())


def test_spiffe_id_parsing() -> None:
    assert parse_spiffe_id("spiffe://example.org/ns/prod/sa/agent") == ("example.org", "/ns/prod/sa/agent")
    for bad in ("spiffe://example.org", "https://example.org/a", "spiffe:///a", "spiffe://ex ample.org/a",
                "spiffe://example.org//a", "spiffe://example.org/a/", "spiffe://example.org/./a"):
        assert parse_spiffe_id(bad) is None, bad


# --- configuration -------------------------------------------------------------------------------


def settings(raw: dict[str, Any], base_dir: Path = Path("/etc/narrowgate")) -> IdentitySettings:
    return identity_settings_from_mapping(raw, base_dir, default_audience="http://127.0.0.1:8080")


def test_config_defaults_and_always_required_claims(tmp_path: Path) -> None:
    parsed = settings({
        "oidc_issuers": [{"issuer": "https://token.actions.githubusercontent.com", "required_claims": ["iat"]}],
        "spiffe_trust_domains": [{"trust_domain": "example.org", "bundle_file": "spire/bundle.json"}],
    }, tmp_path)
    assert parsed.audience == "http://127.0.0.1:8080"
    assert (parsed.clock_skew_s, parsed.key_refresh_min_interval_s) == (30.0, 30.0)
    issuer = parsed.oidc_issuers[0]
    assert issuer.algorithms == ("RS256", "ES256")
    assert issuer.required_claims == ("exp", "iss", "aud", "sub", "iat")
    assert issuer.jwks_uri is None
    assert issuer.discovery_url == "https://token.actions.githubusercontent.com/.well-known/openid-configuration"
    assert parsed.spiffe_trust_domains[0].bundle_file == tmp_path / "spire" / "bundle.json"


@pytest.mark.parametrize("algorithm", ["HS256", "HS512", "none", "None"])
def test_config_refuses_symmetric_and_none_algorithms(algorithm: str) -> None:
    with pytest.raises(ConfigError, match=r"identity\.oidc_issuers\[0\]\.algorithms.*refused"):
        settings({"oidc_issuers": [{"issuer": "https://idp.example", "algorithms": ["RS256", algorithm]}]})
    with pytest.raises(ConfigError, match=r"identity\.spiffe_trust_domains\[0\]\.algorithms.*refused"):
        settings({"spiffe_trust_domains": [
            {"trust_domain": "example.org", "bundle_file": "b.json", "algorithms": [algorithm]}]})


def test_config_refuses_unknown_algorithms_and_empty_lists() -> None:
    with pytest.raises(ConfigError, match="unsupported algorithm 'EdDSA'"):
        settings({"oidc_issuers": [{"issuer": "https://idp.example", "algorithms": ["EdDSA"]}]})
    with pytest.raises(ConfigError, match="must not be empty"):
        settings({"oidc_issuers": [{"issuer": "https://idp.example", "algorithms": []}]})


def test_config_refuses_a_missing_issuer() -> None:
    with pytest.raises(ConfigError, match=r"identity\.oidc_issuers\[1\]\.issuer is required"):
        settings({"oidc_issuers": [{"issuer": "https://a.example"}, {"jwks_uri": "https://b.example/jwks"}]})


@pytest.mark.parametrize("entry", [
    {"trust_domain": "example.org", "bundle_file": "b.json", "bundle_url": "https://spire.example/bundle"},
    {"trust_domain": "example.org"},
])
def test_config_needs_exactly_one_bundle_source(entry: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"identity\.spiffe_trust_domains\[0\] needs exactly one of bundle_file"):
        settings({"spiffe_trust_domains": [entry]})


@pytest.mark.parametrize(("raw", "message"), [
    ({"clock_skew_s": 301}, r"identity\.clock_skew_s must be between 0 and 300"),
    ({"clock_skew_s": "soon"}, r"identity\.clock_skew_s must be a number"),
    ({"key_refresh_min_interval_s": 0}, r"identity\.key_refresh_min_interval_s must be between"),
    ({"issuers": []}, r"identity: unknown key\(s\): issuers"),
    ({"oidc_issuers": [{"issuer": "http://idp.example.com"}]}, r"\.issuer must be an https URL"),
    ({"oidc_issuers": [{"issuer": "https://idp.example", "jwks_uri": "http://idp.example/jwks"}]},
     r"\.jwks_uri must be an https URL"),
    ({"oidc_issuers": [{"issuer": "https://a.example"}, {"issuer": "https://a.example"}]}, "configured twice"),
    ({"oidc_issuers": [{"issuer": "https://a.example", "required_claims": "sub"}]}, r"required_claims must be"),
    ({"spiffe_trust_domains": [{"trust_domain": "spiffe://example.org", "bundle_file": "b"}]}, "trust domain name"),
    ({"spiffe_trust_domains": "example.org"}, r"identity\.spiffe_trust_domains must be a list"),
])
def test_config_refusals_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(raw)
