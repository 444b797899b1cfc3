"""`narrowgate serve`: the command line; the command is in gateway.cli.serve."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.parsers import Run, Subcommands
from gateway.settings.cluster import workers_setting
from gateway.settings.errors import ConfigError


def add_serve_parser(commands: Subcommands) -> None:
    serve = commands.add_parser("serve", help="run the gateway", description="Run the gateway until stopped.")
    serve.add_argument("--config", type=Path, help="YAML config file (NARROWGATE_* variables override it)")
    serve.add_argument("--open-loopback", action="store_true",
                       help="let unauthenticated local clients in (development only; refused unless bound "
                            "to a loopback address)")
    serve.add_argument("--workers", type=workers_argument, metavar="N",
                       help="processes serving the listen address (default: `workers` in the config, 1); "
                            "more than 1 needs cluster.redis_url")
    serve.set_defaults(run=Run("gateway.cli.serve:run_serve"))


def workers_argument(text: str) -> int:
    try:
        return workers_setting(int(text))
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64, got {text!r}") from None
