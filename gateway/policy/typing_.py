"""From a tool's JSON Schema to a Cedar type for `context.input`, and arguments to Cedar JSON.

Mapping (documented in cedar/README.md):
  string -> String; integer -> Long; boolean -> Bool; number -> decimal (extension type, at most
  four decimal places); object with `properties` -> record (required/optional from `required`);
  array with typable `items` -> Set<T>; `enum` of strings -> String; `["T", "null"]` -> T, optional,
  with null read as absent. Anything else (free-form objects, untyped arrays, anyOf/oneOf/$ref,
  names Cedar cannot carry) is dropped: policies cannot see it, and its value never reaches Cedar.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.json_values import JsonValue

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
DECIMAL_LIMIT = Decimal("922337203685477.5807")
MAX_TYPE_DEPTH = 8


class ArgumentMismatch(ValueError):
    """The arguments do not fit the tool's generated input type."""


@dataclass(frozen=True, slots=True)
class CedarType:
    kind: str  # "String" | "Long" | "Bool" | "decimal" | "Set" | "Record"
    element: CedarType | None = None
    attrs: tuple[tuple[str, CedarType, bool], ...] = ()  # (name, type, required)
    nullable: bool = False
    closed: bool = False  # JSON Schema additionalProperties: false

    def render(self) -> str:
        if self.kind == "Set":
            assert self.element is not None
            return f"Set<{self.element.render()}>"
        if self.kind == "Record":
            inner = ", ".join(f"{cedar_string(n)}{'' if r else '?'}: {t.render()}" for n, t, r in self.attrs)
            return "{" + inner + "}"
        if self.kind == "decimal":
            return "__cedar::decimal"
        return self.kind


EMPTY_RECORD = CedarType("Record")


def input_type(schema: dict[str, Any] | None) -> CedarType:
    """The record type of `context.input` for a tool; an empty record when nothing is typable."""
    if not isinstance(schema, dict):
        return EMPTY_RECORD
    typed = _type(schema, 0)
    return typed if typed is not None and typed.kind == "Record" else EMPTY_RECORD


def _type(schema: object, depth: int) -> CedarType | None:
    if not isinstance(schema, dict) or depth > MAX_TYPE_DEPTH:
        return None
    declared, nullable = _declared(schema)
    base = _base_type(declared, schema, depth)
    if base is None:
        return None
    return CedarType(base.kind, base.element, base.attrs, nullable, base.closed) if nullable else base


def _declared(schema: dict[str, Any]) -> tuple[str | None, bool]:
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [t for t in declared if t != "null"]
        # Only a name is a type: an upstream's schema may hold anything (["x"] here is untypable).
        single = non_null[0] if len(non_null) == 1 and isinstance(non_null[0], str) else None
        return single, "null" in declared
    if declared is None and isinstance(schema.get("properties"), dict):
        return "object", False
    if declared is None and _string_enum(schema):
        return "string", False
    return (declared if isinstance(declared, str) else None), False


def _string_enum(schema: dict[str, Any]) -> bool:
    values = schema.get("enum")
    return isinstance(values, list) and bool(values) and all(isinstance(v, str) for v in values)


def _base_type(declared: str | None, schema: dict[str, Any], depth: int) -> CedarType | None:
    simple = {"string": "String", "integer": "Long", "boolean": "Bool", "number": "decimal"}
    if declared in simple:
        return CedarType(simple[declared])
    if declared == "array":
        element = _type(schema.get("items"), depth + 1)
        return CedarType("Set", element=element) if element is not None else None
    if declared == "object":
        return _record(schema, depth)
    return None


def _record(schema: dict[str, Any], depth: int) -> CedarType | None:
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return None  # a free-form map has no closed record type
    listed = schema.get("required")
    required = {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()
    attrs = []
    for name, sub in properties.items():
        typed = _type(sub, depth + 1)
        if typed is None or not _carriable(name):
            continue
        attrs.append((name, typed, name in required and not typed.nullable))
    return CedarType("Record", attrs=tuple(attrs), closed=schema.get("additionalProperties") is False)


def _carriable(name: object) -> bool:
    return isinstance(name, str) and bool(name) and all(c.isprintable() for c in name)


def cedar_string(text: str) -> str:
    """A Cedar string literal (schema and policy syntax)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# Where a value sits in the arguments, for a refusal's message: "input", then (parent, attribute name) or (parent,
# item index) per step down. Put into words only when a refusal needs it, not for every value of every call.
Where = str | tuple["Where", str | int]


def to_cedar(value: object, typed: CedarType) -> JsonValue:
    """Cedar JSON for `value` of type `typed`; raises ArgumentMismatch when it does not fit."""
    return _cedar(value, typed, "input")


def _cedar(value: object, typed: CedarType, where: Where) -> JsonValue:
    kind = typed.kind
    if kind == "String" and isinstance(value, str):
        return value
    if kind == "Bool" and isinstance(value, bool):
        return value
    if kind == "Long" and isinstance(value, int) and not isinstance(value, bool) and LONG_MIN <= value <= LONG_MAX:
        return value
    if kind == "decimal" and isinstance(value, int | float) and not isinstance(value, bool):
        return {"__extn": {"fn": "decimal", "arg": _decimal_text(value, where)}}
    if kind == "Set" and isinstance(value, list):
        assert typed.element is not None
        return [_cedar(item, typed.element, (where, i)) for i, item in enumerate(value)]
    if kind == "Record" and isinstance(value, dict):
        return _record_value(value, typed, where)
    raise ArgumentMismatch(f"{_words(where)}: expected {typed.render()}, got {type(value).__name__}")


def _words(where: Where) -> str:
    """`where` as a refusal names it: input.payee.name, input.items[2]."""
    steps: list[str | int] = []
    while isinstance(where, tuple):
        where, step = where
        steps.append(step)
    return where + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in reversed(steps))


def _record_value(value: dict[str, Any], typed: CedarType, where: Where) -> dict[str, Any]:
    if typed.closed:
        known = {name for name, _, _ in typed.attrs}
        if set(value) - known:
            raise ArgumentMismatch(f"{_words(where)}: unexpected argument(s) {sorted(set(value) - known)}")
    result: dict[str, Any] = {}
    for name, sub, required in typed.attrs:
        item = value.get(name)
        if item is None and (name not in value or sub.nullable):
            if required:
                raise ArgumentMismatch(f"{_words((where, name))}: required")
            continue
        result[name] = _cedar(item, sub, (where, name))
    return result


def _decimal_text(value: int | float, where: Where) -> str:
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ArgumentMismatch(f"{_words(where)}: not a number") from None
    if not number.is_finite() or abs(number) > DECIMAL_LIMIT:
        raise ArgumentMismatch(f"{_words(where)}: out of the decimal range")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        # Rounding would change what a comparison means; refuse instead (fail closed).
        raise ArgumentMismatch(f"{_words(where)}: more than four decimal places")
    text = format(number, "f")
    return text if "." in text else text + ".0"


def has_escape_names(typed: CedarType) -> bool:
    """Whether a record in this type has an attribute named like a Cedar JSON escape (`__extn`,
    `__entity`, `__expr`): Cedar may read such a value as an escape, and refuse it."""
    if typed.kind == "Set":
        return typed.element is not None and has_escape_names(typed.element)
    return any(name.startswith("__") or has_escape_names(sub) for name, sub, _ in typed.attrs)


def placeholder(typed: CedarType) -> JsonValue:
    """Some value of `typed` (listing mode passes it where no arguments exist; policies never see it)."""
    if typed.kind == "String":
        return ""
    if typed.kind == "Long":
        return 0
    if typed.kind == "Bool":
        return False
    if typed.kind == "decimal":
        return {"__extn": {"fn": "decimal", "arg": "0.0"}}
    if typed.kind == "Set":
        return []
    return {name: placeholder(sub) for name, sub, required in typed.attrs if required}
