"""Test MAP@R of the `nuisance` dataset (ablations/nuisance.py) at the default keys, fold 0:
the raw features, an untrained MLP and the ideal metric (the content coordinates).

    .venv/bin/python -m benchmarks.nuisance_scores
"""

from __future__ import annotations

import torch

from ablations.config import resolve_config
from ablations.data import load_split, split_by_class
from ablations.evaluate import retrieval_metrics
from ablations.model import build_encoder
from ablations.nuisance import nuisance_xy_of


def main() -> None:
    """Print test MAP@R of the raw features, an untrained MLP and the ideal metric (fold 0)."""
    cfg = resolve_config({"dataset": "nuisance"})
    split = load_split(cfg)
    _, y, content = nuisance_xy_of(cfg, return_content=True)
    ideal = split_by_class(content, y)
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg, split.num_features).eval()
    with torch.no_grad():
        untrained = encoder(torch.from_numpy(split.x_test))
    for name, x, labels in (("raw features", split.x_test, split.y_test),
                            ("untrained MLP (seed 0)", untrained, split.y_test),
                            ("ideal metric (content)", ideal.x_test, ideal.y_test)):
        score = retrieval_metrics(x, labels, metric=cfg.metric, seed=cfg.seed)["map_at_r"]
        print(f"{name:24s} test MAP@R {score:.3f}")


if __name__ == "__main__":
    main()
