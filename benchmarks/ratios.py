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
from benchmarks.workloads import LAYOUTS

DEFAULT_RECORD = Path(".benchmarks") / "last_run.json"

# (variant, B, ratio, bound, description); ratio "speedup" = PML / ours
SPEED_GOALS = (
    ("batch_all_sorted", 1024, "speedup", 20.0, "batch-all sorted >= 20x faster than PML at B=1024"),
    ("semi_hard_tf", 1024, "speedup", 100.0, "semi-hard tf >= 100x faster than PML (semihard miner) at B=1024"),
    ("semi_hard_pml", 1024, "speedup", 100.0, "semi-hard pml >= 100x faster than PML at B=1024"),
)
FLOOR_BOUND = 3.0               # every exact variant within 3x of the floor ...
FLOOR_SIZES = (1024, 4096)      # ... at these B, on both label layouts
PEAK_FLOOR_BOUND = 2.0          # peak-memory increment at B=4096 within 2x of the floor's
PEAK_LIMIT_GB = 8.0             # B=16384 batch-all and semi-hard run under this


def load(path) -> dict:
    """-> {"benchmarks": [...], "tripletlab_skipped": [...]} from a run record or --benchmark-json file.

    Records made before label layouts get layout "pk" (their only one) here, once.
    """
    data = json.loads(Path(path).read_text())
    skipped = [dict(s, layout=s.get("layout", "pk")) for s in data.get("tripletlab_skipped", [])]
    for bench in data["benchmarks"]:
        info = bench.setdefault("extra_info", {})
        if "kind" in info:
            info.setdefault("layout", "pk")
    return {"benchmarks": data["benchmarks"], "tripletlab_skipped": skipped,
            "tripletlab_run": data.get("tripletlab_run", {})}


def _index(record: dict) -> dict:
    """-> {(kind, case, B, layout): benchmark dict}."""
    out = {}
    for bench in record["benchmarks"]:
        info = bench.get("extra_info", {})
        if "kind" in info:
            out[(info["kind"], info["case"], info["B"], info["layout"])] = bench
    return out


def _skips(record: dict) -> dict:
    return {(s["kind"], s["case"], s["B"], s["layout"]): s["reason"] for s in record["tripletlab_skipped"]}


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
    """-> one dict per (variant, layout, B) measured: ours / PML / ST / floor medians (s) and the ratios."""
    index, skips = _index(record), _skips(record)
    cells = sorted({(key[3], key[2]) for key in list(index) + list(skips) if key[0] == "ours"})
    rows = []
    for variant in VARIANTS:
        for layout, size in cells:
            ours = index.get(("ours", variant.name, size, layout))
            if ours is None and ("ours", variant.name, size, layout) not in skips:
                continue
            pml = index.get(("pml", variant.pml, size, layout))
            st = index.get(("st", variant.st, size, layout)) if variant.st else None
            floor = index.get(("floor", "cdist", size, "pk"))
            rows.append({"variant": variant.name, "B": size, "layout": layout, "pml": variant.pml,
                         "exact": variant.exact, "ours_s": _median(ours), "pml_s": _median(pml),
                         "st_s": _median(st), "floor_s": _median(floor),
                         "speedup": _paired(pml, variant.name), "st_speedup": _paired(st, variant.name),
                         "floor": _paired(ours, "floor"),
                         "floor_min": _ratio(_stat(ours, "min"), _stat(floor, "min"))})
    return rows


def loss_table(rows: list) -> str:
    """rows from `loss_rows` -> Markdown table: median ms of ours, PML, ST, floor (own cells); paired ratios;
    ratios of the minima."""
    lines = ["| variant | labels | B | ours ms | floor ms | ours / floor | PML ms | PML / ours | ST ms | ST / ours "
             "| ours / floor (min) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['layout']} | {row['B']} | {_ms(row['ours_s'])} | "
                     f"{_ms(row['floor_s'])} | {_x(row['floor'])} | {_ms(row['pml_s'])} | {_x(row['speedup'])} | "
                     f"{_ms(row['st_s'])} | {_x(row['st_speedup'])} | {_x(row['floor_min'])} |")
    return "\n".join(lines)


def ratio_summary(rows: list) -> str:
    """rows from `loss_rows` -> compact table: ours / floor of every exact variant, one column per (labels, B)."""
    rows = [r for r in rows if r["exact"]]
    columns = sorted({(r["layout"], r["B"]) for r in rows}, key=lambda c: (c[1], c[0]))
    if not columns:
        return ""
    lines = ["| variant | " + " | ".join(f"{layout} B={size}" for layout, size in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    by_cell = {(r["variant"], r["layout"], r["B"]): r["floor"] for r in rows}
    for name in dict.fromkeys(r["variant"] for r in rows):
        lines.append(f"| {name} | " + " | ".join(_x(by_cell.get((name, layout, size)))
                                                 for layout, size in columns) + " |")
    return "\n".join(lines)


def skipped_lines(record: dict) -> str:
    skips = record["tripletlab_skipped"]
    return "\n".join(f"- {s['kind']} {s['case']} B={s['B']} {s['layout']}: {s['reason']}" for s in skips)


def memory_lines(record: dict) -> str:
    lines = []
    for (kind, case, size, _), bench in sorted(_index(record).items()):
        if kind == "memory":
            info = bench["extra_info"]
            lines.append(f"- {case} B={size}: peak RSS +{info['delta_mib']:.0f} MiB over a "
                         f"{info['baseline_rss_mib']:.0f} MiB baseline ({info['method']})")
    return "\n".join(lines)


def weighting_table(record: dict) -> str:
    index = _index(record)
    steps = {case: bench for (kind, case, _, _), bench in index.items() if kind == "weighting"}
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


def goal_lines(record: dict, rows: list) -> str:
    """record, rows from `loss_rows` -> one Markdown bullet per goal: met / not met / not measured, with the number."""
    rows = {(r["variant"], r["B"], r["layout"]): r for r in rows}
    lines = []
    for variant, size, kind, bound, text in SPEED_GOALS:
        value = rows.get((variant, size, "pk"), {}).get(kind)
        met = None if value is None else value >= bound
        lines.append(_goal(text, met, _x(value)))
    for variant in VARIANTS:
        if not variant.exact:
            continue
        for layout in LAYOUTS:
            for size in FLOOR_SIZES:
                value = rows.get((variant.name, size, layout), {}).get("floor")
                met = None if value is None else value <= FLOOR_BOUND
                lines.append(_goal(f"{variant.name} within {FLOOR_BOUND:g}x of the floor at B={size}, {layout} labels",
                                   met, _x(value)))
    index = _index(record)
    floor_peak = index.get(("memory", "floor", 4096, "pk"))
    for (kind, case, size, _), bench in sorted(index.items()):
        if kind != "memory" or case == "floor":
            continue
        mib = bench["extra_info"]["delta_mib"]
        if size == 4096:
            base = None if floor_peak is None else floor_peak["extra_info"]["delta_mib"]
            met = None if base is None else mib <= PEAK_FLOOR_BOUND * base
            value = f"+{mib:.0f} MiB" + ("" if base is None else f" vs floor +{base:.0f} MiB = {mib / base:.2f}x")
            lines.append(_goal(f"{case} peak increment within {PEAK_FLOOR_BOUND:g}x of the floor's at B=4096",
                               met, value))
        else:
            gb = bench["extra_info"]["peak_rss_mib"] * 2 ** 20 / 1e9
            lines.append(_goal(f"{case} runs at B={size} under {PEAK_LIMIT_GB:g} GB peak RSS", gb < PEAK_LIMIT_GB,
                               f"{gb:.2f} GB"))
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
            f"torch {run['torch']}, pytorch-metric-learning {run['pytorch_metric_learning']}, "
            f"sentence-transformers {run.get('sentence_transformers')}; device {run.get('device', 'cpu')}.")


def xbm_lines(record: dict) -> str:
    """-> the batch-vs-memory tables (benchmarks/xbm.py), "" without such cells."""
    from benchmarks.xbm import report_lines
    return report_lines(record)


def report(record: dict) -> str:
    """-> the whole Markdown report of one run."""
    parts = [run_line(record)]
    rows = loss_rows(record)
    if any(row["ours_s"] or row["pml_s"] for row in rows):
        device = (record.get("tripletlab_run") or {}).get("device", "cpu")
        parts += [f"### Forward + backward per call (D=128, float32, {device}; labels: pk = B/8 classes of 8, "
                  "random = uniform over B/8 classes)",
                  "Times: median of each cell. Ratios: median of per-round ratios, the two timed back to back "
                  "(robust to load drift). (min): ratio of the cells' minima. ST = sentence-transformers.",
                  loss_table(rows),
                  "### Ours / floor, exact variants", ratio_summary(rows)]
    for title, body in (("Skipped cells", skipped_lines(record)), ("Peak memory", memory_lines(record)),
                        ("Weighting cost per training step", weighting_table(record)),
                        ("Batch vs memory (B=256, D=128)", xbm_lines(record)),
                        ("Goals", goal_lines(record, rows))):
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
