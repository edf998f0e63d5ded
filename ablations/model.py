"""The encoders a run trains: `mlp` (feature vectors) and `conv` (images), and `build_encoder`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ablations.keys import NON_NEGATIVE, POSITIVE, Key
from ablations.plugin_import import is_import_string
from ablations.plugins import build_plugin_encoder

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


class EmbeddingConv(nn.Module):
    """features (B, C*H*W) float -> embeddings (B, E) float (unit norm when `normalize`).

    A small convolutional net for image rows (rows of X are images in C, H, W order):
    three blocks of Conv3x3 + BatchNorm + ReLU with `channels`, 2*channels and
    2*channels filters, a 2x2 max-pool after the first two (when the image is at
    least 4 pixels on each side there), global average pooling, then Linear(embedding_dim): the last shared layer
    (`shared_parameters`). BatchNorm keeps the embeddings from collapsing early
    in training (measured on rendered glyphs: without it a 3-layer net stayed near
    the untrained score after 1500 steps); it uses batch statistics in training and
    running statistics in evaluation (`model.eval()`).
    """

    def __init__(self, image_shape: tuple[int, int, int], *, channels: int, embedding_dim: int,
                 normalize: bool):
        super().__init__()
        c, h, w = image_shape
        widths = (channels, 2 * channels, 2 * channels)
        layers: list[nn.Module] = []
        fan_in = c
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(fan_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU()]
            if i < 2 and min(h, w) >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            fan_in = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(fan_in, embedding_dim)
        self.image_shape = image_shape
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        z = self.head(self.body(x.reshape(B, *self.image_shape)))  # (B, E)
        if self.normalize:
            z = nn.functional.normalize(z, dim=1)
        return z

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer's parameters (weight, bias)."""
        return list(self.head.parameters())


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """"CxHxW" (e.g. "1x28x28") -> (C, H, W); ValueError naming the key otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"key 'image_shape' must be 'CxHxW' with positive integers "
                         f"(e.g. '1x28x28'), got {text!r}")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def image_shape_of(config, in_features: int) -> tuple[int, int, int]:
    """The (C, H, W) of each row: `image_shape`, or 1 x s x s when F = s^2 and it is ""."""
    if config.image_shape:
        shape = parse_image_shape(config.image_shape)
        if shape[0] * shape[1] * shape[2] != in_features:
            raise ValueError(f"key 'image_shape' = {config.image_shape!r} holds "
                             f"{shape[0] * shape[1] * shape[2]} values but the dataset's rows have "
                             f"{in_features} features")
        return shape
    side = math.isqrt(in_features)
    if side * side != in_features:
        raise ValueError(f"encoder = 'conv' needs key 'image_shape' ('CxHxW'): the dataset's rows "
                         f"have {in_features} features, not a square number of pixels")
    return 1, side, side


@dataclass(frozen=True)
class EncoderSpec:
    """One value of `encoder`: the config keys it reads besides ENCODER_KEYS (the config resets
    the keys no chosen component reads), with their defaults and checks, and its builder
    (RunConfig, F) -> module."""

    keys: tuple[Key, ...]
    build: Callable[[Any, int], nn.Module]


def _mlp(config, in_features: int) -> nn.Module:
    return EmbeddingMLP(in_features, hidden_layers=config.hidden_layers, width=config.width,
                        embedding_dim=config.embedding_dim, normalize=config.normalize)


def _conv(config, in_features: int) -> nn.Module:
    return EmbeddingConv(image_shape_of(config, in_features), channels=config.conv_channels,
                         embedding_dim=config.embedding_dim, normalize=config.normalize)


def _image_shape_problem(text: str) -> str:
    try:
        parse_image_shape(text) if text else None
    except ValueError:
        return "must be 'CxHxW' with positive integers (e.g. '1x28x28')"
    return ""


# Read by every encoder (a user's factory too) and by the heads on the embedding.
ENCODER_KEYS = (Key("embedding_dim", 32, "dimension E of the embedding", POSITIVE),)
_MLP_KEYS = (Key("hidden_layers", 1, "hidden Linear+ReLU layers of the MLP", NON_NEGATIVE),
             Key("width", 128, "hidden width", POSITIVE),
             Key("normalize", True, "L2-normalise the embeddings"))
# conv does not read hidden_layers and width, but they have always been part of its runs'
# identity (runs differing in them are stored apart), so they stay listed. A user's factory
# ("package.module:function") reads none.
ENCODER_SPECS: dict[str, EncoderSpec] = {
    "mlp": EncoderSpec(_MLP_KEYS, _mlp),
    "conv": EncoderSpec(_MLP_KEYS + (
        Key("image_shape", "", '"CxHxW" of each row of X; "" = 1 x s x s for F = s^2 features',
            (_image_shape_problem,)),
        Key("conv_channels", 32, "channels of the first block (doubled once)", POSITIVE)), _conv),
}


def build_encoder(config, in_features: int) -> nn.Module:
    """RunConfig (or anything with its attributes), F -> the run's encoder at initialisation.

    The caller seeds torch first (`torch.manual_seed(config.seed)`): the same seed
    gives the same initial weights, trained or not (the `untrained` baseline).
    The module maps (B, F) -> (B, E) and has `shared_parameters()`.
    """
    if is_import_string(config.encoder):  # a user's factory, "package.module:function" (ablations.plugins)
        return build_plugin_encoder(config.encoder, in_features, config.embedding_dim)
    if config.encoder not in ENCODER_SPECS:
        raise ValueError(f"encoder: unknown {config.encoder!r}; valid: {', '.join(ENCODER_SPECS)}")
    return ENCODER_SPECS[config.encoder].build(config, in_features)
