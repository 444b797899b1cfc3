"""A diagnostic switch: tracemalloc snapshots of the running gateway, written every few seconds.

    NARROWGATE_TRACEMALLOC=/some/dir narrowgate serve ...        # one snapshot a minute
    NARROWGATE_TRACEMALLOC_INTERVAL_S=30                           # or as often as this

Read once when `serve` starts; when the variable is unset nothing is started and nothing is
checked again, so it costs nothing. When set, tracemalloc records every allocation (the gateway
gets slower and bigger: a diagnostic, never a production setting), and a daemon thread writes
`snapshot-NNNN.pickle` into the directory (written then renamed, so a reader never sees half a
file). `top_growth` compares two of them; `bench.soak --tracemalloc DIR` does it for you.

    NARROWGATE_MEMORY_STATS=/some/dir narrowgate serve ...       # the figures only, no tracing

writes only the `.json` summaries (`stats-NNNN.json`: RSS, malloc, pymalloc's arenas, object
counts) at the same interval, without tracemalloc, so the gateway runs at its normal speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("narrowgate")
DIRECTORY_VARIABLE = "NARROWGATE_TRACEMALLOC"
INTERVAL_VARIABLE = "NARROWGATE_TRACEMALLOC_INTERVAL_S"
STATS_VARIABLE = "NARROWGATE_MEMORY_STATS"
DEFAULT_INTERVAL_S = 60.0
FRAMES = 10  # enough to see which of our tables an allocation ends up in
SNAPSHOT_GLOB = "snapshot-*.pickle"
SHOWN_FRAMES = 6  # innermost frames printed per allocation site
OBJECT_TYPES = 200  # object kinds counted per snapshot, most numerous first
SHOWN_TYPES = 15  # object kinds whose counts changed most, printed by top_growth


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc 2.33+): what malloc holds, in use and free."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def start_if_asked(environ: Mapping[str, str] = os.environ) -> threading.Thread | None:
    """Start tracemalloc and the snapshot writer when NARROWGATE_TRACEMALLOC names a directory,
    or only the summary writer when NARROWGATE_MEMORY_STATS does."""
    directory = environ.get(DIRECTORY_VARIABLE)
    stats_directory = environ.get(STATS_VARIABLE)
    if not directory and not stats_directory:
        return None
    interval_s = float(environ.get(INTERVAL_VARIABLE) or DEFAULT_INTERVAL_S)
    if interval_s <= 0:
        raise ValueError(f"{INTERVAL_VARIABLE} must be positive")
    target = Path(directory or stats_directory or "")
    target.mkdir(parents=True, exist_ok=True)
    traced = bool(directory)
    if traced:
        tracemalloc.start(FRAMES)
        log.warning("diagnostic: tracemalloc on, a snapshot every %g s into %s (slower, bigger process)",
                    interval_s, target)
    else:
        log.warning("diagnostic: memory figures every %g s into %s", interval_s, target)
    writer = threading.Thread(target=write_snapshots, args=(target, interval_s, None, traced),
                              name="tracemalloc-snapshots", daemon=True)
    writer.start()
    return writer


def write_snapshots(directory: Path, interval_s: float, stop: threading.Event | None = None,
                    traced: bool = True) -> None:
    stop = stop or threading.Event()
    started = time.monotonic()
    sequence = 0
    while not stop.wait(max(0.0, started + (sequence + 1) * interval_s - time.monotonic())):
        sequence += 1
        try:
            if traced:
                write_snapshot(directory / f"snapshot-{sequence:04d}.pickle")
            else:
                write_summary(directory / f"stats-{sequence:04d}.json")
        except OSError as exc:  # a full disk ends the diagnostic, not the gateway
            log.error("diagnostic: writing a tracemalloc snapshot failed, stopping them: %s", exc)
            return


def write_snapshot(path: Path) -> None:
    """The snapshot, and beside it (`.json`) where the process's memory is: RSS, what tracemalloc
    sees (Python objects), and what malloc holds in all (in use, and free but not returned), so a
    growth outside Python (Cedar's parsed entities are Rust memory) or fragmentation shows too."""
    snapshot = tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    ])
    partial = path.with_suffix(".partial")
    snapshot.dump(str(partial))
    summary = {"traced_bytes": tracemalloc.get_traced_memory()[0], **process_memory()}
    path.with_suffix(".json").write_text(json.dumps({**summary, "objects_by_type": objects_by_type()}))
    partial.replace(path)  # last: a snapshot that can be seen has its summary beside it


def write_summary(path: Path) -> None:
    """The figures of a snapshot's `.json`, without a snapshot (tracemalloc off)."""
    path.write_text(json.dumps({**process_memory(), "objects_by_type": objects_by_type()}))


_PYMALLOC_FIGURES = {  # sys._debugmallocstats() line -> summary key
    "# arenas allocated current": "pymalloc_arenas",
    "# arenas highwater mark": "pymalloc_arenas_highwater",
    "# bytes in allocated blocks": "pymalloc_in_use_bytes",
    "# bytes in available blocks": "pymalloc_free_block_bytes",
}
_UNUSED_POOLS = re.compile(r"^(\d+) unused pools \* \d+ bytes\s*=\s*([\d,]+)")
_stderr_lock = threading.Lock()


def pymalloc_stats() -> dict[str, int]:
    """CPython's small-object allocator: arenas held (1 MiB each) and the bytes of blocks in use and
    free in them. Arenas growing while blocks in use stay level is fragmentation, not a leak.
    `sys._debugmallocstats()` writes to the C stderr, so fd 2 points at a file while it runs."""
    with _stderr_lock, tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    found: dict[str, int] = {}
    for line in text.splitlines():
        label, _, value = line.partition("=")
        key = _PYMALLOC_FIGURES.get(label.strip())
        if key is not None and key not in found:
            found[key] = int(value.strip().replace(",", ""))
        elif (unused := _UNUSED_POOLS.match(line)) is not None:
            found["pymalloc_unused_pool_bytes"] = int(unused.group(2).replace(",", ""))
    if "pymalloc_arenas" in found:
        found["pymalloc_arena_bytes"] = found["pymalloc_arenas"] * 2**20
    return found


def objects_by_type(limit: int = OBJECT_TYPES) -> dict[str, int]:
    """The most numerous kinds of garbage-collected objects (dicts, instances of our classes...):
    a table that grows shows as a type whose count climbs, whatever allocated it. Frozen objects
    (gateway/heap.py) count too: they are unfrozen for the census and frozen again after it."""
    gc.unfreeze()
    try:
        counts = Counter(f"{type(obj).__module__}.{type(obj).__qualname__}" for obj in gc.get_objects())
    finally:
        gc.freeze()
    return dict(counts.most_common(limit))


def process_memory() -> dict[str, int]:
    """RSS (/proc/self/status) and glibc malloc's totals, where available."""
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            found["rss_bytes"] = int(line.split()[1]) * 1024
    libc = _libc()
    if libc is not None and hasattr(libc, "mallinfo2"):
        info = libc.mallinfo2()
        found["malloc_in_use_bytes"] = info.uordblks + info.hblkhd
        found["malloc_free_bytes"] = info.fordblks
    found.update(pymalloc_stats())
    found["gc_frozen"] = gc.get_freeze_count()
    return found


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """Loaded once: each CDLL is a new set of cyclic objects, one more per summary otherwise."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name)
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


def memory_summary(path: Path) -> dict[str, Any]:
    """The `.json` written beside a snapshot ({} if there is none): byte counts, and `objects_by_type`."""
    summary = path.with_suffix(".json")
    return json.loads(summary.read_text()) if summary.exists() else {}


def object_growth(before: Mapping[str, int], after: Mapping[str, int], limit: int = SHOWN_TYPES) -> list[str]:
    """The object kinds whose counts rose most between two summaries."""
    changes = sorted(((after.get(kind, 0) - before.get(kind, 0), kind) for kind in {*before, *after}),
                     reverse=True)
    return [f"  {change:+9d} {kind} (now {after.get(kind, 0)})" for change, kind in changes[:limit] if change > 0]


def snapshots(directory: Path) -> list[Path]:
    return sorted(directory.glob(SNAPSHOT_GLOB))


def traced_bytes(snapshot: tracemalloc.Snapshot) -> int:
    return sum(trace.size for trace in snapshot.traces)


def top_growth(first: Path, last: Path, limit: int = 15, key: str = "traceback") -> list[str]:
    """The allocation sites that grew most from `first` to `last`, each with its size change and
    (for key="traceback") the stack that allocated, innermost frame last."""
    old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    lines = [f"tracemalloc: {first.name} -> {last.name}: traced (Python) memory "
             f"{(traced_bytes(new) - traced_bytes(old)) / 2**20:+.2f} MiB"]
    before, after = memory_summary(first), memory_summary(last)
    lines += [f"  {name}: {before[name] / 2**20:.1f} -> {after[name] / 2**20:.1f} MiB"
              for name in after if name in before and name.endswith("_bytes")]
    kinds = object_growth(before.get("objects_by_type", {}), after.get("objects_by_type", {}))
    if kinds:
        lines += ["  objects whose count rose most (gc.get_objects(), by type):", *kinds]
    growth = sorted(new.compare_to(old, key), key=lambda stat: stat.size_diff, reverse=True)
    for stat in growth[:limit]:
        if stat.size_diff <= 0:
            break
        lines.append(f"{stat.size_diff / 2**20:+8.2f} MiB {stat.count_diff:+9d} blocks "
                     f"(now {stat.size / 2**20:.2f} MiB)")
        frames = [line for line in stat.traceback.format() if line.startswith("  File ")]  # oldest first
        lines += [f"      {frame.strip()}" for frame in frames[-SHOWN_FRAMES:]]
    return lines
