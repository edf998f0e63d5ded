"""Forward + backward time of our triplet variants, their PML equivalents and the cdist floor.

One cell per (implementation, case, B), all in one pytest-benchmark run. Ratios
are paired (benchmarks/timing.py): each of our cells times the floor between its
rounds, each PML cell times the ours variants compared with it.
`benchmarks.ratios` prints them. No timing is asserted.
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


def _runnable_ours(pml_key: str, batch_size: int) -> dict:
    """-> {variant name: loss_fn} of the ours variants compared with pml_key that run at this B."""
    out = {}
    for variant in VARIANTS:
        if variant.pml == pml_key and skip_reason("ours", variant.name, batch_size) is None:
            try:
                out[variant.name] = variant.ours()
            except (ImportError, AttributeError):
                continue
    return out


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
    if batch_size <= CHECK_MAX_B and variant.same_loss_as_pml:
        # Same loss as the PML call it is compared with, else the ratio means nothing.
        ours_value = forward_backward(loss_fn, x, y)
        ours_grad = x.grad.clone()
        pml_value = forward_backward(PML_BUILDERS[variant.pml](), x, y)
        assert ours_value == pytest.approx(pml_value, rel=1e-4), (variant.name, ours_value, pml_value)
        torch.testing.assert_close(ours_grad, x.grad, rtol=1e-3, atol=1e-6)
    floor_fn = floor()
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=skip,
              companions={"floor": lambda: forward_backward(floor_fn, x, y)})


@pytest.mark.parametrize("batch_size", SIZES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("pml_key", sorted(PML_BUILDERS))
def test_pml(benchmark, cell, pml_key, batch_size):
    skip = cell("pml", pml_key, batch_size)
    reason = skip_reason("pml", pml_key, batch_size)
    if reason:
        skip(reason)
    loss_fn = PML_BUILDERS[pml_key]()
    x, y = make_batch(batch_size)
    companions = {name: (lambda fn=fn: forward_backward(fn, x, y))
                  for name, fn in _runnable_ours(pml_key, batch_size).items()}
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=skip, companions=companions,
              max_call_s=PML_MAX_CALL_S, target_s=3.0)
