"""`run_one(config: dict) -> dict`: train, evaluate and report one run. Pure: no file I/O.

Deterministic given the config (CPU): the seed fixes the model initialisation
(`torch.manual_seed`), the batches (a `torch.Generator`) and the offline
triplets and mining (`numpy.random.default_rng`). The caller sets the number
of torch threads (executors use one per worker).

The result dict:
    run_id, config (resolved, flat), status ("finished" | "diverged" | "failed"),
    error (str | None), diverged_step, diverged_component (None unless diverged),
    metrics {val_precision_at_1, val_r_precision, val_map_at_r, val_nmi, val_recall_at_{1,2,4,8},
             test_...},
    steps  [one dict per step: epoch, step, lr, margin, loss, loss_<c>, weight_<c>,
            gradnorm_<c>, active_fraction, pos_ratio, violation_rate, and
            pair_accuracy (combined) or id_accuracy (triplet_ce)],
    epochs [one dict per validation: epoch, val_precision_at_1, ...],
    embeddings {"X": (N, E) float32, "y": (N,) int64} of the test split, or None,
    wall_time_s (whole call), train_time_s (inside training steps only), and the
    same as process CPU time, cpu_time_s and train_cpu_time_s (load-independent).

A baseline run (`baseline` != "": raw, untrained, lda, nca, pca_whiten;
ablations/baseline_specs.py) is only evaluated: no steps, one validation row at epoch 0,
status "finished"; a classical one (lda, nca, pca_whiten) also returns
`baseline_params` and `baseline_candidates` (JSON text: the number of components
chosen on validation, every candidate's validation MAP@R).

A step whose embeddings, loss component or weighted total is NaN or infinite
stops the run with status "diverged", the step and the component ("embeddings",
a component name, or "total"); its row is kept. Any
exception inside training is caught: status "failed" with the error text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ablations.baselines import evaluate_baseline
from ablations.config import RunConfig, config_hash, resolve_config, stored_config
from ablations.data import cached_split
from ablations.evaluate import METRIC_NAMES, model_embeddings, record_test, record_validation
from ablations.mining import hard_negatives, mix_hard_negatives, random_triplets
from ablations.model import build_encoder
from ablations.objectives import STAT_NAMES, build_memory_term, build_objective, weighting_params
from ablations.sampler import PKSampler
from ablations.schedules import hard_share_at, lr_at, margin_at
from losses.weighting import make_weighting

NAN = float("nan")


class Diverged(Exception):
    def __init__(self, step: int, component: str):
        super().__init__(f"non-finite {component} at step {step}")
        self.step, self.component = step, component


def run_one(config: dict[str, Any], *,
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """config dict (RunConfig keys, optionally "run_id") -> result dict (module docstring).

    progress: called as progress(run_id, epoch, epochs) when training starts
    (epoch 0) and after each epoch; it only observes (executors forward it to the
    progress bar), the result does not depend on it.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    values = {k: v for k, v in config.items() if k != "run_id"}
    cfg = resolve_config(values)
    run_id = config_hash(cfg)
    if config.get("run_id", run_id) != run_id:
        raise ValueError(f"run_id {config['run_id']!r} does not match the config's hash {run_id!r}")
    result: dict[str, Any] = {
        "run_id": run_id, "config": stored_config(cfg), "status": "finished", "error": None,
        "diverged_step": None, "diverged_component": None,
        "metrics": {f"{s}_{m}": NAN for s in ("val", "test") for m in METRIC_NAMES},
        "steps": [], "epochs": [], "embeddings": None, "train_time_s": 0.0,
        "train_cpu_time_s": 0.0,
    }
    try:
        if cfg.baseline:  # evaluated (classical ones fitted), never trained (no steps)
            evaluate_baseline(cfg, cached_split(cfg), result)
        else:
            _train(cfg, result, progress=(lambda epoch: progress(run_id, epoch, cfg.epochs))
                   if progress is not None else None)
    except Diverged as err:
        result.update(status="diverged", error=str(err), diverged_step=err.step,
                      diverged_component=err.component)
    except Exception as err:  # noqa: BLE001 - a failed run is recorded, the grid goes on
        result.update(status="failed", error=f"{type(err).__name__}: {err}")
    result["wall_time_s"] = time.perf_counter() - start
    result["cpu_time_s"] = time.process_time() - cpu_start
    return result


def _train(cfg: RunConfig, result: dict[str, Any], *,
           progress: Callable[[int], None] | None = None) -> None:
    if progress is not None:
        progress(0)  # the run started
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    split = cached_split(cfg)
    classes, y_np = np.unique(split.y_train, return_inverse=True)  # labels -> 0..C-1
    x_train = torch.from_numpy(split.x_train)
    y_train = torch.from_numpy(y_np.astype(np.int64))

    model = build_encoder(cfg, split.num_features)
    objective = build_objective(cfg, num_classes=len(classes))
    memory = build_memory_term(cfg)  # None unless memory_size > 0
    components = objective.components
    weighting = None
    if len(components) > 1:
        weighting = make_weighting(cfg.weighting, components=components,
                                   **weighting_params(cfg, components))
    params = list(model.parameters()) + list(objective.parameters())
    if weighting is not None:
        params += [p for p in weighting.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)  # fused: ~2x faster step on CPU

    batch_size = cfg.sampler_p * cfg.sampler_k
    sampler = None if objective.explicit_triplets else PKSampler(
        split.y_train, p=cfg.sampler_p, k=cfg.sampler_k, generator=generator)
    steps_per_epoch = len(sampler) if sampler is not None else max(1, len(y_np) // batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    hard = None
    train_time = train_cpu = 0.0
    step = 0
    for epoch in range(cfg.epochs):
        if sampler is not None:
            batches = iter(sampler)
        else:
            triplets = random_triplets(y_np, rng=rng)
            if cfg.mining == "offline_hard":
                if epoch % cfg.mining_refresh_epochs == 0:
                    hard = hard_negatives(model_embeddings(model, x_train).numpy(), y_np,
                                          neighbours=cfg.mining_neighbours, metric=cfg.metric)
                share = hard_share_at(epoch, epochs=cfg.epochs, random_rate=cfg.mining_random_rate,
                                      hard_start=cfg.mining_hard_start, hard_end=cfg.mining_hard_end)
                triplets = mix_hard_negatives(triplets, hard, hard_share=share, rng=rng)
            triplets = torch.from_numpy(triplets)
            batches = (triplets[i * batch_size:(i + 1) * batch_size] for i in range(steps_per_epoch))
        sums = dict.fromkeys(components, 0.0)
        t0, c0 = time.perf_counter(), time.process_time()
        for batch in batches:
            row = _step(cfg, model, objective, weighting, optimizer, batch, x_train, y_train, memory=memory,
                        step=step, epoch=epoch, total_steps=total_steps,
                        steps_per_epoch=steps_per_epoch, rows=result["steps"])
            for c in components:
                sums[c] += row[f"loss_{c}"]
            step += 1
        train_time += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        result["train_time_s"], result["train_cpu_time_s"] = train_time, train_cpu
        if progress is not None:
            progress(epoch + 1)
        if weighting is not None:
            weighting.end_epoch({c: s / steps_per_epoch for c, s in sums.items()})
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            record_validation(result, model_embeddings(model, torch.from_numpy(split.x_val)), split.y_val,
                              epoch=epoch + 1, cfg=cfg)
    record_test(result, model_embeddings(model, torch.from_numpy(split.x_test)), split.y_test, cfg=cfg)


def _first_of_each(idx: torch.Tensor) -> torch.Tensor:
    """idx (N,) sample indices -> (U,) positions of each distinct sample's first occurrence, in order."""
    _, inverse = torch.unique(idx, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(idx), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(len(idx)), "amin")
    return first.sort().values


def _step(cfg, model, objective, weighting, optimizer, batch, x_train, y_train, *, memory=None, step, epoch,
          total_steps, steps_per_epoch, rows) -> dict[str, float]:
    """One optimisation step; appends and returns its log row; raises Diverged on NaN/inf."""
    lr = lr_at(step, base_lr=cfg.lr, total_steps=total_steps, schedule=cfg.lr_schedule,
               warmup_steps=cfg.warmup_epochs * steps_per_epoch)
    margin = margin_at(step, margin=cfg.margin, schedule=cfg.margin_schedule,
                       start=cfg.margin_start, ramp_steps=cfg.margin_ramp_epochs * steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    row: dict[str, float] = {"epoch": epoch, "step": step, "lr": lr, "margin": margin,
                             "loss": NAN}
    idx = batch.reshape(-1)  # (B,) or (T * 3,) for explicit triplets
    emb = model(x_train[idx])
    if not bool(torch.isfinite(emb.detach()).all()):
        rows.append(row)
        raise Diverged(step, "embeddings")
    if objective.explicit_triplets:
        emb = emb.view(len(batch), 3, -1)  # (T, 3, E)
        out = objective.forward_triplets(emb[:, 0], emb[:, 1], emb[:, 2], margin)
    else:
        out = objective(emb, y_train[idx], margin)
    if memory is not None:  # cross-batch memory: + w * loss(step's distinct rows, memory)
        distinct = _first_of_each(idx)
        out.components["triplet"] = memory.add_to(out.components["triplet"], emb.reshape(len(idx), -1)[distinct],
                                                  y_train[idx[distinct]], margin, epoch=epoch)
    values = {c: float(v.detach()) for c, v in out.components.items()}
    row.update({f"loss_{c}": v for c, v in values.items()})
    bad = next((c for c, v in values.items() if not math.isfinite(v)), None)
    weights = dict.fromkeys(values, 1.0)
    norms = None
    if bad is None:
        if weighting is None:
            total = next(iter(out.components.values()))
        else:
            w = weighting(out.components, step=step, shared=model.shared_parameters())
            total, weights, norms = w.total, w.weights, w.grad_norms
        row["loss"] = float(total.detach())
        if not math.isfinite(row["loss"]):
            bad = "total"
    row.update({f"weight_{c}": weights.get(c, NAN) for c in values})
    row.update({f"gradnorm_{c}": (norms or {}).get(c, NAN) for c in values})
    row.update({k: out.stats.get(k, NAN) for k in STAT_NAMES})
    row.update(out.extras)
    rows.append(row)
    if bad is not None:
        raise Diverged(step, bad)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return row
