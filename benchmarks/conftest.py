"""Benchmark session set-up: torch threads, cell skips, and the ratio table at the end.

Torch threads: the machine's cores, or $TRIPLETLAB_BENCH_THREADS (see
benchmarks/workloads.py). The ratio table is printed after pytest-benchmark's own table and saved, with the
raw medians and the skipped cells, to `.benchmarks/last_run.json`, so
`python -m benchmarks.ratios` reprints it from the same run. A run with
`--benchmark-json=PATH` also carries the skipped cells under "tripletlab_skipped".
"""

import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import torch

from benchmarks import ratios
from benchmarks.workloads import bench_device, machine_threads, use_bench_threads

SKIPPED = pytest.StashKey[list]()
RUN = pytest.StashKey[dict]()


def pytest_configure(config):
    config.stash[SKIPPED] = []
    config.stash[RUN] = {
        "torch_threads": use_bench_threads(),
        "cpu_cores": machine_threads(),
        "loadavg_1min_start": os.getloadavg()[0],
        "torch": version("torch"),
        "pytorch_metric_learning": _version_or_none("pytorch-metric-learning"),
        "sentence_transformers": _version_or_none("sentence-transformers"),
        "device": _device_name(),
    }


def _device_name() -> str:
    device = bench_device()
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _version_or_none(package: str):
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _run_info(config) -> dict:
    return dict(config.stash[RUN], loadavg_1min_end=os.getloadavg()[0])


@pytest.fixture
def cell(request, benchmark):
    """-> a function cell(kind, case, B, **info) that labels this benchmark and returns skip(reason)."""
    def label(kind: str, case: str, batch_size: int, layout: str = "pk", **info):
        benchmark.group = f"B={batch_size} {layout}" if kind in ("ours", "pml", "floor", "st") else kind
        benchmark.extra_info.update(kind=kind, case=case, B=batch_size, layout=layout, **info)

        def skip(reason: str):
            request.config.stash[SKIPPED].append({"kind": kind, "case": case, "B": batch_size, "layout": layout,
                                                  "reason": reason})
            pytest.skip(reason)
        return skip
    return label


def _run_record(config) -> dict:
    session = config._benchmarksession
    return {
        # a cell that failed before its first round has no data (and no statistics)
        "benchmarks": [bench.as_dict(include_data=False) for bench in session.benchmarks if bench.stats.data],
        "tripletlab_skipped": config.stash[SKIPPED],
        "tripletlab_run": _run_info(config),
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["tripletlab_skipped"] = config.stash[SKIPPED]
    output_json["tripletlab_run"] = _run_info(config)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables: the ratio table ends the output
def pytest_terminal_summary(terminalreporter, config):
    if not hasattr(config, "_benchmarksession"):
        return
    record = _run_record(config)
    if not record["benchmarks"]:
        return
    out = Path(config.rootpath) / ratios.DEFAULT_RECORD
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    terminalreporter.write_sep("-", "tripletlab ratios (one run)")
    terminalreporter.write_line(ratios.report(record))
    terminalreporter.write_line(f"saved to {out} (reprint: python -m benchmarks.ratios {out})")
