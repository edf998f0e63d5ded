"""A user's own pieces for a grid (tests/test_plugins.py): a loss, an encoder factory, a data loader,
and deliberately broken ones for the error messages."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from losses import batch_all_triplet_loss, batch_hard_triplet_loss


def my_loss(embeddings, labels, *, margin, metric):
    """A user's batch loss: batch-all, mean over all valid triplets."""
    return batch_all_triplet_loss(embeddings, labels, margin=margin, metric=metric, reduction="mean")


def two_part_loss(embeddings, labels, *, margin, metric):
    """Several components (trained through the run's weighting): a triplet term and a norm penalty."""
    return {"triplet": my_loss(embeddings, labels, margin=margin, metric=metric),
            "norm": (embeddings.norm(dim=1) - 1.0).pow(2).mean()}


def loss_with_stats(embeddings, labels, *, margin):
    """A loss that reports its own TripletStats (euclidean built in, so metric is not taken)."""
    return batch_hard_triplet_loss(embeddings, labels, margin=margin, metric="euclidean", return_stats=True)


def make_encoder(in_features, embedding_dim):
    """A user's encoder: one linear layer, tanh, normalised rows."""
    return nn.Sequential(nn.Linear(in_features, embedding_dim), nn.Tanh(), _Normalize())


class _Normalize(nn.Module):
    def forward(self, x):
        return nn.functional.normalize(x, dim=1)


def load_data():
    """A user's dataset: 8 well-separated Gaussian classes of 12 points in 6 dimensions."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(8), 12)
    return rng.normal(0.0, 3.0, size=(8, 6))[y] + rng.normal(0.0, 1.0, size=(96, 6)), y


# ---- broken pieces ---------------------------------------------------------------------------

def loss_returning_list(embeddings, labels, *, margin):
    return [my_loss(embeddings, labels, margin=margin, metric="euclidean")]


def loss_of_one_argument(embeddings):
    return embeddings.sum()


def encoder_wrong_width(in_features, embedding_dim):
    return nn.Linear(in_features, embedding_dim + 1)


def encoder_not_a_module(in_features, embedding_dim):
    return lambda x: x


def data_with_float_labels():
    x, y = load_data()
    return x, y.astype(float)


NOT_CALLABLE = 3


def encoder_with_batch_norm(in_features, embedding_dim):
    """A user's encoder with running statistics: building it must leave them at initialisation."""
    return nn.Sequential(nn.Linear(in_features, 8), nn.BatchNorm1d(8), nn.Linear(8, embedding_dim))


def data_requiring_grad():
    """load_data as torch tensors, X requiring grad (as a loader built on a model may return)."""
    x, y = load_data()
    return torch.tensor(x, requires_grad=True), torch.from_numpy(y)


def data_that_exits():
    import sys

    sys.exit(3)


def data_on_the_meta_device():
    x, y = load_data()
    return torch.empty(x.shape, device="meta"), y


CALLS = [0]


def data_differing_by_call():
    """load_data with another noise on each call (as a loader seeded by its process id is)."""
    CALLS[0] += 1
    x, y = load_data()
    return x + np.random.default_rng(CALLS[0]).normal(size=x.shape), y
