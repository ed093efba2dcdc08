"""Time each conv layer's forward + backward on the direct and the GEMM path (docs/speed.md).

Usage: ``python docs/benchmarks/conv_paths.py 1,128,1024 [NAME,...]``. Prints, per layer and batch,
the best and the median of 5 blocks for each path and their ratio gemm / direct. Thread counts are
what the environment gives (docs/speed.md ran it with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1).
The output of the run quoted in docs/speed.md is ``conv-paths.txt`` beside this file.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import scratch.functional.conv as conv_functional
from scratch import nn

# name: (class, in, out, kernel, stride, padding, input height = width)
LAYERS = {
    "ae.c1": (nn.Conv2d, 1, 16, 3, 3, 1, 28), "ae.c2": (nn.Conv2d, 16, 8, 3, 2, 1, 5),
    "ae.t1": (nn.ConvTranspose2d, 8, 16, 3, 2, 0, 2), "ae.t2": (nn.ConvTranspose2d, 16, 8, 5, 3, 1, 5),
    "ae.t3": (nn.ConvTranspose2d, 8, 1, 2, 2, 1, 15),
    "vae.c1": (nn.Conv2d, 1, 32, 4, 2, 1, 28), "vae.c2": (nn.Conv2d, 32, 64, 4, 2, 1, 14),
    "vae.t1": (nn.ConvTranspose2d, 64, 32, 4, 2, 1, 7), "vae.t2": (nn.ConvTranspose2d, 32, 1, 4, 2, 1, 14),
    "w16.c": (nn.Conv2d, 16, 16, 3, 1, 1, 14), "w32.c": (nn.Conv2d, 32, 32, 3, 1, 1, 14),
    "w16to32": (nn.Conv2d, 16, 32, 4, 2, 1, 14), "w64.c": (nn.Conv2d, 64, 64, 3, 1, 1, 7),
    "w8to32.c": (nn.Conv2d, 8, 32, 3, 1, 1, 14),
}


def time_path(layer, x, dy, path: str, calls: int) -> tuple[float, float]:
    """(best, median) ms per forward + backward over 5 blocks of ``calls`` calls on ``path``."""
    conv_functional.FORCE_PATH = path
    layer(x)
    layer.backward(dy)  # compiles, and fills the workspace
    blocks = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            layer(x)
            layer.backward(dy)
        blocks.append((time.perf_counter() - start) / calls * 1e3)
    blocks.sort()
    return blocks[0], blocks[2]


def main(argv: list[str]) -> None:
    batches = [int(b) for b in argv[0].split(",")]
    names = argv[1].split(",") if len(argv) > 1 else list(LAYERS)
    rng = np.random.default_rng(0)
    for name in names:
        cls, cin, cout, k, stride, padding, size = LAYERS[name]
        layer = cls(cin, cout, k, stride=stride, padding=padding, rng=0, dtype=np.float32)
        for batch in batches:
            x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
            dy = rng.standard_normal(layer(x).shape).astype(np.float32)
            calls = max(3, min(200, int(2e8 / max(1, x.size * cout * k * k))))
            (d_best, d_mid), (g_best, g_mid) = (time_path(layer, x, dy, path, calls) for path in ("direct", "gemm"))
            print(f"{name:9s} N={batch:5d} direct {d_best:8.3f} ({d_mid:.3f}) ms  gemm {g_best:8.3f} ({g_mid:.3f}) ms  "
                  f"ratio {g_best / d_best:.2f}", flush=True)
    conv_functional.FORCE_PATH = None


if __name__ == "__main__":
    main(sys.argv[1:])
