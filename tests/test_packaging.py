"""Packaging: the project metadata setuptools no longer warns about, and the image's HEALTHCHECK,
run for real against a running gateway (and against a port where nothing answers)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.processes import REPO, Gateway, free_port


def test_the_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"  # the table form is deprecated (PEP 639)
    [requirement] = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", requirement)
    assert minimum and int(minimum.group(1)) >= 77, "setuptools reads an SPDX license string from 77 on"


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK CMD (exec form), with this interpreter for the image's `python`."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, flags=re.MULTILINE)
    assert found, "the Dockerfile has no HEALTHCHECK in exec form"
    command = json.loads(found.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_image_healthcheck_passes_on_a_serving_gateway_and_fails_without_one(
        gateway: Gateway, tmp_path: Path) -> None:
    def check(port: int) -> int:
        return subprocess.run(healthcheck_command(), env={"NARROWGATE_LISTEN": f"0.0.0.0:{port}"}, cwd=tmp_path,
                              capture_output=True, timeout=30).returncode

    assert check(gateway.port) == 0
    assert check(free_port()) != 0
