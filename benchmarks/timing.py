"""Round counts for pytest-benchmark: enough rounds for a stable median, bounded time."""

import time
from typing import Callable, Optional

TARGET_S = 1.5        # aim for about this much timed work per cell
MIN_ROUNDS = 3
MAX_ROUNDS = 200


def first_call_seconds(step: Callable[[], object]) -> float:
    """Run `step` once (the warm-up) and -> its wall time in seconds."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def rounds_for(call_s: float, *, target_s: float = TARGET_S) -> int:
    """-> rounds so that rounds * call_s is about target_s, within [MIN_ROUNDS, MAX_ROUNDS]."""
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(target_s / max(call_s, 1e-9))))


def run_timed(benchmark, step: Callable[[], object], *, skip_cell: Callable[[str], None],
              max_call_s: Optional[float] = None, target_s: float = TARGET_S) -> float:
    """Warm up (twice when cheap), skip the cell if that call exceeded max_call_s, else time `step`.

    -> the warm-up call's seconds. Timing is pytest-benchmark's pedantic mode, one
    call per round, so the median is per call.
    """
    call_s = first_call_seconds(step)
    if call_s < 1.0:  # the first call pays one-time costs: estimate from a second one
        call_s = first_call_seconds(step)
    if max_call_s is not None and call_s > max_call_s:
        skip_cell(f"one call took {call_s:.1f} s (> {max_call_s:.0f} s limit)")
    benchmark.extra_info["warmup_s"] = call_s
    benchmark.pedantic(step, rounds=rounds_for(call_s, target_s=target_s), iterations=1, warmup_rounds=0)
    return call_s
