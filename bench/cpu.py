"""CPU time of a process tree, read from /proc (Linux), for CPU-per-call figures.

``/proc/<pid>/stat`` fields 14-17 (utime, stime, cutime, cstime) are in clock ticks (usually
10 ms each). ``utime+stime`` covers every thread of the process, live or exited; ``cutime+cstime``
covers children it has already reaped. Live descendants (e.g. stdio upstreams the gateway
spawned) are found through ``/proc/<pid>/task/<tid>/children`` and added, so a phase's delta
counts the whole tree. With phases of a second or more of CPU the tick granularity stays
under ~1 %.

psutil would give the same numbers (it reads the same files) but is not a dependency here.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_TREE = 10_000  # bound on the descendant walk


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces; split after it.
    return raw[raw.rindex(")") + 2 :].split()


def _own_ticks(pid: int, with_reaped_children: bool) -> tuple[int, int]:
    """(user, system) clock ticks of one process."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0, 0
    # After the ")" split, index 0 is field 3 (state): utime is field 14 -> index 11.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    if with_reaped_children:
        return utime + cutime, stime + cstime
    return utime, stime


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, PermissionError):
        return kids
    for task in tasks:
        try:
            kids.extend(int(x) for x in (task / "children").read_text().split())
        except (FileNotFoundError, PermissionError):
            continue
    return kids


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (breadth-first, bounded)."""
    found: list[int] = []
    frontier = _children(pid)
    while frontier and len(found) < MAX_TREE:
        found.extend(frontier)
        frontier = [kid for parent in frontier for kid in _children(parent)]
    return found[:MAX_TREE]


def tree_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of ``pid``, its reaped children and its live descendants."""
    user, system = _own_ticks(pid, with_reaped_children=True)
    for kid in descendants(pid):
        kid_user, kid_system = _own_ticks(kid, with_reaped_children=True)
        user, system = user + kid_user, system + kid_system
    return user, system


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user+system) of ``pid``, its reaped children and its live descendants."""
    return sum(tree_ticks(pid)) / CLK_TCK


def self_cpu_s() -> float:
    """CPU seconds of this process (all threads), at microsecond resolution."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def system_key(name: str) -> str:
    """The key under which a CpuMeter keeps the system (kernel) part of ``name``'s CPU."""
    return f"{name}.sys"


@dataclass
class CpuMeter:
    """Samples CPU of named process trees (and optionally this process) around a phase; a name may stand
    for several trees (the replicas of one gateway), whose CPU is added. Each name's system (kernel) part
    is kept as well, under ``system_key(name)``: it tells socket and thread wake-up costs from Python's."""

    pids: dict[str, int | tuple[int, ...]]
    include_self: bool = True

    def __post_init__(self) -> None:
        self._start: dict[str, float] = {}
        self.used_s: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample: dict[str, float] = {}
        for name, pids in self.pids.items():
            ticks = [tree_ticks(pid) for pid in (pids if isinstance(pids, tuple) else (pids,))]
            sample[name] = sum(user + system for user, system in ticks) / CLK_TCK
            sample[system_key(name)] = sum(system for _, system in ticks) / CLK_TCK
        if self.include_self:
            sample["loadgen"] = self_cpu_s()
        return sample

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> None:
        end = self._sample()
        self.used_s = {name: end[name] - self._start.get(name, 0.0) for name in end}

    def ms_per_call(self, calls: int, names: Iterable[str] | None = None) -> dict[str, float]:
        keys = list(names) if names is not None else list(self.used_s)
        return {k: (self.used_s[k] * 1000 / calls if calls else 0.0) for k in keys if k in self.used_s}
