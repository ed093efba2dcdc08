"""A run directory as a Python object: its configuration, model (weights and buffers loaded, in
evaluation mode), metrics history and data; ``autoencoders.load_run`` is this module's ``load_run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autoencoders.backends import Backend, make_backend
from autoencoders.data import Dataset
from autoencoders.runs.checkpoint import (
    CheckpointError,
    check_finite_weights,
    checkpoint_name,
    latest_checkpoint,
    read_checkpoint,
)
from autoencoders.training import (
    BACKENDS,
    TrainConfig,
    load_run_dataset,
    model_config_for,
    read_run_config,
)


@dataclass
class Run:
    """A loaded run.

    ``model`` is the backend's model (a scratch model, or its torch twin for ``backend="torch"``)
    holding the chosen checkpoint's weights and buffers, in evaluation mode; ``config`` the
    run's ``TrainConfig`` (``config.model_config``: the model's whole configuration); ``metrics``
    one dict per finished epoch up to that checkpoint, as in metrics.jsonl; ``data`` what the run
    trained on, described; ``dataset`` the data itself, read on first use.
    """

    directory: Path
    config: TrainConfig
    backend: Backend
    state: dict            # the checkpoint's state.json; its weights under "weights"
    data_dir: str | None = None  # where the data is read from when it is not where config.json says
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def model(self):
        return self.backend.model

    @property
    def epoch(self) -> int:
        """The epoch whose checkpoint the model holds."""
        return int(self.state["epoch"])

    @property
    def metrics(self) -> list[dict]:
        return list(self.state.get("metrics", []))

    @property
    def data(self) -> dict:
        """The dataset's name, the folder it is read from (None: the package's own digits, or the
        download cache), how images are binarized, and the model's input size."""
        return {"dataset": self.config.dataset, "data_dir": self.data_dir or self.config.data_dir,
                "binarize": self.config.binarize, "input": _input_description(self.config.model_config)}

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_run_dataset(self.config, self.data_dir)
        return self._dataset


def _input_description(model_config: dict) -> str:
    if "image_size" in model_config:
        size = model_config["image_size"]
        return f"{model_config.get('in_channels', 1)}x{size}x{size} images"
    return f"{model_config.get('input_dim', '?')} values per image"


def load_run(run_dir, backend: str | None = None, checkpoint="latest", data_dir=None) -> Run:
    """The run in ``run_dir`` with one checkpoint's weights loaded into a ``backend`` model.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A directory ``autoencoders train`` (or ``autoencoders.train``) wrote.
    backend : {"scratch", "torch"}, optional
        The model to load into; default the backend the run trained with. Either backend reads
        either's checkpoints (the keys are torch's).
    checkpoint : "latest" or int
        The newest checkpoint, or the epoch of one the run kept (the newest two are kept).
    data_dir : str or os.PathLike, optional
        Where the run's IDX files are now, when not where config.json recorded them.

    The model is built from config.json (format 2 records its whole configuration; a format-1
    run reads its input size off its dataset, as when it trained) and the checkpoint read
    against it (``read_checkpoint(expected=)``: files no larger than its tensors take, its keys,
    shapes and dtypes); weights holding NaN or inf are refused naming the first such tensor.
    Raises ``CheckpointError``, ``RunDirectoryError`` or ``DataError``, one line naming the file;
    ``ValueError`` for a bad ``backend`` or ``checkpoint``.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"load_run: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    run_dir = Path(run_dir)
    config, version = read_run_config(run_dir)
    if backend is not None:
        config.backend = backend
    directory = _checkpoint_directory(run_dir, checkpoint)
    dataset = None
    if version >= 2:
        model_config = dict(config.model_config)
    else:  # format 1 recorded only the options given: the input size comes from the data
        dataset = load_run_dataset(config, data_dir)
        model_config = model_config_for(config, dataset)
        config.model_config = model_config
    model_backend = make_backend(config, model_config)
    weights, _, state = read_checkpoint(directory, expected=model_backend.weights(),  # before anything loads
                                        parameters=model_backend.parameter_names())
    check_finite_weights(weights, directory / "model.safetensors")
    model_backend.load_weights(weights)
    model_backend.model.eval()
    state["weights"] = weights
    data_dir = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return Run(run_dir, config, model_backend, state, data_dir, dataset)


def _checkpoint_directory(run_dir: Path, checkpoint) -> Path:
    """checkpoints/epoch-NNNN for an epoch, or the one ``latest`` names."""
    if isinstance(checkpoint, str) and checkpoint == "latest":
        return latest_checkpoint(run_dir)
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 1:
        raise ValueError(f"load_run: checkpoint must be 'latest' or a positive epoch number, got {checkpoint!r}")
    directory = run_dir / "checkpoints" / checkpoint_name(checkpoint)
    if not directory.is_dir() or directory.is_symlink():
        kept = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("epoch-[0-9]*")
                      if p.is_dir() and p.name.split("-")[1].isdigit())
        listed = ", ".join(map(str, kept)) or "none"
        raise CheckpointError(f"{run_dir}: no checkpoint of epoch {checkpoint} (the run keeps its newest two; "
                              f"epochs kept: {listed})")
    return directory
