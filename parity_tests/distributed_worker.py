"""One rank (or the one process) of the distributed-training tests: ``python -m
parity_tests.distributed_worker OUT MODEL BACKEND`` trains MODEL for one epoch of 30 steps (global
batch 64) on the first 1,920 MNIST training images through ``autoencoders.training.run_training``
(as ``autoencoders train`` does), and rank 0 saves every step's weights, flattened, to
OUT/steps.npy. The process group comes from the environment (RANK, WORLD_SIZE, ...), as torchrun
sets it; WORLD_SIZE unset is the one-process reference."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from autoencoders import training
from autoencoders.backends.scratch_backend import ScratchBackend
from autoencoders.data import Dataset, load_dataset
from parity_tests.mnist import MNIST_DIR

STEPS, BATCH = 30, 64
SMALL = {"mlp-ae": {"hidden_dims": [32], "latent_dim": 8}, "vae": {"hidden_dim": 32, "latent_dim": 4}, "conv-ae": {}}


def _small_mnist(name, data_dir=None, **options) -> Dataset:
    full = load_dataset(name, data_dir=data_dir, **options)
    return Dataset(name, full.train_images[:STEPS * BATCH], full.train_labels[:STEPS * BATCH],
                   full.test_images[:64], full.test_labels[:64])


def _recording(backend_class, steps: list):
    original = backend_class.train_step

    def train_step(self, *args, **kwargs):
        parts = original(self, *args, **kwargs)
        steps.append(np.concatenate([value.ravel() for value in self.weights().values()]))
        return parts

    backend_class.train_step = train_step


def main(out: str, model: str, backend: str) -> None:
    steps: list[np.ndarray] = []
    training.load_dataset = _small_mnist
    if backend == "torch":
        from autoencoders.backends.torch_backend import TorchBackend

        _recording(TorchBackend, steps)
    else:
        _recording(ScratchBackend, steps)
    config = training.TrainConfig(model=model, dataset="mnist", data_dir=str(MNIST_DIR), epochs=1, batch_size=BATCH,
                                  backend=backend, dtype="float64", image_every=100, model_config=SMALL[model])
    training.run_training(Path(out) / "run", config, progress=False, log=lambda _: None, threads=1, report=False)
    if os.environ.get("RANK", "0") == "0":
        np.save(Path(out) / "steps.npy", np.stack(steps))


if __name__ == "__main__":
    main(*sys.argv[1:])
