"""Schedules as pure functions of training progress: learning rate, margin, hard-negative share."""

from __future__ import annotations

import math


def lr_at(step: int, *, base_lr: float, total_steps: int, schedule: str,
          warmup_steps: int) -> float:
    """step (0-based) -> learning rate.

    "constant": base_lr. "warmup_cosine": linear from base_lr / warmup_steps to
    base_lr over `warmup_steps` steps, then cosine decay to 0 at `total_steps`.
    """
    if schedule == "constant":
        return base_lr
    if schedule != "warmup_cosine":
        raise ValueError(f"lr_schedule: unknown {schedule!r}; valid: constant, warmup_cosine")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def margin_at(step: int, *, margin: float, schedule: str, start: float, ramp_steps: int) -> float:
    """step (0-based) -> margin: constant, or linear from `start` to `margin` over ramp_steps."""
    if schedule == "constant":
        return margin
    if schedule != "linear":
        raise ValueError(f"margin_schedule: unknown {schedule!r}; valid: constant, linear")
    frac = min(1.0, step / max(1, ramp_steps))
    return start + (margin - start) * frac


def hard_share_at(epoch: int, *, epochs: int, random_rate: float, hard_start: float,
                  hard_end: float) -> float:
    """epoch (0-based) -> share of negatives taken from the hard-negative index.

    A `random_rate` share of negatives is always random; of the rest, the hard
    share ramps linearly from `hard_start` (first epoch) to `hard_end` (last).
    """
    frac = epoch / (epochs - 1) if epochs > 1 else 1.0
    return (1.0 - random_rate) * (hard_start + (hard_end - hard_start) * frac)
