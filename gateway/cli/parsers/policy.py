"""`narrowgate policy`: the command line; the commands are in gateway.cli.policy."""

from __future__ import annotations

from pathlib import Path

from gateway.cli.parsers import Run, Subcommands


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
