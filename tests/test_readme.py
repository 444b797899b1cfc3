"""Every command block of README.md works as printed, against a running demo.

Each ```sh block runs in a fresh bash, after the `export` lines the demo's banner printed (and
nothing else from this environment's NARROWGATE_* settings), exactly as a reader who pasted them
into a second shell would, under `set -euo pipefail`: one failing command fails its block.

Skipped, and only these: the lines `make run` and `make test`. They are the entry points
themselves: this test starts `make run`'s `narrowgate demo` (with its own port and state
directory), and `make test` is what runs this test.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.demo import DemoProcess, clean_environment
from tests.support.processes import REPO

README = REPO / "README.md"
ENTRY_POINTS = re.compile(r"^\s*make (run|test)\b")
# What some blocks must print, beyond exiting 0 (keyed by a command the block holds).
EXPECTED_OUTPUT = {
    "narrowgate agents list": ["demo-agent", "triage-bot"],
    "narrowgate audit verify": ["audit log ok"],
    "narrowgate demo token": ['"tickets__list_tickets"', '"tickets__get_ticket"', "look at the ticket queue"],
    "narrowgate policy explain": ['"decision"'],
}
FORBIDDEN_OUTPUT = {"narrowgate demo token": ["payments__"]}  # a task token sees only its task's tools


def sh_blocks(text: str) -> list[str]:
    """The ```sh blocks, without the entry-point lines; blocks left empty are dropped."""
    blocks = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        kept = "\n".join(line for line in block.splitlines() if not ENTRY_POINTS.match(line)).strip()
        if kept:
            blocks.append(kept)
    return blocks


BLOCKS = sh_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    running = DemoProcess.start(tmp_path_factory.mktemp("readme"))
    yield running
    running.stop()


def test_the_readme_has_its_two_commands_on_top_and_blocks_to_run() -> None:
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```sh\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    assert first is not None
    assert [line.split("#")[0].strip() for line in first.group(1).splitlines()] == ["make run", "make test"]
    assert len(BLOCKS) >= 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.splitlines()[0][:60])
def test_every_readme_block_runs_against_the_demo(demo: DemoProcess, block: str) -> None:
    script = "\n".join(["set -euo pipefail", *demo.export_lines(), block])
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=clean_environment(), capture_output=True,
                          text=True, timeout=100)
    assert done.returncode == 0, (f"exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\n"
                                  f"stderr:\n{done.stderr[-2000:]}")
    for command, expected in EXPECTED_OUTPUT.items():
        if command in block:
            for text in expected:
                assert text in done.stdout, f"{text!r} not in the output of:\n{block}\n{done.stdout[-2000:]}"
    for command, forbidden in FORBIDDEN_OUTPUT.items():
        if command in block:
            for text in forbidden:
                assert text not in done.stdout, f"{text!r} in the output of:\n{block}"
