"""The baselines: reference points every trained variant must beat, evaluated like a run
(same split, metric and evaluation) and stored like one, never trained and never selected as
a variant. A baseline run is a config with `baseline` = its name (a trained run has
baseline = ""); it reads only the data keys, the metric and what its spec says here, so
equivalent cells share one run id.

- raw: the standardised input features of the split, as they are (no encoder).
- untrained: the run's encoder at its initialisation for the seed (`torch.manual_seed(seed)`
  then `build_encoder`: the weights a trained run of that seed starts from), no step.
- lda, nca, pca_whiten: a classical linear metric fitted on the training classes only, its
  number of components chosen on validation MAP@R (ablations/classical.py).

A new baseline is its embedding function (a module of its own, or a test's function) plus one
BaselineSpec line in BASELINE_SPECS naming it (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ablations.keys import Key, names


@dataclass(frozen=True)
class BaselineEmbedding:
    """What a baseline's embedding function returns for one run: how it embeds the split's
    rows, and result columns it adds (JSON strings, e.g. the choice a classical metric made)."""

    embed: Callable[[np.ndarray], torch.Tensor]   # x (N, F) float32 -> (N, E)
    extras: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BaselineSpec:
    """One value of `baseline`."""

    # (RunConfig, Split) -> BaselineEmbedding, or "package.module:name" of such a function (the
    # built-in ones name theirs in ablations/baselines.py, a floor above this one)
    embedding: str | Callable[[Any, Any], BaselineEmbedding]
    keys: tuple[Key, ...] = ()     # its own keys, besides the data keys and the metric
    reads_encoder: bool = False    # reads the encoder's keys and the seed (the untrained encoder)
    seeded: bool = False           # depends on `seed`: one run per seed, else one per data keys and metric
    classical: bool = False        # a classical metric fitted on the training classes (the verdict's test)

    @property
    def key_names(self) -> tuple[str, ...]:
        return names(self.keys)


_BASELINES = "ablations.baselines:"
BASELINE_SPECS: dict[str, BaselineSpec] = {
    "raw": BaselineSpec(_BASELINES + "raw_embedding"),
    "untrained": BaselineSpec(_BASELINES + "untrained_embedding", reads_encoder=True, seeded=True),
    **{method: BaselineSpec(_BASELINES + "classical_embedding", classical=True)
       for method in ("lda", "nca", "pca_whiten")},
}
