"""Random ids without a system call each: fixed-size draws cut from one os.urandom read.

Every call takes two or three random values (its decision id, its upstream token's jti and, without a trace,
its transaction id); os.urandom for each is a getrandom system call per value. A `Draws` reads REFILL_BYTES
at once and cuts them into draws of its size, each handed out once (list.pop: one step under the GIL, so
threads - the replay's decisions run on worker threads - never get the same draw), so a call costs one
list pop and a system call happens once per REFILL_BYTES // size draws. The bytes are os.urandom's (the
kernel's CSPRNG), so each draw has the same entropy and the values the same format as before.

A forked child must never hand out its parent's draws: os.register_at_fork empties every Draws in the child,
which then reads its own bytes (subprocess's fork+exec runs no Python in the child, so needs nothing).
What no hook sees is a process copied whole from a memory snapshot (CRIU, a cloned VM or microVM): both
copies would hand out the same next draws, up to a buffer's worth per kind, where separate reads would have
differed once the kernel reseeded. docs/operations.md says not to run two gateways restored from one snapshot.
"""

from __future__ import annotations

import functools
import os
import struct
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

REFILL_BYTES = 4096  # one getrandom per this many bytes (256 draws of 16 bytes, 512 of 8)
Piece = TypeVar("Piece", bytes, str)


class Draws(Generic[Piece]):
    """Random draws of `size` bytes each, cut by `cut` (as bytes, or as hex text), each handed out once."""

    __slots__ = ("__weakref__", "_cut", "_pieces", "size")

    def __init__(self, size: int, cut: Callable[[bytes, int], list[Piece]]) -> None:
        if not 0 < size <= REFILL_BYTES:
            raise ValueError(f"a draw is 1 to {REFILL_BYTES} bytes, not {size}")
        self.size = size
        self._cut: Callable[[bytes, int], list[Piece]] = cut
        self._pieces: list[Piece] = []
        _ALL.add(self)

    def take(self) -> Piece:
        """A draw (`size` random bytes, as bytes or hex text) no other take of this process, its parent or a child
        has had."""
        try:
            return self._pieces.pop()
        except IndexError:
            return self._refill()

    def _refill(self) -> Piece:
        # A fresh list, not the old one extended: a thread that refills at the same moment fills its own.
        pieces = self._cut(os.urandom(REFILL_BYTES - REFILL_BYTES % self.size), self.size)
        first = pieces.pop()
        self._pieces = pieces
        return first

    def forget(self) -> None:
        """Drop every draw not handed out yet (the next one reads fresh bytes)."""
        self._pieces = []


# The cutting is done in C (one struct unpack, or one hex() with a separator and one split), not a Python loop.
def byte_pieces(buffer: bytes, size: int) -> list[bytes]:
    return list(_unpacker(len(buffer) // size, size).unpack(buffer))


def hex_pieces(buffer: bytes, size: int) -> list[str]:
    """As bytes.hex() spells each piece: lowercase, two digits a byte."""
    return buffer.hex(" ", size).split(" ")


@functools.cache
def _unpacker(count: int, size: int) -> struct.Struct:
    return struct.Struct(f"{size}s" * count)


_ALL: weakref.WeakSet[Draws[bytes] | Draws[str]] = weakref.WeakSet()


def _forget_all() -> None:
    for draws in list(_ALL):
        draws.forget()


os.register_at_fork(after_in_child=_forget_all)

# The call path's draws (one Draws per use, so a format's pieces are cut once).
DECISION_ID = Draws(8, hex_pieces)  # gateway.policy.engine.new_decision_id: 64 bits, as 16 hex digits
TOKEN_ID = Draws(16, byte_pieces)  # an upstream token's jti: 128 bits (base64url there)
TRANSACTION_ID = Draws(16, hex_pieces)  # a call's txn when it carries no trace: 128 bits, as 32 hex digits
