"""The two backends of the training loop behind one written protocol.

``ScratchBackend`` (NumPy + Numba) and ``TorchBackend`` (the torch twin) take the same
``(config, model_config)`` and answer the same calls with NumPy arrays, so the loop, ``compare``
and the CLI never ask which one they hold. torch is imported only when a torch backend is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from autoencoders.backends.scratch_backend import ScratchBackend

if TYPE_CHECKING:
    from autoencoders.training import TrainConfig


class Backend(Protocol):
    """What the training loop, ``compare`` and the CLI call on a backend; arrays are NumPy.

    ``x`` is a batch of flat images (N, D) or images (N, C, H, W) as the model takes them;
    ``noise`` is the batch's explicit random draw (or None when the model draws none).
    """

    name: str

    def train_step(self, x: np.ndarray, noise, before_update: Callable[[dict], None] | None = None,
                   labels: np.ndarray | None = None) -> dict[str, float]:
        """One optimizer step on ``x``; the loss parts as floats. ``before_update(parts)`` runs between
        the loss and the backward pass and may raise to leave weights and optimizer untouched.
        ``labels`` (N,) int64: the class of each image, read by a conditional model only."""

    def evaluate(self, x: np.ndarray, noise, labels: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray]:
        """Loss parts and the reconstruction (shape of ``x``) in evaluation mode, no update."""

    def weights(self) -> dict[str, np.ndarray]:
        """The model's state_dict as NumPy arrays under torch's keys (copies)."""

    def parameter_names(self) -> list[str]:
        """The keys of ``weights()`` that the optimizer steps, in its order (the rest are buffers)."""

    def weights_finite(self) -> bool:
        """Whether every parameter is finite (no NaN, no ±inf)."""

    def load_weights(self, weights) -> None:
        """Load a state_dict (arrays or tensors) under torch's keys, strictly."""

    def optimizer_state(self) -> dict:
        """The optimizer's state_dict in torch's layout."""

    def load_optimizer_state(self, state: dict) -> None:
        """Load an optimizer state in torch's layout (written by either backend)."""

    def corrupted_input(self, x: np.ndarray, noise) -> np.ndarray | None:
        """A denoising model's corrupted input for ``x`` (None for models that do not corrupt)."""

    def encode(self, x: np.ndarray):
        """The model's code for ``x``: (μ, logvar) of a VAE, the hidden code otherwise."""

    def decode(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Bernoulli means (N, D) for latents z (N, latent_dim) (and a conditional model's labels)."""

    def hidden_activations(self, x: np.ndarray) -> np.ndarray:
        """The hidden code (N, hidden_dim) of a one-hidden-layer model, in evaluation mode."""

    def codebook_usage(self, x: np.ndarray) -> np.ndarray:
        """vq-vae: how many code vectors of ``x`` chose each codebook entry, (K,) int64."""


def __getattr__(name: str):
    if name == "TorchBackend":  # torch only when asked for
        from autoencoders.backends.torch_backend import TorchBackend

        return TorchBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_backend(config: TrainConfig, model_config: dict) -> Backend:
    """The backend ``config.backend`` names, starting from the scratch model's initial weights."""
    scratch = ScratchBackend(config, model_config)
    if config.backend == "scratch":
        return scratch
    from autoencoders.backends.torch_backend import TorchBackend  # torch only when asked for

    backend = TorchBackend(config, model_config)
    backend.load_weights(scratch.weights())
    return backend
