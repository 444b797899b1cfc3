"""The random draws behind a call's ids (gateway.random_draws): their formats, each handed out once, and a forked
child never handing out its parent's."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from gateway.credentials.keys import SigningKeyring
from gateway.credentials.upstream_tokens import UpstreamTokenMinter
from gateway.policy.engine import new_decision_id
from gateway.random_draws import DECISION_ID, REFILL_BYTES, TOKEN_ID, TRANSACTION_ID, Draws, byte_pieces, hex_pieces
from gateway.store import open_store

# Enough to cross several refills of every draw size used.
MANY = 3 * REFILL_BYTES // 8 + 7


async def test_ids_keep_their_formats_and_lengths(tmp_path: Path) -> None:
    decision_ids = [new_decision_id() for _ in range(MANY)]
    assert all(re.fullmatch(r"dec_[0-9a-f]{16}", value) for value in decision_ids)  # 64 bits, as token_hex(8)
    transactions = [TRANSACTION_ID.take() for _ in range(MANY)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in transactions)  # 128 bits, as token_hex(16)
    raw = [TOKEN_ID.take() for _ in range(MANY)]
    assert all(type(value) is bytes and len(value) == 16 for value in raw)
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.migrate()
    minter = UpstreamTokenMinter(await SigningKeyring.open(store), "https://gw.example")
    jtis = [minter.mint("agent", {"sub": "agent"}, "https://up.example", "tool", None, "txn", "digest").jti
            for _ in range(300)]
    await store.close()
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", jti) for jti in jtis)  # 128 bits, as secrets.token_urlsafe(16)
    assert len(set(jtis)) == len(jtis)


def test_no_draw_is_handed_out_twice_across_refills_and_threads() -> None:
    draws = Draws(16, byte_pieces)
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def take(into: list[bytes]) -> None:
        for _ in range(MANY):
            into.append(draws.take())

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for into in taken for value in into]
    assert len(every) == 4 * MANY
    assert len(set(every)) == len(every)


def test_hex_pieces_spell_the_bytes_as_bytes_hex() -> None:
    buffer = bytes(range(256)) * 2
    assert hex_pieces(buffer, 8) == [buffer[i:i + 8].hex() for i in range(0, len(buffer), 8)]
    assert byte_pieces(buffer, 16) == [buffer[i:i + 16] for i in range(0, len(buffer), 16)]


def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    for draws in (DECISION_ID, TOKEN_ID, TRANSACTION_ID):
        draws.take()
        if not draws._pieces:  # that was a buffer's last: take one of the next, so the child has some to inherit
            draws.take()
        assert draws._pieces
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next draws, to the parent, then out without running pytest's teardown
        try:
            os.close(reader)
            text = "\n".join(
                [new_decision_id() for _ in range(20)] + [TRANSACTION_ID.take() for _ in range(20)]
                + [TOKEN_ID.take().hex() for _ in range(20)])
            os.write(writer, text.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read().decode().split("\n")
    _, status = os.waitpid(pid, 0)
    assert status == 0
    parent = ([new_decision_id() for _ in range(20)] + [TRANSACTION_ID.take() for _ in range(20)]
              + [TOKEN_ID.take().hex() for _ in range(20)])
    assert len(child) == 60
    assert not set(child) & set(parent)  # without the at-fork reset both would take the same leftover draws
