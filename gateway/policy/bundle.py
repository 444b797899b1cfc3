"""A bundle: one policy directory compiled against one catalog model into cedarpy handles.

Compiling parses and validates everything once; the result is immutable, so the engine swaps a
whole bundle with one attribute assignment and a decision reads one consistent set.

Compiling is slow at a large catalog (Cedar validates every policy against every generated action:
seconds at 1,000 tools), so the engine compiles on a worker thread; every cedarpy call here that
is proportional to the catalog or the policy set releases the GIL while it runs, so the event loop
keeps serving meanwhile (measured: a 3 s validation in a thread holds the loop for at most the
interpreter's switch interval, against 3 s without release_gil).

No bundle holds a `cedarpy.Schema` of the whole catalog: freeing one takes 0.1-0.2 s at 5,000 tools
with the GIL held, on whichever thread drops it (a worker thread holds the loop just as long).
Validation is given the schema text instead, so Cedar builds and frees it with the GIL released.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cedarpy

from gateway.policy.listing import ContextReads, context_reads, listing_policies
from gateway.policy.model import CatalogModel
from gateway.policy.reauth import REAUTH
from gateway.policy.reauth import annotation_problems as reauth_annotation_problems
from gateway.policy.scoped import ToolScopes
from gateway.policy.sources import PolicySource, SourceFiles, parse_sources, read_files
from gateway.settings.durations import parse_duration

POLICY_REF = re.compile(r"policy(\d+)")
SCHEMA_PARSE_ERROR = "Schema parse error:"  # how validate_policies reports a schema text it cannot use


@dataclass(frozen=True, slots=True)
class Bundle:
    directory: Path
    version: str
    loaded_at: float
    catalog: CatalogModel
    policies: cedarpy.PolicySet
    listing: cedarpy.PolicySet  # input-dependent conditions relaxed (see listing.py)
    sources: tuple[PolicySource, ...]  # index N is Cedar's "policyN"
    base_digest: str  # the policy directory's bytes (policies and base schema)
    listing_reads: ContextReads  # the parts of the context the listing policies can observe
    files: SourceFiles  # what was compiled: a catalog change compiles these again, not newer files on disk
    decision_reads: ContextReads = True  # the parts of the context the policies can observe (context.py)
    scoped: ToolScopes | None = None  # per tool: what its calls can read, which policies can apply (scoped.py)

    def source(self, cedar_id: str) -> PolicySource | None:
        match = POLICY_REF.fullmatch(cedar_id)
        if match is None or int(match.group(1)) >= len(self.sources):
            return None
        return self.sources[int(match.group(1))]

    def public_id(self, cedar_id: str) -> str:
        source = self.source(cedar_id)
        return source.policy_id if source is not None and source.policy_id else cedar_id

    def describe_error(self, message: str) -> str:
        """An evaluation error with Cedar's positional ids replaced by @id and file:line."""
        return POLICY_REF.sub(lambda m: self._label(m.group(0)), message)

    def _label(self, cedar_id: str) -> str:
        source = self.source(cedar_id)
        return f"{source.policy_id} ({source.where})" if source is not None else cedar_id


class CompileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def compile_bundle(directory: Path, catalog: CatalogModel, files: SourceFiles | None = None) -> Bundle:
    """Read (unless `files` were read already), parse and validate `directory` against `catalog`;
    raise CompileError listing every problem."""
    problems: list[str] = []
    if files is None:
        files = read_files(directory, problems)
    if files is None:
        raise CompileError(problems)
    sources = parse_sources(files, problems)
    problems.extend(catalog.problems)
    problems.extend(_annotation_problems(sources.policies))
    text = "\n".join(source.text for source in sources.policies)
    if _base_schema_fits(sources.schema_file, sources.schema_text, problems):
        # Validate what did parse even when something else failed, so one run reports every problem.
        _validate(text, sources.schema_file, sources.schema_text + "\n" + catalog.schema_text, sources.policies,
                  problems)
    if problems:
        raise CompileError(problems)
    policies = cedarpy.PolicySet.from_str(text, release_gil=True)
    est = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    listing_json = listing_policies(est)
    listing = cedarpy.PolicySet.from_json_str(listing_json, release_gil=True)
    reads = context_reads(json.loads(listing_json)["staticPolicies"])
    decision_reads = context_reads(est)
    return Bundle(directory, bundle_version(sources.digest, catalog), time.time(), catalog, policies,
                  listing, sources.policies, sources.digest, reads, files, decision_reads,
                  ToolScopes(est, decision_reads))


def bundle_version(base_digest: str, catalog: CatalogModel) -> str:
    return hashlib.sha256((base_digest + "\0" + catalog.schema_text).encode()).hexdigest()[:16]


def with_catalog(bundle: Bundle, catalog: CatalogModel) -> Bundle | None:
    """`bundle` serving `catalog` without compiling again, when nothing validation depends on changed
    (same generated schema text; the policies are the bundle's own): e.g. a tool approved or
    quarantined, or its owner or data classes changed. None when it must be compiled."""
    if catalog.schema_text != bundle.catalog.schema_text or catalog.problems:
        return None
    return replace(bundle, catalog=catalog, loaded_at=time.time())


def _base_schema_fits(path: Path, base: str, problems: list[str]) -> bool:
    """The base schema alone parses (small: dropping it here costs nothing)."""
    try:
        cedarpy.Schema.from_str(base, release_gil=True)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return False
    return True


def _validate(text: str, schema_path: Path, schema_text: str, sources: tuple[PolicySource, ...],
              problems: list[str]) -> None:
    """Validate against the full schema's text: Cedar parses, uses and frees it with the GIL released."""
    try:
        result = cedarpy.validate_policies(text, schema_text, release_gil=True)
    except ValueError as exc:
        problems.append(f"{schema_path}: the schema generated from the catalog does not fit the base schema: {exc}")
        return
    for error in result.errors:
        if not error.policy_id and error.error.startswith(SCHEMA_PARSE_ERROR):
            detail = error.error.removeprefix(SCHEMA_PARSE_ERROR).strip()
            problems.append(f"{schema_path}: the schema generated from the catalog does not fit the base schema: "
                            f"{detail}")
            continue
        match = POLICY_REF.fullmatch(error.policy_id or "")
        source = sources[int(match.group(1))] if match and int(match.group(1)) < len(sources) else None
        where = source.where if source is not None else "policies"
        label = source.policy_id if source is not None else error.policy_id
        message = error.error.replace(f"`{error.policy_id}`", f"`{label}`") if error.policy_id else error.error
        problems.append(f"{where}: {message}")
    if not result.validation_passed and not result.errors:  # fail closed: refused, yet no reason given
        problems.append(f"{schema_path}: Cedar refused the policies against the schema without naming an error")


def _annotation_problems(sources: tuple[PolicySource, ...]) -> list[str]:
    """Every policy needs a unique @id: decisions and audit records name policies by it."""
    problems = []
    seen: dict[str, PolicySource] = {}
    for source in sources:
        policy_id = source.policy_id
        if not policy_id:
            problems.append(f"{source.where}: policy has no @id(\"...\") annotation")
        elif policy_id in seen:
            problems.append(f"{source.where}: @id {policy_id!r} is also used at {seen[policy_id].where}")
        else:
            seen[policy_id] = source
        problems.extend(_approval_annotation_problems(source))
    return problems


STEP_UP_MODES = ("", "hold", "pending", REAUTH)


def _approval_annotation_problems(source: PolicySource) -> list[str]:
    """@step_up, @approvers and @approval_ttl shape approval requests: a typo must not go unnoticed."""
    notes = source.annotations
    problems = []
    if "step_up" in notes and notes["step_up"] not in STEP_UP_MODES:
        problems.append(f"{source.where}: @step_up must be \"hold\", \"pending\", \"reauth\" or empty, not "
                        f"{notes['step_up']!r}")
    problems.extend(reauth_annotation_problems(source))
    for key in ("approvers", "approval_ttl"):
        if key in notes and "step_up" not in notes:
            problems.append(f"{source.where}: @{key} only applies to a policy with @step_up")
    if notes.get("approval_ttl"):
        try:
            parse_duration(notes["approval_ttl"])
        except ValueError:
            problems.append(f"{source.where}: @approval_ttl must be a duration like \"10m\", not "
                            f"{notes['approval_ttl']!r}")
    if "approvers" in notes and (not notes["approvers"].strip() or "," in notes["approvers"]):
        problems.append(f"{source.where}: @approvers needs one group name (no commas)")
    return problems
