"""Input checks shared by every loss: each raises ValueError naming the argument and what it got."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Sequence

import torch


def did_you_mean(value: object, valid: Sequence[str]) -> str:
    """A misspelt name, the valid names -> "; did you mean 'x'?" for the closest ones (difflib), else ""."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(valid), n=3)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def check_choice(value: object, *, name: str, valid: Sequence[str]) -> str:
    """value str, valid names -> value; unknown names raise, listing the valid ones and the closest."""
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(repr, valid))}"
                         f"{did_you_mean(value, valid)}")
    return value


FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_margin(margin: object, *, name: str = "margin") -> float:
    """margin real number -> float; bools, non-numbers and non-finite values raise.

    Finite means finite in float32 too (|value| <= 3.4e38): a larger value becomes
    inf inside a float32 loss and gives NaN from finite input.
    """
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real):
        raise ValueError(f"expected {name} to be a finite real number, got {margin!r}")
    value = float(margin)
    if not math.isfinite(value):
        raise ValueError(f"expected {name} to be finite, got {value!r}")
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"expected {name} to be finite in float32 (|{name}| <= {FLOAT32_MAX:.4g}), "
                         f"got {value!r}")
    return value


def check_triplet_margin(margin: object, *, name: str = "margin") -> float:
    """triplet margin real number >= 0 -> float: what the grid's `margin` key accepts."""
    value = check_margin(margin, name=name)
    if value < 0:
        raise ValueError(f"expected {name} to be >= 0 (a triplet margin; the ablation grids "
                         f"reject negative margins too), got {value!r}")
    return value


def check_embeddings(x: object, *, name: str = "embeddings", min_rows: int = 1) -> torch.Tensor:
    """x (B, D) floating tensor, B >= min_rows, D >= 1 -> x; wrong type, rank, size, dtype or non-finite entries raise."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"expected {name} of shape (B, D), got {tuple(x.shape)}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"expected {name} with at least {min_rows} row(s) and 1 column, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected {name} to have a floating dtype, got {x.dtype}")
    if x.device.type == "meta":
        raise ValueError(f"expected {name} with values, got a tensor on the meta device "
                         f"(shape {tuple(x.shape)} only); create it on the CPU or a GPU")
    if not bool(torch.isfinite((x.detach() * 0).sum())):  # x * 0 is NaN exactly at NaN and inf: one cheap pass
        bad = int((~torch.isfinite(x.detach())).sum())
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf) out of {x.numel()}")
    return x


def check_labels(labels: object, *, batch_size: int, device: torch.device) -> torch.Tensor:
    """labels (B,) integer tensor on the embeddings' device -> labels; anything else raises."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"expected labels to be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"expected labels of shape (B,), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"expected labels to have an integer dtype, got {labels.dtype}")
    if labels.shape[0] != batch_size:
        raise ValueError(f"expected labels of length {batch_size} (the batch size), got {labels.shape[0]}")
    if labels.device.type == "meta":
        raise ValueError("expected labels with values, got a tensor on the meta device")
    if labels.device != device:
        raise ValueError(f"expected labels on {device} (the embeddings' device), got {labels.device}")
    return labels


def check_same_shape(**tensors: torch.Tensor) -> None:
    """named (N, D) tensors -> None; raises unless all have one shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected {', '.join(shapes)} of the same shape, got {listed}")


def check_flag(value: object, *, name: str) -> bool:
    """value bool -> value; anything else raises (a truthy string is not a flag)."""
    if not isinstance(value, bool):
        raise ValueError(f"expected {name} to be a bool, got {value!r}")
    return value


def check_weight(value: object, *, name: str) -> float:
    """value real number >= 0 -> float; negative, NaN, inf and non-numbers raise naming ``name``."""
    weight = check_margin(value, name=name)
    if weight < 0:
        raise ValueError(f"expected {name} to be >= 0, got {weight!r}")
    return weight


def check_positive(value: object, *, name: str) -> float:
    """value real number > 0 -> float; anything else raises naming ``name``."""
    number = check_margin(value, name=name)
    if number <= 0:
        raise ValueError(f"expected {name} to be > 0, got {number!r}")
    return number


def check_fraction(value: object, *, name: str) -> float:
    """value real number in [0, 1) -> float; anything else raises naming ``name``."""
    number = check_margin(value, name=name)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"expected {name} in [0, 1), got {number!r}")
    return number
