"""The encoders: conv shapes, gradients, determinism, image_shape resolution."""

from __future__ import annotations

import pytest
import torch

from ablations.config import resolve_config
from ablations.model import EmbeddingConv, build_encoder, image_shape_of
from ablations.train import run_one


@pytest.mark.parametrize("shape,features", [("1x8x8", 64), ("3x6x5", 90), ("1x28x28", 784),
                                            ("2x3x3", 18)])
def test_conv_shapes_norm_and_gradients(shape, features):
    cfg = resolve_config({"encoder": "conv", "image_shape": shape, "conv_channels": 4,
                          "embedding_dim": 7})
    torch.manual_seed(0)
    model = build_encoder(cfg, features)
    assert isinstance(model, EmbeddingConv)
    x = torch.randn(5, features, requires_grad=True)
    z = model(x)
    assert z.shape == (5, 7)
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    (z[:, 0] * torch.arange(5.0)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert model.shared_parameters() == list(model.head.parameters())


def test_conv_same_seed_same_weights_and_outputs():
    cfg = resolve_config({"encoder": "conv", "conv_channels": 4})
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_encoder(cfg, 64).eval()
        outs.append(model(torch.ones(2, 64)))
    assert torch.equal(outs[0], outs[1])


def test_image_shape_inferred_for_square_rows_and_checked_otherwise():
    cfg = resolve_config({"encoder": "conv"})
    assert image_shape_of(cfg, 784) == (1, 28, 28)
    with pytest.raises(ValueError, match="needs key 'image_shape'.*65 features"):
        image_shape_of(cfg, 65)
    bad = resolve_config({"encoder": "conv", "image_shape": "1x8x9"})
    with pytest.raises(ValueError, match="'1x8x9' holds 72 values .* 64 features"):
        image_shape_of(bad, 64)
    with pytest.raises(ValueError, match="image_shape' must be 'CxHxW'"):
        resolve_config({"encoder": "conv", "image_shape": "28x28"})


def test_conv_run_is_deterministic_on_cpu(one_thread):
    cfg = {"dataset": "digits", "encoder": "conv", "conv_channels": 4, "epochs": 1,
           "loss": "batch_hard", "embedding_dim": 8}
    a, b = run_one(cfg), run_one(cfg)
    assert a["status"] == "finished", a["error"]
    assert a["metrics"] == b["metrics"]
    assert [s["loss"] for s in a["steps"]] == [s["loss"] for s in b["steps"]]
