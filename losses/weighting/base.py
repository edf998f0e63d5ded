"""The weighting interface: named component losses of a step -> the total to back-propagate.

Every method is an ``nn.Module`` built with ``components`` (the names of the losses it
combines, in a fixed order) and called as ``w(losses, step=step, shared=shared)``.
All state a method needs to resume exactly lives in ``state_dict()`` (buffers and
parameters); configuration (momentum, temperature, ...) is given at construction.
Each call is one training step: stateful methods (inverse_ema, gradnorm) update their
state on every call, so do not call them on validation batches. Move a method to the
losses' device with ``.to(device)`` like any module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn



@dataclass(frozen=True)
class WeightingOutput:
    """What a weighting method returns for one step.

    total: 0-dim tensor to back-propagate.
    weights: component name -> float, the (detached) factor applied to each loss.
    grad_norms: component name -> float, ||grad of the unweighted L_i w.r.t. shared||,
        or None when the method does not compute them.
    """

    total: torch.Tensor
    weights: dict[str, float]
    grad_norms: dict[str, float] | None


def check_components(components: object) -> tuple[str, ...]:
    """components non-empty sequence of distinct str -> tuple of them; anything else raises."""
    if isinstance(components, str) or not isinstance(components, Sequence) or not components:
        raise ValueError(f"expected components to be a non-empty sequence of names, got {components!r}")
    names = tuple(components)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"expected every component name to be a non-empty str, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"expected distinct component names, got {names!r}")
    return names


def check_component_values(
    values: Mapping[str, object], *, components: tuple[str, ...], what: str, where: str
) -> None:
    """values mapping over exactly ``components`` -> None; missing or unknown names raise listing the valid ones."""
    if not isinstance(values, Mapping):
        raise ValueError(f"expected {what} to be a dict name -> value, got {type(values).__name__}")
    unknown = [name for name in values if name not in components]
    if unknown:
        raise ValueError(f"unknown component(s) {unknown} in {what} {where}; valid: {list(components)}")
    missing = [name for name in components if name not in values]
    if missing:
        raise ValueError(f"missing component(s) {missing} in {what} {where}; expected all of {list(components)}")


def check_steps(value: object, *, name: str) -> int:
    """value int >= 1 -> value; anything else raises naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected {name} to be an int >= 1, got {value!r}")
    return value


def normalise_to_count(raw: torch.Tensor) -> torch.Tensor:
    """raw (T,) float >= 0 with a positive sum -> (T,) weights proportional to raw, summing to T."""
    T = raw.shape[0]
    return raw * (T / raw.sum())


def component_grad_norms(values: torch.Tensor, shared: Sequence[torch.Tensor]) -> torch.Tensor:
    """values (T,) float (losses in one graph), shared list of tensors -> (T,) detached norms.

    One extra backward pass per component, down to ``shared`` only: norm_i = ||d values[i] / d shared||
    over all shared tensors together. A component that does not depend on ``shared`` has norm 0.
    """
    norms = []
    if not values.requires_grad:
        return values.new_zeros(values.shape)
    for i in range(values.shape[0]):
        grads = torch.autograd.grad(values[i], shared, retain_graph=True, allow_unused=True)
        squares = [g.detach().pow(2).sum().to(values.dtype) for g in grads if g is not None]
        norms.append(torch.stack(squares).sum().sqrt() if squares else values.new_zeros(()))
    return torch.stack(norms).detach()


def check_shared(shared: object) -> list[torch.Tensor]:
    """shared non-empty sequence of tensors requiring grad -> list; anything else raises."""
    if shared is None or isinstance(shared, torch.Tensor) or not isinstance(shared, Sequence) or not shared:
        raise ValueError(
            "expected shared to be a non-empty list of tensors that require grad "
            f"(the last shared layer's parameters, or the embedding output), got {shared!r}"
        )
    tensors = list(shared)
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor) or not t.requires_grad:
            raise ValueError(f"expected shared[{i}] to be a tensor that requires grad, got {type(t).__name__}")
    return tensors


class Weighting(nn.Module):
    """Base of every method: validates the step's losses, then calls ``_combine``.

    Subclasses implement ``_combine(values (T,), shared) -> (total, weights (T,), grad_norms (T,) | None)``
    and, if they use epoch means, ``_end_epoch(values (T,))``.
    """

    needs_shared = False  # True for methods that differentiate w.r.t. the shared layer
    # The method's parameters a run config sets: config key -> keyword of __init__ (its default
    # there is the key's default; a grid file names the key). Empty: the method has none.
    config_keys: dict[str, str] = {}

    def __init__(self, *, components: Sequence[str]):
        super().__init__()
        self.components = check_components(components)

    def forward(self, losses: Mapping[str, torch.Tensor], *, step: int, shared: Sequence[torch.Tensor] | None = None) -> WeightingOutput:
        """losses dict name -> 0-dim tensor, step int, shared list of tensors -> WeightingOutput."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"expected step to be an int >= 0, got {step!r}")
        values = self._stack(losses, step)  # (T,)
        if self.needs_shared:
            shared = check_shared(shared)
        total, weights, grad_norms = self._combine(values, shared)
        named = dict(zip(self.components, weights.detach().tolist()))
        norms = None if grad_norms is None else dict(zip(self.components, grad_norms.tolist()))
        return WeightingOutput(total=total, weights=named, grad_norms=norms)

    def end_epoch(self, epoch_mean_losses: Mapping[str, float]) -> None:
        """epoch_mean_losses dict name -> float (unweighted epoch means) -> None; only DWA uses them."""
        check_component_values(epoch_mean_losses, components=self.components, what="epoch_mean_losses", where="at end_epoch")
        values = []
        for name in self.components:
            value = float(epoch_mean_losses[name])
            if not math.isfinite(value):
                raise ValueError(f"epoch mean loss of component {name!r} is {value} at end_epoch")
            values.append(value)
        self._end_epoch(torch.tensor(values, dtype=torch.float64))

    def _end_epoch(self, values: torch.Tensor) -> None:
        """values (T,) float64 finite epoch means -> None; stateless methods ignore them."""

    def _combine(self, values: torch.Tensor, shared: list[torch.Tensor] | None):
        raise NotImplementedError

    def _stack(self, losses: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        """losses dict -> (T,) tensor in component order; wrong names, shapes or non-finite values raise."""
        check_component_values(losses, components=self.components, what="losses", where=f"at step {step}")
        for name in self.components:
            value = losses[name]
            if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"expected loss component {name!r} to be a 0-dim float tensor, got {shape} at step {step}")
        dtype = functools.reduce(torch.promote_types, [losses[name].dtype for name in self.components])
        values = torch.stack([losses[name].to(dtype) for name in self.components])
        finite = torch.isfinite(values.detach())
        if not bool(finite.all()):
            bad = [(name, v) for name, v, ok in zip(self.components, values.detach().tolist(), finite.tolist()) if not ok]
            listed = ", ".join(f"{name!r} = {v}" for name, v in bad)
            raise ValueError(f"non-finite loss component at step {step}: {listed}")
        return values
