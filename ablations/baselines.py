"""Baselines: what every trained variant must beat, evaluated like a run and stored like one
(the names and what each reads: ablations/baseline_specs.py).

All are evaluated with the same metrics, split and distance (`metric`) as the runs.
`baseline_configs` derives them from a grid's training cells: one `raw` (and one of
each classical baseline) per distinct (data keys incl. the fold, metric) and one
`untrained` per distinct (data keys, metric, model keys, seed). Their configuration
is canonicalised by `ablations.config` (a baseline keeps only those keys), so
equivalent cells share a run id and run once. A grid chooses its baselines with
`[baselines] include = [...]` (ablations/grid.py; default: all of BASELINES).
The classical ones (lda, nca, pca_whiten) add `baseline_params` (JSON: the number of
components chosen on validation) and `baseline_candidates` (JSON: every candidate's
validation MAP@R) to their result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ablations.baseline_specs import BASELINE_SPECS, BaselineEmbedding
from ablations.classical import fit_selected
from ablations.config import BASELINES, RunConfig, config_hash, config_to_dict, resolve_config, unique_configs
from ablations.evaluate import model_embeddings, record_test, record_validation, retrieval_metrics
from ablations.model import build_encoder
from ablations.plugin_import import import_object


def baseline_configs(configs: list[RunConfig], *,
                     include: Sequence[str] = BASELINES) -> list[RunConfig]:
    """training configs -> the configs of the baselines in `include` they need, each once, in
    order (`include` names valid baselines: the grid checks it)."""
    return unique_configs(resolve_config({**config_to_dict(config), "baseline": name})
                          for config in configs if not config.baseline
                          for name in include)


def with_baselines(configs: list[RunConfig], *,
                   include: Sequence[str] = BASELINES) -> list[RunConfig]:
    """training configs -> their baselines first (they take seconds), then the configs."""
    ids = {config_hash(c) for c in configs}
    return [c for c in baseline_configs(configs, include=include)
            if config_hash(c) not in ids] + list(configs)


def evaluate_baseline(cfg: RunConfig, split, result: dict[str, Any]) -> None:
    """Fill `result` (the run_one dict) with the baseline's metrics and test embeddings."""
    if cfg.baseline not in BASELINE_SPECS:
        raise ValueError(f"baseline: unknown {cfg.baseline!r}; valid: {', '.join(BASELINE_SPECS)}")
    make = BASELINE_SPECS[cfg.baseline].embedding
    made = (import_object(make, key="baseline") if isinstance(make, str) else make)(cfg, split)
    result.update(made.extras)
    record_validation(result, made.embed(split.x_val), split.y_val, epoch=0, cfg=cfg)
    record_test(result, made.embed(split.x_test), split.y_test, cfg=cfg)


# The embedding functions the built-in BaselineSpecs name: (config, split) -> BaselineEmbedding.
def raw_embedding(cfg: RunConfig, split) -> BaselineEmbedding:
    """The standardised input features as they are."""
    return BaselineEmbedding(torch.from_numpy)


def untrained_embedding(cfg: RunConfig, split) -> BaselineEmbedding:
    """The run's encoder at its initialisation for the seed."""
    torch.manual_seed(cfg.seed)
    model = build_encoder(cfg, split.num_features)
    return BaselineEmbedding(lambda x: model_embeddings(model, torch.from_numpy(x)))


def classical_embedding(cfg: RunConfig, split) -> BaselineEmbedding:
    """The classical metric `cfg.baseline` fitted on the training classes, its dimension chosen
    on validation MAP@R (ablations/classical.py)."""
    fitted = fit_selected(cfg.baseline, split, lambda z: retrieval_metrics(
        z, split.y_val, metric=cfg.metric, seed=cfg.seed)["map_at_r"])

    def embed(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(fitted.transform(x))

    return BaselineEmbedding(embed, {
        "baseline_params": json.dumps(fitted.params, sort_keys=True),
        "baseline_candidates": json.dumps({str(k): v for k, v in fitted.scores.items()}, allow_nan=True)})
