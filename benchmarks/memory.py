"""Peak memory of one forward + backward, measured in a fresh subprocess.

Method: the kernel's peak resident set of the process (VmHWM in /proc/self/status,
as the OS sees it: torch's CPU allocations included, which tracemalloc does not
see). The child warms the case up at B=64 (lazy initialisation), builds the batch,
resets the peak to the current RSS (`echo 5 > /proc/self/clear_refs`), then
reports how far one forward + backward at the requested B raises the peak above
that baseline. (ru_maxrss is not used: Linux carries the parent's peak across
fork + exec, so a child started by a big pytest process reports the parent's.)

    python -m benchmarks.memory CASE B     # prints one JSON object
CASE is "floor" or a variant name of benchmarks.cases.
"""

import gc
import json
import subprocess
import sys

from benchmarks.cases import VARIANTS_BY_NAME, floor
from benchmarks.workloads import forward_backward, make_batch, use_bench_threads

METHOD = "VmHWM peak-RSS delta in a fresh subprocess"


def _status_mib(field: str) -> float:
    """field "VmHWM" or "VmRSS" of /proc/self/status -> MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure_here(case: str, batch_size: int) -> dict:
    """-> {"baseline_rss_mib", "peak_rss_mib", "delta_mib"} of one step; meaningful in a fresh process only."""
    loss_fn = floor() if case == "floor" else VARIANTS_BY_NAME[case].ours()
    forward_backward(loss_fn, *make_batch(64))
    x, y = make_batch(batch_size)
    gc.collect()
    _reset_peak()
    baseline = _status_mib("VmHWM")
    forward_backward(loss_fn, x, y)
    peak = _status_mib("VmHWM")
    return {"case": case, "B": batch_size, "baseline_rss_mib": baseline, "peak_rss_mib": peak,
            "delta_mib": peak - baseline, "method": METHOD}


def peak_rss(case: str, batch_size: int, *, timeout_s: float = 300) -> dict:
    """case, B -> the measure_here dict, from a fresh `python -m benchmarks.memory` child."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", case, str(batch_size)],
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child for {case} B={batch_size} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.memory CASE B", file=sys.stderr)
        return 2
    use_bench_threads()
    print(json.dumps(measure_here(argv[0], int(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
