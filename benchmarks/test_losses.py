"""Forward + backward time of our triplet variants, their PML equivalents and the cdist floor.

One cell per (implementation, case, B), all in one pytest-benchmark run. Ratios
are paired (benchmarks/timing.py): each of our cells times the floor between its
rounds, each PML cell times the ours variants compared with it.
`benchmarks.ratios` prints them. No timing is asserted.
"""

import pytest
import torch

from benchmarks.cases import (PML_BUILDERS, PML_MAX_CALL_S, ST_BUILDERS, ST_SIZES, VARIANTS, floor,
                              skip_reason)
from benchmarks.timing import run_timed
from benchmarks.workloads import LARGE, LAYOUTS, SIZES, forward_backward, make_batch

CHECK_MAX_B = 256   # ours is checked against PML before timing up to this B (PML is cheap there)

# (variant, B, layout) of our cells: every size and layout, plus LARGE (P x K) for the large variants
OURS_CELLS = [(v, b, layout) for v in VARIANTS for layout in LAYOUTS for b in SIZES] + [
    (v, LARGE, "pk") for v in VARIANTS if v.large and LARGE]
FLOOR_SIZES = SIZES + ((LARGE,) if LARGE else ())


def _ours_or_skip(variant, skip):
    try:
        return variant.ours()
    except (ImportError, AttributeError) as error:
        skip(f"our function is not available: {error}")


def _runnable_ours(peer_key: str, batch_size: int, *, peer: str = "pml") -> dict:
    """-> {variant name: loss_fn} of the ours variants compared with a peer's key that run at this B."""
    out = {}
    for variant in VARIANTS:
        key = variant.pml if peer == "pml" else variant.st
        if key == peer_key and skip_reason("ours", variant.name, batch_size) is None:
            try:
                out[variant.name] = variant.ours()
            except (ImportError, AttributeError):
                continue
    return out


@pytest.mark.parametrize("batch_size", FLOOR_SIZES, ids=lambda b: f"B{b}")
def test_floor(benchmark, cell, batch_size):
    cell("floor", "cdist", batch_size)
    x, y = make_batch(batch_size)
    loss_fn = floor()
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=pytest.skip)


@pytest.mark.parametrize("variant, batch_size, layout", OURS_CELLS,
                         ids=[f"{v.name}-B{b}-{layout}" for v, b, layout in OURS_CELLS])
def test_ours(benchmark, cell, variant, batch_size, layout):
    skip = cell("ours", variant.name, batch_size, layout=layout, pml_reference=variant.pml, note=variant.note)
    reason = skip_reason("ours", variant.name, batch_size)
    if reason:
        skip(reason)
    loss_fn = _ours_or_skip(variant, skip)
    x, y = make_batch(batch_size, layout=layout)
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


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch_size", SIZES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("pml_key", sorted(PML_BUILDERS))
def test_pml(benchmark, cell, pml_key, batch_size, layout):
    skip = cell("pml", pml_key, batch_size, layout=layout)
    reason = skip_reason("pml", pml_key, batch_size)
    if reason:
        skip(reason)
    try:
        loss_fn = PML_BUILDERS[pml_key]()
    except ImportError as error:
        skip(f"pytorch-metric-learning is not installed: {error}")
    x, y = make_batch(batch_size, layout=layout)
    companions = {name: (lambda fn=fn: forward_backward(fn, x, y))
                  for name, fn in _runnable_ours(pml_key, batch_size).items()}
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=skip, companions=companions,
              max_call_s=PML_MAX_CALL_S, target_s=3.0)


@pytest.mark.parametrize("batch_size", [b for b in ST_SIZES if b in FLOOR_SIZES] or ST_SIZES,
                         ids=lambda b: f"B{b}")
@pytest.mark.parametrize("st_key", sorted(ST_BUILDERS))
def test_st(benchmark, cell, st_key, batch_size):
    """sentence-transformers (the `peers` extra), P x K batches: the same loss as ours there."""
    skip = cell("st", st_key, batch_size, layout="pk")
    try:
        loss_fn = ST_BUILDERS[st_key]()
    except ImportError as error:
        skip(f"sentence-transformers is not installed (pip install -e '.[peers]'): {error}")
    x, y = make_batch(batch_size)
    ours = _runnable_ours(st_key, batch_size, peer="st")
    for name, fn in ours.items():  # the same loss, else the ratio means nothing
        assert forward_backward(fn, x, y) == pytest.approx(forward_backward(loss_fn, x, y), rel=1e-4), name
    companions = {name: (lambda fn=fn: forward_backward(fn, x, y)) for name, fn in ours.items()}
    run_timed(benchmark, lambda: forward_backward(loss_fn, x, y), skip_cell=skip, companions=companions,
              max_call_s=PML_MAX_CALL_S, target_s=3.0)
