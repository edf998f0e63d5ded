"""Peak memory (VmHWM peak-RSS delta, fresh subprocess) of the exact variants and the floor.

B=4096 for the floor and every exact variant (the bar: within 2x of the floor's increment);
B=16384 for batch-all and semi-hard (the bar: they run, under 8 GB). The timing
pytest-benchmark prints for these cells is the child's wall time (imports included),
not a loss timing; the numbers are in extra_info.
"""

import pytest

from benchmarks.cases import VARIANTS, VARIANTS_BY_NAME
from benchmarks.memory import peak_rss
from benchmarks.workloads import LARGE, bench_device

MEMORY_B = 4096
CELLS = [("floor", MEMORY_B)] + [(v.name, MEMORY_B) for v in VARIANTS if v.exact] + [
    (v.name, LARGE) for v in VARIANTS if v.large and LARGE]


@pytest.mark.parametrize("case, batch_size", CELLS, ids=[f"{c}-B{b}" for c, b in CELLS])
def test_peak_memory(benchmark, cell, case, batch_size):
    skip = cell("memory", case, batch_size)
    if bench_device().type != "cpu":
        skip("peak memory is measured as the CPU process's resident set: CPU runs only")
    if case != "floor":
        try:
            VARIANTS_BY_NAME[case].ours()
        except (ImportError, AttributeError) as error:
            skip(f"our function is not available: {error}")
    result = benchmark.pedantic(peak_rss, args=(case, batch_size), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["peak_rss_mib"] >= result["baseline_rss_mib"] > 0
