"""P x K batch sampling: P classes per batch, K samples of each."""

from __future__ import annotations

import numpy as np
import torch


class PKSampler:
    """labels (N,) int -> per epoch, `len(self)` index batches of shape (P * K,).

    Each batch draws P distinct classes uniformly, then K samples of each class
    without replacement (with replacement only for a class smaller than K). An
    epoch has floor(N / (P * K)) batches (at least one). All randomness comes
    from `generator`, so a seed fixes every batch.
    """

    def __init__(self, labels: np.ndarray, *, p: int, k: int, generator: torch.Generator):
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if p > len(classes):
            raise ValueError(f"sampler_p: P = {p} classes per batch but the training split "
                             f"has only {len(classes)} classes")
        self.p, self.k, self.generator = p, k, generator
        self.members = [torch.from_numpy(np.flatnonzero(labels == c)) for c in classes]
        self.num_batches = max(1, len(labels) // (p * k))

    def __len__(self) -> int:
        return self.num_batches

    def _draw(self, members: torch.Tensor) -> torch.Tensor:
        n = len(members)
        if n >= self.k:
            pick = torch.randperm(n, generator=self.generator)[: self.k]
        else:
            pick = torch.randint(n, (self.k,), generator=self.generator)
        return members[pick]

    def __iter__(self):
        for _ in range(self.num_batches):
            chosen = torch.randperm(len(self.members), generator=self.generator)[: self.p]
            yield torch.cat([self._draw(self.members[int(c)]) for c in chosen])
