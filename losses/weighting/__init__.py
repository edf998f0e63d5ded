"""tripletlab: losses/weighting. One interface for every loss-weighting method.

    w = make_weighting(name, components=("triplet", "ce_pos", "ce_neg"), **params)
    out = w(losses, step=step, shared=shared_params)   # out.total, out.weights, out.grad_norms
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from losses.validation import check_choice
from losses.weighting.base import Weighting, WeightingOutput
from losses.weighting.dwa import DwaWeighting
from losses.weighting.fixed import FixedWeighting
from losses.weighting.grad_norm_balance import GradNormBalanceWeighting
from losses.weighting.gradnorm import GradNormWeighting
from losses.weighting.inverse_ema import InverseEmaWeighting
from losses.weighting.log_normalised import LogNormalisedWeighting
from losses.weighting.uncertainty import UncertaintyWeighting

WEIGHTINGS: dict[str, type[Weighting]] = {
    "fixed": FixedWeighting,
    "inverse_ema": InverseEmaWeighting,
    "log_normalised": LogNormalisedWeighting,
    "uncertainty": UncertaintyWeighting,
    "grad_norm_balance": GradNormBalanceWeighting,
    "gradnorm": GradNormWeighting,
    "dwa": DwaWeighting,
}


def make_weighting(name: str, *, components: Sequence[str], **params) -> Weighting:
    """name, components, method parameters -> the weighting module; unknown names raise listing valid ones."""
    cls = WEIGHTINGS[check_choice(name, name="weighting method", valid=tuple(WEIGHTINGS))]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "components")]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for weighting {name!r}; valid: {valid}")
    return cls(components=components, **params)


__all__ = [
    "WEIGHTINGS",
    "DwaWeighting",
    "FixedWeighting",
    "GradNormBalanceWeighting",
    "GradNormWeighting",
    "InverseEmaWeighting",
    "LogNormalisedWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "WeightingOutput",
    "make_weighting",
]
