"""The argparse type each command module's `add_*_parser` hangs its parser on."""

from __future__ import annotations

import argparse
from typing import TypeAlias

# What `ArgumentParser.add_subparsers()` returns; a string, as argparse's class is not generic at run time.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
