"""The Python face of the application: ``autoencoders.train`` and ``autoencoders.load_run``.

The ``autoencoders train`` command is a thin layer over ``train``: the same configuration, the
same loop (``autoencoders.training.run_training``), the same run directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from autoencoders.runs.load import Run, load_run
from autoencoders.training import TrainConfig, run_training

# Where the command and train() put a run when no directory is given: runs/MODEL-DATASET-TIME.
RUNS_FOLDER = "runs"
OFFLINE_EPOCHS = 100  # the offline digits: 12 steps an epoch, 1/40 of an MNIST epoch's teaching


def default_run_directory(model: str, dataset: str, prefix: str = "") -> Path:
    """runs/[PREFIX]MODEL-DATASET-YYYYmmdd-HHMMSS (claimed with -2, -3, ... when taken)."""
    return Path(RUNS_FOLDER) / f"{prefix}{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def training_config(model: str, *, dataset: str | None = None, data_dir=None, epochs: int | None = None,
                    batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-5, backend: str = "scratch",
                    seed: int = 0, dtype: str = "float32", binarize: str = "threshold", image_every: int | None = None,
                    on_nonfinite: str = "stop", **model_options) -> TrainConfig:
    """The ``TrainConfig`` of ``train``'s arguments with the defaults filled in (validated)."""
    from autoencoders.data import OFFLINE_DEFAULT

    dataset = dataset or ("mnist" if data_dir is not None else OFFLINE_DEFAULT)
    if epochs is None:
        epochs = OFFLINE_EPOCHS if dataset == OFFLINE_DEFAULT else 10
    if image_every is None and isinstance(epochs, int) and not isinstance(epochs, bool):
        image_every = max(1, epochs // 10)  # pictures about ten times a run
    return TrainConfig(model=model, dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
                       epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, backend=backend,
                       seed=seed, dtype=dtype, binarize=binarize, image_every=image_every,
                       model_config=dict(model_options), on_nonfinite=on_nonfinite).validate()


def train(model: str, *, dataset: str | None = None, data_dir=None, epochs: int | None = None,
          batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-5, backend: str = "scratch",
          seed: int = 0, dtype: str = "float32", binarize: str = "threshold", out=None,
          image_every: int | None = None, on_nonfinite: str = "stop", threads: int | None = None,
          progress: bool = False, log: Callable[[str], None] | None = print, report: bool = True,
          **model_options) -> Run:
    """Train ``model`` and return the finished run, loaded (``load_run``): its model in evaluation
    mode holding the last epoch's weights, its configuration and its metrics.

    Parameters
    ----------
    model : str
        A registered model (``scratch.models.REGISTRY``: "mlp-ae", "vae", "conv-vae", ...).
    dataset : {"digits", "mnist", "fashion-mnist", "kmnist"}, optional
        Default "mnist" when ``data_dir`` is given, else "digits" (8x8, installed with the package).
    data_dir : path, optional
        A folder with the four IDX files; recorded in config.json as an absolute path.
    epochs : int, optional
        Default 10 (100 on the small offline digits).
    batch_size, lr, weight_decay, seed, dtype, binarize, on_nonfinite
        As the command's options (Adam with lr 1e-3 and weight decay 1e-5 by default).
    backend : {"scratch", "torch"}
        The backend that trains, and the one the returned run's model is.
    out : path, optional
        A new or empty run directory; default runs/MODEL-DATASET-TIME (-2, -3, ... when taken).
    image_every : int, optional
        Pictures every this many epochs and after the last; default about ten times a run.
    threads : int, optional
        Threads for Numba, the BLAS and torch alike; None leaves the pools as they are.
    progress : bool
        Show a progress bar (with the running loss) on stderr.
    log : callable or None
        Where the epoch lines go (``print`` by default; None: nowhere).
    report : bool
        Write RUN_DIR/report.html at the end.
    **model_options
        The model's own options (``hidden_dims=[256]``, ``latent_dim=2``, ``beta=4.0``, ...): the
        keyword arguments of its constructor.

    Returns
    -------
    Run
        ``run.model``, ``run.config``, ``run.metrics``, ``run.dataset``, ``run.directory``.

    Raises
    ------
    ValueError
        A bad option (naming it), a run directory that is taken, a bad checkpoint.
    autoencoders.data.DataError
        Data that cannot be loaded.
    autoencoders.training.NonFiniteLossError
        The loss or the weights became NaN or infinite (the newest checkpoint is the last good state).
    """
    config = training_config(model, dataset=dataset, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, backend=backend, seed=seed, dtype=dtype, binarize=binarize,
                             image_every=image_every, on_nonfinite=on_nonfinite, **model_options)
    run_dir = Path(out) if out is not None else default_run_directory(model, config.dataset)
    run_dir, _ = run_training(run_dir, config, progress=progress, log=log or (lambda line: None),
                              unique=out is None, threads=threads, report=report)
    return load_run(run_dir, backend=backend)
