"""Grid throughput: wall time, runs per minute, share of time outside training steps.

    .venv/bin/python -m benchmarks.perf ablations/grids/perf100.toml --workers 1 2

Each worker count runs the whole grid into a fresh temporary store. "Outside
training" is 1 - (sum of the runs' train_time_s) / (wall time x workers): data
loading, evaluation, mining, process start-up, scheduling and storage.

On a shared machine wall times depend on the load, so the runs' process CPU
times are reported too: "CPU s/run" (whole run_one), "CPU outside training"
(1 - train CPU / run CPU: data, evaluation, mining inside the runs) and
"CPU-bound wall" = sum of run CPU / workers, the wall time the grid would take
on idle cores without start-up and scheduling.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ablations.runner import run_grid


def measure(grid_path: str | Path, workers: int) -> dict[str, float]:
    """Run the grid once with `workers` local processes -> timing summary."""
    with tempfile.TemporaryDirectory(prefix="tripletlab-perf-") as tmp:
        start = time.perf_counter()
        store = run_grid(grid_path, Path(tmp) / "store", workers=workers)
        wall = time.perf_counter() - start
        runs = store.runs()
    train = float(runs["train_time_s"].sum())
    cpu = float(runs["cpu_time_s"].sum())
    return {"workers": workers, "runs": len(runs), "wall_s": wall,
            "runs_per_min": 60 * len(runs) / wall,
            "outside_training": 1 - train / (wall * workers),
            "finished": int((runs["status"] == "finished").sum()),
            "cpu_per_run": cpu / len(runs),
            "cpu_outside_training": 1 - float(runs["train_cpu_time_s"].sum()) / cpu,
            "cpu_bound_wall_s": cpu / workers}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    results = [measure(args.grid, w) for w in args.workers]
    base = results[0]
    print("| workers | finished/runs | wall (s) | runs/min | outside training | speed-up "
          "| CPU s/run | CPU outside training | CPU-bound wall (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['workers']} | {r['finished']}/{r['runs']} | {r['wall_s']:.1f} | "
              f"{r['runs_per_min']:.1f} | {100 * r['outside_training']:.1f}% | "
              f"{r['runs_per_min'] / base['runs_per_min']:.2f}x | {r['cpu_per_run']:.2f} | "
              f"{100 * r['cpu_outside_training']:.1f}% | {r['cpu_bound_wall_s']:.1f} |")
    print(f"load average during the measurement: {os.getloadavg()}")


if __name__ == "__main__":
    main()
