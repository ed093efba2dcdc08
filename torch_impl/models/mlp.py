"""Torch twins of scratch.models.mlp: the same layers, keys, configuration and noise semantics."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torch_impl.functional import as_tensor
from torch_impl.models._latent import LatentMethods

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
LOSSES = {"bce": F.binary_cross_entropy, "mse": F.mse_loss}
DEFAULT_NOISE_LEVEL = {"gaussian": 0.4, "masking": 0.25, "salt-and-pepper": 0.1}


def mlp_layers(sizes, activation, final):
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        layers.append(final() if index == len(sizes) - 2 else ACTIVATIONS[activation]())
    return layers


class MLPAutoencoder(LatentMethods, nn.Module):
    """x (N, D) -> encoder -> z -> decoder -> Sigmoid x̂; keys ``encoder.0.weight``, ..."""

    name = "mlp-ae"

    def __init__(self, input_dim=784, hidden_dims=(256,), latent_dim=64, activation="relu", loss="bce",
                 *, generator: torch.Generator | None = None):
        super().__init__()
        if activation not in ACTIVATIONS or loss not in LOSSES:
            raise ValueError(f"{type(self).__name__}: unknown activation {activation!r} or loss {loss!r}")
        self.config = dict(input_dim=int(input_dim), hidden_dims=list(hidden_dims),
                           latent_dim=int(latent_dim), activation=activation, loss=loss)
        self.generator = generator
        sizes = (input_dim, *hidden_dims, latent_dim)
        self.encoder = nn.Sequential(*mlp_layers(sizes, activation, ACTIVATIONS[activation]))
        self.decoder = nn.Sequential(*mlp_layers(sizes[::-1], activation, nn.Sigmoid))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) or (N, C, H, W) -> (N, latent_dim)."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.config["input_dim"]:
            raise ValueError(f"{type(self).__name__}: expected {self.config['input_dim']} features, got shape {tuple(x.shape)}")
        return self.encoder(flat)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim) -> (N, D) probabilities."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)).reshape(x.shape)

    def _reconstruction_loss(self, model_input, target):
        reconstruction = self.forward(model_input)
        n = target.shape[0]
        recon = LOSSES[self.config["loss"]](reconstruction.reshape(n, -1), target.reshape(n, -1), reduction="mean")
        return {"loss": recon, "recon": recon}

    def reconstruct(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        return self.forward(x)

    def loss(self, x: torch.Tensor, noise=None) -> dict:
        if noise is not None:
            raise ValueError("mlp-ae is deterministic and takes no noise")
        return self._reconstruction_loss(x, x)


class DenoisingAutoencoder(MLPAutoencoder):
    """The MLP autoencoder on corrupted input with the clean target; same noise semantics as scratch."""

    name = "denoising-ae"

    def __init__(self, input_dim=784, hidden_dims=(256,), latent_dim=64, activation="relu", loss="bce",
                 noise="gaussian", noise_level=None, clip=True, *, generator=None):
        super().__init__(input_dim, hidden_dims, latent_dim, activation, loss, generator=generator)
        if noise not in DEFAULT_NOISE_LEVEL:
            raise ValueError(f"{type(self).__name__}: unknown noise {noise!r}")
        level = DEFAULT_NOISE_LEVEL[noise] if noise_level is None else float(noise_level)
        self.config.update(noise=noise, noise_level=level, clip=bool(clip))

    def draw_noise(self, like: torch.Tensor) -> torch.Tensor:
        if self.config["noise"] == "gaussian":
            return torch.randn(like.shape, generator=self.generator, dtype=like.dtype)
        return torch.rand(like.shape, generator=self.generator, dtype=like.dtype)

    def corrupt(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        noise = self.draw_noise(x) if noise is None else as_tensor(noise, x, "DenoisingAutoencoder.corrupt", "noise")
        kind, level = self.config["noise"], self.config["noise_level"]
        if kind == "gaussian":
            corrupted = x + level * noise
            return corrupted.clamp(0, 1) if self.config["clip"] else corrupted
        if kind == "masking":
            return torch.where(noise < level, torch.zeros_like(x), x)
        half = level / 2
        return torch.where(noise < half, torch.zeros_like(x), torch.where(noise > 1 - half, torch.ones_like(x), x))

    def reconstruct(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        return self.forward(self.corrupt(x, noise))

    def loss(self, x: torch.Tensor, noise=None) -> dict:
        return self._reconstruction_loss(self.corrupt(x, noise), x)

