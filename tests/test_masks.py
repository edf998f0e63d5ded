"""Masks against triple-loop enumeration."""

from __future__ import annotations

import itertools

import pytest
import torch

import loop_reference as ref
from losses import negative_mask, positive_mask, triplet_mask

LABELS = {name: y for name, (_, y) in ref.named_batches().items()}


@pytest.mark.parametrize("case", list(LABELS))
def test_masks_match_enumeration(case):
    labels = LABELS[case]
    y = torch.tensor(labels)
    b = len(labels)
    tm = triplet_mask(y)
    assert tm.shape == (b, b, b) and tm.dtype == torch.bool
    for i, j, k in itertools.product(range(b), repeat=3):
        valid = i != j and i != k and j != k and labels[i] == labels[j] != labels[k]
        assert tm[i, j, k].item() == valid
    for i, j in itertools.product(range(b), repeat=2):
        assert positive_mask(y)[i, j].item() == (i != j and labels[i] == labels[j])
        assert negative_mask(y)[i, j].item() == (labels[i] != labels[j])


def test_masks_accept_any_integer_dtype():
    for dtype in (torch.int8, torch.int32, torch.int64, torch.uint8):
        y = torch.tensor([3, 3, 5], dtype=dtype)
        assert triplet_mask(y).nonzero().tolist() == [[0, 1, 2], [1, 0, 2]]


@pytest.mark.cuda
def test_masks_on_cuda():
    y = torch.tensor([0, 0, 1], device="cuda")
    assert triplet_mask(y).device.type == "cuda"
    assert triplet_mask(y).cpu().nonzero().tolist() == [[0, 1, 2], [1, 0, 2]]
