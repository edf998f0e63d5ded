"""Peak memory (VmHWM peak-RSS delta, fresh subprocess) of batch-all sorted and the floor at B=4096.

The timing pytest-benchmark prints for these cells is the child's wall time
(imports included), not a loss timing; the numbers are in extra_info.
"""

import pytest

from benchmarks.cases import VARIANTS_BY_NAME
from benchmarks.memory import peak_rss

CASES = ("floor", "batch_all_sorted")
MEMORY_B = 4096


@pytest.mark.parametrize("case", CASES)
def test_peak_memory(benchmark, cell, case):
    skip = cell("memory", case, MEMORY_B)
    if case != "floor":
        try:
            VARIANTS_BY_NAME[case].ours()
        except (ImportError, AttributeError) as error:
            skip(f"our function is not available: {error}")
    result = benchmark.pedantic(peak_rss, args=(case, MEMORY_B), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["peak_rss_mib"] >= result["baseline_rss_mib"] > 0
