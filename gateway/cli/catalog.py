"""`narrowgate catalog validate|review|approve|reject|pin|discover`: the catalog and the upstream tool quarantine.

`validate` checks the manifests offline (`discover`, in gateway.cli.catalog_discover, drafts one).
`review`, `approve` and `reject` drive the admin API's review queue (docs/catalog.md#reviewing); with
`--resources` / `--resource ID` they drive the resource queue (gateway.cli.catalog_resources).
`pin` copies the hashes of the approved definitions into the manifests as `definition_sha256`, as a
text edit: manifests are reviewed like code, so their comments, key order and layout must survive.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.catalog import CatalogError, load_catalog
from gateway.catalog.definitions import reveal_hidden
from gateway.cli.admin_client import client, when
from gateway.cli.catalog_resources import run_resource_decide, run_resource_review
from gateway.cli.errors import AdminClientError
from gateway.cli.exit_codes import EXIT_INVALID
from gateway.cli.review_text import (
    CatalogCommandError,
    diff_lines,
    expected_hash,
    flag_lines,
    json_text,
    print_queue_or_review,
    short_hash,
    table,
)
from gateway.config import load_settings
from gateway.discovery.model import APPROVED, QUARANTINED, REJECTED

PIN_KEY = "definition_sha256"
EXIT_STALE = 1


# --- parsers -------------------------------------------------------------------------------------


# --- validate ------------------------------------------------------------------------------------


def run_catalog_validate(args: argparse.Namespace) -> int:
    config = load_settings(args.config, resolve_secrets=False) if args.config else None  # only its `catalog`
    directory = args.catalog or (config.catalog_dir if config else Path("tool_catalog"))
    try:
        catalog = load_catalog(directory)
    except CatalogError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return EXIT_INVALID
    tools = sum(len(server.tools) for server in catalog.servers.values())
    print(f"catalog ok: {len(catalog.servers)} server(s), {tools} tool(s) in {directory}")
    return 0


# --- review, approve, reject ---------------------------------------------------------------------


def split_tool(text: str) -> tuple[str, str]:
    server, sep, name = text.partition("/")
    if not sep or not server or not name:
        raise CatalogCommandError(f"name a tool as SERVER/NAME (e.g. docs/fetch_page), got {text!r}")
    return server, name


def tool_path(server: str, name: str) -> str:
    return f"/admin/v1/catalog/tools/{urllib.parse.quote(server, safe='')}/{urllib.parse.quote(name, safe='')}"


def run_review(args: argparse.Namespace) -> int:
    if args.resources or args.resource is not None:
        if args.tool is not None:
            raise CatalogCommandError("name either a tool (SERVER/NAME) or --resource ID, not both")
        return run_resource_review(args)
    tool = args.tool
    one = None if tool is None else (lambda: tool_path(*split_tool(tool)))
    return print_queue_or_review(args, "/admin/v1/catalog/tools", "tools", "tool", one, queue_lines, record_lines)


def queue_lines(tools: list[dict[str, Any]], status: str) -> list[str]:
    if not tools:
        return [f"no {status} tools" if status != "all" else "no tools under review"]
    header = ("TOOL", "SERVER/NAME", "STATUS", "CHANGE", "ORIGIN", "OWNER", "FLAGS", "SHA256", "MAY REVIEW")
    rows = [(t["tool"], f"{t['server_id']}/{t['name']}", t["status"], t["change"], t["origin"], t["owner"] or "-",
             ",".join(t["flags"]) or "-", short_hash(t["definition_sha256"]), "yes" if t["you_may_review"] else "no")
            for t in tools]
    lines = table(header, rows)
    if any(t["status"] == QUARANTINED for t in tools):
        lines.append("approve or reject with the full hash: narrowgate catalog review SERVER/NAME shows it")
    return lines


def record_lines(record: dict[str, Any]) -> list[str]:
    """One tool's review record, in the order a reviewer reads it."""
    slug = f"{record['server_id']}/{record['name']}"
    lines = [f"{label + ':':<16} {reveal_hidden(str(value))}" for label, value in _facts(record)]
    lines += ["", *flag_lines(record["flags"]), "", *diff_lines(record)]
    if record.get("description_diff"):
        lines += ["", "description diff:", *[f"  {line}" for line in record["description_diff"].splitlines()]]
    lines += ["", "current definition (hidden characters shown as [U+XXXX]):", json_text(record["current_definition"])]
    if record["status"] == QUARANTINED and record.get("you_may_review"):
        risk = " --risk TIER" if record["origin"] == "discovered" else ""
        lines += ["", "decide with:",
                  f"  narrowgate catalog approve {slug} --sha256 {record['current_hash']}{risk}",
                  f"  narrowgate catalog reject {slug} --sha256 {record['current_hash']} --comment WHY"]
    return lines


def _facts(record: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [("tool", f"{record['exposed_name']} (server {record['server_id']}, upstream name {record['name']})"),
             ("status", record["status"]), ("change", record["change"]),
             ("origin", "catalog (listed in the manifest)" if record["origin"] == "catalog"
              else "discovered (not in the manifest)"),
             ("owner", record["owner"] or "-"),
             ("definition", record["current_hash"]),
             ("approved", record.get("approved_hash") or "none yet"),
             ("first seen", when(record.get("first_seen"))), ("changed", when(record.get("changed_at")))]
    if record.get("reviewed_by"):
        comment = f": {record['comment']}" if record.get("comment") else ""
        facts.append(("reviewed by", f"{record['reviewed_by']} at {when(record.get('reviewed_at'))}{comment}"))
    if record["origin"] == "discovered" and record.get("risk"):
        classes = ", ".join(record.get("data_classes") or []) or "none"
        facts.append(("reviewed as", f"risk {record['risk']}, data classes {classes}, "
                                     f"egress {'yes' if record.get('egress') else 'no'}"))
    facts.append(("you may review", "yes" if record.get("you_may_review") else f"no: {record.get('why_not')}"))
    return facts


def run_decide(args: argparse.Namespace) -> int:
    if (args.tool is None) == (args.resource is None):
        raise CatalogCommandError("name one tool (SERVER/NAME) or one --resource ID")
    if args.resource is not None:
        if args.action == "approve" and (args.risk or args.data_classes or args.egress):
            raise CatalogCommandError("--risk, --data-class and --egress are for tools, not resources")
        return run_resource_decide(args)
    server, name = split_tool(args.tool)
    expected = expected_hash(args.sha256, args.tool)
    body: dict[str, Any] = {"expected_sha256": expected, "comment": args.comment}
    if args.action == "approve":
        # Only what was given: a catalogued tool refuses risk, data classes and egress outright.
        body.update({k: v for k, v in (("risk", args.risk), ("data_classes", args.data_classes)) if v is not None})
        if args.egress:
            body["egress"] = True
    try:
        decided = client(args).request("POST", f"{tool_path(server, name)}/{args.action}", body)
    except AdminClientError as exc:
        if str(exc).startswith("HTTP 409") and "changed again" in str(exc):
            raise AdminClientError(f"{exc}\nsee the new definition: narrowgate catalog review {args.tool}") from None
        raise
    print(f"{decided['server_id']}/{decided['name']} ({decided['exposed_name']}) is now {decided['status']}")
    return 0


# --- pin: the text edit --------------------------------------------------------------------------


class PinError(ValueError):
    """A manifest that cannot be pinned by a text edit (its tools list is not where it should be)."""


@dataclass(frozen=True, slots=True)
class PinEdit:
    name: str
    old: str | None  # the pin it replaced; None when the key was added
    new: str


def pin_manifest_text(text: str, pins: Mapping[str, str]) -> tuple[str, list[PinEdit]]:
    """`text` with `definition_sha256: pins[name]` on each listed tool whose pin differs; and what changed.

    Only the pin's value (or one new key right after the tool's `name`) is touched; everything else,
    comments included, stays byte for byte. Tools in `pins` but not in the manifest are left out.
    """
    tools = _tools_node(text)
    splices: list[tuple[int, int, str]] = []
    edits: list[PinEdit] = []
    for item in tools.value:
        name_key, name_value = _entry(item, "name")
        if name_key is None or not isinstance(name_value, yaml.ScalarNode) or name_value.value not in pins:
            continue
        want = pins[name_value.value]
        pin_key, pin_value = _entry(item, PIN_KEY)
        if pin_key is None:
            splices.append(_insertion(text, item, name_key, name_value, want))
        elif not isinstance(pin_value, yaml.ScalarNode):
            raise PinError(f"line {pin_key.start_mark.line + 1}: {PIN_KEY} of {name_value.value!r} is not a string")
        elif pin_value.value == want:
            continue
        else:
            splices.append(_replacement(text, pin_key, pin_value, want))
        old = pin_value.value if isinstance(pin_value, yaml.ScalarNode) and pin_value.value else None
        edits.append(PinEdit(name_value.value, old, want))
    for start, end, new in sorted(splices, reverse=True):
        text = text[:start] + new + text[end:]
    _verify_pins(text, {e.name: e.new for e in edits})
    return text, edits


def _tools_node(text: str) -> yaml.SequenceNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise PinError(f"invalid YAML: {exc}") from None
    _, tools = _entry(root, "tools") if isinstance(root, yaml.MappingNode) else (None, None)
    if not isinstance(tools, yaml.SequenceNode):
        raise PinError("no `tools:` list")
    return tools


def _entry(node: yaml.Node, key: str) -> tuple[yaml.Node | None, yaml.Node | None]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None, None


def _insertion(text: str, item: yaml.Node, name_key: yaml.Node, name_value: yaml.Node, pin: str) -> tuple[
    int, int, str
]:
    """Add the key right after the tool's name: inside the braces, or as the next line at the keys' indent."""
    entry = f"{PIN_KEY}: {pin}"
    if getattr(item, "flow_style", False):
        at = name_value.end_mark.index
        return at, at, f", {entry}"
    newline = "\r\n" if "\r\n" in text else "\n"
    at = _line_end(text, name_value.end_mark.index)
    indented = " " * name_key.start_mark.column + entry
    if at == len(text) and not text.endswith("\n"):
        return at, at, newline + indented
    return at, at, indented + newline


def _line_end(text: str, index: int) -> int:
    """The start of the line after the one `index` is on (a block scalar's end is already there)."""
    if index > 0 and text[index - 1] == "\n":
        return index
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _replacement(text: str, pin_key: yaml.Node, pin_value: yaml.ScalarNode, pin: str) -> tuple[int, int, str]:
    if pin_value.value or pin_value.style:
        return pin_value.start_mark.index, pin_value.end_mark.index, pin
    # An empty value (`definition_sha256:`) is marked where the next token starts: write after the colon.
    colon = text.index(":", pin_key.end_mark.index) + 1
    return colon, colon, f" {pin}"


def _verify_pins(text: str, expected: Mapping[str, str]) -> None:
    """Parse the edited text again: every pin must read back as written (a guard against odd layouts)."""
    found: dict[str, Any] = {}
    for item in _tools_node(text).value:
        _, name = _entry(item, "name")
        _, pin = _entry(item, PIN_KEY)
        if isinstance(name, yaml.ScalarNode) and name.value in expected:
            found[name.value] = pin.value if isinstance(pin, yaml.ScalarNode) else None
    wrong = sorted(n for n, pin in expected.items() if found.get(n) != pin)
    if wrong:
        raise PinError(f"could not pin {', '.join(wrong)} safely; add {PIN_KEY} by hand")


# --- pin: the command ----------------------------------------------------------------------------


@dataclass
class Manifest:
    path: Path
    text: str
    pins: dict[str, str | None]  # each listed tool's definition_sha256 (None: not pinned)


@dataclass
class PinPlan:
    """What the gateway approved, by server and tool, and why other catalogued tools are not pinned."""

    wanted: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def plan_pins(records: list[dict[str, Any]]) -> PinPlan:
    plan = PinPlan()
    for record in sorted(records, key=lambda r: (r["server_id"], r["name"])):
        slug = f"{record['server_id']}/{record['name']}"
        if record["origin"] != "catalog":
            if record["status"] == APPROVED:
                plan.notes.append(f"{slug} was approved as a discovered tool: add it to the manifest to pin it")
        elif record["status"] == APPROVED and record.get("approved_sha256"):
            plan.wanted.setdefault(record["server_id"], {})[record["name"]] = record["approved_sha256"]
        elif record["status"] == QUARANTINED:
            plan.notes.append(f"{slug} is quarantined: review it first")
        elif record["status"] == REJECTED:
            plan.notes.append(f"{slug} is rejected: not pinned")
    return plan


def read_manifests(directory: Path) -> dict[str, Manifest]:
    """The manifests of `directory` by server id (the loader's file order and patterns)."""
    if not directory.is_dir():
        raise CatalogCommandError(f"catalog directory {directory} does not exist")
    manifests: dict[str, Manifest] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        text = path.read_bytes().decode("utf-8")  # bytes, so CRLF line ends survive the round trip
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CatalogCommandError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            continue
        if data["id"] in manifests:
            raise CatalogCommandError(f"{path}: id {data['id']!r} is also used by {manifests[data['id']].path}")
        tools = given if isinstance(given := data.get("tools"), list) else []
        pins = {t["name"]: t.get(PIN_KEY) for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)}
        manifests[data["id"]] = Manifest(path, text, pins)
    return manifests


@dataclass(frozen=True, slots=True)
class StalePin:
    line: str
    writable: bool  # False: the directory does not list the tool, so pin cannot write it


def stale_pins(plan: PinPlan, manifests: Mapping[str, Manifest], directory: Path) -> list[StalePin]:
    """One entry per approved tool whose pin in `directory` is missing or differs."""
    stale = []
    for server, wanted in sorted(plan.wanted.items()):
        manifest = manifests.get(server)
        for name, approved in sorted(wanted.items()):
            slug = f"{server}/{name}"
            if manifest is None:
                stale.append(StalePin(f"{slug}: no manifest in {directory} has id {server!r}", False))
            elif name not in manifest.pins:
                stale.append(StalePin(f"{slug}: not listed in {manifest.path}", False))
            elif manifest.pins[name] is None:
                stale.append(StalePin(f"{slug}: not pinned (approved {approved})", True))
            elif manifest.pins[name] != approved:
                stale.append(StalePin(f"{slug}: pinned {manifest.pins[name]}, approved {approved}", True))
    return stale


def run_pin(args: argparse.Namespace) -> int:
    records = client(args).request("GET", "/admin/v1/catalog/tools")["tools"]
    plan = plan_pins(records)
    manifests = read_manifests(args.catalog)
    stale = stale_pins(plan, manifests, args.catalog)
    if args.check:
        print("\n".join([*(s.line for s in stale), *plan.notes, _check_summary(stale, args.catalog)]))
        return EXIT_STALE if stale else 0
    return write_pins(plan, manifests, args.catalog, stale)


def _check_summary(stale: list[StalePin], directory: Path) -> str:
    if not stale:
        return f"all pins current in {directory}"
    return f"{len(stale)} pin(s) missing or out of date in {directory}; write them with `narrowgate catalog pin`"


def write_pins(plan: PinPlan, manifests: Mapping[str, Manifest], directory: Path, stale: list[StalePin]) -> int:
    _load_or_explain(directory, "the catalog is invalid before pinning; fix it first (narrowgate catalog validate)")
    edited: dict[Path, str] = {}
    pinned = 0
    for server, wanted in sorted(plan.wanted.items()):
        manifest = manifests.get(server)
        if manifest is None:
            continue
        try:
            text, edits = pin_manifest_text(manifest.text, wanted)
        except PinError as exc:
            raise CatalogCommandError(f"{manifest.path}: {exc}") from None
        for edit in edits:
            change = f"pinned to {edit.new}" if edit.old is None else f"pin {edit.old} -> {edit.new}"
            print(f"{manifest.path}: {server}/{edit.name} {change}")
        if edits:
            edited[manifest.path] = text
            pinned += len(edits)
    # Approved tools the directory does not list cannot be pinned here: a sign of the wrong directory.
    unpinnable = [s.line for s in stale if not s.writable]
    for line in [*unpinnable, *plan.notes]:
        print(line)
    if edited:
        apply_edits(edited, directory)
        print(f"pinned {pinned} tool(s) in {len(edited)} manifest(s); the catalog still loads")
    else:
        print(f"all pins current in {directory}")
    return EXIT_STALE if unpinnable else 0


def apply_edits(edited: Mapping[Path, str], directory: Path) -> None:
    """Write the edited manifests, then load the catalog again; if it no longer loads, put them back."""
    originals = {path: path.read_bytes() for path in edited}
    for path, text in edited.items():
        _replace(path, text.encode("utf-8"))
    try:
        load_catalog(directory)
    except CatalogError as exc:
        for path, data in originals.items():
            _replace(path, data)
        raise CatalogCommandError("after pinning the catalog no longer loads, so the manifests were put back:\n"
                                  + "\n".join(str(p) for p in exc.problems)) from None


def _replace(path: Path, data: bytes) -> None:
    # Written beside the manifest and renamed over it: a gateway starting meanwhile reads a whole file.
    temporary = path.with_name(f".{path.name}.pin")
    temporary.write_bytes(data)
    shutil.copymode(path, temporary)
    os.replace(temporary, path)


def _load_or_explain(directory: Path, message: str) -> None:
    try:
        load_catalog(directory)
    except CatalogError as exc:
        raise CatalogCommandError(message + ":\n" + "\n".join(str(p) for p in exc.problems)) from None
