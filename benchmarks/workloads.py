"""The benchmark workload: sizes, the P x K batch and one forward + backward step.

Every case is timed on the same tensors: standard-normal embeddings (B, D)
float32 with `requires_grad`, labels with B / K classes of K samples each.
"""

import os

import torch

D = 128                          # embedding size
K = 8                            # samples per class (B / K classes)
SIZES = (64, 256, 1024, 4096)    # batch sizes B
MARGIN = 0.2                     # every loss and miner gets it explicitly
SEED = 0


def machine_threads() -> int:
    """-> the number of CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


THREADS_ENV = "TRIPLETLAB_BENCH_THREADS"


def bench_threads() -> int:
    """-> $TRIPLETLAB_BENCH_THREADS if set (an int >= 1), else the machine's cores.

    On a machine busy with other work, several intra-op threads can be 10-100x slower
    than one (each parallel region waits for its slowest, descheduled thread); set 1
    there and say so next to the numbers.
    """
    raw = os.environ.get(THREADS_ENV)
    if raw is None:
        return machine_threads()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV} must be an int >= 1, got {raw!r}")
    return int(raw)


def use_bench_threads() -> int:
    """Set torch's intra-op threads to bench_threads(); -> that number."""
    threads = bench_threads()
    torch.set_num_threads(threads)
    return threads


def make_batch(batch_size: int, *, dim: int = D, per_class: int = K, seed: int = SEED):
    """batch_size, dim, per_class -> embeddings (B, D) float32 leaf, labels (B,) int64.

    Labels are B / K classes of K consecutive samples; the embeddings are standard
    normal, drawn from a fixed seed so every case sees the same tensor.
    """
    if batch_size % per_class != 0:
        raise ValueError(f"batch_size must be a multiple of per_class={per_class}, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch_size, dim, generator=gen, dtype=torch.float32)
    labels = torch.arange(batch_size // per_class, dtype=torch.int64).repeat_interleave(per_class)
    return embeddings.requires_grad_(True), labels


def forward_backward(loss_fn, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """loss_fn(embeddings (B, D), labels (B,)) -> scalar; runs forward + backward, -> loss value."""
    embeddings.grad = None
    loss = loss_fn(embeddings, labels)
    loss.backward()
    return loss.item()
