"""Shared pytest set-up, kept generic: CUDA skipping, a dtype fixture, one thread per test."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `cuda` when no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    """Floating dtype under test."""
    return request.param


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one intra-op thread: tests check values, not speed, and thousands of tiny
    ops only thrash with intra-op threads on a loaded 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
