"""Real MNIST for the training-run tests, read from ../shared/data/mnist (test data only)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

# ../shared/data/mnist beside the checkout, or wherever MNIST_DIR points.
MNIST_DIR = Path(os.environ.get("MNIST_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")


def mnist_train_images(count: int) -> np.ndarray:
    """The first ``count`` training images as float64 in [0, 1], shape (count, 1, 28, 28)."""
    pixels = _idx("train-images-idx3-ubyte.gz", 2051, 4, count, 784)
    return (pixels.reshape(count, 1, 28, 28) / 255.0).astype(np.float64)


def _idx(name: str, magic: int, header_ints: int, count: int, size: int) -> np.ndarray:
    """The first ``count`` records of ``size`` bytes of an IDX file, after its header checks."""
    path = MNIST_DIR / name
    if not path.exists():
        pytest.skip(f"real MNIST not found at {path} (set MNIST_DIR to the folder of the IDX .gz files)")
    with gzip.open(path, "rb") as stream:
        header = np.frombuffer(stream.read(4 * header_ints), dtype=">i4")
        assert header[0] == magic and header[1] >= count, f"unexpected IDX header {header}"
        assert header_ints == 2 or tuple(header[2:]) == (28, 28), f"unexpected IDX header {header}"
        return np.frombuffer(stream.read(count * size), dtype=np.uint8)


def mnist_train_labels(count: int) -> np.ndarray:
    """The first ``count`` training labels, int64 (count,)."""
    return _idx("train-labels-idx1-ubyte.gz", 2049, 2, count, 1).astype(np.int64)
