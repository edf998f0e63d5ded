"""The README's Python examples run as written, and its grid example is a valid grid."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ablations.grid import expand, parse_grid_text

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_every_python_example_runs_and_gives_finite_losses():
    blocks = _blocks("python")
    assert blocks, "the README has no Python example"
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        losses = [v for v in namespace.values() if isinstance(v, torch.Tensor) and v.ndim == 0]
        assert losses and all(torch.isfinite(v) for v in losses)


def test_the_grid_example_parses_and_expands():
    grid_text = _blocks("toml")[0]  # the first; the [search] example: tests/test_search.py
    configs = expand(parse_grid_text(grid_text))
    assert len(configs) > 0
    assert {c.loss for c in configs} == {"batch_hard", "semi_hard_tf", "combined"}
