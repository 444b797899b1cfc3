"""The type check: `make test` and `make lint` run mypy first, and the call path's stages stay strict
even when the global settings are relaxed (pyproject.toml [tool.mypy], docs/development.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO

STRICT_STAGES = ("calls", "protocol", "policy", "identity", "credentials", "audit", "transport")
UNTYPED = "def passthrough(value):\n    return value\n"


@pytest.mark.parametrize(("target", "after"), [("test", "-m pytest"), ("lint", "ruff check")])
def test_the_make_target_runs_the_type_check_before_its_own_step(target: str, after: str) -> None:
    dry_run = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60,
                             check=True).stdout.splitlines()
    mypy = [i for i, line in enumerate(dry_run) if "-m mypy" in line]
    step = [i for i, line in enumerate(dry_run) if after in line]
    assert mypy and step and mypy[0] < step[0], dry_run


def test_the_stages_stay_strict_when_the_global_setting_allows_untyped_code(tmp_path: Path) -> None:
    package = tmp_path / "gateway"
    files = []
    for stage in (*STRICT_STAGES, "elsewhere"):
        (package / stage).mkdir(parents=True)
        (package / stage / "__init__.py").write_text("")
        (package / stage / "untyped.py").write_text(UNTYPED)
        files.append(str(package / stage / "untyped.py"))
    (package / "__init__.py").write_text("")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--allow-untyped-defs",
         "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    flagged = {line.split("/")[-2] for line in checked.stdout.splitlines() if "[no-untyped-def]" in line}
    assert flagged == set(STRICT_STAGES), checked.stdout + checked.stderr
    assert checked.returncode == 1
