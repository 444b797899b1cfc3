"""The protocol layer's place in the import graph, read from the source with `ast`.

`gateway.protocol` (JSON-RPC, error codes, SSE, eras, capabilities) is a leaf shared by the agents'
side (`gateway.transport`) and the servers' side (`gateway.upstream`), which never import each other;
and every JSON-RPC error code is named once, there, so no `-32xxx` literal appears anywhere else.
Imports inside functions and under TYPE_CHECKING count too: they are edges all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
# -32999..-32000: JSON-RPC's reserved range (-32768..-32000) and MCP's -32800 (request cancelled).
RESERVED_CODES = range(32000, 33000)


def modules(package: str = "") -> Iterator[tuple[str, Path, ast.Module]]:
    root = GATEWAY / package if package else GATEWAY
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(), str(path))


def imported(tree: ast.Module) -> Iterator[tuple[str, list[str], int]]:
    """(module, imported names, line) for every absolute import in the file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [alias.name for alias in node.names], node.lineno


def package_of(module: str) -> str | None:
    """The gateway sub-package (or top-level module) an import names, None outside the gateway."""
    parts = module.split(".")
    if parts[0] != "gateway":
        return None
    return parts[1] if len(parts) > 1 else ""


def edges(package: str) -> list[tuple[str, str, int]]:
    return [(name, module, line) for name, _, tree in modules(package) for module, _, line in imported(tree)]


def test_protocol_imports_no_other_gateway_package() -> None:
    found = []
    for name, _, tree in modules("protocol"):
        for module, names, line in imported(tree):
            target = package_of(module)
            if target is None or target == "protocol":
                continue
            if target == "" and names == ["__version__"]:
                continue  # the version string in gateway/__init__.py, which imports nothing
            found.append(f"{name}:{line} imports {module}")
    assert not found, found
    # Not vacuous: the layer is there and has its own internal imports.
    assert any(package_of(module) == "protocol" for _, module, _ in edges("protocol"))


def test_transport_and_upstream_never_import_each_other() -> None:
    found = []
    for side, other in (("transport", "upstream"), ("upstream", "transport")):
        side_edges = edges(side)
        assert any(package_of(module) == "protocol" for _, module, _ in side_edges), f"{side} uses no protocol?"
        found += [f"{name}:{line} imports {module}" for name, module, line in side_edges
                  if package_of(module) == other]
    assert not found, found


def code_literals(tree: ast.Module) -> Iterator[tuple[int, int]]:
    for node in ast.walk(tree):
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int
                and node.operand.value in RESERVED_CODES):
            yield -node.operand.value, node.lineno


def test_no_json_rpc_code_literal_outside_protocol() -> None:
    found = [f"{name}:{line} uses {code}" for name, _, tree in modules() if not name.startswith("gateway.protocol")
             for code, line in code_literals(tree)]
    assert not found, found


def test_every_code_is_named_once() -> None:
    tree = ast.parse((GATEWAY / "protocol" / "errors.py").read_text())
    names: dict[int, list[str]] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        value = node.value if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
            names.setdefault(-ast.literal_eval(value.operand), []).append(target.id)
    assert len(names) >= 18, names  # every code the gateway had when the layer was made, and more
    assert all(-code in RESERVED_CODES for code in names), names
    assert {code: ids for code, ids in names.items() if len(ids) > 1} == {}
    # The codes are used only under their names: the module holds no second literal of any of them.
    literals = [code for code, _ in code_literals(tree)]
    assert sorted(literals) == sorted(names), literals
