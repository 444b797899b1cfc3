"""`make test` on a bare machine: tests/provision.py installs what the tests run, or stops at once in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.provision import PROGRAMS, conformance_suite_ready, oidc_provider_ready

REPO = Path(__file__).resolve().parents[1]
PROVISION = REPO / "tests" / "provision.py"


def bare_path(tmp_path: Path) -> str:
    """A PATH with python3 and nothing else: no npm, no chromium, no chromedriver, no apt-get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    return str(bin_dir)


def test_a_machine_without_the_programs_and_no_apt_get_stops_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(PROVISION)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": bare_path(tmp_path)}, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("make test: make test needs ")
    for package in PROGRAMS.values():
        assert package in lines[0]
    assert "Traceback" not in done.stderr


def test_a_provisioned_machine_passes_quietly() -> None:
    """The machine running this test was provisioned by `make test`: a second run changes nothing, says nothing."""
    assert conformance_suite_ready() and oidc_provider_ready()
    done = subprocess.run([sys.executable, str(PROVISION)], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_pytest_itself_refuses_in_one_line_when_a_program_is_missing(tmp_path: Path) -> None:
    """Someone running pytest directly on an unprovisioned machine gets one line, not a buried ExceptionGroup."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_provision.py"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PATH": bare_path(tmp_path)}, check=False)
    assert done.returncode == 4, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert ("the tests need npm, chromium, chromedriver, redis-server on PATH: run `make test`, which installs them"
            in output)
    assert "Traceback" not in output and "ExceptionGroup" not in output
