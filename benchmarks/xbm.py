"""Batch-vs-memory losses: workloads, the floor, peak memory and the PML probe.

The workload: a memory of M references (M, D) float32, standard normal, and a batch of
B = 256 anchors that are the memory's first B entries (as just after enqueueing: each
anchor's own entry is excluded, `anchor_index_in_refs` = arange(B)); gradients to the
anchors only (the memory is detached). Labels: "pk" = classes of K = 8 consecutive
entries (each anchor has 7 positives in the memory), "random" = uniform over M / 8 classes.
The floor: the (B, M) distance matrix forward + backward, `torch.cdist(anchors, memory).sum()`.

    python -m benchmarks.xbm memory CASE M      # peak-RSS delta of one step (JSON)
    python -m benchmarks.xbm pml KEY M LIMIT_GIB # one PML CrossBatchMemory call under an address-space limit (JSON)
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time

import torch

from benchmarks.workloads import D, K, MARGIN, SEED, bench_device, use_bench_threads

XBM_B = 256
XBM_SIZES = (8192, 65536)
PML_SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)  # tried in order until one fails
PML_LIMIT_GIB = 8         # address-space limit of each PML child (the machine is shared)
PML_TIMEOUT_S = 120       # a PML call slower than this counts as failing there


def make_memory(memory_size: int, *, layout: str = "pk", batch_size: int = XBM_B):
    """-> anchors (B, D) leaf with grad, labels (B,), memory (M, D), memory labels (M,), own (B,) int64."""
    gen = torch.Generator().manual_seed(SEED)
    memory = torch.randn(memory_size, D, generator=gen)
    if layout == "pk":
        memory_labels = torch.arange(memory_size) // K
    else:
        memory_labels = torch.randint(0, memory_size // K, (memory_size,), generator=gen)
    device = bench_device()
    memory, memory_labels = memory.to(device), memory_labels.to(device)
    anchors = memory[:batch_size].clone().requires_grad_(True)
    return anchors, memory_labels[:batch_size].clone(), memory, memory_labels, torch.arange(batch_size, device=device)


def _ours(function: str, **fixed):
    def build():
        import losses
        fn = getattr(losses, function)

        def loss_fn(anchors, labels, memory, memory_labels, own):
            return fn(anchors, labels, memory, memory_labels, anchor_index_in_refs=own, metric="euclidean",
                      **{"margin": MARGIN, **fixed})
        return loss_fn
    return build


def floor():
    return lambda anchors, labels, memory, memory_labels, own: torch.cdist(anchors, memory).sum()


# variant -> (our builder, the PML key it is compared with or None)
XBM_VARIANTS = {
    "batch_all": (_ours("batch_all_triplet_loss_refs", reduction="mean_positive"), "batch_all"),
    "batch_hard": (_ours("batch_hard_triplet_loss_refs", reduction="mean"), "batch_hard"),
    "batch_hard_soft": (_ours("batch_hard_triplet_loss_refs", reduction="mean", soft=True, margin=None), None),
    "semi_hard_tf": (_ours("semi_hard_triplet_loss_refs", semantics="tf", reduction="mean"), None),
    "semi_hard_pml": (_ours("semi_hard_triplet_loss_refs", semantics="pml", reduction="mean_positive"),
                      "semi_hard_pml"),
}


def pml_builder(key: str, memory_size: int):
    """-> loss_fn(anchors, labels, memory, memory_labels, own): PML CrossBatchMemory with its memory preset."""
    from pytorch_metric_learning import distances, losses, miners, reducers
    distance = distances.LpDistance(p=2, power=1, normalize_embeddings=False)
    reducer = reducers.MeanReducer() if key == "batch_hard" else reducers.AvgNonZeroReducer()
    loss = losses.TripletMarginLoss(margin=MARGIN, distance=distance, reducer=reducer)
    miner = {"batch_all": None, "batch_hard": miners.BatchHardMiner(distance=distance),
             "semi_hard_pml": miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard",
                                                        distance=distance)}[key]
    wrapper = losses.CrossBatchMemory(loss, D, memory_size=memory_size, miner=miner)

    def loss_fn(anchors, labels, memory, memory_labels, own):
        wrapper.embedding_memory, wrapper.label_memory = memory.clone(), memory_labels.clone()
        wrapper.has_been_filled, wrapper.queue_idx = True, 0  # full; the batch goes to slots 0..B-1 (= own)
        return wrapper(anchors, labels)
    return loss_fn


def step(loss_fn, args) -> float:
    """One forward + backward; -> the loss value."""
    args[0].grad = None
    loss = loss_fn(*args)
    loss.backward()
    return loss.item()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory_here(case: str, memory_size: int) -> dict:
    """case ("floor" or a variant), M -> VmHWM delta of one step (fresh process; as benchmarks/memory.py)."""
    loss_fn = floor() if case == "floor" else XBM_VARIANTS[case][0]()
    step(loss_fn, make_memory(1024, batch_size=64))  # lazy initialisation
    args = make_memory(memory_size)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    baseline = _status_mib("VmHWM")
    step(loss_fn, args)
    peak = _status_mib("VmHWM")
    return {"case": case, "M": memory_size, "baseline_rss_mib": baseline, "peak_rss_mib": peak,
            "delta_mib": peak - baseline}


def pml_here(key: str, memory_size: int, limit_gib: float) -> dict:
    """One PML call at M under an address-space limit; -> {"ok", "seconds" or "error"}."""
    limit = int(limit_gib * 1024 ** 3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    args = make_memory(memory_size)
    try:
        loss_fn = pml_builder(key, memory_size)
        start = time.perf_counter()
        value = step(loss_fn, args)
        return {"ok": True, "seconds": time.perf_counter() - start, "value": value}
    except (MemoryError, RuntimeError) as error:  # torch reports a failed allocation as RuntimeError
        return {"ok": False, "error": f"{type(error).__name__}: {str(error)[:200]}"}


def child(*args: str, timeout_s: float) -> dict:
    """-> the JSON line of `python -m benchmarks.xbm ARGS`, or {"ok": False, "error"} on a timeout or crash."""
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.xbm", *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"slower than {timeout_s:.0f} s"}
    if done.returncode != 0:
        return {"ok": False, "error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_pml(key: str) -> dict:
    """-> {"largest_ok": M or None, "seconds": at that M, "failed_at": M or None, "error"}: M tried in order."""
    out = {"largest_ok": None, "seconds": None, "value": None, "failed_at": None, "error": None}
    for memory_size in PML_SIZES:
        result = child("pml", key, str(memory_size), str(PML_LIMIT_GIB), timeout_s=PML_TIMEOUT_S)
        if not result.get("ok"):
            out.update(failed_at=memory_size, error=result["error"])
            break
        out.update(largest_ok=memory_size, seconds=result["seconds"], value=result["value"])
    return out


def report_lines(record: dict) -> str:
    """-> Markdown lines of the batch-vs-memory cells of one run ("" when it has none)."""
    cells = [b for b in record["benchmarks"] if b.get("extra_info", {}).get("kind", "").startswith("xbm")]
    if not cells:
        return ""
    info = {(b["extra_info"]["kind"], b["extra_info"]["case"], b["extra_info"].get("M"),
             b["extra_info"]["layout"]): b for b in cells}
    lines = ["| variant | M | labels | ours ms | floor ms | ours / floor (paired) | bar 3x |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for (kind, case, memory_size, layout), bench in sorted(info.items(), key=lambda kv: str(kv[0])):
        if kind != "xbm":
            continue
        paired = bench["extra_info"].get("paired", {}).get("floor")
        floor_bench = info.get(("xbm_floor", "floor", memory_size, layout))
        ratio = None if paired is None else paired["ratio"]
        floor_ms = None if floor_bench is None else floor_bench["stats"]["median"] * 1e3
        lines.append(f"| {case} | {memory_size} | {layout} | {bench['stats']['median'] * 1e3:.0f} | "
                     f"{_fmt(floor_ms, '{:.0f}')} | {_fmt(ratio, '{:.2f}x')} | {_bar(ratio, 3.0)} |")
    memory = [b["extra_info"] for b in cells if b["extra_info"]["kind"] == "xbm_memory"]
    floors = {m["M"]: m["delta_mib"] for m in memory if m["case"] == "floor"}
    if memory:
        lines += ["", "| peak memory | M | delta MiB | / floor's | bar 2x |", "| --- | --- | --- | --- | --- |"]
        for m in sorted(memory, key=lambda m: (m["M"], m["case"])):
            base = floors.get(m["M"])
            share = None if not base or m["case"] == "floor" else m["delta_mib"] / base
            lines.append(f"| {m['case']} | {m['M']} | {m['delta_mib']:.0f} | {_fmt(share, '{:.2f}x')} | "
                         f"{_bar(share, 2.0)} |")
    pml = [b["extra_info"] for b in cells if b["extra_info"]["kind"] == "xbm_pml"]
    if pml:
        lines += ["", "| PML CrossBatchMemory (B=256, pk) | largest M run | s per call there | ours ms there | "
                  "fails at M | why |", "| --- | --- | --- | --- | --- | --- |"]
        for p in pml:
            ours = p.get("ours_s")
            ours_ms = None if ours is None else ours * 1e3
            lines.append(f"| {p['case']} | {p['largest_ok'] or '-'} | {_fmt(p['seconds'], '{:.2f}')} | "
                         f"{_fmt(ours_ms, '{:.0f}')} | {p['failed_at'] or 'none up to 65536'} | "
                         f"{(p['error'] or '')[:80]} |")
    return "\n".join(lines)


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _bar(ratio, bound: float) -> str:
    return "-" if ratio is None else ("met" if ratio <= bound else "NOT met")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    use_bench_threads()
    if len(argv) == 3 and argv[0] == "memory":
        print(json.dumps(measure_memory_here(argv[1], int(argv[2]))))
        return 0
    if len(argv) == 4 and argv[0] == "pml":
        print(json.dumps(pml_here(argv[1], int(argv[2]), float(argv[3]))))
        return 0
    print("usage: python -m benchmarks.xbm memory CASE M | pml KEY M LIMIT_GIB", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
