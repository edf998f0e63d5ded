"""Cross-check against PML's CrossBatchMemory in float64: values and gradients over several steps.

PML: CrossBatchMemory(TripletMarginLoss(margin, distance=LpDistance(normalize_embeddings=False),
reducer=...), embedding_size, memory_size, miner) enqueues the batch, then takes the loss
between the batch (anchors, with gradients) and the memory's filled part (detached),
removing each anchor's own new entry from its positives. Ours: losses.memory with the
`*_triplet_loss_refs` functions. The ring buffer wraps (memory_size not a multiple of
the batch); batches hold duplicates (within a step and of an earlier step) and, for the
"integers" kind, exact distance ties.
"""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners, reducers
from pytorch_metric_learning.distances import LpDistance

from losses import batch_all_triplet_loss_refs, batch_hard_triplet_loss_refs, semi_hard_triplet_loss_refs
from losses.memory import CrossBatchMemory, loss_against_memory

MARGIN = 0.7
DIM = 4
POWER = {"euclidean": 1, "squared_euclidean": 2}
PML_REDUCER = {"mean": reducers.MeanReducer, "mean_positive": reducers.AvgNonZeroReducer, "sum": reducers.SumReducer}
# name -> (ours, our fixed settings, PML miner factory or None)
CASES = {
    "batch_all": (batch_all_triplet_loss_refs, {}, None),
    "batch_hard": (batch_hard_triplet_loss_refs, {"soft": False}, lambda d: miners.BatchHardMiner(distance=d)),
    "semi_hard_pml": (semi_hard_triplet_loss_refs, {"semantics": "pml"},
                      lambda d: miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=d)),
}


class DifferenceLpDistance(LpDistance):
    """PML's LpDistance with the difference form: torch.cdist switches to |a|^2 + |b|^2 - 2ab past
    25 rows, whose rounding leaves about 1e-8 (the root of 1e-16) between exactly equal rows,
    where ours is exactly 0; the check is of the semantics, not of cdist's rounding."""

    def compute_mat(self, query_emb, ref_emb):
        sq = (query_emb[:, None, :] - ref_emb[None, :, :]).pow(2).sum(dim=2)
        zero = sq == 0  # cdist's gradient at 0 is 0, never NaN
        return torch.where(zero, 0.0, torch.where(zero, 1.0, sq).sqrt())


def _steps(seed: int, kind: str, *, steps: int, batch: int):
    g = torch.Generator().manual_seed(seed)
    out, previous = [], None
    for _ in range(steps):
        if kind == "integers":
            x = torch.randint(-2, 3, (batch, DIM), generator=g).to(torch.float64)
        else:
            x = torch.randn(batch, DIM, dtype=torch.float64, generator=g)
        y = torch.randint(0, 4, (batch,), generator=g)
        x[1], y[1] = x[0], y[0]  # a duplicate positive in the step
        if previous is not None:
            x[2], y[2] = previous[0][3], previous[1][3]  # a sample seen a step before
        previous = (x.clone(), y.clone())
        out.append((x, y))
    return out


@pytest.mark.parametrize("memory_size", [20, 44])
@pytest.mark.parametrize("kind", ["normal", "integers"])
@pytest.mark.parametrize("reduction", sorted(PML_REDUCER))
@pytest.mark.parametrize("metric", sorted(POWER))
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_loss_and_gradient_as_pml_cross_batch_memory(name, metric, reduction, kind, memory_size):
    if kind == "integers" and metric == "squared_euclidean":
        pytest.skip("PML squares the rooted distance (rounded): integer ties are not exact there")
    fn, fixed, miner = CASES[name]
    distance = DifferenceLpDistance(normalize_embeddings=False, p=2, power=POWER[metric])
    loss = pml_losses.TripletMarginLoss(margin=MARGIN, distance=distance, reducer=PML_REDUCER[reduction]())
    theirs = pml_losses.CrossBatchMemory(loss, DIM, memory_size=memory_size,
                                         miner=miner(distance) if miner else None)
    ours = CrossBatchMemory(memory_size, DIM, dtype=torch.float64)
    nonzero = 0
    for step, (x, y) in enumerate(_steps(7, kind, steps=7, batch=8)):  # 56 rows: the buffer wraps
        results = []
        for call in (lambda e: loss_against_memory(fn, ours, e, y, margin=MARGIN, metric=metric,
                                                   reduction=reduction, **fixed),
                     lambda e: theirs(e, y)):
            e = x.clone().requires_grad_(True)
            value = call(e)
            (grad,) = torch.autograd.grad(value, e)
            results.append((value.detach(), grad))
        torch.testing.assert_close(results[0][0], results[1][0], atol=1e-10, rtol=1e-10, msg=f"step {step}")
        torch.testing.assert_close(results[0][1], results[1][1], atol=1e-10, rtol=1e-8, msg=f"step {step}")
        nonzero += float(results[0][0]) > 0
        assert int(ours.pointer) == theirs.queue_idx
        filled = int(ours.filled)
        torch.testing.assert_close(ours.embeddings[:filled], theirs.embedding_memory[:filled])
    assert nonzero >= 3  # the comparison is not between zeros
