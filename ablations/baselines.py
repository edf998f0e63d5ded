"""Baselines: what every trained variant must beat, evaluated like a run and stored like one.

- `raw`: the standardised input features of the split, as they are (no encoder).
- `untrained`: the run's encoder at its initialisation for the seed
  (`torch.manual_seed(seed)` then `build_encoder`: the weights a trained run of that
  seed starts from), no training step.
- `lda`, `nca`, `pca_whiten` (CLASSICAL_BASELINES): a classical linear metric fitted
  on the training classes only, its number of components chosen on validation MAP@R
  (ablations/classical.py); the result's `baseline_params` (JSON) holds the choice and
  `baseline_candidates` (JSON) every candidate's validation MAP@R.

All are evaluated with the same metrics, split and distance (`metric`) as the runs.
`baseline_configs` derives them from a grid's training cells: one `raw` (and one of
each classical baseline) per distinct (data keys incl. the fold, metric) and one
`untrained` per distinct (data keys, metric, model keys, seed). Their configuration
is canonicalised by `ablations.config` (a baseline keeps only those keys), so
equivalent cells share a run id and run once. A grid chooses its baselines with
`[baselines] include = [...]` (ablations/grid.py; default: all of BASELINES).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ablations.classical import fit_selected
from ablations.config import (BASELINES, CLASSICAL_BASELINES, RunConfig, config_hash,
                              config_to_dict, resolve_config, unique_configs)
from ablations.evaluate import model_embeddings, record_test, record_validation, retrieval_metrics
from ablations.model import build_encoder


def baseline_configs(configs: list[RunConfig], *,
                     include: Sequence[str] = BASELINES) -> list[RunConfig]:
    """training configs -> the configs of the baselines in `include` they need, each once, in
    order (`include` names valid baselines: the grid checks it)."""
    return unique_configs(resolve_config({**config_to_dict(config), "loss": loss})
                          for config in configs if config.loss not in BASELINES
                          for loss in include)


def with_baselines(configs: list[RunConfig], *,
                   include: Sequence[str] = BASELINES) -> list[RunConfig]:
    """training configs -> their baselines first (they take seconds), then the configs."""
    ids = {config_hash(c) for c in configs}
    return [c for c in baseline_configs(configs, include=include)
            if config_hash(c) not in ids] + list(configs)


def evaluate_baseline(cfg: RunConfig, split, result: dict[str, Any]) -> None:
    """Fill `result` (the run_one dict) with the baseline's metrics and test embeddings."""
    if cfg.loss == "raw":
        embed = torch.from_numpy
    elif cfg.loss == "untrained":
        torch.manual_seed(cfg.seed)
        model = build_encoder(cfg, split.num_features)

        def embed(x: np.ndarray) -> torch.Tensor:
            return model_embeddings(model, torch.from_numpy(x))
    elif cfg.loss in CLASSICAL_BASELINES:
        fitted = fit_selected(cfg.loss, split, lambda z: retrieval_metrics(
            z, split.y_val, metric=cfg.metric, seed=cfg.seed)["map_at_r"])
        result["baseline_params"] = json.dumps(fitted.params, sort_keys=True)
        result["baseline_candidates"] = json.dumps(
            {str(k): v for k, v in fitted.scores.items()}, allow_nan=True)

        def embed(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(fitted.transform(x))
    else:
        raise ValueError(f"loss: {cfg.loss!r} is not a baseline; valid: {', '.join(BASELINES)}")
    record_validation(result, embed(split.x_val), split.y_val, epoch=0, cfg=cfg)
    record_test(result, embed(split.x_test), split.y_test, cfg=cfg)
