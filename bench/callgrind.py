"""Counting a Python program's instructions with callgrind (valgrind): what the in-process benches share.

The count does not depend on the machine's load, unlike CPU time; an operation's cost is the difference between a
run of N repetitions and a run of none.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def dump_total(dump: Path) -> int:
    """The event total of one callgrind dump: its `totals:` line (a later dump's `summary:` line can be off)."""
    for line in reversed(dump.read_text(errors="replace").splitlines()):
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no total in {dump}")


def module_instructions(args: list[str], *, from_start: bool = True) -> int:
    """Instructions callgrind counts for `python -m ARGS`: the whole run, or (`from_start` False) only what runs
    once the program switches counting on itself (`callgrind_control -i on <its pid>`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        start = [] if from_start else ["--instr-atstart=no"]
        subprocess.run(["valgrind", "--tool=callgrind", *start, f"--callgrind-out-file={out}", sys.executable, "-m",
                        *args], check=True, capture_output=True, cwd=REPO)
        return dump_total(out)
