"""Round counts and paired timing for pytest-benchmark.

The machine is shared and its load drifts, so a ratio of two cells timed minutes
apart can be off by a large factor. Each cell can therefore time "companions"
(the floor, or our variants in a PML cell) between its own rounds, in
pytest-benchmark's untimed `setup`: round i of the cell and call i of each
companion run back to back, and the cell stores the median of the per-round
ratios (cell / companion) in extra_info["paired"].
"""

import statistics
import time
from typing import Callable, Mapping, Optional

TARGET_S = 1.5        # aim for about this much work per cell (companions included)
MIN_ROUNDS = 3
MAX_ROUNDS = 200


def call_seconds(step: Callable[[], object]) -> float:
    """Run `step` once and -> its wall time in seconds."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def warm_up(step: Callable[[], object]) -> float:
    """Run `step` once, twice when cheap (the first call pays one-time costs); -> the last call's seconds."""
    seconds = call_seconds(step)
    return call_seconds(step) if seconds < 1.0 else seconds


def rounds_for(round_s: float, *, target_s: float = TARGET_S) -> int:
    """-> rounds so that rounds * round_s is about target_s, within [MIN_ROUNDS, MAX_ROUNDS]."""
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(target_s / max(round_s, 1e-9))))


def run_timed(benchmark, step: Callable[[], object], *, skip_cell: Callable[[str], None],
              companions: Optional[Mapping[str, Callable[[], object]]] = None,
              max_call_s: Optional[float] = None, target_s: float = TARGET_S) -> None:
    """Warm up, skip the cell if one call exceeds max_call_s, else time `step` one call per round.

    Companions are called once before every round (untimed by pytest-benchmark, timed
    here); extra_info["paired"][name] = {"median_s", "ratio"} with ratio the median over
    rounds of step seconds / companion seconds.
    """
    companions = dict(companions or {})
    step_s = warm_up(step)
    benchmark.extra_info["warmup_s"] = step_s
    if max_call_s is not None and step_s > max_call_s:
        skip_cell(f"one call took {step_s:.1f} s (> {max_call_s:.0f} s limit)")
    companion_s = sum(warm_up(companion) for companion in companions.values())
    times = {name: [] for name in companions}

    def setup():
        for name, companion in companions.items():
            times[name].append(call_seconds(companion))

    benchmark.pedantic(step, setup=setup, rounds=rounds_for(step_s + companion_s, target_s=target_s),
                       iterations=1, warmup_rounds=0)
    own = benchmark.stats.stats.data
    benchmark.extra_info["paired"] = {
        name: {"median_s": statistics.median(seconds),
               "ratio": statistics.median(mine / theirs for mine, theirs in zip(own, seconds))}
        for name, seconds in times.items()
    }
