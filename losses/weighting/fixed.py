"""fixed: per-component weights from configuration, total = sum_i w_i L_i."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from losses.validation import check_weight
from losses.weighting.base import Weighting, check_component_values


class FixedWeighting(Weighting):
    """losses (T,) -> sum_i w_i L_i with the configured weights (no weight hidden in code).

    weights: dict component -> float >= 0, one entry per component (required).
    """

    def __init__(self, *, components: Sequence[str], weights: Mapping[str, float]):
        super().__init__(components=components)
        check_component_values(weights, components=self.components, what="weights", where="of the fixed weighting")
        values = [check_weight(weights[name], name=f"weights[{name!r}]") for name in self.components]
        self.register_buffer("weights", torch.tensor(values, dtype=torch.float64))

    def _combine(self, values, shared):
        return (self.weights.to(values.dtype) * values).sum(), self.weights, None
