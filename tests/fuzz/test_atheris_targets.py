"""The atheris harnesses (`make fuzz` runs them at length) accept their seed inputs, so they cannot rot
between long runs; each target is the same property its Hypothesis test checks."""

from __future__ import annotations

import pytest

from tests.fuzz.atheris_targets import TARGETS

SEEDS = (b"", b"\x00", b"id: x\nowner: o\n", b"{!!int }", b"data: \xff\n\nretry: \xc2\xb2\n\n",
         b'{"jsonrpc":"2.0","id":1,"method":"ping"}', b"[" * 100)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_atheris_target_holds_its_property_on_the_seeds(name: str) -> None:
    for seed in SEEDS:
        TARGETS[name](seed)
