"""bench/run.py's summary of issue 19's aim: the least-CPU rounds' ratio, and every round's ratio paired."""

from __future__ import annotations

from bench.load import LEGACY, MODERN, PhaseResult
from bench.run import FLOOR, GATEWAY, PROXY, TARGET_PHASE, Plan, Side, paired_ratios, target_line


def side(label: str, cpu_by_era: dict[str, list[float]]) -> Side:
    """A side whose TARGET_PHASE rounds cost these ms a call, in run order (a serial phase in between)."""
    result = Side(label)
    for era, rounds in cpu_by_era.items():
        for cpu in rounds:
            result.phases.append(PhaseResult(TARGET_PHASE, era, 16, 1000, cpu_ms_per_call={PROXY: cpu}))
            result.phases.append(PhaseResult("serial", era, 1, 1000, cpu_ms_per_call={PROXY: 9.9}))
    return result


def test_rounds_are_paired_in_run_order_and_summarized_beside_the_least_cpu_ratio() -> None:
    floor = side(FLOOR, {LEGACY: [0.150, 0.200, 0.160], MODERN: [0.100]})
    gateway = side(GATEWAY, {LEGACY: [0.450, 0.400, 0.600], MODERN: [0.240]})
    assert [round(r, 3) for r in paired_ratios(floor, gateway, LEGACY)] == [3.0, 2.0, 3.75]
    line = target_line(Plan(1000, [16], [16], [LEGACY, MODERN], rounds=3), {FLOOR: floor, GATEWAY: gateway})
    assert line is not None
    # least-CPU rounds: 0.400 over 0.150 (from different rounds); then each round's own ratio
    assert f"{LEGACY} 0.400/0.150 ms = 2.67x (rounds paired: 3.00x, 2.00x, 3.75x; median 3.00x, 1 of 3 <= 2.5x)" \
        in line
    assert f"{MODERN} 0.240/0.100 ms = 2.40x" in line and "2.40x (rounds" not in line  # one round: nothing to pair
