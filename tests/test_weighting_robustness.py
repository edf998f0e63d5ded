"""Weighting methods: zero and non-finite components, exact resume from state_dict, bad input."""

from __future__ import annotations

import io
import math

import pytest
import torch

from losses.weighting import WEIGHTINGS, make_weighting

COMPONENTS = ("big", "small")
PARAMS = {
    "fixed": {"weights": {"big": 0.5, "small": 2.0}},
    "inverse_ema": {"momentum": 0.8},
    "log_normalised": {},
    "uncertainty": {},
    "grad_norm_balance": {},
    "gradnorm": {"alpha": 1.5, "lr": 0.05},
    "dwa": {"temperature": 2.0},
}
EPOCH = 5  # steps per epoch in these runs


def test_every_method_is_covered():
    assert set(PARAMS) == set(WEIGHTINGS)


def toy_losses(theta: torch.Tensor, *, zero_small: bool = False) -> dict[str, torch.Tensor]:
    x = theta[0] + 0.5 * theta[1]
    y = theta[1] - 0.5 * theta[0]
    small = 0.0 * y if zero_small else 0.01 * y**2  # exactly 0, still attached to the graph
    return {"big": 100 * x**2, "small": small}


class Run:
    """A toy training run: theta trained by SGD, the weighting's own parameters by Adam."""

    def __init__(self, name: str):
        self.theta = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
        self.w = make_weighting(name, components=COMPONENTS, **PARAMS[name])
        self.opt = torch.optim.SGD([self.theta], lr=1e-3, momentum=0.9)
        self.wopt = torch.optim.Adam(self.w.parameters(), lr=0.1) if list(self.w.parameters()) else None
        self.epoch_sums = dict.fromkeys(COMPONENTS, 0.0)

    def step(self, step: int, *, zero_small: bool = False):
        losses = toy_losses(self.theta, zero_small=zero_small)
        out = self.w(losses, step=step, shared=[self.theta])
        self.opt.zero_grad()
        if self.wopt is not None:
            self.wopt.zero_grad()
        out.total.backward()
        self.opt.step()
        if self.wopt is not None:
            self.wopt.step()
        for k in COMPONENTS:
            self.epoch_sums[k] += losses[k].item()
        if (step + 1) % EPOCH == 0:
            self.w.end_epoch({k: v / EPOCH for k, v in self.epoch_sums.items()})
            self.epoch_sums = dict.fromkeys(COMPONENTS, 0.0)
        return out

    def state(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "theta": self.theta.detach().clone(),
                "opt": self.opt.state_dict(),
                "w": self.w.state_dict(),
                "wopt": None if self.wopt is None else self.wopt.state_dict(),
                "epoch_sums": dict(self.epoch_sums),
            },
            buffer,
        )
        return buffer.getvalue()

    def load(self, blob: bytes) -> None:
        state = torch.load(io.BytesIO(blob), weights_only=True)
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        self.opt.load_state_dict(state["opt"])
        self.w.load_state_dict(state["w"])
        if self.wopt is not None:
            self.wopt.load_state_dict(state["wopt"])
        self.epoch_sums = state["epoch_sums"]


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_zero_component_keeps_weights_finite(name):
    run = Run(name)
    for step in range(150):
        out = run.step(step, zero_small=True)
        assert all(math.isfinite(v) for v in out.weights.values()), (step, out.weights)
        assert math.isfinite(out.total.item())
        assert torch.isfinite(run.theta).all()
        if out.grad_norms is not None:
            assert out.grad_norms["small"] == 0.0
    assert all(math.isfinite(v) and v >= 0 for v in out.weights.values())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_non_finite_component_raises_naming_it_and_the_step(name, bad):
    run = Run(name)
    for step in range(7):
        run.step(step)
    before = {k: v.clone() for k, v in run.w.state_dict().items()}
    losses = toy_losses(run.theta)
    losses["small"] = losses["small"] * bad
    with pytest.raises(ValueError, match=r"step 7: 'small' = (nan|inf)"):
        run.w(losses, step=7, shared=[run.theta])
    after = run.w.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing corrupted
    with pytest.raises(ValueError, match="'big'"):
        run.w.end_epoch({"big": float("nan"), "small": 1.0})


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_resumed_run_equals_uninterrupted_run(name):
    steps, cut = 24, 13  # cut mid-epoch
    straight = Run(name)
    expected = [straight.step(s).weights for s in range(steps)]

    first = Run(name)
    got = [first.step(s).weights for s in range(cut)]
    blob = first.state()
    del first
    resumed = Run(name)
    resumed.load(blob)
    got += [resumed.step(s).weights for s in range(cut, steps)]

    assert got == expected  # identical floats, step by step
    end, other = straight.w.state_dict(), resumed.w.state_dict()
    assert end.keys() == other.keys()
    assert all(torch.equal(end[k], other[k]) for k in end)
    assert torch.equal(straight.theta, resumed.theta)


@pytest.mark.parametrize("name", ["inverse_ema", "uncertainty", "gradnorm", "dwa"])
def test_stateful_weights_change_so_resume_test_can_fail(name):
    run = Run(name)
    weights = [run.step(s).weights for s in range(24)]
    assert weights[0] != weights[-1]


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="unknown weighting method 'equal'.*'fixed'.*'dwa'"):
        make_weighting("equal", components=COMPONENTS)


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['beta'\].*valid: \['momentum', 'eps'\]"):
        make_weighting("inverse_ema", components=COMPONENTS, beta=0.9)


def test_unknown_and_missing_components_in_losses():
    w = make_weighting("log_normalised", components=COMPONENTS)
    one = torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"unknown component\(s\) \['triplet'\].*valid: \['big', 'small'\]"):
        w({"big": one, "small": one, "triplet": one}, step=3)
    with pytest.raises(ValueError, match=r"missing component\(s\) \['small'\] in losses at step 3"):
        w({"big": one}, step=3)
    with pytest.raises(ValueError, match="'small' to be a 0-dim float tensor, got \\(2,\\)"):
        w({"big": one, "small": torch.ones(2)}, step=3)
    with pytest.raises(ValueError, match="'small' = -1.0"):
        w({"big": one, "small": -one}, step=3)


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"big": -1.0, "small": 1.0}, r"weights\['big'\] to be >= 0, got -1.0"),
        ({"big": 1.0, "small": float("nan")}, r"weights\['small'\] to be finite, got nan"),
        ({"big": 1.0}, r"missing component\(s\) \['small'\] in weights"),
        ({"big": 1.0, "small": 1.0, "ce": 1.0}, r"unknown component\(s\) \['ce'\] in weights"),
        ({"big": "1", "small": 1.0}, r"weights\['big'\] to be a finite real number"),
    ],
    ids=["negative", "nan", "missing", "extra", "string"],
)
def test_fixed_rejects_bad_weights_naming_them(weights, match):
    with pytest.raises(ValueError, match=match):
        make_weighting("fixed", components=COMPONENTS, weights=weights)


@pytest.mark.parametrize(
    "components, match",
    [((), "non-empty"), ("big", "non-empty sequence"), (("a", "a"), "distinct"), (("a", 3), "non-empty str")],
    ids=["empty", "string", "duplicate", "not-str"],
)
def test_bad_components_raise(components, match):
    with pytest.raises(ValueError, match=match):
        make_weighting("dwa", components=components)


@pytest.mark.parametrize("name", ["grad_norm_balance", "gradnorm"])
def test_gradient_methods_need_shared_tensors(name):
    w = make_weighting(name, components=COMPONENTS, **PARAMS[name])
    theta = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected shared to be a non-empty list"):
        w(toy_losses(theta), step=0)
    with pytest.raises(ValueError, match=r"shared\[0\] to be a tensor that requires grad"):
        w(toy_losses(theta), step=0, shared=[torch.ones(2)])


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("inverse_ema", {"momentum": 1.0}, "momentum in \\[0, 1\\)"),
        ("gradnorm", {"alpha": -0.5}, "alpha >= 0"),
        ("gradnorm", {"initial_steps": 0}, "initial_steps to be an int >= 1"),
        ("dwa", {"temperature": 0.0}, "temperature to be > 0"),
        ("uncertainty", {"init": -20.0}, "log_var_min <= init <= log_var_max"),
        ("grad_norm_balance", {"eps": float("nan")}, "eps to be finite"),
    ],
)
def test_bad_hyper_parameters_raise_naming_them(name, params, match):
    with pytest.raises(ValueError, match=match):
        make_weighting(name, components=COMPONENTS, **params)


def test_bad_step_raises():
    w = make_weighting("log_normalised", components=COMPONENTS)
    with pytest.raises(ValueError, match="step to be an int >= 0, got -1"):
        w({"big": torch.tensor(1.0), "small": torch.tensor(1.0)}, step=-1)
