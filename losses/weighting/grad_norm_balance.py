"""grad_norm_balance: weights proportional to 1 / ||grad L_i w.r.t. the shared tensors||."""

from __future__ import annotations

from collections.abc import Sequence

from losses.validation import check_positive
from losses.weighting.base import Weighting, component_grad_norms, normalise_to_count


class GradNormBalanceWeighting(Weighting):
    """losses (T,), shared tensors -> sum_i w_i L_i, w_i = T * (1 / (g_i + eps)) / sum_j 1 / (g_j + eps).

    g_i = ||grad of L_i w.r.t. shared|| (one extra backward pass per component, down to
    ``shared`` only). ``shared`` is what the caller passes: the last shared layer's
    parameters, or the embedding output tensor to balance the pushes on the embedding
    itself. Weights are detached, so every component pushes the shared tensors equally
    hard: ||grad (w_i L_i)|| = T / sum_j 1 / (g_j + eps) for all i (up to eps). A component
    with zero gradient gets weight ~T (it adds nothing) and the others ~0 for that step.

    eps: > 0, default 1e-12 (same unit as the gradient norms). No state.
    Reported grad_norms: the unweighted g_i.
    """

    needs_shared = True

    def __init__(self, *, components: Sequence[str], eps: float = 1e-12):
        super().__init__(components=components)
        self.eps = check_positive(eps, name="eps")

    def _combine(self, values, shared):
        norms = component_grad_norms(values, shared)  # (T,)
        weights = normalise_to_count(1.0 / (norms + self.eps))
        return (weights * values).sum(), weights, norms
