"""A run directory as a Python object: its configuration, data, model with the newest weights, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autoencoders.backends import Backend, make_backend
from autoencoders.data import Dataset, load_dataset
from autoencoders.runs.checkpoint import check_finite_weights, latest_checkpoint, read_checkpoint
from autoencoders.train import BACKENDS, TrainConfig, load_run_config, model_config_for


@dataclass
class Run:
    """A loaded run. ``model`` is the backend's model (a scratch model or its torch twin) holding
    the newest checkpoint's weights; ``metrics`` one dict per finished epoch, as metrics.jsonl."""

    directory: Path
    config: TrainConfig
    dataset: Dataset
    backend: Backend
    state: dict            # the checkpoint's state.json; its weights under "weights"

    @property
    def model(self):
        return self.backend.model

    @property
    def metrics(self) -> list[dict]:
        return list(self.state.get("metrics", []))


def load_run(run_dir, backend: str | None = None) -> Run:
    """The run in ``run_dir`` with its newest checkpoint's weights loaded into a ``backend`` model
    ("scratch" or "torch"; default: the backend the run trained with).

    The model is built first and the checkpoint read against it (``read_checkpoint(expected=)``:
    files no larger than its tensors take, headers listing its number of tensors, its keys, shapes
    and dtypes); weights holding NaN or inf are refused naming the first such tensor. Raises
    ``CheckpointError`` / ``RunDirectoryError`` / ``DataError`` (all ValueErrors) naming the file.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"load_run: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if backend is not None:
        config.backend = backend
    directory = latest_checkpoint(run_dir)
    dataset = load_dataset(config.dataset, data_dir=config.data_dir)
    model_backend = make_backend(config, model_config_for(config, dataset))
    weights, _, state = read_checkpoint(directory, expected=model_backend.weights(),  # before anything loads
                                        parameters=model_backend.parameter_names())
    check_finite_weights(weights, directory / "model.safetensors")
    model_backend.load_weights(weights)
    state["weights"] = weights
    return Run(run_dir, config, dataset, model_backend, state)
