"""Is a learned non-linear metric the point of a generated dataset? Its gaps, measured.

    python -m benchmarks.dataset_gaps --dataset pose                  # single split, 3 seeds
    python -m benchmarks.dataset_gaps --dataset pose --folds 3 --workers 2 --json gaps.json

For each class fold (`class_folds` = --folds; 1 = train 50% / validation 20% / test
30% of the sorted classes), test MAP@R of:
- raw: the standardised input features; untrained: the default MLP at init (seed 0);
- ideal: the generator's hidden content (return_content=True), split the same way;
- classical metrics, fitted on the training classes only, their dimension chosen on
  validation MAP@R from a fixed list: LDA (svd), NCA, PCA whitening, and a classical
  non-linear one, LDA on the degree-2 monomials of the features (poly2_lda);
- trained MLPs through ablations.train.run_one, each recipe (loss, lr) over --seeds
  seeds, with their wall and process CPU time per run (torch on one thread).
Then the gaps the issue asks for: ideal - raw, ideal - best classical (chosen on
validation), and best trained recipe (chosen on validation) - best classical, paired
over (fold, seed) units. Nothing here asserts a number; numbers are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ablations.ceiling import content_of, map_at_r_of_distances, orbit_distances

DIMS = (2, 4, 6, 8, 12, 16, 24, 32)              # candidate n_components (<= features, LDA: < classes)
LOSSES = ("batch_all", "semi_hard_tf", "batch_hard_soft", "ntxent")
LRS = (1e-3, 3e-3)


def map_at_r(x, y, *, metric: str = "euclidean") -> float:
    from ablations.evaluate import retrieval_metrics

    return retrieval_metrics(np.asarray(x, dtype=np.float32), y, metric=metric, seed=0)["map_at_r"]


def _classical(name: str, k: int, x_train, y_train):
    """-> a fitted transform x -> features, fitted on the training classes only."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NeighborhoodComponentsAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    if name == "lda":
        model = LinearDiscriminantAnalysis(solver="svd", n_components=k)
    elif name == "nca":
        model = NeighborhoodComponentsAnalysis(n_components=k, max_iter=100, random_state=0)
    elif name == "pca_whiten":
        model = PCA(n_components=k, whiten=True, random_state=0)
    elif name == "poly2_lda":
        model = make_pipeline(PolynomialFeatures(2, include_bias=False), StandardScaler(),
                              LinearDiscriminantAnalysis(solver="svd", n_components=k))
    else:
        raise ValueError(f"unknown classical method {name!r}")
    return model.fit(x_train, y_train) if name != "pca_whiten" else model.fit(x_train)


def classical_scores(split) -> dict[str, dict]:
    """Split -> {method: {k, val, test}}: n_components chosen on validation MAP@R from DIMS."""
    D, C = split.num_features, len(split.train_classes)
    limits = {"lda": min(D, C - 1), "nca": D, "pca_whiten": D,
              "poly2_lda": min(D * (D + 3) // 2, C - 1)}
    out = {}
    for name, limit in limits.items():
        best = None
        for k in [k for k in DIMS if k <= limit]:
            model = _classical(name, k, split.x_train, split.y_train)
            val = map_at_r(model.transform(split.x_val), split.y_val)
            if best is None or val > best[1]:
                best = (k, val, model)
        k, val, model = best
        out[name] = {"k": k, "val": val, "test": map_at_r(model.transform(split.x_test), split.y_test)}
    return out


def reference_scores(dataset: str, folds: int, fold: int) -> dict[str, dict]:
    """-> {raw, untrained, ideal, lda, nca, pca_whiten, poly2_lda: {val, test[, k]}} for one fold."""
    import torch

    from ablations.config import resolve_config
    from ablations.data import load_split, split_by_class
    from ablations.model import build_encoder

    torch.set_num_threads(1)
    cfg = resolve_config({"dataset": dataset, "class_folds": folds, "fold": fold})
    split = load_split(cfg)
    out = {"raw": {"val": map_at_r(split.x_val, split.y_val),
                   "test": map_at_r(split.x_test, split.y_test)}}
    torch.manual_seed(0)
    encoder = build_encoder(cfg, split.num_features).eval()
    with torch.no_grad():
        out["untrained"] = {s: map_at_r(encoder(torch.from_numpy(x)), y) for s, x, y in
                            (("val", split.x_val, split.y_val), ("test", split.x_test, split.y_test))}
    content = content_of(cfg)
    if content is not None:
        ideal = split_by_class(*content, class_folds=folds, fold=fold)
        out["ideal"] = {"val": map_at_r(ideal.x_val, ideal.y_val),
                        "test": map_at_r(ideal.x_test, ideal.y_test)}
        if cfg.dataset == "pose":  # the best a pose-invariant (and gain-invariant) metric can do
            _, y_all = content
            raw_c = content[0]
            for name, unit in (("ideal_modulo_pose", False), ("ideal_modulo_pose_gain", True)):
                out[name] = {s: map_at_r_of_distances(orbit_distances(raw_c[np.isin(y_all, cs)],
                                                                      unit_gain=unit),
                                                      y_all[np.isin(y_all, cs)])
                             for s, cs in (("val", np.unique(ideal.y_val)),
                                           ("test", np.unique(ideal.y_test)))}
    out.update(classical_scores(split))
    return out


def trained_run(config: dict) -> dict:
    """config dict -> {val, test, wall_s, cpu_s, status} of one run_one call on one thread."""
    import torch

    from ablations.train import run_one

    torch.set_num_threads(1)
    result = run_one(config)
    m = result["metrics"]
    return {"val": m["val_map_at_r"], "test": m["test_map_at_r"], "status": result["status"],
            "wall_s": result["wall_time_s"], "cpu_s": result["cpu_time_s"]}


def _mean(values) -> float:
    return float(np.mean(values))


def paired_interval(diffs) -> tuple[float, float, float]:
    """differences (n,) -> (mean, low, high) of the 95% t-interval."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pose")
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--lrs", default=",".join(map(str, LRS)))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra RunConfig key for every trained run (JSON value), repeatable")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", default="", help="write every number to this file")
    args = parser.parse_args(argv)
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    base = {"dataset": args.dataset, "epochs": args.epochs, "eval_every": args.epochs,
            "sampler_p": 16, "sampler_k": 8, "class_folds": args.folds, **extra}
    recipes = [(loss, float(lr)) for loss in args.losses.split(",") if loss
               for lr in args.lrs.split(",") if lr]
    jobs = [{**base, "loss": loss, "lr": lr, "seed": seed, "fold": fold}
            for fold in range(args.folds) for loss, lr in recipes for seed in range(args.seeds)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        refs = list(pool.map(reference_scores, [args.dataset] * args.folds, [args.folds] * args.folds,
                             range(args.folds)))
        runs = list(pool.map(trained_run, jobs))
    print(f"# {args.dataset}, {args.folds} fold(s) x {args.seeds} seed(s), {args.epochs} epochs, "
          f"extra keys {extra}; {time.perf_counter() - start:.0f} s with {args.workers} worker(s)")
    names = list(refs[0])
    print("\n| reference | val MAP@R | test MAP@R | k per fold |\n| --- | --- | --- | --- |")
    for name in names:
        ks = [str(r[name]["k"]) for r in refs if "k" in r[name]]
        print(f"| {name} | {_mean([r[name]['val'] for r in refs]):.3f} | "
              f"{_mean([r[name]['test'] for r in refs]):.3f} | {' '.join(ks)} |")
    table = {}
    for job, run in zip(jobs, runs):
        table.setdefault((job["loss"], job["lr"]), []).append((job["fold"], job["seed"], run))
    print("\n| recipe | val MAP@R | test MAP@R | wall s / run | cpu s / run | not finished |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for (loss, lr), rows in table.items():
        rs = [r for _, _, r in rows]
        bad = sum(r["status"] != "finished" for r in rs)
        print(f"| {loss} lr {lr:g} | {_mean([r['val'] for r in rs]):.3f} | "
              f"{_mean([r['test'] for r in rs]):.3f} | {statistics.median(r['wall_s'] for r in rs):.2f} | "
              f"{statistics.median(r['cpu_s'] for r in rs):.2f} | {bad} |")
    classical = [n for n in names if n not in ("raw", "untrained") and not n.startswith("ideal")]
    best_c = max(classical, key=lambda n: _mean([r[n]["val"] for r in refs]))
    best_t = max(table, key=lambda key: _mean([r["val"] for _, _, r in table[key]]))
    best_linear = max((n for n in classical if n != "poly2_lda"),
                      key=lambda n: _mean([r[n]["val"] for r in refs]))
    print()
    if "ideal" in names:
        for other in ("raw", best_linear, best_c):
            gap = _mean([r["ideal"]["test"] - r[other]["test"] for r in refs])
            print(f"ideal - {other}: {gap:+.3f} test MAP@R (mean over folds)")
    for ref in dict.fromkeys((best_linear, best_c)):
        diffs = [run["test"] - refs[fold][ref]["test"] for fold, _, run in table[best_t]]
        mean, low, high = paired_interval(diffs)
        print(f"best trained ({best_t[0]} lr {best_t[1]:g}, on validation) - {ref}: {mean:+.3f} "
              f"[{low:+.3f}, {high:+.3f}] test MAP@R, paired over {len(diffs)} (fold, seed) units")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "references": refs,
                       "runs": [{**job, **run} for job, run in zip(jobs, runs)]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
