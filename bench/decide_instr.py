"""What one tools/call decision costs, in process: `PolicyEngine.decide_tool` as the gateway calls it.

``valgrind --tool=callgrind --instr-atstart=no .venv/bin/python -m bench.decide_instr N [TOOL]`` at N=0 and
N=2000: counting is switched on just before the loop (``callgrind_control -i on`` from here, see
bench/instructions.py), so the difference over N is the instructions one decision executes, deterministic
unlike CPU time on a shared machine. Without valgrind it runs the loop and prints the outcome.

The setup is bench/run.py's gateway: the repo's shipped policies (cedar/), the `bench` server's `echo` tool
(risk read, public data) plus a write, a privileged and an egress tool for TOOL, an agent entitled to the
server, and the request facts a task-less workload's call carries (the chain tracker's context after a few
calls, no task, no person), at a fixed time inside working hours.

One part of a decision alone: ``python -m bench.decide_instr N TOOL OP`` with OP one of OPS (``decide``, the
whole decide_tool, is the default); ``python -m bench.decide_instr --compare [CALLS]`` counts every OP for
``bench__echo`` under callgrind at N=0 and N=CALLS and prints instructions per operation.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cedarpy
import yaml

from bench.callgrind import module_instructions
from gateway.catalog import Catalog, load_catalog
from gateway.chain.tracker import ChainTracker
from gateway.identity.principal import Principal
from gateway.policy import PolicyEngine, RequestFacts
from gateway.policy import engine as engine_module
from gateway.registry.model import Agent, Entitlement, Lifecycle, WorkloadIdentity
from gateway.settings.monitoring import MonitoringSettings

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC).timestamp()  # a Wednesday, inside the default working hours
ECHO_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
TOOLS = [
    {"name": "echo", "risk": "read", "data_classes": ["public"]},
    {"name": "save", "risk": "write", "data_classes": ["internal"]},
    {"name": "rotate", "risk": "privileged", "data_classes": ["secrets"]},
    {"name": "post", "risk": "read", "data_classes": ["public"], "egress": True},
]


def write_catalog(directory: Path) -> Catalog:
    directory.mkdir(parents=True)
    manifest = {"id": "bench", "owner": "bench@narrowgate.invalid", "description": "decide benchmark",
                "transport": {"url": "http://127.0.0.1:9/mcp"},
                "tools": [{**t, "owner": "bench@narrowgate.invalid"} for t in TOOLS]}
    (directory / "bench.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return load_catalog(directory)


def principal() -> Principal:
    agent = Agent(id="bench-agent", display_name="bench", owner="bench@example.com", purpose="benchmark load",
                  state=Lifecycle.ACTIVE, created_at=1.0, changed_at=1.0, expires_at=None,
                  identities=(WorkloadIdentity("static", "narrowgate", "bench-agent"),),
                  entitlement=Entitlement(tools=(), servers=("bench",)))
    return Principal(agent.id, "static-token", MappingProxyType({"sub": agent.id}), agent)


def facts(catalog: Catalog) -> RequestFacts:
    tracker = ChainTracker(MonitoringSettings(), clock=lambda: NOW)

    async def chain() -> dict[str, Any]:
        for _ in range(3):
            await tracker.observe_call("bench-agent", None, catalog.tools["bench__echo"], "allow")
        return await tracker.admit_call("bench-agent", None, "bench__echo")

    return RequestFacts(now=NOW, era="2025-11-25", client="bench", chain=asyncio.run(chain()))


def loop(engine: PolicyEngine, who: Principal, tool: Any, arguments: dict[str, Any], f: RequestFacts,
         calls: int) -> str:
    outcome = ""
    for _ in range(calls):
        outcome = engine.decide_tool(who, tool, arguments, f).outcome
    return outcome


def parts(engine: PolicyEngine, who: Principal, tool: Any, arguments: dict[str, Any],
          f: RequestFacts) -> dict[str, Callable[[], object]]:
    """One operation of a decision each, on the objects a decision of `tool` uses (after one decision)."""
    from gateway.policy.authorize import read_answer
    from gateway.policy.canonical import canonicalize
    from gateway.policy.engine import CedarRequest, Decision
    from gateway.policy.typing_ import to_cedar

    seen: list[CedarRequest] = []
    decision = engine.decide_tool(who, tool, arguments, f, False, seen)
    bundle = engine.bundle
    model = bundle.catalog.tools[tool.exposed_name]
    request = seen[0]
    canonical = decision.canonical_arguments
    answer = cedarpy._internal.is_authorized_batch([request.cedar], request.policies or bundle.policies,
                                                   request.entities, None, False)[0]
    fields = [getattr(decision, name) for name in Decision.__dataclass_fields__]
    return {
        "decide": lambda: engine.decide_tool(who, tool, arguments, f),
        "arguments": lambda: to_cedar(canonicalize(arguments, engine_module._schema_dict(model.input_schema)),
                                      model.input_type),
        "request": lambda: engine._tool_request(bundle, who, model, to_cedar(canonical, model.input_type), f, False),
        "principal": lambda: engine._principals.json(who, f.now, bundle.catalog.server_ids),
        "answer": lambda: read_answer(answer),
        "decision": lambda: Decision(*fields),
        "decision-made": lambda: engine_module._new_decision(*fields),
    }


OPS = ("decide", "arguments", "request", "principal", "answer", "decision", "decision-made")


def counted(calls: int, op: str) -> int:
    """Instructions callgrind counts for `calls` repetitions of `op` (counting on around the loop only)."""
    return module_instructions(["bench.decide_instr", str(calls), "bench__echo", op], from_start=False)


def compare(calls: int) -> None:
    print("| operation (bench__echo) | instructions per operation |\n| --- | ---: |")
    for op in OPS:
        print(f"| {op} | {(counted(calls, op) - counted(0, op)) / calls / 1000:,.1f}k |", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--compare":
        compare(int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
        return
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    name = sys.argv[2] if len(sys.argv) > 2 else "bench__echo"
    op = sys.argv[3] if len(sys.argv) > 3 else "decide"
    with tempfile.TemporaryDirectory(prefix="narrowgate-decide-instr-") as tmp:
        catalog = write_catalog(Path(tmp) / "catalog")
        engine = PolicyEngine(REPO / "cedar", catalog, tool_schemas={n: ECHO_SCHEMA for n in catalog.tools})
        who, f, tool = principal(), facts(catalog), catalog.tools[name]
        arguments = {"text": "hello"}
        first = loop(engine, who, tool, arguments, f, 20)  # warm: caches filled, as in a running gateway
        step = parts(engine, who, tool, arguments, f)[op]
        for _ in range(20):
            step()
        if shutil.which("callgrind_control"):  # (outside valgrind it finds no process and changes nothing)
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True, check=False)
        if op == "decide":
            last = loop(engine, who, tool, arguments, f, calls)
        else:
            for _ in range(calls):
                step()
            last = op
        print(name, first, last or "(none)")


if __name__ == "__main__":
    main()
