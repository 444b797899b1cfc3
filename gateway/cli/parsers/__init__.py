"""The `narrowgate` command line, one module per command group, and what those modules share.

Building the parser imports only these modules and small leaves (settings checks, models' constants):
every command names its run function by string (`Run`), and that function's module, with the store,
Cedar, aiohttp or the app behind it, is imported when the command runs. So `narrowgate --help` or
`narrowgate agents list` does not load the server first.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

# What `ArgumentParser.add_subparsers()` returns; a string, as argparse's class is not generic at run time.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class Run:
    """A command's run function as "module:function", imported when the command runs (`args.run(args)`)."""

    target: str

    def __call__(self, args: argparse.Namespace) -> int:
        return int(self.function()(args))

    def function(self) -> Callable[[argparse.Namespace], int]:
        module, _, name = self.target.partition(":")
        function: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
        return function


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """--gateway and --admin-token (with their environment defaults), for every command of the admin API."""
    parser.add_argument("--gateway", default=os.environ.get("NARROWGATE_URL", DEFAULT_GATEWAY),
                        help="gateway base URL (default: $NARROWGATE_URL or http://127.0.0.1:8080)")
    parser.add_argument("--admin-token", default=os.environ.get("NARROWGATE_ADMIN_TOKEN"),
                        help="admin bearer token (default: $NARROWGATE_ADMIN_TOKEN)")
