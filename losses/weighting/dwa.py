"""dwa (Liu, Johns, Davison 2019): Dynamic Weight Average from epoch-mean loss ratios."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from losses.validation import check_positive
from losses.weighting.base import Weighting


class DwaWeighting(Weighting):
    """losses (T,) -> sum_k lambda_k L_k, lambda fixed for the whole epoch.

    lambda_k(t) = T exp(w_k(t-1) / temperature) / sum_i exp(w_i(t-1) / temperature), with
    w_k(t-1) = L_k(t-1) / L_k(t-2) from the epoch means of the unweighted losses, given by
    ``end_epoch`` at the end of each epoch; lambda = 1 for the first two epochs.
    L_k(t-2) is clamped to >= eps, so a loss that reached exactly 0 keeps weights finite.

    temperature: > 0, default 2 (paper). eps: > 0, default 1e-8.
    State (state_dict): history (2, T) = the last two epoch means (row 1 = latest),
    num_epochs, lambdas (T,).
    """

    config_keys = {"dwa_temperature": "temperature"}

    def __init__(self, *, components: Sequence[str], temperature: float = 2.0, eps: float = 1e-8):
        super().__init__(components=components)
        self.temperature = check_positive(temperature, name="temperature")
        self.eps = check_positive(eps, name="eps")
        T = len(self.components)
        self.register_buffer("history", torch.zeros(2, T, dtype=torch.float64))
        self.register_buffer("num_epochs", torch.zeros((), dtype=torch.long))
        self.register_buffer("lambdas", torch.ones(T, dtype=torch.float64))

    def _end_epoch(self, values):
        self.history[0].copy_(self.history[1])
        self.history[1].copy_(values)
        self.num_epochs += 1
        if int(self.num_epochs) >= 2:
            ratio = self.history[1] / self.history[0].clamp_min(self.eps)  # w_k(t-1)
            self.lambdas.copy_(len(self.components) * torch.softmax(ratio / self.temperature, dim=0))

    def _combine(self, values, shared):
        return (self.lambdas.to(values.dtype) * values).sum(), self.lambdas, None
