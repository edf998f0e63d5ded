"""Per-step cost of each weighting method, as a ratio to `fixed` on the same model and batch.

Each method's cell times `fixed` between its rounds (paired ratio, see timing.py)
and records the extra backward passes per step it needs (passes through the
network beyond the one of the weighted total, counted by a hook on the embedding).
"""

import pytest

from benchmarks.timing import run_timed
from benchmarks.weighting_step import BATCH, make_step

try:
    from losses.weighting import WEIGHTINGS
    METHODS = tuple(WEIGHTINGS)
except ImportError:  # the weighting code is not there: one cell that says so
    METHODS = ("fixed",)


@pytest.mark.parametrize("method", METHODS)
def test_weighting_step(benchmark, cell, method):
    skip = cell("weighting", method, BATCH)
    try:
        step, counter = make_step(method)
        fixed_step, _ = make_step("fixed")
    except ImportError as error:
        skip(f"weighting benchmark needs losses.weighting, losses.CombinedLoss, ablations.model: {error}")
    run_timed(benchmark, step, skip_cell=skip, companions={"fixed": fixed_step})
    extra = {count - 1 for count in counter.passes}
    assert len(extra) == 1, f"{method}: extra backward passes vary between steps: {sorted(extra)}"
    benchmark.extra_info["extra_backward"] = extra.pop()
