"""Drive the pinned MCP conformance suite (`@modelcontextprotocol/conformance`) from Python.

`ensure_suite()` returns the directory holding the suite's Node 22 binary; tests/provision.py
installs both from `package-lock.json` (npm ci) when `node_modules` is missing.
`run_suite(url, spec_version, timeout_s)` runs every server scenario of `--suite all` at one spec
version against `url` and returns per-scenario results parsed from the suite's `checks.json` files.

`fixture_server()` runs tests/fixtures/conformance_server.py on a free port for the duration of a
`with` block.

Command line: `python tests/conformance/runner.py URL|fixture [SPEC_VERSION ...]` prints a summary and
exits non-zero when a scenario failed; `fixture` starts the fixture and tests it directly.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.provision import CONFORMANCE_JS, ProvisionError, ensure_conformance_suite

SUITE_DIR = Path(__file__).resolve().parent
FIXTURE_SCRIPT = SUITE_DIR.parent / "fixtures" / "conformance_server.py"
SPEC_VERSIONS = ("2025-11-25", "2026-07-28")

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d+Z$")
_RUNNING = re.compile(r"^=== Running scenario: (?P<scenario>\S+) ===$", re.MULTILINE)
_SKIPPED = re.compile(r"^SKIPPED: scenario '(?P<scenario>[^']+)'", re.MULTILINE)


class SuiteSetupError(RuntimeError):
    """The conformance suite or its Node runtime could not be installed or started."""


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    status: str  # SUCCESS | FAILURE | WARNING | INFO | SKIPPED
    description: str = ""
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "FAILURE"


@dataclass
class ScenarioResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    error: str | None = None  # set when the scenario ran but left no checks.json

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    @property
    def clean(self) -> bool:
        """Passed without WARNING checks (the suite reports unmet SHOULDs as warnings, exit code 0)."""
        return self.passed and not self.warnings

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "WARNING"]


@dataclass
class SuiteResult:
    url: str
    spec_version: str
    scenarios: dict[str, ScenarioResult]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return bool(self.scenarios) and all(s.passed for s in self.scenarios.values())

    @property
    def clean(self) -> bool:
        """Every scenario passed and no check was a WARNING."""
        return self.passed and all(s.clean for s in self.scenarios.values())

    @property
    def failed_scenarios(self) -> list[ScenarioResult]:
        return [s for s in self.scenarios.values() if not s.passed]

    def summary(self) -> str:
        ok = sum(s.passed for s in self.scenarios.values())
        warned = sum(bool(s.warnings) for s in self.scenarios.values())
        lines = [
            f"conformance {self.spec_version} against {self.url}: "
            f"{ok}/{len(self.scenarios)} scenarios passed, {warned} with warnings"
        ]
        for scenario in self.failed_scenarios:
            lines.append(f"  FAIL {scenario.name}" + (f": {scenario.error}" if scenario.error else ""))
            lines.extend(f"    - [{c.id}] {c.name}: {c.error_message or c.description}" for c in scenario.failures)
        for scenario in self.scenarios.values():
            lines.extend(f"  warn {scenario.name} [{c.id}]: {c.error_message}" for c in scenario.warnings)
        return "\n".join(lines)


# --------------------------------------------------------------------------- installation


def assert_clean_pass(result: SuiteResult) -> None:
    """Every scenario ran and passed with no warning; the failure message is the suite's summary."""
    print(result.summary())
    assert result.scenarios, f"the suite ran no scenarios:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.passed, result.summary()
    assert result.clean, f"every SHOULD must be met too:\n{result.summary()}"
    assert result.exit_code == 0, result.summary()


def ensure_suite() -> Path:
    """The pinned suite's Node 22 directory, installing the suite first if needed (see tests/provision.py)."""
    try:
        return ensure_conformance_suite()
    except ProvisionError as exc:
        raise SuiteSetupError(str(exc)) from exc


# --------------------------------------------------------------------------- running


def run_suite(url: str, spec_version: str, timeout_s: float = 300.0) -> SuiteResult:
    """Run every server scenario of `--suite all` at `spec_version` against `url`."""
    node_dir = ensure_suite()
    env = {**os.environ, "PATH": f"{node_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="conformance-") as out:
        command = [
            str(node_dir / "node"),
            str(CONFORMANCE_JS),
            "server",
            "--url",
            url,
            "--suite",
            "all",
            "--spec-version",
            spec_version,
            "--timeout",
            str(int(min(30.0, timeout_s) * 1000)),
            "-o",
            out,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise SuiteSetupError(f"conformance suite did not finish within {timeout_s:.0f}s") from exc
        scenarios = _read_results(Path(out))
    _add_missing_scenarios(scenarios, done.stdout)
    return SuiteResult(url, spec_version, scenarios, done.returncode, done.stdout, done.stderr)


def _read_results(out: Path) -> dict[str, ScenarioResult]:
    scenarios: dict[str, ScenarioResult] = {}
    for checks_file in sorted(out.glob("*/checks.json")):
        match = _RESULT_DIR.match(checks_file.parent.name)
        name = match["scenario"] if match else checks_file.parent.name
        scenarios[name] = ScenarioResult(name, _parse_checks(checks_file))
    return scenarios


def _parse_checks(path: Path) -> list[Check]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [Check(id="checks-json", name="ChecksJson", status="FAILURE", error_message=str(exc))]
    return [
        Check(
            id=str(item.get("id", "")),
            name=str(item.get("name", "")),
            status=str(item.get("status", "")),
            description=str(item.get("description", "")),
            error_message=item.get("errorMessage"),
        )
        for item in raw
        if isinstance(item, dict)
    ]


def _add_missing_scenarios(scenarios: dict[str, ScenarioResult], stdout: str) -> None:
    """A scenario the suite started but that left no checks.json counts as failed."""
    skipped = set(_SKIPPED.findall(stdout))
    for name in _RUNNING.findall(stdout):
        if name not in scenarios and name not in skipped:
            scenarios[name] = ScenarioResult(name, error="scenario produced no checks.json")


# --------------------------------------------------------------------------- the fixture upstream


@contextmanager
def fixture_server(port: int = 0, startup_timeout_s: float = 30.0) -> Iterator[int]:
    """Run tests/fixtures/conformance_server.py as a subprocess; yield the port it listens on."""
    command = [sys.executable, str(FIXTURE_SCRIPT), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield _wait_for_listening(process, startup_timeout_s)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_listening(process: subprocess.Popen[str], timeout_s: float) -> int:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while selector.select(timeout_s):
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("LISTENING "):
                return int(line.split()[1])
    process.kill()
    stderr = process.stderr.read() if process.stderr else ""
    raise SuiteSetupError(f"conformance fixture did not report LISTENING within {timeout_s:.0f}s:\n{stderr}")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    target, versions = argv[0], argv[1:] or list(SPEC_VERSIONS)
    if target == "fixture":
        with fixture_server() as port:
            results = [run_suite(f"http://127.0.0.1:{port}/mcp", version) for version in versions]
    else:
        results = [run_suite(target, version) for version in versions]
    for result in results:
        print(result.summary())
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
