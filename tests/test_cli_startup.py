"""`narrowgate` parses its arguments without loading the server: a command's module, and the store, Cedar,
aiohttp or the app behind it, is imported only when that command runs (gateway/cli/parsers/).

The import checks run in a fresh interpreter, since the test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.cli.main import build_parser
from gateway.cli.parsers import Run
from tests.support.cli_tree import commands
from tests.support.processes import NARROWGATE, REPO

HEAVY = ("cedarpy", "aiohttp", "starlette", "opentelemetry.sdk", "uvicorn", "gateway.policy.engine", "gateway.app",
         "mcp", "jwt", "pydantic")
# Arguments parsed in the fresh interpreter, a few per kind of command (admin API, store, offline, server).
PARSED = (["agents", "list"], ["audit", "verify"], ["catalog", "review"], ["keys", "rotate", "--overlap", "1000"],
          ["policy", "explain", "--agent", "a", "--tool", "t"], ["serve", "--workers", "2"], ["demo", "token"])
ALL_COMMANDS = [path for path, _ in commands(build_parser()) if path]
RUNS = sorted({run.target for _, parser in commands(build_parser())
               if isinstance(run := parser.get_default("run"), Run)})


def loaded_after(script: str) -> dict[str, list[str]]:
    """Run `script` in a fresh interpreter; it ends by printing JSON built from `sys.modules`."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    answer: dict[str, list[str]] = json.loads(done.stdout.splitlines()[-1])
    return answer


PARSE_EVERYTHING = f"""
import json, sys
from gateway.cli.main import build_parser
from tests.support.cli_tree import commands
parser = build_parser()
for argv in {PARSED!r}:
    parser.parse_args(argv)
helps = [sub.format_help() for _, sub in commands(parser)]
modules = {{sub.get_default("run").target.split(":")[0] for _, sub in commands(parser) if sub.get_default("run")}}
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules],
                  "command modules": sorted(m for m in modules if m in sys.modules), "helps": [str(len(helps))]}}))
"""


def test_building_the_parser_and_parsing_loads_no_command_and_nothing_heavy() -> None:
    loaded = loaded_after(PARSE_EVERYTHING)
    assert loaded == {"heavy": [], "command modules": [], "helps": [str(len(ALL_COMMANDS) + 1)]}


def test_running_a_command_imports_what_it_needs() -> None:
    """The check above can see a heavy import: resolving `policy validate`'s run function loads Cedar."""
    loaded = loaded_after(f"""
import json, sys
from gateway.cli.main import build_parser
args = build_parser().parse_args(["policy", "validate"])
args.run.function()
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
""")
    assert {"cedarpy", "gateway.policy.engine"} <= set(loaded["heavy"])


@pytest.mark.parametrize("target", RUNS)
def test_every_run_target_names_a_function(target: str) -> None:
    function = Run(target).function()
    assert callable(function)
    assert f"{function.__module__}:{function.__name__}" == target


def test_every_command_group_has_a_run_target() -> None:
    groups = {path[0] for path in ALL_COMMANDS}
    assert {"serve", "demo", "catalog", "agents", "tasks", "approvals", "keys", "policy", "audit"} <= groups
    assert {target.split(":")[0] for target in RUNS} >= {f"gateway.cli.{group.replace('-', '_')}" for group in groups}


@pytest.mark.parametrize("group", sorted({path[0] for path in ALL_COMMANDS}))
def test_each_group_help_runs(group: str) -> None:
    done = subprocess.run([str(NARROWGATE), group, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: narrowgate {group}")


def test_every_command_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    for path in ALL_COMMANDS:
        with pytest.raises(SystemExit) as exited:
            main([*path, "--help"])
        assert exited.value.code == 0, path
        assert capsys.readouterr().out.startswith(f"usage: narrowgate {' '.join(path)}"), path
