"""`narrowgate catalog discover`: draft a catalog manifest from what a live MCP server lists.

It connects with the `mcp` SDK client (a Streamable HTTP URL, or a stdio command after `--`), lists
tools, prompts and resources as the gateway does (the 2025-11-25 handshake era first, every page,
the raw definitions), and writes a manifest for the owner to trim: every tool with its description
as comments, the risk tier its annotations claim, `data_classes` to fill, and its
`definition_sha256` pin from the gateway's own `definition_hash`. What the owner must fill is marked
TODO and still validates, so the draft loads as written.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gateway import __version__
from gateway.catalog import CatalogError, load_catalog
from gateway.catalog.definitions import DefinitionTooDeep, claimed_risk, definition_hash, reveal_hidden
from gateway.catalog.loader import ENV_REFERENCE, ID_PATTERN, NAMESPACE_PATTERN, RESERVED_NAMESPACE, TOOL_NAME_PATTERN
from gateway.catalog.model import NAMESPACE_SEPARATOR
from gateway.cli.parsers.catalog import OWNER_TODO

MAX_PAGES = 100  # as the gateway: a server that never ends its list is not followed forever
HANDSHAKE_ERA = "legacy"  # the SDK's name for 2025-11-25, the era the gateway lists upstreams in
RISK_REASONS = {"read": "readOnlyHint", "destructive": "destructiveHint",
                "write": "no readOnlyHint or destructiveHint: check"}
# (what the draft writes, the SDK request, the result key)
LISTS = (("tools", "ListToolsRequest", "tools"), ("prompts", "ListPromptsRequest", "prompts"),
         ("resources", "ListResourcesRequest", "resources"),
         ("templates", "ListResourceTemplatesRequest", "resourceTemplates"))


class DiscoverError(ValueError):
    """Reported by the CLI as `narrowgate: <message>` with exit status 2."""


# --- what to connect to, and what it lists --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    url: str | None = None
    command: tuple[str, ...] = ()  # stdio: the program and its arguments
    cwd: Path = field(default_factory=Path.cwd)  # where a stdio command ran

    @property
    def label(self) -> str:
        return self.url or " ".join(self.command)


def parse_target(values: Sequence[str]) -> Target:
    if len(values) == 1 and values[0].startswith(("http://", "https://")):
        return Target(url=values[0])
    if values and values[0].startswith(("http://", "https://")):
        raise DiscoverError("a URL takes no further arguments; put a stdio command after `--`")
    return Target(command=tuple(values), cwd=Path.cwd())


@dataclass
class Listing:
    """What one server listed, as raw definitions (what the gateway hashes), and who it said it was."""

    name: str
    version: str
    description: str
    protocol: str
    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)


async def list_server(target: Target, timeout_s: float) -> Listing:
    """Connect and list everything; over HTTP try the handshake era, then let the SDK negotiate."""
    import anyio

    modes = (HANDSHAKE_ERA,) if target.url is None else (HANDSHAKE_ERA, "auto")
    problem = ""
    for mode in modes:
        try:
            with anyio.fail_after(timeout_s):
                return await _list_with(target, mode)
        except TimeoutError:
            problem = f"no answer within {timeout_s:g} s"
        except Exception as exc:  # the SDK and its transports raise many kinds (and groups of them)
            problem = describe_failure(exc)
    raise DiscoverError(f"cannot list {target.label}: {problem}")


async def _list_with(target: Target, mode: str) -> Listing:
    from mcp import Client, StdioServerParameters
    from mcp.types import Implementation

    server: Any = target.url
    if target.url is None:
        # The operator's own environment, as for any command they run (and as the gateway gives its children).
        server = StdioServerParameters(command=target.command[0], args=list(target.command[1:]),
                                       env=dict(os.environ), cwd=target.cwd)
    info = Implementation(name="narrowgate-catalog-discover", version=__version__)
    async with Client(server, mode=mode, client_info=info, cache=None) as client:
        about = client.server_info
        listing = Listing(name=about.name if about else "", version=about.version if about else "",
                          description=(about.description or about.title or "") if about else "",
                          protocol=client.protocol_version)
        for kind, request, key in LISTS:
            setattr(listing, kind, await _list_all(client.session, request, key))
        return listing


async def _list_all(session: Any, request_name: str, key: str) -> list[dict[str, Any]]:
    """Every page of one list, as the raw JSON objects the server sent; [] if it does not offer the kind."""
    import mcp.types as types
    from mcp.shared.exceptions import MCPError
    from pydantic import TypeAdapter

    raw = TypeAdapter(dict[str, Any])  # not the SDK's models: they would drop fields the pin covers
    request = getattr(types, request_name)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        try:
            result = await session.send_request(request(params=types.PaginatedRequestParams(cursor=cursor)), raw)
        except MCPError as exc:
            if exc.code == types.METHOD_NOT_FOUND:
                return []
            raise
        items.extend(item for item in result.get(key) or [] if isinstance(item, dict))
        cursor = result.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            return items
    raise DiscoverError(f"the server's {key} list did not end within {MAX_PAGES} pages")


def describe_failure(exc: BaseException) -> str:
    """One line for what went wrong: the first real error inside any exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return reveal_hidden(" ".join(str(exc).split())) or type(exc).__name__


# --- the draft ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DraftOptions:
    server_id: str
    namespace: str
    owner: str | None
    manifest_dir: Path | None  # where the draft will live (a stdio cwd is written relative to it)


def check_id(given: str) -> str:
    if not ID_PATTERN.match(given) or given == RESERVED_NAMESPACE:
        raise DiscoverError(f"--id {given!r} must be lowercase letters, digits and '-', starting with a letter "
                            f"(at most 48), and not {RESERVED_NAMESPACE!r}")
    return given


def server_id_for(listing: Listing, given: str | None) -> str:
    """--id, else the server's name made into an id; refused when neither gives a valid one."""
    if given is not None:
        return check_id(given)
    derived = re.sub(r"[^a-z0-9]+", "-", listing.name.lower()).strip("-")
    derived = re.sub(r"^[^a-z]+", "", derived)[:48].rstrip("-")
    if not derived or not ID_PATTERN.match(derived) or derived == RESERVED_NAMESPACE:
        raise DiscoverError(f"cannot make an id from the server's name {listing.name!r}; give one with --id")
    return derived


def check_namespace(namespace: str) -> str:
    if not NAMESPACE_PATTERN.match(namespace) or namespace == RESERVED_NAMESPACE:
        raise DiscoverError(f"--namespace {namespace!r} must be like an id, or \"\" for bare names, "
                            f"and not {RESERVED_NAMESPACE!r}")
    return namespace


def draft_manifest(listing: Listing, target: Target, options: DraftOptions, now: datetime | None = None) -> str:
    """The manifest text: header comments, server keys, then one block per tool."""
    lines = _header(listing, target, now or datetime.now(UTC))
    lines += [f"id: {scalar(options.server_id)}", f"namespace: {scalar(options.namespace)}"]
    if options.owner:
        lines.append(f"owner: {scalar(options.owner)}")
    else:
        lines.append(f"owner: {OWNER_TODO}   # TODO: who answers for this upstream (a person, team address or group)")
    lines.append(f"description: {scalar(listing.description or f'{listing.name} {listing.version}'.strip())}")
    lines += _transport(target, options.manifest_dir)
    lines += _others(listing, options.namespace)
    lines.append("tools:" if listing.tools else "tools: []   # the server listed no tools")
    for index, (tool, problem) in enumerate(triage(listing.tools)):
        lines += [*([""] if index else []), *_tool_block(tool, problem)]
    return "\n".join(lines) + "\n"


def triage(tools: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    """Each listed tool with why it cannot be drafted (None: it can)."""
    seen: set[str] = set()
    triaged = []
    for tool in tools:
        name = tool.get("name")
        problem = None
        if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
            problem = "not a valid catalog tool name (1-128 of A-Z a-z 0-9 _ - .); the gateway rejects it"
        elif name in seen:
            problem = "listed twice by the server; only the first is drafted"
        elif _pin(tool) is None:
            problem = "its definition is nested too deeply to hash; the gateway never approves it"
        else:
            seen.add(name)
        triaged.append((tool, problem))
    return triaged


def _pin(tool: dict[str, Any]) -> str | None:
    try:
        return definition_hash(tool)
    except (DefinitionTooDeep, RecursionError):
        return None


def _header(listing: Listing, target: Target, now: datetime) -> list[str]:
    server = " ".join(filter(None, (listing.name, listing.version))) or "(unnamed)"
    return [
        f"# Draft manifest from `narrowgate catalog discover`, {now.strftime('%Y-%m-%dT%H:%M:%SZ')}:",
        *comment(f"server {server}, protocol {listing.protocol}, {len(listing.tools)} tool(s), listed from:"),
        *comment(f"  {target.label}"),
        "#",
        "# Before committing it (manifests are reviewed like code), the owner must:",
        "#  - fill every TODO: the owner, and each tool's data_classes (e.g. public, internal, pii,",
        "#    financial; [] means none)",
        "#  - check each risk tier: it is what the server's annotations claim (readOnlyHint -> read,",
        "#    destructiveHint -> destructive, neither -> write), not a review; raise tools that move",
        "#    money or change access to privileged, and set egress: true on tools that send data out",
        "#  - delete every tool agents should not have (an upstream tool the manifest does not list",
        "#    stays quarantined: never listed, never callable)",
        "#  - read each description: it is what the model reads, and definition_sha256 pins it exactly",
        "#    (a changed definition is quarantined until someone reviews it)",
        "# Then validate it, entitle agents and restart: docs/catalog.md#making-a-new-upstream-callable",
    ]


def _transport(target: Target, manifest_dir: Path | None) -> list[str]:
    note = (["  # NOTE: the catalog expands ${VAR} in these values from the gateway's environment"]
            if ENV_REFERENCE.search(" ".join([target.url or "", *target.command])) else [])
    if target.url is not None:
        return ["transport:", f"  url: {scalar(target.url)}", *note,
                "# Each request carries a token the gateway mints for it (credentials.mode: gateway-token, the",
                "# default; the upstream verifies it). An upstream that wants its own key: credentials.mode: secret.",
                "# docs/catalog.md#credentials"]
    lines = ["transport:", f"  command: {scalar(target.command[0])}", *note]
    if len(target.command) > 1:
        lines.append(f"  args: [{', '.join(scalar(arg) for arg in target.command[1:])}]")
    # The gateway runs a stdio child in the manifest's directory unless told otherwise: keep the
    # directory discover ran it in, so relative paths in the command still resolve.
    cwd = target.cwd.resolve()
    if manifest_dir is None or cwd != manifest_dir.resolve():
        written = str(cwd) if manifest_dir is None else os.path.relpath(cwd, manifest_dir.resolve())
        lines.append(f"  cwd: {scalar(written)}   # where discover ran the command")
    lines.append("  # The child gets the gateway's environment: add what it needs under env:, and secrets")
    lines.append("  # under credentials (mode: secret, env_var:), never here. docs/catalog.md#credentials")
    return lines


def _others(listing: Listing, namespace: str) -> list[str]:
    """Prompts and resources as comments: manifests do not list them; all of them are exposed."""
    lines: list[str] = []
    if listing.prompts:
        lines.append(f"# Prompts ({len(listing.prompts)}), exposed to entitled agents (manifests do not list them):")
        for prompt in listing.prompts:
            name = str(prompt.get("name", ""))
            exposed = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
            lines += comment(f"  {exposed}: {prompt.get('description') or ''}".rstrip(": "))
    if listing.resources or listing.templates:
        lines.append(f"# Resources ({len(listing.resources) + len(listing.templates)}), exposed by URI "
                     "(manifests do not list them):")
        for resource in [*listing.resources, *listing.templates]:
            uri = resource.get("uri") or resource.get("uriTemplate") or ""
            lines += comment(f"  {uri}: {resource.get('description') or resource.get('name') or ''}".rstrip(": "))
    return lines


def _tool_block(tool: dict[str, Any], problem: str | None) -> list[str]:
    name = tool.get("name")
    lines = comment(_describe(tool), indent="  ")
    if problem is not None:
        return [*lines, *comment(f"NOT DRAFTED: {json.dumps(name, ensure_ascii=True)}: {problem}", indent="  ")]
    risk = claimed_risk(tool)
    return [
        *lines,
        f"  - name: {scalar(name)}",
        f"    risk: {risk}   # {RISK_REASONS[risk]}",
        "    data_classes: []   # TODO: the kinds of data it touches",
        *(["    # openWorldHint: it reaches outside systems; egress: true if it sends data out"]
          if _annotations(tool).get("openWorldHint") is True else []),
        f"    definition_sha256: {_pin(tool)}",
    ]


def _describe(tool: dict[str, Any]) -> str:
    parts = [str(tool["title"])] if tool.get("title") else []
    parts.append(str(tool.get("description") or "(no description)"))
    schema = tool.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict) and properties:
        parts.append("arguments: " + ", ".join(map(str, properties)))
    if _annotations(tool):
        parts.append("annotations: " + json.dumps(_annotations(tool), ensure_ascii=False, sort_keys=True))
    return "\n".join(parts)


def _annotations(tool: dict[str, Any]) -> dict[str, Any]:
    annotations = tool.get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def comment(text: str, indent: str = "") -> list[str]:
    """`text` as comment lines that cannot end early: every line break YAML knows splits a line, and
    hidden or control characters are shown as [U+XXXX] (what the reviewer reads is what is there)."""
    return [f"{indent}# {reveal_hidden(line)}".rstrip() for line in (text.splitlines() or [""])]


def scalar(value: Any) -> str:
    """One YAML scalar on one line that reads back as `value`: plain when safe, else double-quoted
    with escapes (ASCII only, so nothing invisible hides in the manifest)."""
    for style in (None, '"'):
        text = yaml.safe_dump({"k": value}, default_style=style, width=math.inf, allow_unicode=False)
        text = text.removeprefix('"k": ').removeprefix("k: ").rstrip("\n")
        if "\n" not in text and yaml.safe_load(f"k: {text}") == {"k": value}:
            return text
    raise DiscoverError(f"cannot write {value!r} as one YAML line")


def check_draft(text: str) -> None:
    """Load the draft alone, as `narrowgate catalog validate` would: a draft that does not load is a bug here."""
    with tempfile.TemporaryDirectory(prefix="narrowgate-discover-") as scratch:
        Path(scratch, "draft.yaml").write_text(text, encoding="utf-8")
        try:
            load_catalog(Path(scratch))
        except CatalogError as exc:
            problems = "\n".join(p.message for p in exc.problems)
            raise DiscoverError(f"the draft does not load, so it was not written:\n{problems}") from None


# --- the command ----------------------------------------------------------------------------------


def run_discover(args: argparse.Namespace) -> int:
    import anyio

    quiet_client_logs()
    target = parse_target(args.target)
    if args.namespace is not None:
        check_namespace(args.namespace)
    if args.server_id is not None:
        check_id(args.server_id)  # a bad option fails before anything is started
    if args.output is not None and args.output.exists() and not args.force:
        raise DiscoverError(f"{args.output} exists; pass --force to overwrite it")
    listing = anyio.run(list_server, target, args.timeout)
    server_id = server_id_for(listing, args.server_id)
    options = DraftOptions(server_id, server_id if args.namespace is None else args.namespace, args.owner,
                           args.output.parent if args.output is not None else None)
    text = draft_manifest(listing, target, options)
    check_draft(text)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_new(args.output, text, args.force)
    print(summary(listing, args.output), file=sys.stderr)
    return 0


def quiet_client_logs() -> None:
    """The SDK and its HTTP client log every request at INFO; show them only with --log-level debug."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("httpx", "httpx2", "mcp"):
            logging.getLogger(name).setLevel(logging.WARNING)


def write_new(path: Path, text: str, force: bool) -> None:
    """Create `path`, refusing an existing one unless `force` (O_EXCL: no race with another writer)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise DiscoverError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise DiscoverError(f"cannot write {path}: {exc.strerror}") from None
    with open(fd, "w", encoding="utf-8") as out:
        out.write(text)


def summary(listing: Listing, output: Path | None) -> str:
    drafted = [tool for tool, problem in triage(listing.tools) if problem is None]
    tiers = {tier: sum(claimed_risk(t) == tier for t in drafted) for tier in ("read", "write", "destructive")}
    counts = ", ".join(f"{n} {tier}" for tier, n in tiers.items() if n) or "none"
    left_out = len(listing.tools) - len(drafted)
    skipped = f", {left_out} left out (see NOT DRAFTED)" if left_out else ""
    where = f"wrote {output}" if output is not None else "draft manifest above"
    return (f"{where}: {len(drafted)} tool(s) ({counts}){skipped}, {len(listing.prompts)} prompt(s), "
            f"{len(listing.resources) + len(listing.templates)} resource(s); fill the TODOs, trim, then "
            "`narrowgate catalog validate`")


__all__ = ["draft_manifest", "list_server", "parse_target", "run_discover"]
