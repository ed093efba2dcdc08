"""The application around the two libraries: the ``autoencoders`` command, one training loop for
both backends, run directories and checkpoints, data, plots, compare, convert and the benchmarks.

``scratch`` (the from-scratch library) and ``torch_impl`` (its torch twins) never import this
package; it imports both. ``load_run`` is its Python face::

    run = autoencoders.load_run("runs/vae-mnist-...", backend="torch")
    run.model, run.config, run.metrics
"""

__version__ = "0.1.0"


def load_run(run_dir, backend: str | None = None):
    """The run in ``run_dir``, its newest weights loaded (``autoencoders.runs.load.load_run``)."""
    from autoencoders.runs.load import load_run as _load_run

    return _load_run(run_dir, backend=backend)
