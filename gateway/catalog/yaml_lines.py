"""YAML loading that remembers the line of every value, so errors can name file and line."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from gateway.json_values import JsonValue

Path = tuple[str | int, ...]
# Reviewed files hold hundreds of values a few levels deep. The limits stop an alias "bomb" (a few
# lines that expand to billions of values) and a self-referencing alias, which would never finish.
MAX_VALUES = 100_000
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class LinedDocument:
    """A YAML document as plain Python values, plus the 1-based line of each path in it."""

    data: JsonValue
    lines: dict[Path, int]

    def line(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def load_lined(text: str) -> LinedDocument:
    """Parse one YAML document; raises yaml.YAMLError (with a mark where there is one) on any bad input."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        raise yaml.YAMLError(f"the document is nested deeper than {MAX_DEPTH} levels") from None
    lines: dict[Path, int] = {}
    if node is None:
        return LinedDocument(None, {(): 1})
    return LinedDocument(_Converter(lines).convert(node, ()), lines)


class _Converter:
    """Nodes to plain values, recording lines; counts values so aliases cannot multiply them unbounded."""

    def __init__(self, lines: dict[Path, int]) -> None:
        self.lines = lines
        self.values = 0

    def convert(self, node: yaml.Node, path: Path) -> JsonValue:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _error(node, f"the document holds more than {MAX_VALUES} values (aliases count each time)")
        if len(path) > MAX_DEPTH:
            raise _error(node, f"the document is nested deeper than {MAX_DEPTH} levels")
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[JsonValue, JsonValue] = {}
            for key_node, value_node in node.value:
                key = _key(key_node)
                result[key] = self.convert(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, index)) for index, item in enumerate(node.value)]
        return _scalar(node)


def _key(node: yaml.Node) -> JsonValue:
    if not isinstance(node, yaml.ScalarNode):
        raise _error(node, "a mapping key must be a plain value, not a list or a mapping")
    key = _scalar(node)
    try:
        hash(key)
    except TypeError:
        raise _error(node, f"a mapping key must be a plain value, not {type(key).__name__}") from None
    return key


def _scalar(node: yaml.Node) -> JsonValue:
    # Re-use PyYAML's own scalar resolution (ints, bools, nulls) for one node.
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except Exception as exc:
        # An explicit tag on a value that does not fit it (`!!int abc`, `!!timestamp x`, an empty
        # `!!int`): PyYAML's constructors raise whatever their parsing hits (ValueError, TypeError,
        # IndexError, ...) rather than a YAML error, so every exception here means that.
        raise _error(node, f"value does not fit its tag {node.tag}: {exc!r}") from None
    finally:
        loader.dispose()


def _error(node: yaml.Node, problem: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)
