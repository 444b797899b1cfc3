"""The type of a decoded JSON (or safe-loaded YAML) value: the one place a bare `Any` is written.

`JsonValue` is a value nobody has checked yet, as `json.loads`, `orjson.loads` or `yaml.safe_load`
gives it: a JSON-RPC id, a tool argument, a claim in a token, a config value, a piece of a JSON
Schema. Code that reads one narrows it with `isinstance` first; a parameter that is only narrowed is
`object` instead. A JSON object is written `dict[str, Any]` (or `Mapping[str, Any]`). Everything
else has a real type; tests/test_typing_boundaries.py keeps it so (docs/development.md, "The type
check"). A leaf: it imports nothing of the gateway, so every stage and the settings may use it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonValue: TypeAlias = Any
