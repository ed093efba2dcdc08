"""Torch twin of scratch.models.conv: the seed's convolutional autoencoder, Sigmoid output."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torch_impl.models._latent import LatentMethods


class ConvAutoencoder(LatentMethods, nn.Module):
    """Same layers, keys (encoder.{0,3}, decoder.{0,2,4}) and configuration as the scratch model."""

    name = "conv-ae"

    def __init__(self, in_channels=1, channels=(16, 8), image_size=28, *, generator=None):
        super().__init__()
        if image_size != 28:
            raise ValueError(f"ConvAutoencoder: the seed's geometry maps 28x28 images only, got {image_size}")
        self.config = dict(in_channels=int(in_channels), channels=list(channels), image_size=int(image_size))
        wide, narrow = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, wide, 3, stride=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(wide, narrow, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(narrow, wide, 3, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(wide, narrow, 5, stride=3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(narrow, in_channels, 2, stride=2, padding=1), nn.Sigmoid(),
        )

    def _accepts_example(self, shape) -> bool:
        return shape == (self.config["in_channels"], 28, 28)

    def _example_shapes(self) -> str:
        return f"({self.config['in_channels']}, 28, 28)"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 28, 28) -> (N, channels[1], 2, 2)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, channels[1], 2, 2) -> (N, C, 28, 28) probabilities."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruct(self, x, noise=None):
        return self.forward(x)

    def loss(self, x: torch.Tensor, noise=None) -> dict:
        if noise is not None:
            raise ValueError("conv-ae is deterministic and takes no noise")
        recon = F.binary_cross_entropy(self.forward(x), x, reduction="mean")
        return {"loss": recon, "recon": recon}
