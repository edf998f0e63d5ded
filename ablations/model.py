"""The MLP embedding head trained by every run."""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingMLP(nn.Module):
    """features (B, F) float -> embeddings (B, E) float (unit norm when `normalize`).

    `hidden_layers` blocks of Linear(width) + ReLU, then Linear(embedding_dim).
    The last Linear is the last layer shared by every loss component: its
    parameters are what gradient-based weightings (gradnorm, grad_norm_balance)
    measure gradients on (`shared_parameters`).
    """

    def __init__(self, in_features: int, *, hidden_layers: int, width: int,
                 embedding_dim: int, normalize: bool):
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = in_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(fan_in, embedding_dim)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.body(x))  # (B, E)
        if self.normalize:
            z = nn.functional.normalize(z, dim=1)
        return z

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer's parameters (weight, bias)."""
        return list(self.head.parameters())


def build_encoder(config, in_features: int) -> nn.Module:
    """RunConfig (or anything with its attributes), F -> the run's encoder at initialisation.

    The caller seeds torch first (`torch.manual_seed(config.seed)`): the same seed
    gives the same initial weights, trained or not (the `untrained` baseline).
    The module maps (B, F) -> (B, E) and has `shared_parameters()`.
    """
    if ":" in config.encoder:  # a user's factory, "package.module:function" (ablations.plugins)
        from ablations.plugins import build_plugin_encoder

        return build_plugin_encoder(config.encoder, in_features, config.embedding_dim)
    if config.encoder != "mlp":
        raise ValueError(f"encoder: unknown {config.encoder!r}; valid: mlp")
    return EmbeddingMLP(in_features, hidden_layers=config.hidden_layers, width=config.width,
                        embedding_dim=config.embedding_dim, normalize=config.normalize)
