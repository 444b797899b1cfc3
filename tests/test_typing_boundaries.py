"""`Any` only at a JSON boundary (docs/development.md, "The type check").

An explicit `Any` in gateway/ may stand only for decoded JSON (or safe-loaded YAML):
- the value type of a str-keyed mapping: `dict[str, Any]`, `Mapping[str, Any]` (a JSON object);
- the element type of a list: `list[Any]`, `Sequence[Any]` (a JSON array);
- in gateway/json_values.py, whose `JsonValue` names one decoded value (a JSON-RPC id, a claim, a
  config value as read, a piece of a JSON Schema).
Anything else - a parameter or return typed `Any`, `Callable[..., Any]`, `Task[Any]`, `tuple[Any, ...]`,
`cast(Any, ...)` - gets a real type: a Protocol, a TypeVar, the library's own type, or `object` where
the value is only narrowed. mypy strict cannot say this (`disallow_any_explicit` also refuses the JSON
shapes above), so this walk of the source does.

KNOWN_OTHER_ANY lists what was left, per module, in files being changed elsewhere when the rule came in;
each count may only go down, and a module at zero comes off the list (the test says so).
"""

from __future__ import annotations

import ast
from functools import cache

from tests.support.processes import REPO

PACKAGE = REPO / "gateway"
JSON_VALUES = PACKAGE / "json_values.py"
MAPPINGS = frozenset({"dict", "Mapping", "MutableMapping", "MappingProxyType"})
SEQUENCES = frozenset({"list", "Sequence"})

# module (path under the repo) -> explicit non-JSON `Any`s left in it.
KNOWN_OTHER_ANY: dict[str, int] = {
    # Endpoint's second argument is an actor name or an Approver, told apart by `approvers=`: split
    # admin_route into one route per kind (the APIs in admin/ annotate their `guard` with it).
    "gateway/admin/http.py": 2,
    "gateway/cli/admin_client.py": 1,  # a JSON reply (-> JsonValue)
    "gateway/cli/audit.py": 1,  # a table cell (-> object)
    "gateway/cli/catalog_discover.py": 3,  # the mcp SDK's ClientSession and a YAML scalar (-> object)
    "gateway/cli/review_text.py": 2,  # JSON values (-> object / JsonValue)
    "gateway/console/pages.py": 1,  # a template context
    "gateway/console/views.py": 2,  # JSON values (-> object / JsonValue)
    "gateway/policy/authorizer.py": 1,  # an argument preview (JSON)
    "gateway/policy/engine.py": 5,  # canonical arguments and the Cedar input (JSON)
    # tuple[str, str, str] | Signature once engine.py's listing_job types its `keys` list as list[ListingKey].
    "gateway/policy/listing_memo.py": 1,
    # The seams' value types (AgentSession, ConsoleSession...) live above state/: typed where app.py builds them.
    "gateway/state/backends.py": 8,
    "gateway/store/postgres.py": 2,  # an asyncpg connection
    "gateway/store/rows.py": 15,  # SQL rows and parameters (tuple[object, ...]) and JSON columns
}


def _name(node: ast.AST) -> str | None:
    """`dict` for `dict` and `typing.Dict`-style `x.dict` alike."""
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _is_any(node: ast.AST) -> bool:
    return _name(node) == "Any"


def other_any(tree: ast.AST) -> list[int]:
    """The lines of every explicit `Any` in `tree` that is not JSON-shaped (imports aside: their names
    are not expressions)."""
    json_shaped: set[int] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            head, index = _name(node.value), node.slice
            if head in SEQUENCES and _is_any(index):
                json_shaped.add(id(index))
            elif (head in MAPPINGS and isinstance(index, ast.Tuple) and len(index.elts) == 2
                  and _name(index.elts[0]) == "str" and _is_any(index.elts[1])):
                json_shaped.add(id(index.elts[1]))
        elif _is_any(node):
            found.append(node)
    return sorted(node.lineno for node in found if id(node) not in json_shaped)


@cache
def modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(REPO)): ast.parse(path.read_text(encoding="utf-8"))
            for path in sorted(PACKAGE.rglob("*.py")) if path != JSON_VALUES}


@cache
def census() -> dict[str, list[int]]:
    return {module: lines for module, tree in modules().items() if (lines := other_any(tree))}


def test_any_only_at_json_boundaries() -> None:
    over = {module: f"{len(lines)} (allowed {KNOWN_OTHER_ANY.get(module, 0)}): lines {lines}"
            for module, lines in census().items() if len(lines) > KNOWN_OTHER_ANY.get(module, 0)}
    assert not over, ("explicit Any outside a JSON boundary; give it a real type (a Protocol, a TypeVar, the "
                      f"library's type, object) or, for one decoded JSON value, JsonValue: {over}")


def test_known_other_any_only_goes_down() -> None:
    found = census()
    stale = {module: f"{len(found.get(module, []))} left, listed {count}"
             for module, count in KNOWN_OTHER_ANY.items() if len(found.get(module, [])) < count}
    assert not stale, f"fewer Any than KNOWN_OTHER_ANY says; lower (or remove) the entries: {stale}"


def test_imports_do_not_rename_any() -> None:
    """`from typing import Any as X` would hide an Any from the walk."""
    renamed = [f"{module}:{node.lineno}" for module, tree in modules().items() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and any(a.name == "Any" and a.asname for a in node.names)]
    assert not renamed, renamed


def test_json_values_is_a_leaf() -> None:
    """Every stage and the settings leaf import it, so it imports nothing of the gateway."""
    tree = ast.parse(JSON_VALUES.read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [name for name in imported if name and name.split(".")[0] == "gateway"]


def test_the_walk_tells_json_shapes_from_others() -> None:
    source = """
from typing import Any
def f(a: dict[str, Any], b: Mapping[str, Any], c: list[Any], d: Sequence[Any]) -> MappingProxyType[str, Any]: ...
def g(a: Any, b: dict[Any, str], c: tuple[Any, ...], d: Callable[..., Any], e: asyncio.Task[Any]) -> Any: ...
x = cast(Any, y)
z: typing.Any = 1
w: dict[int, Any] = {}
"""
    assert other_any(ast.parse(source)) == [4, 4, 4, 4, 4, 4, 5, 6, 7]
