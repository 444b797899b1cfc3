"""Every parser under `narrowgate`, found by walking the subparsers, so a new command is covered by itself.

Imports only argparse: tests run it in a fresh interpreter to see what building the parser loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

Command = tuple[tuple[str, ...], argparse.ArgumentParser]


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Command]:
    """(the words after `narrowgate`, that command's parser) for the top parser and each one under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))
