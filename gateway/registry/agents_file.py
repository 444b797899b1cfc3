"""The GitOps agents file: YAML declaring agents, read with the line of every value."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from gateway.catalog.yaml_lines import LinedDocument, load_lined
from gateway.file_problems import FileProblem
from gateway.registry.errors import FieldPath
from gateway.registry.model import Lifecycle
from gateway.registry.spec import CreateSpec, SpecReader

TOP_LEVEL_KEYS = frozenset({"agents"})
# Agents declared in a file are meant to run; the store still decides the state of existing ones.
FILE_DEFAULT_STATE = Lifecycle.ACTIVE


@dataclass(frozen=True, slots=True)
class FileEntry:
    index: int  # position in the `agents` list, for line numbers
    spec: CreateSpec


@dataclass(slots=True)
class AgentsFile:
    name: str
    doc: LinedDocument
    entries: list[FileEntry] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)

    def problem(self, path: FieldPath, message: str) -> None:
        self.problems.append(FileProblem(self.name, self.doc.line(path), message))

    def entry_problem(self, entry: FileEntry, path: FieldPath, message: str) -> None:
        self.problem(("agents", entry.index, *path), f"agent {entry.spec.id!r}: {message}")


def parse_agents_file(text: str, name: str, now: float) -> AgentsFile:
    """Validate every entry (all problems, not the first); cross-entry checks are the caller's."""
    try:
        doc = load_lined(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        parsed = AgentsFile(name, LinedDocument(None, {(): line}))
        parsed.problem((), f"invalid YAML: {exc.problem}")
        return parsed
    except yaml.YAMLError as exc:
        parsed = AgentsFile(name, LinedDocument(None, {(): 1}))
        parsed.problem((), f"invalid YAML: {exc}")
        return parsed
    parsed = AgentsFile(name, doc)
    _read_entries(parsed, now)
    return parsed


def _read_entries(parsed: AgentsFile, now: float) -> None:
    data = parsed.doc.data
    if data is None:
        return  # an empty file declares no agents
    if not isinstance(data, dict) or not isinstance(data.get("agents", []), list):
        parsed.problem((), "an agents file must be a mapping with an `agents` list")
        return
    for key in sorted(set(data) - TOP_LEVEL_KEYS, key=str):
        parsed.problem((key,), f"unknown key {key!r}")
    first_line: dict[str, int] = {}
    for index, item in enumerate(data.get("agents") or []):
        reader = SpecReader(now, prefix=("agents", index))
        # Past expiry is judged later: it is fine for an agent that already expired in the store.
        spec = reader.create(item, default_state=FILE_DEFAULT_STATE, check_expiry=False)
        for problem in reader.problems:
            parsed.problem(problem.path, str(problem))
        if spec is None:
            continue
        if spec.id in first_line:
            parsed.problem(("agents", index, "id"), f"agent {spec.id!r} is declared twice (first at line "
                           f"{first_line[spec.id]})")
            continue
        first_line[spec.id] = parsed.doc.line(("agents", index, "id"))
        parsed.entries.append(FileEntry(index, spec))
