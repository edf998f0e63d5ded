"""Weighting methods: each proves its defining property on a toy problem with components of very different scales.

Toy: a shared parameter theta (2,), x = theta_0 + theta_1 / 2, y = theta_1 - theta_0 / 2,
L_big = 100 x^2 and L_small = 0.01 y^2 (about 1e4 apart at the start).
"""

from __future__ import annotations

import math

import pytest
import torch

from losses.weighting import make_weighting

COMPONENTS = ("big", "small")


def toy_losses(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    x = theta[0] + 0.5 * theta[1]
    y = theta[1] - 0.5 * theta[0]
    return {"big": 100 * x**2, "small": 0.01 * y**2}


def new_theta() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))


def grad_norm(loss: torch.Tensor, wrt: torch.Tensor) -> float:
    (g,) = torch.autograd.grad(loss, wrt, retain_graph=True)
    return float(g.norm())


def test_inverse_ema_brings_weighted_losses_together():
    theta = new_theta()
    w = make_weighting("inverse_ema", components=COMPONENTS, momentum=0.9)
    opt = torch.optim.SGD([theta], lr=2e-3)
    first = toy_losses(theta)
    assert first["big"].item() / first["small"].item() > 1e4  # the scales really differ
    for step in range(200):
        losses = toy_losses(theta)
        out = w(losses, step=step)
        weighted = [out.weights[k] * losses[k].item() for k in COMPONENTS]
        # stated tolerance: the weighted losses stay within 5% of each other while training moves them
        assert abs(weighted[0] - weighted[1]) <= 0.05 * max(weighted), (step, weighted)
        assert sum(out.weights.values()) == pytest.approx(len(COMPONENTS), rel=1e-12)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert toy_losses(theta)["big"].item() < first["big"].item()


def test_inverse_ema_follows_its_formula():
    momentum, eps = 0.5, 1e-8
    w = make_weighting("inverse_ema", components=COMPONENTS, momentum=momentum, eps=eps)
    sequence = [(4.0, 1.0), (2.0, 3.0), (8.0, 0.5)]
    ema = None
    for step, (a, b) in enumerate(sequence):
        out = w({"big": torch.tensor(a), "small": torch.tensor(b)}, step=step)
        ema = [a, b] if ema is None else [momentum * e + (1 - momentum) * v for e, v in zip(ema, (a, b))]
        inv = [1 / (e + eps) for e in ema]
        expected = [2 * i / sum(inv) for i in inv]
        assert [out.weights[k] for k in COMPONENTS] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("on", ["parameters", "embedding_output"])
def test_grad_norm_balance_equalises_gradient_norms(on):
    torch.manual_seed(0)
    w = make_weighting("grad_norm_balance", components=COMPONENTS)
    for trial in range(5):
        theta = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))
        if on == "parameters":
            shared, losses = theta, toy_losses(theta)
        else:  # a non-leaf tensor (the embedding output) as the shared tensor
            shared = theta * 3.0
            losses = toy_losses(shared)
        out = w(losses, step=trial, shared=[shared])
        raw = [grad_norm(losses[k], shared) for k in COMPONENTS]
        assert max(raw) / min(raw) > 100  # unbalanced before weighting
        assert [out.grad_norms[k] for k in COMPONENTS] == pytest.approx(raw, rel=1e-10)
        balanced = [grad_norm(out.weights[k] * losses[k], shared) for k in COMPONENTS]
        assert balanced[0] == pytest.approx(balanced[1], rel=1e-6)
        (total_grad,) = torch.autograd.grad(out.total, shared, retain_graph=True)
        expected = sum(out.weights[k] * torch.autograd.grad(losses[k], shared, retain_graph=True)[0] for k in COMPONENTS)
        torch.testing.assert_close(total_grad, expected)  # weights are detached constants


def test_gradnorm_alpha_zero_equalises_gradient_norms_and_keeps_sum():
    theta = new_theta()
    w = make_weighting("gradnorm", components=COMPONENTS, alpha=0.0, lr=0.05)
    for step in range(400):
        out = w(toy_losses(theta), step=step, shared=[theta])
        assert sum(out.weights.values()) == pytest.approx(len(COMPONENTS), rel=1e-12)
        assert all(v > 0 for v in out.weights.values())
    losses = toy_losses(theta)
    G = [grad_norm(out.weights[k] * losses[k], theta) for k in COMPONENTS]
    assert G[0] == pytest.approx(G[1], rel=0.01)
    raw = [grad_norm(losses[k], theta) for k in COMPONENTS]
    assert max(raw) / min(raw) > 1e3


def test_gradnorm_alpha_favours_the_slower_component():
    """With equal gradient norms, the component whose loss fell less (larger r_i) gets the larger weight."""
    theta = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    w = make_weighting("gradnorm", components=("a", "b"), alpha=1.5, lr=0.05)
    w({"a": theta.sum() ** 2, "b": theta.sum() ** 2}, step=0, shared=[theta])  # L(0) = 4 for both
    for step in range(1, 200):
        # same gradient direction and norm for a and b; a's loss has fallen to 1/4 of L(0), b's has not
        a = (theta.sum() ** 2 - 3.0 * theta.sum().detach() ** 2 / 4)
        b = theta.sum() ** 2
        out = w({"a": a, "b": b}, step=step, shared=[theta])
    assert out.weights["b"] > out.weights["a"]
    assert out.weights["a"] + out.weights["b"] == pytest.approx(2.0, rel=1e-12)


def test_uncertainty_optimum_is_the_loss():
    targets = {"big": 100.0, "small": 0.01}
    w = make_weighting("uncertainty", components=COMPONENTS)
    assert w.log_vars.detach().tolist() == [-0.5, -0.5]  # paper / LibMTL init
    opt = torch.optim.SGD(w.parameters(), lr=0.1)  # lr * |f'(-0.5)| must not overshoot the clamp at 10
    losses = {k: torch.tensor(v, dtype=torch.float64) for k, v in targets.items()}
    for step in range(500):
        out = w(losses, step=step)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    for i, k in enumerate(COMPONENTS):
        assert math.exp(w.log_vars[i].item()) == pytest.approx(targets[k], rel=1e-4)
        assert out.weights[k] == pytest.approx(1 / (2 * targets[k]), rel=1e-4)


def test_dwa_matches_hand_computation_over_three_epochs():
    T = 2.0
    w = make_weighting("dwa", components=("a", "b", "c"), temperature=T)
    epoch_means = [{"a": 3.0, "b": 1.0, "c": 0.5}, {"a": 1.5, "b": 0.9, "c": 0.5}, {"a": 1.2, "b": 0.3, "c": 0.6}]
    step_losses = {k: torch.tensor(1.0) for k in "abc"}

    def hand(prev, prev2):  # lambda_k = K exp(w_k / T) / sum_i exp(w_i / T), w_k = L_k(t-1) / L_k(t-2)
        e = {k: math.exp(prev[k] / prev2[k] / T) for k in "abc"}
        return {k: 3 * e[k] / sum(e.values()) for k in "abc"}

    assert w(step_losses, step=0).weights == {"a": 1.0, "b": 1.0, "c": 1.0}  # epoch 1
    w.end_epoch(epoch_means[0])
    assert w(step_losses, step=1).weights == {"a": 1.0, "b": 1.0, "c": 1.0}  # epoch 2
    w.end_epoch(epoch_means[1])
    expected = hand(epoch_means[1], epoch_means[0])  # epoch 3
    out = w({k: torch.tensor(float(i + 1)) for i, k in enumerate("abc")}, step=2)
    assert out.weights == pytest.approx(expected, rel=1e-12)
    assert out.total.item() == pytest.approx(sum(expected[k] * (i + 1) for i, k in enumerate("abc")), rel=1e-6)
    w.end_epoch(epoch_means[2])
    assert w(step_losses, step=3).weights == pytest.approx(hand(epoch_means[2], epoch_means[1]), rel=1e-12)  # epoch 4
    assert expected["a"] < expected["b"] < expected["c"]  # the loss that fell least gets the most weight


def test_log_normalised_is_sum_of_log1p():
    theta = new_theta()
    losses = toy_losses(theta)
    out = make_weighting("log_normalised", components=COMPONENTS)(losses, step=0)
    expected = sum(torch.log1p(losses[k]) for k in COMPONENTS)
    torch.testing.assert_close(out.total, expected)
    assert out.weights["big"] == pytest.approx(1 / (1 + losses["big"].item()))


def test_gradnorm_initial_losses_are_the_mean_of_the_first_steps():
    theta = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    w = make_weighting("gradnorm", components=("a", "b"), initial_steps=3)
    seen = []
    for step, scale in enumerate([1.0, 2.0, 4.0, 8.0, 16.0]):
        losses = {"a": scale * theta.sum() ** 2, "b": theta.pow(2).sum() / scale}
        seen.append([losses["a"].item(), losses["b"].item()])
        w(losses, step=step, shared=[theta])
    expected = [sum(row[i] for row in seen[:3]) / 3 for i in range(2)]  # steps 3 and 4 do not count
    assert w.initial_losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert int(w.num_steps) == 5
