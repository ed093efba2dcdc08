"""The pools' wait settings against competing processes: the measurements behind autoencoders/threads.py.

    python docs/benchmarks/thread_pools.py [--seconds 3] [--rounds 2] [--models mlp-ae,conv-vae] > docs/benchmarks/thread-pools.txt

Each cell is a fresh process (the settings are read once, when each library loads) that builds
``autoencoders.bench.models.training_step_case(model, 128)``, runs the scratch or the torch
training step back to back for ``--seconds`` after five warm-up steps, beside 0 or 1 competing
``python -c 'while True: pass'`` processes, and prints the median step time and its quartiles.
Settings of the scratch side:

- ``default``: OpenBLAS spins 2^28 cycles (~0.1 s) after each call, Numba's libgomp 300,000 iterations;
- ``openblas``: OPENBLAS_THREAD_TIMEOUT=16 (2^16 cycles, ~20 µs);
- ``both``: that, and GOMP_SPINCOUNT=10000 for the process (the command's settings; one libgomp,
  torch's, runs Numba's pool too where torch is loaded: docs/speed.md);

and thread counts 2 (every core here) and 1. torch runs with its defaults. Rounds alternate the
cells, so that the machine's drift hits all of them; every round's numbers are printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CELL = r"""
import sys, time
import numpy as np
model, side, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if side == "torch":
    import torch  # its libgomp first
from autoencoders.bench.models import training_step_case
from autoencoders.threads import set_threads
case = training_step_case(model, 128)
set_threads(threads)
step = case.scratch if side == "scratch" else case.torch
for _ in range(5):
    step()
times, end = [], time.perf_counter() + seconds
while time.perf_counter() < end:
    started = time.perf_counter()
    step()
    times.append(time.perf_counter() - started)
q1, median, q3 = np.percentile(np.array(times) * 1e3, [25, 50, 75])
print(f"{median:.2f} {q1:.2f} {q3:.2f} {len(times)}")
"""

# GOMP_SPINCOUNT=300000 is libgomp's own default, spelled out: without one in the environment,
# autoencoders.threads.quiet_wait_policies (run as autoencoders.bench loads) would set the command's 10000
SETTINGS = {
    "default": {"GOMP_SPINCOUNT": "300000"},
    "openblas": {"OPENBLAS_THREAD_TIMEOUT": "16", "GOMP_SPINCOUNT": "300000"},
    "both": {"OPENBLAS_THREAD_TIMEOUT": "16", "GOMP_SPINCOUNT": "10000"},
}


def cell(model: str, side: str, setting: str, threads: int, busy: int, seconds: float) -> str:
    """One measurement in a fresh process beside ``busy`` competitors: 'median q1 q3 steps'."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(SETTINGS[setting])
    competitors = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        done = subprocess.run([sys.executable, "-c", CELL, model, side, str(threads), str(seconds)], env=env,
                              capture_output=True, text=True, check=True)
    finally:
        for process in competitors:
            process.kill()
            process.wait()
    return done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default="mlp-ae,conv-vae")
    args = parser.parse_args()
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; batch 128, float32; ms per step: median (q1-q3), steps")
    cells = [(model, "scratch", setting, threads) for model in args.models.split(",")
             for setting in SETTINGS for threads in (2, 1)]
    cells += [(model, "torch", "default", threads) for model in args.models.split(",") for threads in (2, 1)]
    for round_ in range(1, args.rounds + 1):
        for model, side, setting, threads in cells:
            for busy in (0, 1):
                median, q1, q3, steps = cell(model, side, setting, threads, busy, args.seconds).split()
                print(f"round {round_}  {model:8s} {side:7s} {setting:8s} threads {threads}  busy {busy}  "
                      f"{median:>7s} ms ({q1}-{q3}), {steps} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
