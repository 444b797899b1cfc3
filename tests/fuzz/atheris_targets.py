"""Coverage-guided fuzzing with atheris (libFuzzer) of the pure parsers the Hypothesis properties cover.

    .venv/bin/python -m tests.fuzz.atheris_targets all --seconds 120     # every target, in turn (make fuzz)
    .venv/bin/python -m tests.fuzz.atheris_targets yaml -max_total_time=60 -runs=1000

Each target checks the same property as its Hypothesis test (the checks are imported from there):
only the gateway's own, clear errors may come out. Coverage guidance reaches inputs a strategy does
not describe: it found an empty `!!int` (PyYAML's IndexError) that the strategies had not.
A crash writes its input to .narrowgate/fuzz/<target>-crash-<sha1> and exits non-zero.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["gateway", "yaml"]):
    import yaml

    from gateway.catalog import CatalogError, load_catalog
    from gateway.catalog.yaml_lines import load_lined
    from gateway.policy.typing_ import ArgumentMismatch, input_type, to_cedar
    from gateway.registry.agents_file import parse_agents_file
    from tests.fuzz.test_fuzz_jsonrpc import assert_decoded_or_refused
    from tests.fuzz.test_fuzz_sse import decode as decode_stream

REPO = Path(__file__).resolve().parents[2]
CRASH_DIR = REPO / ".narrowgate" / "fuzz"
_CATALOG_DIR = Path(tempfile.mkdtemp(prefix="narrowgate-atheris-"))


def yaml_target(data: bytes) -> None:
    """Manifest and agents-file text: a document, or a YAML error / problems; nothing else."""
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    with contextlib.suppress(yaml.YAMLError):
        load_lined(text)
    parse_agents_file(text, "agents.yaml", now=0.0)
    (_CATALOG_DIR / "fuzz.yaml").write_text(text, encoding="utf-8")
    try:
        load_catalog(_CATALOG_DIR, {"PYTHON": "/usr/bin/python3"})
    except CatalogError as exc:
        assert exc.problems


def sse_target(data: bytes) -> None:
    """Any bytes from an upstream decode to events without raising."""
    for event in decode_stream(data):
        assert isinstance(event.data, str)


def jsonrpc_target(data: bytes) -> None:
    """Any body is a faithful Message or a -32700/-32600 refusal."""
    assert_decoded_or_refused(data)


def typing_target(data: bytes) -> None:
    """Any published schema types; any value serializes for Cedar or is refused with ArgumentMismatch."""
    provider = atheris.FuzzedDataProvider(data)
    schema, value = _json(provider), _json(provider)
    typed = input_type(schema if isinstance(schema, dict) else None)
    with contextlib.suppress(ArgumentMismatch):
        to_cedar(value, typed)


SCHEMA_WORDS = ("type", "properties", "items", "required", "enum", "additionalProperties", "object", "string",
                "integer", "number", "boolean", "array", "null", "a", "b")


def _json(provider: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    """A JSON value built from the input, schema words likely, so coverage can steer its shape."""
    kind = provider.ConsumeIntInRange(0, 8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return provider.ConsumeBool()
    if kind == 2:
        return provider.ConsumeInt(9)
    if kind == 3:
        return provider.ConsumeRegularFloat()
    if kind == 4:
        return provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 8))
    if kind == 5:
        return SCHEMA_WORDS[provider.ConsumeIntInRange(0, len(SCHEMA_WORDS) - 1)]
    if kind == 6:
        return [_json(provider, depth + 1) for _ in range(provider.ConsumeIntInRange(0, 3))]
    keys = [SCHEMA_WORDS[provider.ConsumeIntInRange(0, len(SCHEMA_WORDS) - 1)] if provider.ConsumeBool()
            else provider.ConsumeUnicodeNoSurrogates(4) for _ in range(provider.ConsumeIntInRange(0, 3))]
    return {key: _json(provider, depth + 1) for key in keys}


TARGETS: dict[str, Callable[[bytes], None]] = {
    "yaml": yaml_target, "sse": sse_target, "jsonrpc": jsonrpc_target, "typing": typing_target,
}


def run_all(seconds: int) -> int:
    """Each target for `seconds`, each in its own process (libFuzzer exits when it stops)."""
    CRASH_DIR.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in TARGETS:
        print(f"atheris: {name} for {seconds} s", flush=True)
        done = subprocess.run([sys.executable, "-m", "tests.fuzz.atheris_targets", name,
                               f"-max_total_time={seconds}", f"-artifact_prefix={CRASH_DIR}/{name}-",
                               "-print_final_stats=1"], cwd=REPO, check=False)
        if done.returncode != 0:
            failed.append(name)
    if failed:
        print(f"atheris: crashes in {', '.join(failed)}; inputs in {CRASH_DIR}", flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "all":
        seconds = int(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 60
        return run_all(seconds)
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: python -m tests.fuzz.atheris_targets {{all [--seconds N] | {' | '.join(TARGETS)}}} "
              "[libFuzzer flags]", file=sys.stderr)
        return 2
    atheris.Setup([argv[0], *argv[2:]], TARGETS[argv[1]])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
