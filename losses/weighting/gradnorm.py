"""gradnorm (Chen, Badrinarayanan, Lee, Rabinovich 2018): weights learnt to balance training rates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from losses.validation import check_fraction, check_margin, check_positive
from losses.weighting.base import Weighting, check_steps, component_grad_norms


class GradNormWeighting(Weighting):
    """losses (T,), shared tensors -> sum_i w_i L_i with w updated by the GradNorm objective.

    Weights w = T * softmax(logits) (LibMTL's parametrisation): they sum to T after every
    update and stay positive across orders of magnitude. Each step:
      1. g_i = ||grad L_i w.r.t. shared|| (one extra backward pass per component, down to
         ``shared``, the last shared layer as in the paper); G_i = w_i g_i.
      2. L_i(0) = mean of L_i over the first ``initial_steps`` steps (a running mean while
         they last); r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)), divisions eps-guarded.
      3. L_grad = sum_i |G_i - mean(G) r_i^alpha|, the target detached, divided by mean(G)
         (detached): same minimiser, but the step no longer scales with the gradients,
         so weights that must differ by orders of magnitude get there in a few hundred steps.
      4. The total uses the current w, detached (the network's loss never moves w).
      5. The logits take one Adam step on L_grad (own update rule, learning rate ``lr``,
         ``betas``; its moments are buffers). The next step uses the new weights.
    ``logits`` is an ``nn.Parameter`` for the interface but never receives a ``.grad``:
    adding it to the network's optimizer is harmless.

    alpha: asymmetry >= 0, default 1.5 (paper, NYUv2); 0 equalises the G_i.
    lr: > 0, default 0.025. initial_steps: int >= 1, default 1 (the paper's t = 0).
    betas: Adam's, default (0.9, 0.999). eps: > 0, default 1e-8 (divisions and Adam).
    State (state_dict): logits, initial_losses, num_steps, adam_m, adam_v.
    Reported grad_norms: the unweighted g_i.
    """

    config_keys = {"gradnorm_alpha": "alpha", "gradnorm_lr": "lr"}

    needs_shared = True

    def __init__(
        self,
        *,
        components: Sequence[str],
        alpha: float = 1.5,
        lr: float = 0.025,
        initial_steps: int = 1,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(components=components)
        self.alpha = check_margin(alpha, name="alpha")
        if self.alpha < 0:
            raise ValueError(f"expected alpha >= 0, got {self.alpha!r}")
        self.lr = check_positive(lr, name="lr")
        self.initial_steps = check_steps(initial_steps, name="initial_steps")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"expected betas to be a pair of floats in [0, 1), got {betas!r}")
        self.betas = (check_fraction(betas[0], name="betas[0]"), check_fraction(betas[1], name="betas[1]"))
        self.eps = check_positive(eps, name="eps")
        T = len(self.components)
        self.logits = nn.Parameter(torch.zeros(T, dtype=torch.float64))
        self.register_buffer("initial_losses", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("adam_m", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(T, dtype=torch.float64))

    def _combine(self, values, shared):
        T = len(self.components)
        norms = component_grad_norms(values, shared).to(torch.float64)  # (T,) g_i
        current = values.detach().to(torch.float64)
        seen = int(self.num_steps)
        if seen < self.initial_steps:  # running mean of the first steps
            self.initial_losses.mul_(seen / (seen + 1)).add_(current / (seen + 1))
        with torch.enable_grad():
            weights = T * torch.softmax(self.logits, dim=0)  # (T,), sums to T
            ratio = current / self.initial_losses.clamp_min(self.eps)
            relative = ratio / ratio.mean().clamp_min(self.eps)  # r_i
            G = weights * norms
            target = (G.mean() * relative.pow(self.alpha)).detach()
            l_grad = (G - target).abs().sum() / G.mean().detach().clamp_min(self.eps)
            (grad,) = torch.autograd.grad(l_grad, self.logits)
        total = (weights.detach().to(values.dtype) * values).sum()
        self._adam_step(grad)
        self.num_steps += 1
        return total, weights.detach(), norms

    @torch.no_grad()
    def _adam_step(self, grad: torch.Tensor) -> None:
        """grad (T,) -> None; one Adam update of the logits with bias correction."""
        beta1, beta2 = self.betas
        t = int(self.num_steps) + 1
        self.adam_m.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.adam_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat = self.adam_m / (1 - beta1**t)
        v_hat = self.adam_v / (1 - beta2**t)
        self.logits.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))
