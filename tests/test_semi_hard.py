"""Semi-hard triplet loss, TF-Addons and PML semantics, against the loop reference."""

from __future__ import annotations

import pytest
import torch

import loop_reference as ref
from losses import METRICS, REDUCTIONS, SEMANTICS, semi_hard_triplet_loss

CASES = ref.named_batches()
REFERENCES = {"tf": ref.semi_hard_tf, "pml": ref.semi_hard_pml}


def _inputs(case: str, dtype=torch.float64, requires_grad=False):
    x, y = CASES[case]
    return torch.tensor(x, dtype=dtype, requires_grad=requires_grad), torch.tensor(y)


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop_reference(case, metric, semantics):
    x, y = _inputs(case)
    for reduction in REDUCTIONS:
        for margin in (0.5, 1.0):
            got = semi_hard_triplet_loss(x, y, margin=margin, metric=metric, semantics=semantics, reduction=reduction)
            expected = REFERENCES[semantics](*CASES[case], margin, metric, reduction)
            torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=1e-10, rtol=0)


def test_tf_falls_back_to_the_farthest_negative():
    """Anchor 0, positive 1 at d 3: negatives at 1 and 2 are both closer, so the farthest (2) is used."""
    x = torch.tensor([[0.0], [3.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2])
    per_pair = semi_hard_triplet_loss(x, y, margin=0.5, metric="euclidean", semantics="tf", reduction="none")
    # pairs (0, 1): relu(3 - 2 + 0.5) = 1.5; (1, 0): negatives at 2 and 1, none farther than 3 -> 2: 1.5
    torch.testing.assert_close(per_pair, torch.tensor([1.5, 1.5], dtype=torch.float64))


def test_tf_takes_the_nearest_negative_farther_than_the_positive():
    x = torch.tensor([[0.0], [1.0], [0.5], [1.2], [1.4]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2, 3])
    per_pair = semi_hard_triplet_loss(x, y, margin=0.5, metric="euclidean", semantics="tf", reduction="none")
    # pair (0, 1): d_ap 1, negatives 0.5, 1.2, 1.4 -> 1.2: relu(1 - 1.2 + 0.5) = 0.3
    # pair (1, 0): d_ap 1, negatives 0.5, 0.2, 0.4 -> none farther -> 0.5: relu(1 - 0.5 + 0.5) = 1.0
    torch.testing.assert_close(per_pair, torch.tensor([0.3, 1.0], dtype=torch.float64))


def test_pml_window_is_open_below_and_closed_above():
    """Negatives at exactly d_ap (excluded) and exactly d_ap + margin (mined, loss 0)."""
    x = torch.tensor([[0.0], [1.0], [-1.0], [1.5], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2, 3])
    kwargs = dict(margin=1.0, metric="euclidean", semantics="pml")
    per_triplet = semi_hard_triplet_loss(x, y, reduction="none", **kwargs)
    # anchor 0, d_ap 1: n=2 at 1 (excluded), n=3 at 1.5 (0.5), n=4 at 2 (mined, 0)
    # anchor 1, d_ap 1: n=2 at 2 (mined, 0), n=3 at 0.5 and n=4 at 1 (excluded)
    torch.testing.assert_close(per_triplet, torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64))
    assert semi_hard_triplet_loss(x, y, reduction="mean", **kwargs).item() == pytest.approx(0.5 / 3)
    assert semi_hard_triplet_loss(x, y, reduction="mean_positive", **kwargs).item() == pytest.approx(0.5)


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric, semantics):
    torch.manual_seed(0)
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    reduction = "mean" if semantics == "tf" else "mean_positive"

    def fn(e):
        return semi_hard_triplet_loss(e, y, margin=0.5, metric=metric, semantics=semantics, reduction=reduction)

    assert fn(x).item() > 0
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("case", list(CASES))
def test_stats_match_reference(case, semantics):
    x, y = _inputs(case)
    _, stats = semi_hard_triplet_loss(
        x, y, margin=0.5, metric="euclidean", semantics=semantics, reduction="mean", return_stats=True
    )
    items = REFERENCES[semantics](*CASES[case], 0.5, "euclidean", "none")
    for field, value in ref.expected_stats(items, *CASES[case], 0.5, "euclidean").items():
        assert getattr(stats, field).item() == pytest.approx(value, abs=1e-12), field


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_float32_close_to_float64(semantics):
    torch.manual_seed(3)
    x = torch.randn(128, 16, dtype=torch.float64)
    y = torch.arange(128) % 8
    kwargs = dict(margin=0.3, metric="euclidean", semantics=semantics, reduction="mean")
    exact = semi_hard_triplet_loss(x, y, **kwargs)
    single = semi_hard_triplet_loss(x.float(), y, **kwargs)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("semantics", SEMANTICS)
def test_cuda_matches_cpu(semantics):
    x, y = _inputs("random")
    kwargs = dict(margin=0.5, metric="euclidean", semantics=semantics, reduction="mean")
    cpu = semi_hard_triplet_loss(x, y, **kwargs)
    gpu = semi_hard_triplet_loss(x.cuda(), y.cuda(), **kwargs)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-10, rtol=0)


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("per_class", [4, 20], ids=lambda k: f"K{k}")  # K - 1 = 19 > 15: the binary-search paths
def test_large_and_small_classes_match_loop_reference(per_class, semantics):
    g = torch.Generator().manual_seed(per_class)
    x = torch.randint(-2, 3, (40, 3), generator=g).double()  # many exact ties
    labels = [i // per_class for i in range(40)]
    for reduction in ("mean", "none"):
        got = semi_hard_triplet_loss(
            x, torch.tensor(labels), margin=2.5, metric="squared_euclidean", semantics=semantics, reduction=reduction
        )
        expected = REFERENCES[semantics](x.tolist(), labels, 2.5, "squared_euclidean", reduction)
        assert got.numel() > 0
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64).reshape(got.shape), atol=1e-10, rtol=0)
