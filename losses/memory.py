"""Cross-batch memory (XBM; Wang et al., CVPR 2020): a ring buffer of past embeddings and labels.

State only (a thin nn.Module with buffers, so `state_dict` resumes it exactly); the losses
against it are the pure `*_triplet_loss_refs` functions. The order and the rules are
PML's `CrossBatchMemory(loss, embedding_size, memory_size)`:

- the batch is enqueued first (detached), then the loss is taken between the batch (the
  anchors, with gradients) and the memory (positives and negatives, no gradient);
- an anchor's own entry in the memory (the slot it was just written to) is never its
  positive (`enqueue` returns those slots: `anchor_index_in_refs`); other entries of
  the same sample from earlier steps are ordinary positives, as in PML;
- before the memory is full, only its filled part is used (PML: `memory[:queue_idx]`
  until the write pointer wraps), never the zero-initialised rest.

The weight of the batch-vs-memory loss against the batch-vs-batch loss is the caller's:
`xbm_total` is XBM's loss(batch, batch) + w * loss(batch, memory) (w = 1 in the authors'
code; PML's wrapper alone is w = infinity: only the memory loss).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .validation import check_embeddings, check_labels, check_weight


class CrossBatchMemory(nn.Module):
    """Ring buffer of `size` embeddings (size, dim) and labels (size,); buffers `embeddings`,
    `labels`, `filled` () (entries written, at most size) and `pointer` () (the next slot)."""

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"memory {name} must be an int >= 1, got {value!r}")
        self.size, self.dim = size, dim
        self.register_buffer("embeddings", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings (B, dim), labels (B,) int -> (B,) int64: the slots they were written to (detached copies).

        B must not exceed the memory size (a batch would overwrite itself).
        """
        check_embeddings(embeddings)
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of dimension {self.dim} (the memory's), got {tuple(embeddings.shape)}")
        B = embeddings.shape[0]
        check_labels(labels, batch_size=B, device=embeddings.device)
        if B > self.size:
            raise ValueError(f"a batch of {B} rows does not fit a memory of memory_size = {self.size}: "
                             f"use memory_size >= the batch")
        slots = (self.pointer + torch.arange(B, device=self.pointer.device)) % self.size  # (B,)
        self.embeddings[slots] = embeddings.detach().to(self.embeddings.dtype)
        self.labels[slots] = labels.detach().to(torch.long)
        self.pointer.copy_((self.pointer + B) % self.size)
        self.filled.clamp_(max=self.size - B).add_(B)  # min(filled + B, size)
        return slots

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> embeddings (F, dim), labels (F,): the F = filled entries (all once full), slot order."""
        filled = int(self.filled)
        return self.embeddings[:filled], self.labels[:filled]


def loss_against_memory(
    loss_refs: Callable, memory: CrossBatchMemory, embeddings: torch.Tensor, labels: torch.Tensor, **settings
):
    """A `*_triplet_loss_refs` function, memory, embeddings (B, D), labels (B,) -> its loss (and stats).

    PML's order: the batch is enqueued, then the loss is taken between the batch and the
    memory's filled part, each anchor's own new entry excluded (`anchor_index_in_refs`).
    """
    slots = memory.enqueue(embeddings, labels)
    references, reference_labels = memory.contents()
    return loss_refs(embeddings, labels, references, reference_labels, anchor_index_in_refs=slots, **settings)


def xbm_total(batch_loss: torch.Tensor, memory_loss: torch.Tensor, *, weight: float) -> torch.Tensor:
    """batch_loss (), memory_loss () -> batch_loss + weight * memory_loss (XBM's objective)."""
    return batch_loss + check_weight(weight, name="weight") * memory_loss
