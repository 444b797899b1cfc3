"""The import graph of `gateway/`: no new cycles, and none of the forbidden edges.

Every `import` and `from ... import` in every module counts, at module level or inside a function
(an import moved into a function to dodge a cycle is still a cycle). `from gateway.a import b`
is an edge to the module `gateway.a.b` when that is a module, else to `gateway.a`. A package's
`__init__` is not implied by importing one of its submodules: that is how the layers are read.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support.processes import REPO

PACKAGE = REPO / "gateway"

# Cycles allowed for now, each as the set of modules in one strongly connected component; the
# restructuring of issue 14 removes them, and when one is gone its entry must go too (the test says
# so). A new cycle, or a known one that grows, fails. Empty since the three found when this test was
# written were removed with it: config.py <-> {identity,approvals,discovery,chain}/settings.py (now
# the gateway/settings/ leaf), cli.py <-> demo/runner.py and catalog_commands.py <->
# catalog_resource_commands.py (now gateway/cli/, with the shared review output in review_text.py).
KNOWN_CYCLES: list[frozenset[str]] = []


@dataclass(frozen=True, slots=True)
class Forbidden:
    """No module matching `importer` may import a module matching `imported`; `why` is the rule."""

    importer: str
    imported: str
    why: str
    exempt: frozenset[str] = frozenset()

    def breaks(self, source: str, target: str) -> bool:
        return (source not in self.exempt and within(source, self.importer) and within(target, self.imported)
                and not within(source, self.imported))


ANY = "gateway"
FORBIDDEN_EDGES = [
    Forbidden(ANY, "gateway.cli", "the CLI imports the rest of the gateway; nothing outside it imports the CLI",
              exempt=frozenset({"gateway.__main__"})),  # `python -m gateway` is the CLI's second entry point
]
# The call path points down: transport -> calls -> the stages. A stage never reaches back up into the
# pipeline that drives it or the transport in front of it.
STAGES = ("policy", "identity", "credentials", "audit", "upstream", "chain", "tasks", "approvals", "catalog",
          "protocol", "settings", "registry", "telemetry", "store")
FORBIDDEN_EDGES += [
    Forbidden(f"gateway.{stage}", f"gateway.{above}", f"a stage ({stage}) never imports {above}/, which drive it")
    for stage in STAGES for above in ("calls", "transport")
]
FORBIDDEN_EDGES.append(Forbidden("gateway.calls", "gateway.transport", "the transport drives the calls, not back"))
# Beside the path: the admin API, the console, OAuth, the wiring, the cluster (shared state on Redis) and app.py use
# the stages, never the reverse
# (the console's URL scheme, which approval and review messages quote, is the leaf gateway.links).
FORBIDDEN_EDGES += [
    Forbidden(f"gateway.{stage}", f"gateway.{beside}", f"a stage ({stage}) never imports {beside}, which uses it")
    for stage in (*STAGES, "discovery", "state") for beside in ("admin", "console", "oauth", "wiring", "app", "cluster")
]
# Measuring privilege (reach, blast radius, right-sizing, replay, evidence) is analysis beside the call path,
# like the admin API: it uses the stages; nothing on the call path imports it, and it never imports the
# surfaces that present it.
FORBIDDEN_EDGES += [
    Forbidden(f"gateway.{below}", "gateway.privilege", f"{below} is on the call path; gateway.privilege only uses it")
    for below in (*STAGES, "discovery", "state", "calls", "transport")
]
FORBIDDEN_EDGES += [
    Forbidden("gateway.privilege", f"gateway.{surface}", f"{surface} presents gateway.privilege, not the reverse")
    for surface in ("admin", "console", "oauth", "wiring", "app", "calls", "transport")
]
# The agents' side and the servers' side share only gateway.protocol (tests/test_protocol_layer.py too).
FORBIDDEN_EDGES += [
    Forbidden("gateway.upstream", "gateway.transport", "upstream/ and transport/ never import each other"),
    Forbidden("gateway.transport", "gateway.upstream", "upstream/ and transport/ never import each other"),
]
# The settings leaf: the sections' dataclasses and checks, importable without any stage (the type of a
# value as read from YAML, gateway.json_values, is a leaf too).
LEAF = "gateway.settings"
JSON_VALUES = "gateway.json_values"
LEAF_MAY_IMPORT = (LEAF, JSON_VALUES)
# config.py assembles the leaf's sections into Settings, and imports nothing else of the gateway.
CONFIG = "gateway.config"
CONFIG_MAY_IMPORT = (LEAF, JSON_VALUES)


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, module: str, modules: Collection[str]) -> Iterator[str]:
    """Every gateway module `path` imports: `from X import name` is X.name when that is a module, else X."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    yield f"{base}.{alias.name}"
                elif base in modules:
                    yield base


@cache
def import_graph() -> dict[str, frozenset[str]]:
    modules = all_modules()
    return {module: frozenset(imported_modules(path, module, modules)) - {module}
            for module, path in modules.items()}


def cycles(graph: Mapping[str, Collection[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_new_import_cycles() -> None:
    found = cycles(import_graph())
    new = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"new import cycle(s) among gateway modules: {new}"


def test_known_cycles_are_still_there() -> None:
    """A cycle someone removed comes off the allow-list, so it cannot come back unnoticed."""
    found = cycles(import_graph())
    gone = [sorted(known) for known in KNOWN_CYCLES if not any(c == known for c in found)]
    assert not gone, f"these KNOWN_CYCLES are gone or smaller now; update the list to what is left: {gone}"


def test_no_forbidden_imports() -> None:
    broken = [f"{source} -> {target}: {rule.why}"
              for source, targets in sorted(import_graph().items()) for target in sorted(targets)
              for rule in FORBIDDEN_EDGES if rule.breaks(source, target)]
    assert not broken, "\n".join(broken)


def test_settings_leaf_and_config_import_no_stage() -> None:
    graph = import_graph()
    wrong = [f"{source} -> {target}" for source, targets in sorted(graph.items()) for target in sorted(targets)
             if (within(source, LEAF) and not any(within(target, p) for p in LEAF_MAY_IMPORT))
             or (source == CONFIG and not any(within(target, p) for p in CONFIG_MAY_IMPORT))]
    assert not wrong, f"the settings leaf (and config.py above it) must import no stage: {wrong}"


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The walker itself: an import inside a function, and a relative one, are edges too."""
    package = tmp_path / "gateway" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from gateway.pkg import b\n    return b\n")
    (package / "b.py").write_text("from . import a\n")
    modules = {"gateway.pkg", "gateway.pkg.a", "gateway.pkg.b"}
    assert set(imported_modules(package / "a.py", "gateway.pkg.a", modules)) == {"gateway.pkg.b"}
    assert set(imported_modules(package / "b.py", "gateway.pkg.b", modules)) == {"gateway.pkg.a"}
    assert cycles({"gateway.pkg.a": {"gateway.pkg.b"}, "gateway.pkg.b": {"gateway.pkg.a"}, "x": set()}) == [
        frozenset({"gateway.pkg.a", "gateway.pkg.b"})]


def test_the_cli_rule_reads_as_meant() -> None:
    cli_rule = FORBIDDEN_EDGES[0]
    assert cli_rule.breaks("gateway.app", "gateway.cli.main")
    assert cli_rule.breaks("gateway.demo.banner", "gateway.cli.demo")
    assert not cli_rule.breaks("gateway.cli.demo", "gateway.cli.serve")
    assert not cli_rule.breaks("gateway.cli.serve", "gateway.app")
    assert not cli_rule.breaks("gateway.__main__", "gateway.cli.main")


def test_the_call_path_rules_read_as_meant() -> None:
    """A stage importing the pipeline or the transport breaks a rule; the pipeline importing a stage does not."""
    def broken(source: str, target: str) -> bool:
        return any(rule.breaks(source, target) for rule in FORBIDDEN_EDGES)

    assert broken("gateway.approvals.step_up", "gateway.calls.call")
    assert broken("gateway.chain.detections", "gateway.transport.sessions")
    assert broken("gateway.upstream.http_client", "gateway.transport.sse")
    assert broken("gateway.transport.endpoint", "gateway.upstream.directory")
    assert not broken("gateway.calls.pipeline", "gateway.approvals.step_up")
    assert not broken("gateway.transport.endpoint", "gateway.calls.methods")
    assert not broken("gateway.calls.admit", "gateway.calls.call")
    assert broken("gateway.calls.methods", "gateway.transport.sessions")
