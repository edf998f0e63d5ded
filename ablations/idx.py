"""MNIST-format IDX files (MNIST, Fashion-MNIST, EMNIST, KMNIST), gzipped or not.

The format (LeCun's page): 2 zero bytes, one dtype byte (0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), one byte with the number of
dimensions, then each dimension as a big-endian uint32, then the data big-endian
in C order. Debian's `dataset-fashion-mnist` package installs Fashion-MNIST this way
(/usr/share/dataset-fashion-mnist/*-ubyte.gz), so `dataset = "idx"` trains on it
offline.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, *, key: str) -> np.ndarray:
    """IDX file (.gz or not) -> its array; ValueError naming `key` and the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{key}: file not found: {str(path)!r}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{key} {str(path)!r}: damaged gzip file ({err})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _DTYPES or raw[3] == 0:
        raise ValueError(f"{key} {str(path)!r}: not an IDX file (expected 2 zero bytes, a dtype "
                         f"byte in {sorted(hex(k) for k in _DTYPES)} and a dimension count)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{key} {str(path)!r}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{key} {str(path)!r}: header says shape {shape} ({expected} bytes of "
                         f"data) but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_idx_xy(images: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """IDX images (N, H, W) and labels (N,) -> X (N, H * W) float32, y (N,) int64.

    uint8 images are scaled to [0, 1]; other dtypes are kept as they are (the split
    standardises the features anyway). Labels and lengths are checked by the caller
    (`ablations.data.check_xy`, as for every dataset).
    """
    x = read_idx(images, key="idx_images")
    y = read_idx(labels, key="idx_labels")
    if x.ndim < 2:
        raise ValueError(f"idx_images {str(images)!r}: expected images (N, H, W), got shape {x.shape}")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return (x.reshape(len(x), -1).astype(np.float32) / scale), y.astype(np.int64, copy=False) \
        if np.issubdtype(y.dtype, np.integer) else y
