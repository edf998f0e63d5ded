"""Batch-vs-memory losses: time against the (B, M) floor, peak memory, PML's limits.

B = 256, M in {8192, 65536}, D = 128, pk and random labels (benchmarks/xbm.py). No timing is asserted.
"""

import pytest

from benchmarks.timing import call_seconds, run_timed
from benchmarks.xbm import (PML_SIZES, XBM_SIZES, XBM_VARIANTS, child, floor, make_memory, probe_pml, step)
from benchmarks.workloads import LAYOUTS, bench_device

CELLS = [(name, m, layout) for name in XBM_VARIANTS for m in XBM_SIZES for layout in LAYOUTS]


@pytest.mark.parametrize("memory_size", XBM_SIZES, ids=lambda m: f"M{m}")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_xbm_floor(benchmark, cell, memory_size, layout):
    cell("xbm_floor", "floor", 256, layout=layout, M=memory_size)
    args = make_memory(memory_size, layout=layout)
    loss_fn = floor()
    run_timed(benchmark, lambda: step(loss_fn, args), skip_cell=pytest.skip)


@pytest.mark.parametrize("name, memory_size, layout", CELLS, ids=[f"{n}-M{m}-{lay}" for n, m, lay in CELLS])
def test_xbm_ours(benchmark, cell, name, memory_size, layout):
    skip = cell("xbm", name, 256, layout=layout, M=memory_size)
    args = make_memory(memory_size, layout=layout)
    loss_fn, floor_fn = XBM_VARIANTS[name][0](), floor()
    run_timed(benchmark, lambda: step(loss_fn, args), skip_cell=skip,
              companions={"floor": lambda: step(floor_fn, args)})


@pytest.mark.parametrize("case", ["floor", *XBM_VARIANTS])
@pytest.mark.parametrize("memory_size", XBM_SIZES, ids=lambda m: f"M{m}")
def test_xbm_memory(benchmark, cell, case, memory_size):
    skip = cell("xbm_memory", case, 256, M=memory_size)
    if bench_device().type != "cpu":
        skip("peak memory is measured as the CPU process's resident set: CPU runs only")
    result = benchmark.pedantic(lambda: child("memory", case, str(memory_size), timeout_s=600), rounds=1,
                                iterations=1)
    benchmark.extra_info.update(result)
    assert result["peak_rss_mib"] >= result["baseline_rss_mib"] > 0


@pytest.mark.parametrize("key", ["batch_all", "batch_hard", "semi_hard_pml"])
def test_xbm_pml(benchmark, cell, key):
    """PML CrossBatchMemory at M = 1024, 2048, ... until a call fails (8 GiB address space, 120 s)."""
    skip = cell("xbm_pml", key, 256, M=None)
    try:
        import pytorch_metric_learning  # noqa: F401
    except ImportError as error:
        skip(f"pytorch-metric-learning is not installed: {error}")
    result = benchmark.pedantic(probe_pml, args=(key,), rounds=1, iterations=1)
    if result["largest_ok"] is not None:  # ours at the same M, for the ratio
        ours = next(build for build, pml_key in XBM_VARIANTS.values() if pml_key == key)()
        args = make_memory(result["largest_ok"])
        assert step(ours, args) == pytest.approx(result["value"], rel=1e-4)  # the same loss, else no ratio
        result["ours_s"] = min(call_seconds(lambda: step(ours, args)) for _ in range(3))
    benchmark.extra_info.update(result, sizes_tried=list(PML_SIZES))
