"""Reading a policy directory: files split into single policies, each with its file and line.

cedarpy's parse errors carry no location, so each policy statement is parsed on its own: a
problem then names the file and the line where the failing policy starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import cedarpy

SCHEMA_FILE = "schema.cedarschema"
POLICY_SUBDIR = "policies"


@dataclass(frozen=True, slots=True)
class PolicySource:
    """One policy as written: where it is, its text, and (once parsed) its effect and annotations."""

    file: Path
    line: int
    text: str
    effect: str = ""
    annotations: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def policy_id(self) -> str:
        return self.annotations.get("id", "")


@dataclass(frozen=True, slots=True)
class SourceSet:
    schema_file: Path
    schema_text: str
    policies: tuple[PolicySource, ...]
    digest: str  # over every file's name and bytes


@dataclass(frozen=True, slots=True)
class SourceFiles:
    """A policy directory's bytes as read, before any parsing: enough to tell whether it changed."""

    schema_file: Path
    schema_text: str
    policy_root: Path
    policy_files: tuple[tuple[Path, str], ...]
    digest: str  # over every file's name and bytes


def read_sources(policies_dir: Path, problems: list[str]) -> SourceSet | None:
    """Read `<dir>/schema.cedarschema` and `<dir>/policies/**/*.cedar`; append problems, None if unusable."""
    files = read_files(policies_dir, problems)
    return None if files is None else parse_sources(files, problems)


def read_files(policies_dir: Path, problems: list[str]) -> SourceFiles | None:
    """The directory's texts and their digest (cheap: no Cedar parsing); None if there is no usable schema."""
    schema_file = policies_dir / SCHEMA_FILE
    policy_root = policies_dir / POLICY_SUBDIR
    if not policies_dir.is_dir():
        problems.append(f"{policies_dir}: policy directory does not exist")
        return None
    try:
        schema_text = schema_file.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{schema_file}: cannot read the base schema: {exc.strerror or exc}")
        return None
    digest = hashlib.sha256(b"schema\0" + schema_text.encode())
    files: list[tuple[Path, str]] = []
    for path in sorted(policy_root.rglob("*.cedar")) if policy_root.is_dir() else []:
        if _hidden(path.relative_to(policy_root)):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}:1: cannot read: {exc}")
            continue
        digest.update(str(path.relative_to(policies_dir)).encode() + b"\0" + text.encode() + b"\0")
        files.append((path, text))
    return SourceFiles(schema_file, schema_text, policy_root, tuple(files), digest.hexdigest())


def _hidden(relative: Path) -> bool:
    """Under a hidden directory or itself hidden: a Kubernetes ConfigMap mount keeps its files a second time
    in a timestamped `..2026_...` directory; read, they would count twice and make the version per pod."""
    return any(part.startswith(".") for part in relative.parts)


def parse_sources(files: SourceFiles, problems: list[str]) -> SourceSet:
    """Split and parse every policy file; each problem names its file and line."""
    policies: list[PolicySource] = []
    for path, text in files.policy_files:
        policies.extend(_parse_file(path, text, problems))
    if not policies and not problems:
        problems.append(f"{files.policy_root}: no *.cedar policy files (an empty set would deny everything silently)")
    return SourceSet(files.schema_file, files.schema_text, tuple(policies), files.digest)


def _parse_file(path: Path, text: str, problems: list[str]) -> list[PolicySource]:
    parsed = []
    for line, statement in split_statements(text, path, problems):
        source = _parse_statement(path, line, statement, problems)
        if source is not None:
            parsed.append(source)
    return parsed


def _parse_statement(path: Path, line: int, statement: str, problems: list[str]) -> PolicySource | None:
    try:
        est = json.loads(cedarpy.policies_to_json_str(statement))
    except ValueError as exc:
        problems.append(f"{path}:{line}: {exc}")
        return None
    if est.get("templates"):
        problems.append(f"{path}:{line}: templates (?principal/?resource) are not supported here")
        return None
    (policy,) = est["staticPolicies"].values()
    annotations = {k: ("" if v is None else str(v)) for k, v in (policy.get("annotations") or {}).items()}
    return PolicySource(path, line, statement, policy["effect"], MappingProxyType(annotations))


def split_statements(text: str, path: Path, problems: list[str]) -> list[tuple[int, str]]:
    """Split policy text at top-level `;` (outside strings and comments); each piece with its first line."""
    pieces: list[tuple[int, str]] = []
    start, index, in_string = 0, 0, False
    while index < len(text):
        char = text[index]
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif text.startswith("//", index):
            newline = text.find("\n", index)
            index = len(text) if newline < 0 else newline
            continue
        elif char == ";":
            pieces.append((_first_code_line(text, start), text[start : index + 1]))
            start = index + 1
        index += 1
    tail = text[start:]
    if _strip_comments(tail).strip():
        problems.append(f"{path}:{_first_code_line(text, start)}: policy is missing its closing ';'")
    return pieces


def _first_code_line(text: str, start: int) -> int:
    """1-based line of the first character after `start` that is not whitespace or a comment."""
    index = start
    while index < len(text):
        if text[index].isspace():
            index += 1
        elif text.startswith("//", index):
            newline = text.find("\n", index)
            index = len(text) if newline < 0 else newline
        else:
            break
    return text.count("\n", 0, min(index, len(text))) + 1


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())
