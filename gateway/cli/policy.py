"""`narrowgate policy validate|test|explain`: work with the policy set offline, as CI and authors do.

Tool input schemas come from the state store (what upstreams last reported), so `context.input`
is typed as it is in the running gateway; a tool never seen yet has an untyped input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from gateway.catalog import Catalog, CatalogError, load_catalog
from gateway.cli.exit_codes import EXIT_INVALID
from gateway.config import Settings, load_settings
from gateway.identity.principal import Principal
from gateway.policy.engine import PolicyEngine, PolicyLoadError, RequestFacts
from gateway.policy.hours import WorkingHours
from gateway.policy.testing import run_policy_tests, validate_policies_dir
from gateway.registry.model import Agent

EXIT_FAILED = 1


def run_validate(args: argparse.Namespace) -> int:
    settings, catalog = _settings_and_catalog(args)
    schemas = asyncio.run(_tool_schemas(settings))
    problems = validate_policies_dir(settings.policies_dir, catalog, schemas)
    if problems:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s) in {settings.policies_dir}", file=sys.stderr)
        return EXIT_INVALID
    engine = PolicyEngine(settings.policies_dir, catalog, tool_schemas=schemas)
    print(f"policy set ok: {engine.status()['policy_count']} policies, version {engine.version}")
    return 0


def run_test(args: argparse.Namespace) -> int:
    settings, catalog = _settings_and_catalog(args)
    results = run_policy_tests(settings.policies_dir, catalog)
    for result in results:
        mark = "PASS" if result.ok else "FAIL"
        detail = "" if result.ok else f"  expected {result.expected}, got {result.actual} {result.message}".rstrip()
        print(f"{mark} {Path(result.file).name}: {result.name}{detail}")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed or not results else 0


def run_explain(args: argparse.Namespace) -> int:
    settings, catalog = _settings_and_catalog(args)
    tool = catalog.tools.get(args.tool)
    if tool is None:
        print(f"narrowgate: no catalogued tool {args.tool!r}", file=sys.stderr)
        return EXIT_INVALID
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as exc:
        print(f"narrowgate: --args is not JSON: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if arguments is not None and not isinstance(arguments, dict):
        print("narrowgate: --args must be a JSON object, e.g. '{\"path\": \"/a\"}'", file=sys.stderr)
        return EXIT_INVALID
    principal, schemas = asyncio.run(_principal_and_schemas(settings, args.agent))
    if principal is None:
        print(f"narrowgate: no agent {args.agent!r} in the store or the agents file", file=sys.stderr)
        return EXIT_INVALID
    engine = PolicyEngine(settings.policies_dir, catalog, tool_schemas=schemas,
                          working_hours=WorkingHours.from_mapping(settings.policy.working_hours))
    facts = RequestFacts(now=time.time(), era="2025-11-25", client="narrowgate policy explain")
    print(json.dumps(engine.explain(principal, tool, arguments, facts, args.approved), indent=2, default=str))
    return 0


def _settings_and_catalog(args: argparse.Namespace) -> tuple[Settings, Catalog]:
    # Offline: no one is authenticated and no upstream reached, so neither tokens nor transport variables are needed.
    settings = load_settings(args.config, resolve_secrets=False)
    try:
        return settings, load_catalog(settings.catalog_dir, strict_env=False)
    except CatalogError as exc:
        raise PolicyCommandError(f"the catalog is invalid:\n{exc}") from None


async def _tool_schemas(settings: Settings) -> dict[str, Any]:
    from gateway.store import StoreError, open_store

    try:
        store = open_store(settings.state)
    except StoreError:
        return {}
    try:
        await store.migrate()
        return await store.load_tool_schemas()
    except StoreError:
        return {}
    finally:
        await store.close()


async def _principal_and_schemas(settings: Settings, agent_id: str) -> tuple[Principal | None, dict[str, Any]]:
    from gateway.registry.service import Registry
    from gateway.store import open_store

    store = open_store(settings.state)
    try:
        await store.migrate()
        agent = (await Registry.open(store)).get(agent_id)
        schemas = await store.load_tool_schemas()
    finally:
        await store.close()
    if agent is None and settings.agents_file is not None:
        agent = await agent_from_file(settings.agents_file, agent_id)
    if agent is None:
        return None, schemas
    return Principal(agent.id, "explain", agent=agent), schemas


async def agent_from_file(agents_file: Path, agent_id: str) -> Agent | None:
    """Read an agent declared in the agents file without writing to the real store."""
    from gateway.registry.service import Registry
    from gateway.store import open_store

    scratch = open_store("sqlite:///:memory:")
    try:
        await scratch.migrate()
        registry = await Registry.open(scratch)
        await registry.load_agents_file(agents_file)
        return registry.get(agent_id)
    finally:
        await scratch.close()


class PolicyCommandError(ValueError):
    """Reported by the CLI as `narrowgate: <message>` with exit status 2."""


__all__ = ["PolicyLoadError", "run_explain", "run_test", "run_validate"]
