"""The one place reports read a results store: `read_store(store_dir) -> StoreView`.

Reports never look at training internals; everything they show comes from the
four tables and the embeddings that `ablations.store.ResultsStore` exposes
(columns in ARCHITECTURE.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

IDEAL_FILE = "ideal.json"   # optional, beside runs.parquet: {"test_map_at_r": 0.71}
Embeddings = Callable[[str], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class StoreView:
    """What a report reads: the consolidated tables, the grid text and an embeddings getter."""

    runs: pd.DataFrame
    steps: pd.DataFrame
    epochs: pd.DataFrame
    grid_text: str
    embeddings: Embeddings   # run_id -> (X (N, E) float32, y (N,) int64); raises when missing
    ideal: float | None = None   # the ideal metric's test MAP@R (IDEAL_FILE), where the store has it


def read_store(store_dir: str | Path) -> StoreView:
    """store_dir (a results-store directory) -> StoreView read through ResultsStore."""
    from ablations.results import is_store, open_store

    path = Path(store_dir)
    if not path.is_dir():
        raise ValueError(f"store_dir must be an existing results-store directory, got {str(path)!r}")
    if not is_store(path):
        raise ValueError(f"store_dir {str(path)!r} is not a results store (no grid.toml and no runs/ "
                         "inside); make one with `tripletlab run GRID.toml --out DIR`")
    store = open_store(path)  # a store of an older format is migrated first
    store.check_layout(files=False)  # a table the store writes may be anything: it is rebuilt
    return StoreView(runs=_frame(store.runs()), steps=_frame(store.steps()),
                     epochs=_frame(store.epochs()), grid_text=store.grid_text() or "",
                     embeddings=store.embeddings, ideal=_ideal(path / IDEAL_FILE))


def _ideal(path: Path) -> float | None:
    """ideal.json -> its test_map_at_r, None when the file is absent; a clear error when it is
    there but unreadable."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["test_map_at_r"]
        return float(value)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: expected {{\"test_map_at_r\": <number>}} "
                         f"({type(error).__name__}: {error})") from error


def _frame(table: pd.DataFrame | None) -> pd.DataFrame:
    """A store table, or an empty frame when the store has none yet."""
    return pd.DataFrame() if table is None else table.reset_index(drop=True)
