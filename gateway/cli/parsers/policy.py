"""`narrowgate policy`: the command line; the commands are in gateway.cli.policy."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.parsers import Run, Subcommands, add_connection_options
from gateway.settings.durations import parse_duration


def add_policy_parser(commands: Subcommands) -> None:
    policy = commands.add_parser("policy", help="validate, test and explain the Cedar policy set")
    sub = policy.add_subparsers(title="policy commands", metavar="COMMAND", required=True)
    validate = sub.add_parser("validate", help="parse and validate the policy set against the catalog")
    test = sub.add_parser("test", help="run the policy test cases in <policies>/tests/*.yaml")
    explain = sub.add_parser("explain", help="show the decision for one call and the policies that made it")
    for command in (validate, test, explain):
        command.add_argument("--config", type=Path, help="gateway config (catalog, policies, state)")
    explain.add_argument("--agent", required=True, help="agent id (from the store or the agents file)")
    explain.add_argument("--tool", required=True, help="exposed tool name, e.g. payments__refund_payment")
    explain.add_argument("--args", default="{}", help="the call's arguments as a JSON object")
    explain.add_argument("--approved", action="store_true", help="decide as if a person had approved the call")
    validate.set_defaults(run=Run("gateway.cli.policy:run_validate"))
    test.set_defaults(run=Run("gateway.cli.policy:run_test"))
    explain.set_defaults(run=Run("gateway.cli.policy:run_explain"))
    add_replay_parser(sub)


def add_replay_parser(sub: Subcommands) -> None:
    replay = sub.add_parser("replay", help="decide the recorded decisions of a window again with a candidate "
                                           "policy set and report every flip (exit 1 if any would newly allow)")
    replay.add_argument("--candidate", required=True, type=Path,
                        help="candidate policy directory (schema.cedarschema and policies/)")
    replay.add_argument("--since", type=_window, default=_window("7d"),
                        help="the window: decisions made in the last DURATION, e.g. 36h, 7d (default 7d)")
    replay.add_argument("--agent", help="only this agent's decisions")
    replay.add_argument("--format", choices=["table", "json"], default="table", help="output (default: table)")
    replay.add_argument("--examples", type=int, default=3, choices=range(0, 21), metavar="N",
                        help="redacted examples per group of flips, 0-20 (default 3)")
    replay.add_argument("--timeout", type=_window, default=600.0,
                        help="how long to wait for the gateway's answer, e.g. 10m (default 10m)")
    add_connection_options(replay)
    replay.set_defaults(run=Run("gateway.cli.policy_replay:run_replay"))


def _window(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration like 36h or 7d: {text!r}") from None
