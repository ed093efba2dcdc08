"""The application around the two libraries: the ``autoencoders`` command, one training loop for
both backends, run directories and checkpoints, data, plots, reports, compare, convert and the
benchmarks.

``scratch`` (the from-scratch library) and ``torch_impl`` (its torch twins) never import this
package; it imports both. Its Python face is two functions (``autoencoders.api``)::

    run = autoencoders.train("vae", epochs=20, latent_dim=2)                 # a Run
    run = autoencoders.load_run("runs/vae-digits-...", backend="torch")      # the same kind of Run
    run.model, run.config, run.metrics, run.dataset
"""

__version__ = "0.1.0"


def load_run(run_dir, backend: str | None = None, checkpoint="latest", data_dir=None):
    """A run directory's model (weights and buffers of ``checkpoint``, evaluation mode) on
    ``backend``, with its configuration and metrics: ``autoencoders.runs.load.load_run``."""
    from autoencoders.runs.load import load_run as _load_run

    return _load_run(run_dir, backend=backend, checkpoint=checkpoint, data_dir=data_dir)


def train(model: str, **options):
    """Train ``model`` and return the finished run, loaded: ``autoencoders.api.train``."""
    from autoencoders.api import train as _train

    return _train(model, **options)
