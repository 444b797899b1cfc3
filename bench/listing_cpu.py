"""CPU of one agent's cold tools/list decision at a large catalog, measured in this process.

``.venv/bin/python -m bench.stall --in-process [--tools 1000,5000]``

The catalog is N read-only tools of one server plus ``cedar/`` and 90 harmless forbids over every
tool (~100 policies). For each size: the engine's own per-tool listing (PolicyEngine.visible_tools,
what tools/list used before listing by classes), then gateway.policy.tool_listing: building its
tool index once per policy set and catalog (on a worker thread in the gateway), an agent's cold
listing, the same agent again, and another agent with the same attributes. Process CPU time.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from bench.stall import quiet_policies
from gateway.catalog import load_catalog
from gateway.identity.principal import Principal
from gateway.policy import PolicyEngine, RequestFacts
from gateway.policy.tool_listing import ToolLister
from gateway.registry.model import Agent, Entitlement, Lifecycle

REPO = Path(__file__).resolve().parent.parent
SERVER = "bulk"
QUIET = 90


def agent(agent_id: str) -> Principal:
    record = Agent(id=agent_id, display_name=agent_id, owner="bench@example.com", purpose="bench",
                   state=Lifecycle.ACTIVE, created_at=0.0, changed_at=1.0, expires_at=None, identities=(),
                   groups=(), labels=MappingProxyType({}), entitlement=Entitlement((), (SERVER,)))
    return Principal(agent_id, "static-token", MappingProxyType({}), record)


def cpu_ms(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.process_time()
    result = work()
    return (time.process_time() - started) * 1000, result


def engine_for(tmp: Path, tools: int) -> PolicyEngine:
    cedar = tmp / "cedar"
    shutil.copytree(REPO / "cedar", cedar, ignore=shutil.ignore_patterns("tests", "README.md"))
    (cedar / "policies" / "70-quiet.cedar").write_text(quiet_policies(QUIET))
    catalog_dir = tmp / "catalog"
    catalog_dir.mkdir()
    manifest = {"id": SERVER, "owner": "bench@example.com", "transport": {"url": "http://127.0.0.1:9/mcp"},
                "tools": [{"name": f"tool{i:05d}", "risk": "read"} for i in range(tools)]}
    (catalog_dir / f"{SERVER}.yaml").write_text(yaml.safe_dump(manifest))
    return PolicyEngine(cedar, load_catalog(catalog_dir))


def measure(tools: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = engine_for(Path(tmp), tools)
    entries = [m.entry for m in engine.listing_facts(agent("x"), facts())[0].catalog.tools.values()]
    figures: dict[str, float] = {}
    figures["engine per tool, cold"], shown = cpu_ms(lambda: engine.visible_tools(agent("old"), entries, facts()))
    assert len(shown) == tools
    figures["engine per tool, again"], _ = cpu_ms(lambda: engine.visible_tools(agent("old"), entries, facts()))
    lister = ToolLister(engine)
    bundle = engine.listing_facts(agent("x"), facts())[0]
    figures["classes: tool index (once per policy set and catalog)"], _ = cpu_ms(lambda: lister.index_now(bundle))
    figures["classes: cold"], shown = cpu_ms(lambda: lister.visible_now(agent("a1"), entries, facts()))
    assert len(shown) == tools
    figures["classes: again"], _ = cpu_ms(lambda: lister.visible_now(agent("a1"), entries, facts()))
    figures["classes: another agent, same attributes"], _ = cpu_ms(
        lambda: lister.visible_now(agent("a2"), entries, facts()))
    figures["Cedar questions"] = lister.evaluated
    return figures


def facts() -> RequestFacts:
    return RequestFacts(now=time.time(), era="2025-11-25", client="bench")


def main(sizes: list[int]) -> int:
    print(f"CPU of one cold tools/list decision (in process; cedar/ + {QUIET} forbids over every tool)")
    for size in sizes:
        for name, value in measure(size).items():
            unit = "" if name == "Cedar questions" else " ms"
            print(f"{size:>6} tools  {name:<56} {value:>9.1f}{unit}")
    return 0
