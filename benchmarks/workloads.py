"""The benchmark workload: sizes, the P x K batch and one forward + backward step.

Every case is timed on the same tensors: standard-normal embeddings (B, D)
float32 with `requires_grad`, labels with B / K classes of K samples each.
"""

import os

import torch

D = 128                          # embedding size
K = 8                            # samples per class (B / K classes)
LAYOUTS = ("pk", "random")       # P x K labels, or random labels over B / K classes (uneven)
SIZES_ENV = "TRIPLETLAB_BENCH_SIZES"    # e.g. "1024,4096,16384": every cell at these B instead
DEVICE_ENV = "TRIPLETLAB_BENCH_DEVICE"  # "cpu" (default) or "cuda"


def _sizes_from_env():
    raw = os.environ.get(SIZES_ENV)
    if raw is None:
        return (64, 256, 1024, 4096), 16384
    try:
        sizes = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"{SIZES_ENV} must be comma-separated ints, got {raw!r}") from None
    if not sizes or min(sizes) < K or any(size % K for size in sizes):
        raise ValueError(f"{SIZES_ENV} sizes must be multiples of {K}, got {raw!r}")
    return sizes, None


# SIZES: every cell; LARGE: also batch-all, semi-hard (P x K) and the floor (None when SIZES come from the env)
SIZES, LARGE = _sizes_from_env()


def bench_device() -> torch.device:
    """-> $TRIPLETLAB_BENCH_DEVICE ("cpu" when unset); "cuda" must be available."""
    raw = os.environ.get(DEVICE_ENV, "cpu")
    if raw not in ("cpu", "cuda"):
        raise ValueError(f"{DEVICE_ENV} must be 'cpu' or 'cuda', got {raw!r}")
    if raw == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}=cuda but torch sees no CUDA device")
    return torch.device(raw)
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


def make_batch(batch_size: int, *, dim: int = D, per_class: int = K, seed: int = SEED, layout: str = "pk"):
    """batch_size, dim, per_class, layout -> embeddings (B, D) float32 leaf, labels (B,) int64.

    layout "pk": B / K classes of K consecutive samples; "random": each label drawn
    uniformly from B / K classes (uneven classes, about 16-18 members at most for
    B = 1024-4096: batches that are not P x K sampled). The embeddings are standard
    normal, drawn from a fixed seed so every case sees the same tensor.
    """
    if batch_size % per_class != 0:
        raise ValueError(f"batch_size must be a multiple of per_class={per_class}, got {batch_size}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch_size, dim, generator=gen, dtype=torch.float32)
    if layout == "pk":
        labels = torch.arange(batch_size // per_class, dtype=torch.int64).repeat_interleave(per_class)
    else:
        labels = torch.randint(0, batch_size // per_class, (batch_size,), generator=gen, dtype=torch.int64)
    device = bench_device()  # drawn on the CPU: the same numbers on every device
    return embeddings.to(device).requires_grad_(True), labels.to(device)


def forward_backward(loss_fn, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """loss_fn(embeddings (B, D), labels (B,)) -> scalar; runs forward + backward, -> loss value.

    On a GPU the .item() waits for the backward's kernels too (the gradient is written before it returns).
    """
    embeddings.grad = None
    loss = loss_fn(embeddings, labels)
    loss.backward()
    return loss.item()
