"""Where one loss call's time goes: the floor, our distance matrix alone, and each variant, medians.

    python -m benchmarks.split [B] [LAYOUT]     # default 1024 random; torch threads as the bench

Prints medians of 9 calls (forward + backward unless marked forward), all in one process,
so the parts can be read against each other and against the floor.
"""

import statistics
import sys

import torch

from benchmarks.cases import VARIANTS, floor
from benchmarks.timing import call_seconds, warm_up
from benchmarks.workloads import forward_backward, make_batch, use_bench_threads

EXACT = [variant for variant in VARIANTS if variant.exact]  # the variants held to the floor bar


def median_ms(step, calls: int = 9) -> float:
    """-> the median wall time of `step` in ms, after the bench's warm-up."""
    warm_up(step)
    return statistics.median(call_seconds(step) for _ in range(calls)) * 1e3


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    batch_size = int(argv[0]) if argv else 1024
    layout = argv[1] if len(argv) > 1 else "random"
    threads = use_bench_threads()
    from losses.distances import checked_distances, sorted_positive_distances

    x, y = make_batch(batch_size, layout=layout)

    def distances_only():
        return checked_distances(x, y, metric="euclidean").sum()

    def distances_forward():
        with torch.no_grad():
            sorted_positive_distances(checked_distances(x, y, metric="euclidean"), y)

    rows = [("floor: cdist(x, x).sum()", lambda: forward_backward(floor(), x, y)),
            ("our distance matrix", lambda: forward_backward(lambda e, labels: distances_only(), x, y)),
            ("our distance matrix + sorted positives, forward", distances_forward)]
    rows += [(variant.name, lambda fn=variant.ours(): forward_backward(fn, x, y)) for variant in EXACT]
    print(f"B={batch_size}, {layout} labels, {threads} torch threads, medians of 9 calls")
    for name, step in rows:
        print(f"{name}: {median_ms(step):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
