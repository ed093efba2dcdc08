"""N processes × 1 thread against 1 process × N threads: training steps per second of one run.

    python docs/benchmarks/distributed_scaling.py DATA_DIR [--nproc 2] [--rounds 3] [--model mlp-ae]

For each backend, alternating in rounds: ``autoencoders train MODEL --dataset mnist --epochs 2`` as
one process with ``--threads N``, then as ``--nproc N`` ranks of ``--threads 1``. The figure is
epoch 2's steps per second (469 steps of batch 128 over its ``seconds`` in metrics.jsonl, which
include its sharded evaluation of the 10,000 test images); epoch 1 holds the processes' start,
Numba's cache loads and the first touches of memory, and is left out. Prints one line per run
and the median of each configuration with its range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 469  # ceil(60000 / 128)


def one_run(arguments: list[str], folder: Path) -> float:
    out = folder / "run"
    subprocess.run([sys.executable, "-m", "autoencoders", "train", *arguments, "--out", str(out), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    second = json.loads((out / "metrics.jsonl").read_text().splitlines()[1])
    return STEPS / second["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="mlp-ae")
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for backend in ("scratch", "torch"):
            common = [args.model, "--dataset", "mnist", "--data-dir", args.data_dir, "--epochs", "2", "--backend", backend]
            for label, extra in ((f"1 process x {args.nproc} threads", ["--threads", str(args.nproc)]),
                                 (f"{args.nproc} processes x 1 thread", ["--nproc", str(args.nproc), "--threads", "1"])):
                with tempfile.TemporaryDirectory() as folder:
                    rate = one_run(common + extra, Path(folder))
                results.setdefault((backend, label), []).append(rate)
                print(f"{backend:8} {label:26} {rate:7.1f} steps/s", flush=True)
    print()
    for (backend, label), rates in results.items():
        print(f"{backend:8} {label:26} median {statistics.median(rates):7.1f} steps/s "
              f"(range {min(rates):.1f} to {max(rates):.1f}, {len(rates)} runs)")


if __name__ == "__main__":
    main()
