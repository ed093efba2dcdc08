"""Where the conv-vae training step spends its time on the GEMM path, call by call, at 1 and 2 threads.

    OPENBLAS_CORETYPE=Haswell python docs/benchmarks/conv_products_in_step.py [--batch 128] [--steps 20] \
        > docs/benchmarks/conv-products-in-step.txt

Each thread count runs in a fresh process (the pools' settings are read once, when each library
loads). The process builds ``autoencoders.bench.models.training_step_case("conv-vae", batch)``,
wraps the GEMM path's ``np.matmul``, its NCHW ``np.add`` and its kernels (im2col, col2im) with a
clock, runs five warm-up steps and then ``--steps`` timed steps of the scratch side, and prints
the step time and, per call site, the milliseconds per step and the median call. Then each of the
three products of the 32->64 layer alone, ten calls in a row, best-of-nine medians: the same
shapes outside the step, so that the difference is what the step's surroundings cost them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CELL = r"""
import sys, time, collections
from autoencoders.threads import quiet_wait_policies, set_threads
quiet_wait_policies()  # before NumPy loads, as the command does
import numpy as np
threads, batch, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
set_threads(threads)
from autoencoders.bench.models import training_step_case
import scratch.functional.conv as fconv
import scratch.kernels.conv as kconv

calls = collections.defaultdict(list)

class ClockedNumPy:
    def __getattr__(self, name):
        return getattr(np, name)
    def matmul(self, a, b, out=None):
        started = time.perf_counter(); result = np.matmul(a, b, out=out)
        calls[f"matmul {a.shape[1:]} x {b.shape[1:]}"].append(time.perf_counter() - started); return result
    def add(self, *args, **kwargs):
        started = time.perf_counter(); result = np.add(*args, **kwargs)
        calls["add into NCHW"].append(time.perf_counter() - started); return result

class ClockedKernels:
    def __getattr__(self, name):
        kernel = getattr(kconv, name)
        def clocked(*args):
            started = time.perf_counter(); result = kernel(*args)
            calls[f"{name} {args[0].shape}"].append(time.perf_counter() - started); return result
        return clocked

fconv.np, fconv.kernels = ClockedNumPy(), ClockedKernels()
case = training_step_case("conv-vae", batch)
for _ in range(5):
    case.scratch()
calls.clear()
started = time.perf_counter()
for _ in range(steps):
    case.scratch()
step = (time.perf_counter() - started) / steps
print(f"threads {threads}, batch {batch}: scratch step {step * 1e3:.1f} ms")
for name, times in sorted(calls.items(), key=lambda item: -sum(item[1])):
    print(f"  in the step  {name:58s} {sum(times) / steps * 1e3:6.2f} ms/step, median call {np.median(times) * 1e3:.2f} ms")

rng = np.random.default_rng(0)
n = batch * 49
W, cols, dy = rng.random((64, 512), np.float32), rng.random((512, n), np.float32), rng.random((64, n), np.float32)
alone = {"matmul (64, 512) x (512, N·49)": lambda: np.matmul(W, cols),
         "matmul (512, 64) x (64, N·49)": lambda: np.matmul(W.T, dy),
         "matmul (64, N·49) x (N·49, 512)": lambda: np.matmul(dy, cols.T)}
for name, call in alone.items():
    call()
    medians = []
    for _ in range(9):
        started = time.perf_counter()
        for _ in range(10):
            call()
        medians.append((time.perf_counter() - started) / 10)
    print(f"  alone        {name:58s} median call {np.median(medians) * 1e3:.2f} ms")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    for threads in (1, 2):
        result = subprocess.run([sys.executable, "-c", CELL, str(threads), str(args.batch), str(args.steps)],
                                capture_output=True, text=True, check=True)
        print(result.stdout, end="", flush=True)


if __name__ == "__main__":
    main()
