"""Flags that make a reviewer look twice at an upstream tool definition.

They are hints for a human deciding whether to approve a definition, not a verdict: a clean
result does not make a tool safe. Messages quote upstream text only in short snippets with
hidden characters written as [U+XXXX], so a flag can never smuggle the text it warns about.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.catalog.definitions import MAX_DEPTH, canonical_json, definition_of, is_hidden, pointer_join

SNIPPET_LIMIT = 80
LIST_LIMIT = 10  # items named in one message before "and N more"
ITEM_LIMIT = 240  # one listed item: a path plus up to two quoted snippets
_MISSING: Final = object()  # a keyword absent from the newer schema
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


@dataclass(frozen=True, slots=True)
class Flag:
    code: str
    severity: str  # "high" | "medium" | "low"
    message: str


# Phrases addressed to the model rather than describing the tool. Bare "token"/"key" are left out
# of "pass a secret" because pagination tokens and object keys are ordinary arguments.
_INSTRUCTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern, re.IGNORECASE))
    for label, pattern in (
        ("ignore previous instructions",
         r"\b(?:ignore|disregard|forget)\s+(?:all\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier)\s+instructions"),
        ("<IMPORTANT> tag", r"<\s*/?\s*important\s*>"),
        ("<system> tag", r"<\s*/?\s*system\s*>"),
        ("system prompt", r"\bsystem\s+prompt\b"),
        ("hide from the user",
         r"\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|notify|alert|mention|reveal)\b[^.\n]{0,80}?\buser\b"),
        ("precondition on using the tool", r"\bbefore\s+using\s+this\s+tool,?\s+(?:you\s+must|always|first|read)\b"),
        ("you must call/read/send/include", r"\byou\s+must\s+(?:first\s+)?(?:call|read|send|include)\b"),
        ("~/.ssh", r"~/\.ssh\b"),
        ("id_rsa", r"\bid_(?:rsa|dsa|ecdsa|ed25519)\b"),
        (".env file", r"(?<![\w.])\.env\b"),
        ("agent config file", r"~/\.(?:cursor|claude|codeium|aws|kube|gnupg)\b|\bmcp\.json\b"),
        ("pass a secret",
         r"\bpass\s+(?:the|any|all|its|your)\s+[^\n.;]{0,60}?\b(?:passwords?|secrets?|credentials?"
         r"|(?:api|access|auth|bearer|session|refresh|private|secret|ssh|oauth)[\s_-]?(?:keys?|tokens?))\b"),
        ("send data to a URL", r"\bsend\b[^\n]{0,80}?\bto\s+https?://"),
        ("conversation history",
         r"\b(?:your|our|this|current|entire|full|whole|complete|all)\s+(?:of\s+the\s+)?conversation\s+history"),
    )
)

# Common Cyrillic and Greek letters that look Latin, for spotting a shadowed name.
_LOOKALIKES = str.maketrans("аеорсухіјѕԁһαορικνυ", "aeopcyxijsdhaopikvu")

_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_VALUE_CONSTRAINTS = ("pattern", "format", "const")
# Keywords whose effect is not worked out here: any change or removal is shown, tightening too.
_UNANALYSED = ("anyOf", "oneOf", "allOf", "not", "$ref", "$defs", "definitions", "patternProperties",
               "if", "then", "else", "dependentRequired", "dependentSchemas", "prefixItems", "contains",
               "propertyNames", "unevaluatedProperties", "unevaluatedItems")


def flag_definition(
    tool: Mapping[str, Any],
    *,
    server_id: str,
    other_tools: Mapping[str, str],
    previous: Mapping[str, Any] | None = None,
) -> list[Flag]:
    """Every flag for `tool` from `server_id`; `other_tools` maps other servers' bare tool names to their id."""
    definition = definition_of(tool)
    name = definition.get("name")
    found = [_model_instructions(definition), _hidden_unicode(definition)]
    if isinstance(name, str):
        found += [_confusable_name(name), _shadows_tool(name, server_id, other_tools)]
    if previous is not None:
        before = definition_of(previous)
        found += [_schema_widened(before, definition), _description_changed(before, definition),
                  _annotations_changed(before, definition)]
    return [flag for flag in found if flag is not None]


def flag_codes(flags: Iterable[Flag]) -> list[str]:
    return [flag.code for flag in flags]


def schema_widenings(old: object, new: object) -> list[str]:
    """What `new` accepts that `old` did not, as "<path>: <what>"; a missing schema accepts anything."""
    return _widenings(old, True if new is _MISSING else new, "", 0)


def snippet(text: str, limit: int = SNIPPET_LIMIT) -> str:
    """At most `limit` characters of `text` on one line, hidden characters as [U+XXXX]."""
    pieces: list[str] = []
    size = 0
    for char in text:  # stops early, so a megabyte description costs nothing
        piece = _ESCAPES.get(char) or (f"[U+{ord(char):04X}]" if is_hidden(char) else char)
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            break
    if size <= limit:
        return "".join(pieces)
    kept = ""
    for piece in pieces:
        if len(kept) + len(piece) > limit - 1:
            break
        kept += piece
    return kept + "…"


# --- model_instructions ---


def _model_instructions(definition: Mapping[str, Any]) -> Flag | None:
    hits: dict[str, str] = {}
    for where, text in _model_texts(definition):
        matchable = _matchable(text)
        for label, pattern in _INSTRUCTION_PATTERNS:
            match = pattern.search(matchable)
            if match and label not in hits:
                hits[label] = f"{label} in {where} ('{snippet(match.group(0))}')"
    if not hits:
        return None
    return Flag("model_instructions", "high", "text aimed at the model: " + _listed(hits.values()))


def _model_texts(definition: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for field in ("description", "title"):
        if isinstance(definition.get(field), str):
            yield field, definition[field]
    for field in ("inputSchema", "outputSchema"):
        # Every string value: instructions hide in enum values and defaults as well as descriptions.
        for path, text in _strings(definition.get(field), "", keys=False, depth=0):
            yield field + path, text


def _matchable(text: str) -> str:
    """The text a pattern sees: tag characters read as the ASCII they hide, other hidden ones dropped."""
    chars = []
    for char in text:
        code = ord(char)
        if 0xE0020 <= code <= 0xE007E:
            chars.append(chr(code - 0xE0000))
        elif not is_hidden(char):
            chars.append(char)
    # NFKC so fullwidth or mathematical letters match as the ASCII they imitate.
    return unicodedata.normalize("NFKC", "".join(chars))


# --- hidden_unicode ---


def _hidden_unicode(definition: Mapping[str, Any]) -> Flag | None:
    seen: dict[str, list[str]] = {}  # code point -> where
    tag_text = []
    for where, text in _strings(definition, "", keys=True, depth=0, top=True):
        for char in text:
            if is_hidden(char):
                places = seen.setdefault(_describe(char), [])
                if where not in places:
                    places.append(where)
                if 0xE0020 <= ord(char) <= 0xE007E:
                    tag_text.append(chr(ord(char) - 0xE0000))
    if not seen:
        return None
    parts = [f"{char} in {', '.join(places[:3])}" for char, places in seen.items()]
    message = "hidden characters: " + _listed(parts)
    if tag_text:
        message += f"; tag characters spell '{snippet(''.join(tag_text))}'"
    return Flag("hidden_unicode", "high", message)


def _strings(node: object, path: str, *, keys: bool, depth: int, top: bool = False) -> Iterator[tuple[str, str]]:
    """(location, text) for every string in `node`; with keys=True object keys too.

    top=True names the definition's own fields without a leading slash ("description").
    """
    if isinstance(node, str):
        yield path or "/", node
    elif depth >= MAX_DEPTH:
        return
    elif isinstance(node, Mapping):
        for key, value in node.items():
            sub = str(key) if top else pointer_join(path, str(key))
            if keys and not top and isinstance(key, str):
                yield f"{sub} (key)", key
            yield from _strings(value, sub, keys=keys, depth=depth + 1)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _strings(item, f"{path}/{index}", keys=keys, depth=depth + 1)


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')})"


# --- names ---


def _confusable_name(name: str) -> Flag | None:
    reasons = []
    non_ascii = list(dict.fromkeys(char for char in name if not char.isascii()))
    if non_ascii:
        reasons.append("non-ASCII characters " + _listed((_describe(char) for char in non_ascii), ", "))
    scripts = sorted({_script(char) for char in name if char.isalpha()})
    if len(scripts) > 1:
        reasons.append("mixed scripts " + "+".join(scripts))
    normalized = unicodedata.normalize("NFKC", name)
    if normalized != name:
        reasons.append(f"NFKC form is '{snippet(normalized)}'")
    if not reasons:
        return None
    return Flag("confusable_name", "high", f"tool name '{snippet(name)}' has " + "; ".join(reasons))


def _script(char: str) -> str:
    # The first word of the character name is the script for letters: LATIN, CYRILLIC, GREEK, ...
    return unicodedata.name(char, "UNKNOWN").split(" ")[0]


def _shadows_tool(name: str, server_id: str, other_tools: Mapping[str, str]) -> Flag | None:
    key = _shadow_key(name)
    shadowed = [f"'{snippet(other)}' on server '{snippet(server)}'" for other, server in other_tools.items()
                if server != server_id and _shadow_key(other) == key]
    if not shadowed:
        return None
    return Flag("shadows_tool", "medium", f"tool name '{snippet(name)}' looks like " + _listed(shadowed))


def _shadow_key(name: str) -> str:
    """The name as a model might read it: no hidden characters, NFKC, casefolded, Latin lookalikes, `-` as `_`."""
    visible = "".join(char for char in name if not is_hidden(char))
    return unicodedata.normalize("NFKC", visible).casefold().translate(_LOOKALIKES).replace("-", "_")


# --- schema_widened ---


def _schema_widened(before: Mapping[str, Any], after: Mapping[str, Any]) -> Flag | None:
    if "inputSchema" not in before:
        return None  # nothing was pinned to widen from
    widenings = schema_widenings(before["inputSchema"], after.get("inputSchema", _MISSING))
    if not widenings:
        return None
    return Flag("schema_widened", "medium", "input schema accepts more: " + _listed(widenings))


def _widenings(old: object, new: object, path: str, depth: int) -> list[str]:
    where = path or "/"
    if old is False:  # the false schema accepts nothing; anything else is wider
        return [] if new is False else [f"{where}: false schema replaced"]
    if not isinstance(old, Mapping) or not old:
        return []  # true or {} already accepts everything
    if new is True or new == {}:
        return [f"{where}: all constraints removed"]
    if not isinstance(new, Mapping):
        return []
    if depth >= MAX_DEPTH:
        return [] if canonical_json(old) == canonical_json(new) else [f"{where}: changed (too deep to analyse)"]
    found: list[str] = []
    for check in (_type_widened, _enum_widened, _bounds_widened, _values_widened, _required_widened,
                  _unanalysed_changed):
        found += check(old, new, path)
    found += _additional_widened(old, new, path, depth)
    found += _properties_widened(old, new, path, depth)
    found += _items_widened(old, new, path, depth)
    return found


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {item for item in declared if isinstance(item, str)}
    return None  # absent: any type


def _type_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    before, after = _types(old), _types(new)
    if before is None:
        return []
    if after is None:
        return [f"{path}/type: restriction {_show(old['type'])} removed"]
    added = after - before
    if "number" in before:
        added.discard("integer")  # every integer is a number: narrowing
    return [f"{path}/type: {_show(old['type'])} -> {_show(new['type'])}"] if added else []


def _enum_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(old.get("enum"), list):
        return []
    if not isinstance(new.get("enum"), list):
        return [f"{path}/enum: removed"]
    allowed = {canonical_json(value) for value in old["enum"]}
    extra = [value for value in new["enum"] if canonical_json(value) not in allowed]
    return [f"{path}/enum: added {_show(extra)}"] if extra else []


def _bounds_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    found = []
    for keyword, wider in [(k, "raised") for k in _UPPER_BOUNDS] + [(k, "lowered") for k in _LOWER_BOUNDS]:
        if keyword not in old:
            continue
        before, after = old[keyword], new.get(keyword, _MISSING)
        if after is _MISSING:
            found.append(f"{path}/{keyword}: {_show(before)} removed")
        elif _is_number(before) and _is_number(after):
            if (after > before) if wider == "raised" else (after < before):
                found.append(f"{path}/{keyword}: {wider} {_show(before)} -> {_show(after)}")
        elif canonical_json(before) != canonical_json(after):
            found.append(f"{path}/{keyword}: {_show(before)} -> {_show(after)}")
    return found


def _values_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    found = []
    for keyword in _VALUE_CONSTRAINTS:
        if keyword not in old:
            continue
        if keyword not in new:
            found.append(f"{path}/{keyword}: {_show(old[keyword])} removed")
        elif canonical_json(old[keyword]) != canonical_json(new[keyword]):
            # A different pattern, format or const admits values the old one refused.
            found.append(f"{path}/{keyword}: {_show(old[keyword])} -> {_show(new[keyword])}")
    if old.get("uniqueItems") is True and new.get("uniqueItems") is not True:
        found.append(f"{path}/uniqueItems: no longer true")
    return found


def _required_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    before, after = old.get("required"), new.get("required")
    dropped = sorted(_names(before) - _names(after))
    return [f"{path}/required: no longer requires {', '.join(dropped)}"] if dropped else []


def _names(value: object) -> set[str]:
    return {item for item in value if isinstance(item, str)} if isinstance(value, list) else set()


def _unanalysed_changed(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    # Only keywords that were there before: adding one of them constrains further.
    return [f"{pointer_join(path, keyword)}: {'removed' if keyword not in new else 'changed (not analysed)'}"
            for keyword in _UNANALYSED
            if keyword in old and (keyword not in new or canonical_json(old[keyword]) != canonical_json(new[keyword]))]


def _additional_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str, depth: int) -> list[str]:
    before = old.get("additionalProperties", _MISSING)
    after = new.get("additionalProperties", _MISSING)
    where = f"{path}/additionalProperties"
    if before is False and after is not False:
        return [f"{where}: false -> {'removed' if after is _MISSING else _show(after)}"]
    if isinstance(before, Mapping):
        return _widenings(before, True if after is _MISSING else after, where, depth + 1)
    return []


def _properties_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str, depth: int) -> list[str]:
    before = given if isinstance(given := old.get("properties"), Mapping) else {}
    after = given if isinstance(given := new.get("properties"), Mapping) else {}
    found = [f"{pointer_join(path + '/properties', name)}: property added" for name in after if name not in before]
    closed = new.get("additionalProperties") is False
    for name, schema in before.items():
        where = pointer_join(path + "/properties", name)
        if name in after:
            found += _widenings(schema, after[name], where, depth + 1)
        elif not closed:  # still accepted as an additional property, now without its constraints
            found.append(f"{where}: definition removed")
    return found


def _items_widened(old: Mapping[str, Any], new: Mapping[str, Any], path: str, depth: int) -> list[str]:
    if "items" not in old:
        return []
    after = new.get("items", _MISSING)
    if isinstance(old["items"], list) or isinstance(after, list):  # tuple form: compared whole
        if after is not _MISSING and canonical_json(old["items"]) == canonical_json(after):
            return []
        return [f"{path}/items: changed (not analysed)"]
    return _widenings(old["items"], True if after is _MISSING else after, f"{path}/items", depth + 1)


# --- changes people should read ---


def _description_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> Flag | None:
    old_texts, new_texts = _described(before), _described(after)
    changed = [where for where in dict.fromkeys([*old_texts, *new_texts])
               if old_texts.get(where) != new_texts.get(where)]
    if not changed:
        return None
    old_size, new_size = len(old_texts.get("description", "")), len(new_texts.get("description", ""))
    return Flag("description_changed", "low",
                f"descriptions changed ({old_size} -> {new_size} characters in description): " + _listed(changed))


def _described(definition: Mapping[str, Any]) -> dict[str, str]:
    """Every description and title the model reads, by location."""
    texts = {field: definition[field] for field in ("description", "title") if isinstance(definition.get(field), str)}
    for field in ("inputSchema", "outputSchema"):
        for path, text in _strings(definition.get(field), "", keys=False, depth=0):
            if path.endswith(("/description", "/title")):
                texts[field + path] = text
    return texts


def _annotations_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> Flag | None:
    old = given if isinstance(given := before.get("annotations"), Mapping) else {}
    new = given if isinstance(given := after.get("annotations"), Mapping) else {}
    changed = [key for key in dict.fromkeys([*old, *new])
               if key not in old or key not in new or canonical_json(old[key]) != canonical_json(new[key])]
    if not changed:
        return None
    # An absent destructiveHint means true (MCP default), so removing a false counts as turning it on.
    riskier = (old.get("readOnlyHint") is True and new.get("readOnlyHint") is not True) or (
        old.get("destructiveHint") is False and new.get("destructiveHint") is not False)
    parts = [f"{key} {_show(old.get(key, _MISSING))} -> {_show(new.get(key, _MISSING))}" for key in changed]
    return Flag("annotations_changed", "medium" if riskier else "low", "annotations changed: " + _listed(parts))


# --- formatting ---


def _show(value: object) -> str:
    if value is _MISSING:
        return "(absent)"
    return snippet(canonical_json(value).decode("utf-8", "surrogatepass"))


def _listed(items: Iterable[str], separator: str = "; ") -> str:
    # Each item again through snippet: paths carry upstream keys, which may be long or hidden.
    items = [snippet(item, ITEM_LIMIT) for item in items]
    shown = separator.join(items[:LIST_LIMIT])
    return shown + (f"{separator}and {len(items) - LIST_LIMIT} more" if len(items) > LIST_LIMIT else "")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
