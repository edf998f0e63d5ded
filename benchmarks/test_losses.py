"""Forward + backward time of our triplet variants, their PML equivalents and the cdist floor.

One cell per (implementation, case, B); pytest-benchmark times them in one run
and `benchmarks.ratios` turns the medians into ratios. No timing is asserted.
"""

import pytest
import torch

from benchmarks.cases import PML_BUILDERS, PML_MAX_CALL_S, VARIANTS, floor, skip_reason
from benchmarks.timing import run_timed
from benchmarks.workloads import SIZES, forward_backward, make_batch

CHECK_MAX_B = 256   # ours is checked against PML before timing up to this B (PML is cheap there)


def _ours_or_skip(variant, skip):
    try:
        return variant.ours()
    except (ImportError, AttributeError) as error:
        skip(f"our function is not available: {error}")


@pytest.mark.parametrize("batch_size", SIZES, ids=lambda b: f"B{b}")
def test_floor(benchmark, cell, batch_size):
    cell("floor", "cdist", batch_size)
    x, y = make_batch(batch_size)
    loss_fn = floor()
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=pytest.skip)


@pytest.mark.parametrize("batch_size", SIZES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_ours(benchmark, cell, variant, batch_size):
    skip = cell("ours", variant.name, batch_size, pml_reference=variant.pml, note=variant.note)
    reason = skip_reason("ours", variant.name, batch_size)
    if reason:
        skip(reason)
    loss_fn = _ours_or_skip(variant, skip)
    x, y = make_batch(batch_size)
    if batch_size <= CHECK_MAX_B and not variant.note:
        # Same loss as the PML call it is compared with, else the ratio means nothing.
        ours_value = forward_backward(loss_fn, x, y)
        ours_grad = x.grad.clone()
        pml_value = forward_backward(PML_BUILDERS[variant.pml](), x, y)
        assert ours_value == pytest.approx(pml_value, rel=1e-4), (variant.name, ours_value, pml_value)
        torch.testing.assert_close(ours_grad, x.grad, rtol=1e-3, atol=1e-6)
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=skip)


@pytest.mark.parametrize("batch_size", SIZES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("pml_key", sorted(PML_BUILDERS))
def test_pml(benchmark, cell, pml_key, batch_size):
    skip = cell("pml", pml_key, batch_size)
    reason = skip_reason("pml", pml_key, batch_size)
    if reason:
        skip(reason)
    loss_fn = PML_BUILDERS[pml_key]()
    x, y = make_batch(batch_size)
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=skip,
              max_call_s=PML_MAX_CALL_S, target_s=3.0)
