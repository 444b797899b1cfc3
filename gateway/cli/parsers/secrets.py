"""`narrowgate secrets`: the command line; the commands are in gateway.cli.secrets."""

from __future__ import annotations

from gateway.cli.parsers import Run, Subcommands, add_connection_options


def add_secrets_parser(commands: Subcommands) -> None:
    secrets = commands.add_parser("secrets", help="per-server secrets the gateway owns in Vault (admin API)")
    add_connection_options(secrets)
    sub = secrets.add_subparsers(title="secrets commands", metavar="COMMAND", required=True)
    rotate = sub.add_parser("rotate", help="write a new version of an upstream's secret now; the old one "
                                           "stays valid for the manifest's overlap_s, then is destroyed")
    rotate.add_argument("server", help="the upstream's id (its manifest names secret.vault.rotate)")
    rotate.set_defaults(run=Run("gateway.cli.secrets:run_secrets_rotate"))
