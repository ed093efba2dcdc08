"""The MLP autoencoder and the denoising autoencoder (same net, corrupted input, clean target).

Default geometry, the seed's with its Tanh-into-BCE bug fixed:
encoder 784-256-64 (ReLU after each layer), decoder 64-256-784 (ReLU, then Sigmoid), BCE (mean).
Inputs are (N, D) or (N, C, H, W) with C·H·W = D; reconstructions come back in the input's shape.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.models._inputs import FlatInputModel, check_backward_ready, check_model_array, mark_pass
from scratch.models._latent import LatentMethods
from scratch.nn import BCELoss, LeakyReLU, Linear, MSELoss, ReLU, Sequential, Sigmoid, Tanh
from scratch.nn.inplace import backward_pass, forward_pass
from scratch.validate import check_float_dtype, check_integer, resolve_rng

ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid}
LOSSES = {"bce": BCELoss, "mse": MSELoss}
NOISE_KINDS = ("gaussian", "masking", "salt-and-pepper")
DEFAULT_NOISE_LEVEL = {"gaussian": 0.4, "masking": 0.25, "salt-and-pepper": 0.1}


def _check_config(owner, input_dim, hidden_dims, latent_dim, activation, loss):
    check_integer(input_dim, owner, "input_dim", minimum=1)
    check_integer(latent_dim, owner, "latent_dim", minimum=1)
    for index, size in enumerate(hidden_dims):
        check_integer(size, owner, f"hidden_dims[{index}]", minimum=1)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if loss not in LOSSES:
        raise ValueError(f"{owner}: loss must be one of {sorted(LOSSES)}, got {loss!r}")


def mlp_layers(sizes, activation, final, *, rng, dtype):
    """Linear-activation pairs through ``sizes``; ``final`` is the last activation class."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(fan_in, fan_out, rng=rng, dtype=dtype))
        last = index == len(sizes) - 2
        layers.append(final() if last else ACTIVATIONS[activation]())
    return layers


class MLPAutoencoder(LatentMethods, FlatInputModel):
    """x (N, D) -> encoder -> z (N, latent_dim) -> decoder -> x̂ (N, D), a Sigmoid output.

    ``state_dict`` keys: ``encoder.{0,2,...}.{weight,bias}``, ``decoder.{0,2,...}.{weight,bias}``.
    ``interpolate(x1, x2, steps)`` decodes the linear path between the codes z = encode(x).
    """

    name = "mlp-ae"

    def __init__(self, input_dim=784, hidden_dims=(256,), latent_dim=64, activation="relu",
                 loss="bce", *, rng=None, dtype=np.float32):
        super().__init__()
        owner = type(self).__name__
        hidden_dims = tuple(hidden_dims)
        _check_config(owner, input_dim, hidden_dims, latent_dim, activation, loss)
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        object.__setattr__(self, "rng", rng)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_config", dict(input_dim=int(input_dim), hidden_dims=list(hidden_dims),
                                                 latent_dim=int(latent_dim), activation=activation, loss=loss))
        activation_class = ACTIVATIONS[activation]
        sizes = (input_dim, *hidden_dims, latent_dim)
        self.encoder = Sequential(*mlp_layers(sizes, activation, activation_class, rng=rng, dtype=dtype))
        self.decoder = Sequential(*mlp_layers(sizes[::-1], activation, Sigmoid, rng=rng, dtype=dtype))
        object.__setattr__(self, "loss_fn", LOSSES[loss](reduction="mean"))
        object.__setattr__(self, "_input_shape", None)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(N, D) or (N, C, H, W) -> (N, latent_dim)."""
        return self.encoder(self._flatten_input(x))

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(N, latent_dim) -> (N, D) probabilities."""
        return self.decoder(z)

    @forward_pass
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Reconstruction x̂ in x's shape."""
        reconstruction = self._reconstruct(x)
        mark_pass(self, from_loss=False)
        return reconstruction

    def _reconstruct(self, x: np.ndarray) -> np.ndarray:
        flat = self._flatten_input(x)
        reconstruction = self.decoder(self.encoder(flat)).reshape(x.shape)
        object.__setattr__(self, "_input_shape", x.shape)
        return reconstruction

    @backward_pass
    def backward(self, grad_output: np.ndarray | None = None, *, input_grad: bool = True):
        """Back-propagate dL/dx̂ (default: the last ``loss``'s) into every ``.grad``; returns dL/dx
        (None when ``input_grad`` is False: training needs no dL/dx, and the first layer then
        skips that product, as torch does for data that does not require grad).

        From the loss, a BCE on the Sigmoid output back-propagates through both in one pass
        (``BCELoss.backward_through_sigmoid``), the same numbers as the two passes.
        ``grad_output`` must have x̂'s shape and the model's dtype; without it, the last call must
        have been ``loss``. Either is checked before any ``.grad`` changes."""
        check_backward_ready(self, needs_loss=grad_output is None, hint=" (or pass grad_output, dL/dx̂)")
        if grad_output is not None:
            check_model_array(self, grad_output, "grad_output (dL/dx̂)", self._input_shape)
        decoder = self.decoder
        if grad_output is None and isinstance(self.loss_fn, BCELoss) and isinstance(decoder[-1], Sigmoid):
            grad_logits = self.loss_fn.backward_through_sigmoid(decoder[-1])
            grad_z = decoder.backward(grad_logits.reshape(grad_logits.shape[0], -1), start=len(decoder) - 2)
        else:
            if grad_output is None:
                grad_output = self.loss_fn.backward()
            grad_z = decoder.backward(grad_output.reshape(grad_output.shape[0], -1))
        grad_input = self.encoder.backward(grad_z, input_grad=input_grad)
        return None if grad_input is None else grad_input.reshape(self._input_shape)

    def _reconstruction_loss(self, model_input, target) -> dict:
        reconstruction = self._reconstruct(model_input)
        recon = self.loss_fn(reconstruction.reshape(target.shape[0], -1), target.reshape(target.shape[0], -1))
        mark_pass(self, from_loss=True)
        return {"loss": recon, "recon": recon}

    @staticmethod
    def noise_for(config: dict, x_shape, rng: np.random.Generator, dtype) -> np.ndarray | None:
        """The noise ``loss(x, noise)`` takes for a batch of shape ``x_shape``: none here."""
        return None

    def reconstruct(self, x: np.ndarray, noise=None) -> np.ndarray:
        """x̂ for x, in x's shape (the model's input as ``loss`` would build it)."""
        return self.forward(x)

    @forward_pass
    def loss(self, x: np.ndarray, noise=None) -> dict:
        """BCE (mean over every element) between x̂ and x: ``{"loss", "recon"}``, floats."""
        if noise is not None:
            raise ValueError(f"{type(self).__name__}: mlp-ae is deterministic and takes no noise, "
                             f"got {type(noise).__name__}")
        return self._reconstruction_loss(x, x)


class DenoisingAutoencoder(MLPAutoencoder):
    """The MLP autoencoder trained to reconstruct clean x from a corrupted copy.

    noise: "gaussian" (x + level·ε, ε ~ N(0, 1); clipped to [0, 1] when ``clip``),
    "masking" (each pixel zeroed with probability level: u < level, u ~ U[0, 1)),
    "salt-and-pepper" (u < level/2 -> 0, u > 1 - level/2 -> 1, else x).
    The ``noise`` array passed to ``loss``/``corrupt`` is ε for gaussian and u otherwise, x's shape.
    ``encode`` and ``interpolate`` read x as given (no corruption); ``reconstruct`` corrupts it first.
    """

    name = "denoising-ae"

    def __init__(self, input_dim=784, hidden_dims=(256,), latent_dim=64, activation="relu", loss="bce",
                 noise="gaussian", noise_level=None, clip=True, *, rng=None, dtype=np.float32):
        super().__init__(input_dim, hidden_dims, latent_dim, activation, loss, rng=rng, dtype=dtype)
        owner = type(self).__name__
        if noise not in NOISE_KINDS:
            raise ValueError(f"{owner}: noise must be one of {NOISE_KINDS}, got {noise!r}")
        level = DEFAULT_NOISE_LEVEL[noise] if noise_level is None else float(noise_level)
        upper = math.inf if noise == "gaussian" else 1.0
        if not 0 <= level <= upper:
            raise ValueError(f"{owner}: noise_level for {noise} must lie in [0, {upper}], got {noise_level!r}")
        self._config.update(noise=noise, noise_level=level, clip=bool(clip))

    @staticmethod
    def noise_for(config: dict, x_shape, rng: np.random.Generator, dtype) -> np.ndarray:
        """The raw noise ``corrupt`` expects: ε ~ N(0, 1) for gaussian, u ~ U[0, 1) otherwise."""
        if config.get("noise", "gaussian") == "gaussian":
            return rng.standard_normal(x_shape).astype(dtype)
        return rng.random(x_shape).astype(dtype)

    def draw_noise(self, shape) -> np.ndarray:
        """Noise for a batch of ``shape``, from the model's generator (see ``noise_for``)."""
        return self.noise_for(self._config, shape, self.rng, self.dtype)

    @forward_pass
    def reconstruct(self, x: np.ndarray, noise=None) -> np.ndarray:
        """x̂ = the reconstruction of corrupt(x, noise), in x's shape."""
        self._flatten_input(x)
        return self.forward(self.corrupt(x, noise))

    def corrupt(self, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """x̃ = corruption of x, same shape; ``noise`` drawn from the model's generator if None."""
        self._flatten_input(x)
        if noise is None:
            noise = self.draw_noise(x.shape)
        check_model_array(self, noise, "noise (x's shape)", x.shape)
        kind, level = self._config["noise"], self.dtype.type(self._config["noise_level"])
        if kind == "gaussian":
            corrupted = x + level * noise
            return np.clip(corrupted, 0, 1) if self._config["clip"] else corrupted
        if kind == "masking":
            return np.where(noise < level, self.dtype.type(0), x)
        half = level / 2
        return np.where(noise < half, self.dtype.type(0), np.where(noise > 1 - half, self.dtype.type(1), x))

    @forward_pass
    def loss(self, x: np.ndarray, noise=None) -> dict:
        """BCE between the reconstruction of corrupt(x, noise) and the clean x: ``{"loss", "recon"}``."""
        self._flatten_input(x)
        return self._reconstruction_loss(self.corrupt(x, noise), x)
