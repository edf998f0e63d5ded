"""log_normalised: total = sum_i log(1 + L_i), equal-scale by construction."""

from __future__ import annotations

import torch

from losses.weighting.base import Weighting


class LogNormalisedWeighting(Weighting):
    """losses (T,) float >= 0 -> sum_i log(1 + L_i).

    The gradient of log(1 + L_i) is grad L_i / (1 + L_i), so the reported weight of
    component i is the effective factor 1 / (1 + L_i) (detached). No parameters, no state.
    A negative component raises (log(1 + L) is not a rescaling there).
    """

    def _combine(self, values, shared):
        negative = values.detach() < 0
        if bool(negative.any()):
            name = self.components[int(negative.nonzero()[0, 0])]
            raise ValueError(f"log_normalised needs losses >= 0, got component {name!r} = {values[negative][0].item()}")
        return torch.log1p(values).sum(), 1.0 / (1.0 + values.detach()), None
