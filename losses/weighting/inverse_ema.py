"""inverse_ema: weights proportional to 1 / (EMA of each loss + eps), summing to T."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from losses.validation import check_fraction, check_positive
from losses.weighting.base import Weighting, normalise_to_count


class InverseEmaWeighting(Weighting):
    """losses (T,) -> sum_i w_i L_i, w_i = T * (1 / (ema_i + eps)) / sum_j 1 / (ema_j + eps), detached.

    ema_i starts at the first step's L_i, then ema_i <- momentum * ema_i + (1 - momentum) * L_i
    (the current step included). The weighted losses w_i * ema_i are then equal, so every
    component contributes on the same scale. A hinge loss that sits at exactly 0 gets the
    finite weight ~T (1 / eps dominates), which leaves the other weights ~0 while it lasts:
    raise ``eps`` (same unit as the losses) to soften that.

    momentum: in [0, 1), default 0.9. eps: > 0, default 1e-8.
    State (state_dict): ema (T,), num_steps.
    """

    config_keys = {"ema_momentum": "momentum"}

    def __init__(self, *, components: Sequence[str], momentum: float = 0.9, eps: float = 1e-8):
        super().__init__(components=components)
        self.momentum = check_fraction(momentum, name="momentum")
        self.eps = check_positive(eps, name="eps")
        self.register_buffer("ema", torch.zeros(len(self.components), dtype=torch.float64))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def _combine(self, values, shared):
        current = values.detach().to(self.ema.dtype)
        if int(self.num_steps) == 0:
            self.ema.copy_(current)
        else:
            self.ema.mul_(self.momentum).add_(current, alpha=1.0 - self.momentum)
        self.num_steps += 1
        weights = normalise_to_count(1.0 / (self.ema + self.eps))  # (T,) float64
        return (weights.to(values.dtype) * values).sum(), weights, None
