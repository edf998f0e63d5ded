"""Baselines: what every trained variant must beat, evaluated like a run and stored like one.

- `raw`: the standardised input features of the split, as they are (no encoder).
- `untrained`: the run's encoder at its initialisation for the seed
  (`torch.manual_seed(seed)` then `build_encoder`: the weights a trained run of that
  seed starts from), no training step.

Both are evaluated with the same metrics, split and distance (`metric`) as the runs.
`baseline_configs` derives them from a grid's training cells: one `raw` per distinct
(data keys incl. the fold, metric) and one `untrained` per distinct (data keys,
metric, model keys, seed). Their configuration is canonicalised by
`ablations.config` (a baseline keeps only those keys), so equivalent cells share a
run id and run once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ablations.config import (BASELINES, RunConfig, config_hash, config_to_dict, resolve_config,
                              unique_configs)


def baseline_configs(configs: list[RunConfig]) -> list[RunConfig]:
    """training configs -> the `raw` and `untrained` configs they need, each once, in order."""
    return unique_configs(resolve_config({**config_to_dict(config), "loss": loss})
                          for config in configs if config.loss not in BASELINES
                          for loss in BASELINES)


def with_baselines(configs: list[RunConfig]) -> list[RunConfig]:
    """training configs -> their baselines first (they take seconds), then the configs."""
    ids = {config_hash(c) for c in configs}
    return [c for c in baseline_configs(configs) if config_hash(c) not in ids] + list(configs)


def evaluate_baseline(cfg: RunConfig, split, result: dict[str, Any]) -> None:
    """Fill `result` (the run_one dict) with the baseline's metrics and test embeddings."""
    from ablations.evaluate import model_embeddings, record_test, record_validation

    if cfg.loss == "raw":
        embed = torch.from_numpy
    elif cfg.loss == "untrained":
        from ablations.model import build_encoder

        torch.manual_seed(cfg.seed)
        model = build_encoder(cfg, split.num_features)

        def embed(x: np.ndarray) -> torch.Tensor:
            return model_embeddings(model, torch.from_numpy(x))
    else:
        raise ValueError(f"loss: {cfg.loss!r} is not a baseline; valid: {', '.join(BASELINES)}")
    record_validation(result, embed(split.x_val), split.y_val, epoch=0, cfg=cfg)
    record_test(result, embed(split.x_test), split.y_test, cfg=cfg)
