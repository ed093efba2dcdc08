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
    path = MNIST_DIR / "train-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip(f"real MNIST not found at {path} (set MNIST_DIR to the folder of the IDX .gz files)")
    with gzip.open(path, "rb") as stream:
        header = np.frombuffer(stream.read(16), dtype=">i4")
        assert header[0] == 2051 and header[2] == header[3] == 28, f"unexpected IDX header {header}"
        pixels = np.frombuffer(stream.read(count * 784), dtype=np.uint8)
    return (pixels.reshape(count, 1, 28, 28) / 255.0).astype(np.float64)
