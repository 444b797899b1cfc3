"""Signing keys (stored, rotated with overlap), per-call upstream tokens, and the revocation list."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.catalog.model import Credentials
from gateway.credentials.keys import SigningKeyring, raw_signature
from gateway.credentials.revocations import Revocations
from gateway.credentials.secret_sources import SecretResolver
from gateway.credentials.upstream_auth import UpstreamAuth
from gateway.credentials.upstream_tokens import MAX_TTL_S, UpstreamTokenMinter
from gateway.store import Store, open_store
from gateway.verifier import argument_digest

ISSUER = "https://gateway.example"
AUDIENCE = "https://tools.example/mcp"
ACTOR = {"sub": "spiffe://example.org/bot-a", "iss": "spiffe://example.org",
         "act": {"sub": "spiffe://example.org/orchestrator", "iss": "spiffe://example.org"}}


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def open_migrated(path: Path) -> Store:
    store = open_store(f"sqlite:///{path}")
    await store.migrate()
    return store



def public_key(keyring: SigningKeyring, kid: str) -> jwt.PyJWK:
    return jwt.PyJWK(next(k for k in keyring.jwks()["keys"] if k["kid"] == kid))


def decode(token: str, keyring: SigningKeyring) -> dict:
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(token, public_key(keyring, kid), algorithms=["ES256"], audience=AUDIENCE,
                      options={"verify_exp": False, "verify_iat": False})


def stored_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT kid, state, not_after FROM signing_keys ORDER BY created_at").fetchall()


# --- keyring ---------------------------------------------------------------------------------------


async def test_first_key_is_generated_once_and_persists_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    store = await open_migrated(db)
    keyring = await SigningKeyring.open(store)
    kid, jwks = keyring.current_kid, keyring.jwks()
    token = keyring.sign({"sub": "x", "aud": AUDIENCE}, "at+jwt")
    again = await SigningKeyring.open(store)  # a second open in the same process generates nothing
    assert again.current_kid == kid
    await store.close()

    store = await open_migrated(db)
    reopened = await SigningKeyring.open(store)
    assert reopened.current_kid == kid
    assert reopened.jwks() == jwks
    assert decode(token, reopened)["sub"] == "x"  # old tokens verify with the reopened keys
    assert len(stored_rows(db)) == 1
    await store.close()


async def test_two_replicas_starting_at_once_agree_on_one_first_key(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    stores = [await open_migrated(db) for _ in range(3)]
    keyrings = await asyncio.gather(*(SigningKeyring.open(s) for s in stores))
    assert len({k.current_kid for k in keyrings}) == 1
    assert [row[1] for row in stored_rows(db)] == ["current"]
    for s in stores:
        await s.close()


async def test_jwks_has_public_keys_only_and_nothing_private_leaks(store: Store) -> None:
    keyring = await SigningKeyring.open(store)
    (key,) = keyring.jwks()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    records = await store.load_signing_keys()
    assert "PRIVATE" not in repr(keyring) and "PRIVATE" not in repr(records)
    assert "PRIVATE KEY" in records[0].private_key_pem  # stored, but only the store sees it


async def test_rotate_keeps_the_old_key_during_overlap_and_drops_it_after(tmp_path: Path) -> None:
    db, clock = tmp_path / "gw.db", Clock()
    store = await open_migrated(db)
    keyring = await SigningKeyring.open(store, clock=clock)
    old = keyring.current_kid
    old_token = keyring.sign({"sub": "old", "aud": AUDIENCE}, "at+jwt")

    clock.now += 10
    new = await keyring.rotate(overlap_s=300)
    assert new != old and keyring.current_kid == new
    assert [k["kid"] for k in keyring.jwks()["keys"]] == [new, old]
    assert decode(old_token, keyring)["sub"] == "old"  # still verifiable inside the overlap
    assert jwt.get_unverified_header(keyring.sign({"aud": AUDIENCE}, "at+jwt"))["kid"] == new
    assert stored_rows(db)[0] == (old, "previous", clock.now + 300)

    reopened = await SigningKeyring.open(store, clock=clock)  # a restart inside the overlap keeps it
    assert [k["kid"] for k in reopened.jwks()["keys"]] == [new, old]

    clock.now += 301
    assert [k["kid"] for k in keyring.jwks()["keys"]] == [new]  # out of the JWKS at once
    newest = await keyring.rotate(overlap_s=60)  # and pruned from the store by the next rotation
    assert [(kid, state) for kid, state, _ in stored_rows(db)] == [(new, "previous"), (newest, "current")]
    assert [k["kid"] for k in keyring.jwks()["keys"]] == [newest, new]
    await store.close()


async def test_a_rotation_by_another_process_is_picked_up_by_reload(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    gateway_store, cli_store = await open_migrated(db), await open_migrated(db)
    serving = await SigningKeyring.open(gateway_store)
    new = await (await SigningKeyring.open(cli_store)).rotate(overlap_s=120)  # `narrowgate keys rotate`
    assert serving.current_kid != new
    await serving.reload()
    assert serving.current_kid == new
    await gateway_store.close()
    await cli_store.close()


async def test_only_one_current_key_is_possible_in_the_table(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    store = await open_migrated(db)
    await SigningKeyring.open(store)
    await store.close()
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO signing_keys VALUES ('k2', 'ES256', 'pem', 1, NULL, 'current')")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM schema_migrations WHERE version = 3").fetchone() == ("signing keys",)


# --- upstream tokens -----------------------------------------------------------------------------


async def test_minted_token_has_exactly_the_specified_header_and_claims(store: Store) -> None:
    clock = Clock(1_700_000_000.7)
    keyring = await SigningKeyring.open(store)
    minter = UpstreamTokenMinter(keyring, ISSUER, clock=clock)
    digest = argument_digest({"path": "/data/a.txt"})
    minted = minter.mint(agent_id="bot-a", actor=ACTOR, audience=AUDIENCE, tool="read_file",
                         task_id="task-1", txn="trace-1", arguments_digest=digest)

    assert jwt.get_unverified_header(minted.token) == {"alg": "ES256", "kid": keyring.current_kid, "typ": "at+jwt"}
    claims = decode(minted.token, keyring)
    assert claims == {
        "iss": ISSUER, "sub": "bot-a", "aud": AUDIENCE, "scope": "read_file",
        "iat": 1_700_000_000, "exp": 1_700_000_060, "jti": minted.jti, "client_id": ISSUER,
        "act": ACTOR, "txn": "trace-1", "task_id": "task-1", "args_sha256": digest, "sub_iss": ISSUER,
    }
    assert minted.expires_at == 1_700_000_060.0
    assert len(base64.urlsafe_b64decode(minted.jti + "==")) == 16  # 128 random bits


async def test_task_id_is_omitted_without_a_task_and_jtis_are_unique(store: Store) -> None:
    minter = UpstreamTokenMinter(await SigningKeyring.open(store), ISSUER)
    minted = [minter.mint(agent_id="bot-a", actor=ACTOR, audience=AUDIENCE, tool="t", task_id=None, txn="x",
                          arguments_digest=argument_digest(None)) for _ in range(50)]
    assert "task_id" not in jwt.decode(minted[0].token, options={"verify_signature": False})
    assert len({m.jti for m in minted}) == 50


@pytest.mark.parametrize(("ttl_s", "lifetime"), [(MAX_TTL_S, 60), (3600, 60), (61, 60), (10, 10), (10.9, 10)])
async def test_ttl_is_capped_at_60_seconds(store: Store, ttl_s: float, lifetime: int) -> None:
    minter = UpstreamTokenMinter(await SigningKeyring.open(store), ISSUER, ttl_s=ttl_s)
    token = minter.mint(agent_id="a", actor=ACTOR, audience=AUDIENCE, tool="t", task_id=None, txn="x",
                        arguments_digest="0" * 64).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == lifetime <= 60


async def test_a_ttl_below_one_second_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 1 s"):
        UpstreamTokenMinter(await SigningKeyring.open(store), ISSUER, ttl_s=0.5)


# --- revocations ---------------------------------------------------------------------------------


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize(("r", "s"), [
    (1, 1), (0xFF, 0x80), (2**255, 2**255 - 1), (2**248 - 1, 2**256 - 1), (0x7F << 248, 0x80 << 248),
    (P256_ORDER - 1, P256_ORDER - 2), (0x0100 << 232, 1 << 247),
])
def test_the_jws_signature_is_r_and_s_as_32_big_endian_bytes_each(r: int, s: int) -> None:
    """Short INTEGERs (leading zero bytes dropped) and 33-byte ones (a zero byte before a set top bit) alike."""
    assert raw_signature(encode_dss_signature(r, s)) == r.to_bytes(32, "big") + s.to_bytes(32, "big")


@pytest.mark.parametrize("der", [
    b"", b"\x30\x06\x02\x01\x01\x02\x01", encode_dss_signature(1, 1)[:-1], b"\x31" + encode_dss_signature(1, 1)[1:],
    encode_dss_signature(2**300, 1), encode_dss_signature(1, 2**300), encode_dss_signature(5, 7) + b"\x00",
    encode_dss_signature(2**256 + 5, 7), encode_dss_signature(7, 2**256 + 5),  # 33 bytes, not a zero first
    b"\x30\x06\x02\x01\x81\x02\x01\x01", b"\x30\x06\x02\x01\x01\x02\x01\xff",  # negative INTEGERs
    b"\x30\x08\x02\x03\x00\x00\x05\x02\x01\x07", b"\x30\x07\x02\x01\x05\x02\x02\x00\x07",  # needless zeros
    b"\x30\x06\x02\x00\x02\x02\x01\x01", b"\x30\x06\x02\x01\x01\x02\x00\x00",  # empty INTEGERs
    b"\x30\x06\x02\x01\x01\x02\x05\x01", b"\x30\x06\x02\x04\x01\x01\x01\x01",  # past the end, no s
])
def test_anything_but_a_p256_der_signature_is_refused(der: bytes) -> None:
    with pytest.raises(ValueError):
        raw_signature(der)


async def test_every_minted_token_verifies_with_a_generic_jwt_library_against_the_jwks(store: Store) -> None:
    """Enough signatures that some r or s has leading zero bytes (1 in 128 per token)."""
    keyring = await SigningKeyring.open(store)
    minter = UpstreamTokenMinter(keyring, ISSUER)
    for i in range(400):
        minted = minter.mint(agent_id="bot-a", actor=ACTOR, audience=AUDIENCE, tool="t", task_id=None, txn=str(i),
                             arguments_digest=argument_digest({"i": i}))
        assert decode(minted.token, keyring)["txn"] == str(i)


def test_revoked_task_is_denied_until_its_entry_expires() -> None:
    clock = Clock(1000.0)
    revocations = Revocations(clock=clock)
    revocations.revoke_task("task-1", until=1060.0)
    revocations.revoke_task("task-1", until=1030.0)  # an earlier until never shortens the entry
    assert revocations.is_revoked("task-1", "jti-a")
    assert not revocations.is_revoked("task-2", "jti-a")
    assert not revocations.is_revoked(None, "jti-a")
    clock.now = 1059.9
    assert revocations.is_revoked("task-1", None)
    clock.now = 1060.0
    assert not revocations.is_revoked("task-1", None)
    assert revocations.snapshot()["tasks"] == [] and len(revocations) == 0


def test_revoked_jti_and_snapshot_format() -> None:
    clock = Clock(1000.0)
    revocations = Revocations(clock=clock)
    revocations.revoke_task("task-1", until=1060.0)
    revocations.revoke_jti("jti-a", until=1010.0)
    assert revocations.is_revoked(None, "jti-a") and revocations.is_revoked("task-9", "jti-a")
    assert revocations.snapshot() == {
        "tasks": [{"id": "task-1", "until": 1060.0}],
        "jtis": [{"id": "jti-a", "until": 1010.0}],
        "generated_at": 1000.0,
    }
    clock.now = 1020.0
    assert revocations.snapshot()["jtis"] == []


async def test_minting_before_the_keys_are_open_is_a_real_error_not_an_assert() -> None:
    """The startup guard holds under `python -O` too (an assert there is stripped)."""
    resolver = SecretResolver()
    auth = UpstreamAuth("https://gw.example", resolver)
    try:
        with pytest.raises(RuntimeError, match="start"):
            auth.mint(Credentials(resource="https://up.example"), "agent-1", {"sub": "w"}, "t", argument_digest({}),
                      None, "txn")
    finally:
        await resolver.close()
