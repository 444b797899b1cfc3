"""What the registry refuses, in words fit for an API response."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.file_problems import FileProblem, joined

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a spec: where (a path into the spec) and what."""

    path: FieldPath
    message: str

    def __str__(self) -> str:
        where = format_path(self.path)
        return f"{where}: {self.message}" if where else self.message


class RegistryError(Exception):
    """A request the registry refuses; `problems` lists each one when there are several."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems

    @classmethod
    def of(cls, problems: list[Problem]) -> RegistryError:
        return cls("; ".join(str(p) for p in problems), tuple(problems))


class NotFound(RegistryError):
    """No agent has this id."""


class Conflict(RegistryError):
    """The request clashes with existing state (duplicate id, identity bound elsewhere, state)."""


class AgentsFileError(RegistryError):
    """The agents file is invalid; nothing from it was applied. Lists every problem found."""

    def __init__(self, file_problems: list[FileProblem]) -> None:
        super().__init__(joined(file_problems))
        self.file_problems = file_problems


class IdentityRefused(Exception):
    """A verified token that may not act: bound to no agent, or to one that is not active.

    `reason` is safe to log and to return to the caller; `agent_id` is set when an agent matched.
    """

    def __init__(self, reason: str, agent_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.agent_id = agent_id


def format_path(path: FieldPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
