"""uncertainty (Kendall, Gal, Cipolla 2018): learnable log-variances s_i."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from losses.weighting.base import Weighting
from losses.validation import check_margin


class UncertaintyWeighting(Weighting):
    """losses (T,) -> sum_i L_i / (2 exp(s_i)) + s_i / 2 with learnable s_i = log sigma_i^2.

    The s_i are ``nn.Parameter``s: add ``w.parameters()`` to the optimizer. For a fixed L_i
    the optimum is exp(s_i) = L_i. The total can be negative (expected). s_i is clamped
    to [log_var_min, log_var_max] in the forward pass (zero gradient outside), so a hinge
    loss at exactly 0, which pushes s_i down at a constant rate, cannot drive it to -inf:
    its weight stays <= exp(-log_var_min) / 2.

    init: initial s_i, default -0.5 (LibMTL and MTAN). log_var_min, log_var_max: the clamp,
    defaults -10 and 10. Reported weight of component i: 1 / (2 exp(s_i)).
    State (state_dict): log_vars (T,).
    """

    config_keys = {"uncertainty_init": "init"}

    def __init__(self, *, components: Sequence[str], init: float = -0.5, log_var_min: float = -10.0, log_var_max: float = 10.0):
        super().__init__(components=components)
        self.log_var_min = check_margin(log_var_min, name="log_var_min")
        self.log_var_max = check_margin(log_var_max, name="log_var_max")
        init = check_margin(init, name="init")
        if not self.log_var_min <= init <= self.log_var_max:
            raise ValueError(f"expected log_var_min <= init <= log_var_max, got {self.log_var_min}, {init}, {self.log_var_max}")
        self.log_vars = nn.Parameter(torch.full((len(self.components),), init))

    def _combine(self, values, shared):
        s = self.log_vars.clamp(self.log_var_min, self.log_var_max).to(values.dtype)  # (T,)
        precision = torch.exp(-s)
        total = (values * precision / 2 + s / 2).sum()
        return total, precision.detach() / 2, None
