"""Ratio tables from one benchmark run: ours vs PML vs the cdist floor, memory, weighting cost.

Usage: python -m benchmarks.ratios [RUN.json]
RUN.json is `.benchmarks/last_run.json` (written by every `make bench`) or a
pytest-benchmark `--benchmark-json` file of the same run. Goals are reported as
met / not met, never asserted.
"""

import json
import sys
from pathlib import Path
from typing import Optional

from benchmarks.cases import VARIANTS

DEFAULT_RECORD = Path(".benchmarks") / "last_run.json"

# (variant, B, ratio, bound, description); ratio "speedup" = PML / ours, "floor" = ours / floor
SPEED_GOALS = (
    ("batch_all_sorted", 1024, "speedup", 20.0, "batch-all sorted >= 20x faster than PML at B=1024"),
    ("batch_all_sorted", 4096, "floor", 5.0, "batch-all sorted within 5x of the floor at B=4096"),
    ("semi_hard_tf", 1024, "speedup", 100.0, "semi-hard tf >= 100x faster than PML (semihard miner) at B=1024"),
    ("semi_hard_pml", 1024, "speedup", 100.0, "semi-hard pml >= 100x faster than PML at B=1024"),
)
HARD_FLOOR_BOUND = 2.0
PEAK_BOUND_GB = 1.5


def load(path) -> dict:
    """-> {"benchmarks": [...], "tripletlab_skipped": [...]} from a run record or --benchmark-json file."""
    data = json.loads(Path(path).read_text())
    return {"benchmarks": data["benchmarks"], "tripletlab_skipped": data.get("tripletlab_skipped", []),
            "tripletlab_run": data.get("tripletlab_run", {})}


def _index(record: dict) -> dict:
    """-> {(kind, case, B): benchmark dict}."""
    out = {}
    for bench in record["benchmarks"]:
        info = bench.get("extra_info", {})
        if "kind" in info:
            out[(info["kind"], info["case"], info["B"])] = bench
    return out


def _skips(record: dict) -> dict:
    return {(s["kind"], s["case"], s["B"]): s["reason"] for s in record["tripletlab_skipped"]}


def _median(bench: Optional[dict]) -> Optional[float]:
    return _stat(bench, "median")


def _stat(bench: Optional[dict], name: str) -> Optional[float]:
    return None if bench is None else bench["stats"][name]


def _paired(bench: Optional[dict], companion: str) -> Optional[float]:
    """-> the cell's median per-round ratio to a companion timed between its rounds, or None."""
    if bench is None:
        return None
    paired = bench["extra_info"].get("paired", {}).get(companion)
    return None if paired is None else paired["ratio"]


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g}"


def _x(ratio: Optional[float]) -> str:
    return "-" if ratio is None else f"{ratio:.3g}x"


def _ratio(top, bottom) -> Optional[float]:
    return None if top is None or bottom is None else top / bottom


def loss_rows(record: dict) -> list:
    """-> one dict per (variant, B) with ours / PML / floor medians (s) and the two ratios."""
    index = _index(record)
    sizes = sorted({key[2] for key in list(index) + list(_skips(record))
                    if key[0] in ("ours", "pml", "floor")})
    rows = []
    for variant in VARIANTS:
        for size in sizes:
            ours = index.get(("ours", variant.name, size))
            pml = index.get(("pml", variant.pml, size))
            floor = index.get(("floor", "cdist", size))
            rows.append({"variant": variant.name, "B": size, "pml": variant.pml, "ours_s": _median(ours),
                         "pml_s": _median(pml), "floor_s": _median(floor),
                         "speedup": _paired(pml, variant.name), "floor": _paired(ours, "floor"),
                         "speedup_min": _ratio(_stat(pml, "min"), _stat(ours, "min")),
                         "floor_min": _ratio(_stat(ours, "min"), _stat(floor, "min"))})
    return rows


def loss_table(record: dict) -> str:
    """-> Markdown table: median ms of ours, PML, floor (own cells); paired ratios; ratios of the cells' minima."""
    lines = ["| variant | B | ours ms | PML ms | floor ms | PML / ours | ours / floor "
             "| PML / ours (min) | ours / floor (min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in loss_rows(record):
        lines.append(f"| {row['variant']} | {row['B']} | {_ms(row['ours_s'])} | {_ms(row['pml_s'])} | "
                     f"{_ms(row['floor_s'])} | {_x(row['speedup'])} | {_x(row['floor'])} | "
                     f"{_x(row['speedup_min'])} | {_x(row['floor_min'])} |")
    return "\n".join(lines)


def skipped_lines(record: dict) -> str:
    skips = record["tripletlab_skipped"]
    return "\n".join(f"- {s['kind']} {s['case']} B={s['B']}: {s['reason']}" for s in skips)


def memory_lines(record: dict) -> str:
    lines = []
    for (kind, case, size), bench in sorted(_index(record).items()):
        if kind == "memory":
            info = bench["extra_info"]
            lines.append(f"- {case} B={size}: peak RSS +{info['delta_mib']:.0f} MiB over a "
                         f"{info['baseline_rss_mib']:.0f} MiB baseline ({info['method']})")
    return "\n".join(lines)


def weighting_table(record: dict) -> str:
    index = _index(record)
    steps = {case: bench for (kind, case, _), bench in index.items() if kind == "weighting"}
    if not steps:
        return ""
    lines = ["| method | ms / step | ratio to fixed (paired) | extra backward passes / step |",
             "| --- | ---: | ---: | ---: |"]
    for case, bench in steps.items():
        info = bench["extra_info"]
        lines.append(f"| {case} | {_ms(_median(bench))} | {_x(_paired(bench, 'fixed'))} | "
                     f"{info['extra_backward']} |")
    lines.append("")
    lines.append("Each method's cell times a separate `fixed` trainer between its rounds; the ratio is the "
                 "median of the per-round ratios (fixed's own row shows the noise: fixed vs fixed).")
    return "\n".join(lines)


def goal_lines(record: dict) -> str:
    """-> one Markdown bullet per goal: met / not met / not measured, with the number."""
    rows = {(r["variant"], r["B"]): r for r in loss_rows(record)}
    lines = []
    for variant, size, kind, bound, text in SPEED_GOALS:
        value = rows.get((variant, size), {}).get(kind)
        met = None if value is None else (value >= bound if kind == "speedup" else value <= bound)
        lines.append(_goal(text, met, _x(value)))
    for (variant, size), row in sorted(rows.items()):
        if variant == "batch_hard":
            value = row["floor"]
            met = None if value is None else value <= HARD_FLOOR_BOUND
            lines.append(_goal(f"batch-hard within {HARD_FLOOR_BOUND:g}x of the floor at B={size}", met, _x(value)))
    peak = _index(record).get(("memory", "batch_all_sorted", 4096))
    if peak is None:
        lines.append(_goal(f"batch-all sorted peak < {PEAK_BOUND_GB} GB at B=4096", None, "-"))
    else:
        mib = peak["extra_info"]["delta_mib"]
        gb = mib * 2 ** 20 / 1e9
        lines.append(_goal(f"batch-all sorted peak < {PEAK_BOUND_GB} GB (1e9 bytes) at B=4096", gb < PEAK_BOUND_GB,
                           f"{gb:.2f} GB = {mib / 1024:.2f} GiB"))
    return "\n".join(lines)


def _goal(text: str, met: Optional[bool], value: str) -> str:
    verdict = "not measured" if met is None else ("met" if met else "NOT met")
    return f"- {text}: {verdict} ({value})"


def run_line(record: dict) -> str:
    """-> one line: torch threads, cores, load average at start and end, versions."""
    run = record.get("tripletlab_run") or {}
    if not run:
        return "Run conditions: not recorded."
    return (f"torch threads {run['torch_threads']} of {run['cpu_cores']} cores; 1-min load average "
            f"{run['loadavg_1min_start']:.1f} at start, {run['loadavg_1min_end']:.1f} at end; "
            f"torch {run['torch']}, pytorch-metric-learning {run['pytorch_metric_learning']}.")


def report(record: dict) -> str:
    """-> the whole Markdown report of one run."""
    parts = [run_line(record)]
    if any(row["ours_s"] or row["pml_s"] for row in loss_rows(record)):
        parts += ["### Forward + backward per call (D=128, K=8 per class, float32, CPU)",
                  "Times: median of each cell. PML / ours and ours / floor: median of per-round ratios, "
                  "the two timed back to back (robust to load drift). (min): ratio of the cells' minima.",
                  loss_table(record)]
    for title, body in (("Skipped cells", skipped_lines(record)), ("Peak memory", memory_lines(record)),
                        ("Weighting cost per training step", weighting_table(record)),
                        ("Goals", goal_lines(record))):
        if body:
            parts += [f"### {title}", body]
    return "\n\n".join(parts)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT_RECORD
    if not path.exists():
        print(f"no benchmark record at {path}: run `make bench` first", file=sys.stderr)
        return 2
    print(report(load(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
