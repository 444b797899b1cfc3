"""A problem in a reviewed file (catalog manifest, agents file), reported with file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FileProblem:
    file: str | Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def joined(problems: list[FileProblem]) -> str:
    return "\n".join(str(p) for p in problems)
