"""In-process `check_loss` time per function, and the counts of the unknown-bug gallery.

    OMP_NUM_THREADS=1 PYTHONPATH=. python -m benchmarks.check_time

Prints, for every gallery function (correct ones, the known-fault gallery, the gallery of bugs
outside the fault family), the wall and CPU (process) time of one check_loss call after one
warm-up call, then the median and maximum, the load average, and how many unknown bugs the
report points at and how many shrink to at most 8 rows. Nothing is asserted: on a shared
machine wall time follows the load; CPU time much less so.
"""

from __future__ import annotations

import os
import statistics
import time

import torch.nn.functional as F

from losses.testing import check_loss
from tests import conformance_gallery as gallery
from tests.conformance_gallery_unknown import UNKNOWN
from tests.test_conformance_gallery import FAULTS


def main() -> None:
    rows = [(gallery.correct_batch_all, "batch_all", {}), (gallery.correct_batch_hard, "batch_hard", {}),
            (gallery.correct_combined, "combined", {}), (F.triplet_margin_loss, "naive", {"extra": {"eps": 0.0}})]
    rows += [(fn, as_, options) for fn, as_, options, _ in FAULTS]
    rows += [(u.fn, u.as_, u.options) for u in UNKNOWN]
    check_loss(gallery.correct_batch_all, as_="batch_all")  # warm-up: torch's first-call costs
    walls, cpus, explained, small = [], [], 0, 0
    unknown = {id(u.fn): u for u in UNKNOWN}
    for fn, as_, options in rows:
        wall, cpu = time.perf_counter(), time.process_time()
        report = check_loss(fn, as_=as_, **options)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        walls.append(wall)
        cpus.append(cpu)
        name = getattr(fn, "__name__", type(fn).__name__)
        print(f"{wall:6.3f} s wall {cpu:6.3f} s cpu  {name} as {as_} ({'conforms' if report.conforms else 'rejected'})")
        if id(fn) in unknown:
            explained += any(w in report.summary() for w in unknown[id(fn)].points_at)
            small += (report.smallest_rows or 99) <= 8
    print(f"{len(rows)} functions: wall median {statistics.median(walls):.3f} s, max {max(walls):.3f} s; "
          f"cpu median {statistics.median(cpus):.3f} s, max {max(cpus):.3f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"unknown bugs: the report points at the bug for {explained}/{len(UNKNOWN)}, "
          f"the smallest failing batch has <= 8 rows for {small}/{len(UNKNOWN)}")


if __name__ == "__main__":
    main()
