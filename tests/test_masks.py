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


def test_hardest_pairs_picks_farthest_positive_nearest_negative_first_of_ties():
    from losses.masks import hardest_pairs

    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    dist = torch.tensor([[0.0, 2.0, 2.0, 1.0, 1.0, 3.0],  # tied positives 1, 2 and negatives 3, 4
                         [2.0, 0.0, 1.0, 4.0, 0.5, 0.5],  # tied negatives 4, 5
                         [2.0, 1.0, 0.0, 2.0, 3.0, 1.5],
                         [1.0, 4.0, 2.0, 0.0, 5.0, 6.0],
                         [1.0, 0.5, 3.0, 5.0, 0.0, 0.2],
                         [3.0, 0.5, 1.5, 6.0, 0.2, 0.0]])  # row 5: no positive
    valid, farthest_pos, nearest_neg = hardest_pairs(dist, positive_mask(labels), negative_mask(labels))
    assert valid.tolist() == [True, True, True, True, True, False]
    assert farthest_pos.tolist() == [1, 0, 0, 4, 3]
    assert nearest_neg.tolist() == [3, 4, 5, 0, 5]
