"""Torch twins of scratch.models.vae: same layers, keys, configuration, ε and objective."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torch_impl.functional import as_tensor, gaussian_kl
from torch_impl.models._latent import ImageExamples, PriorSampling


class _Variational(PriorSampling, nn.Module):
    """Shared passes; ``sample(n, noise=None)`` decodes prior draws, ``interpolate`` mixes the
    posterior means (no ε); ``_posterior_forward`` is the sampled pass that forward and loss share."""

    loss_reduction = "sum"

    def _eps(self, mean, noise):
        if noise is None:
            return torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype)
        return as_tensor(noise, mean, type(self).__name__, "noise (ε)")

    def _code(self, x):
        return self.encode(x)[0]  # the posterior mean μ

    def _posterior_forward(self, x, noise=None):
        """(flat x, x̂ probabilities, μ, logvar) with z = μ + exp(½ logvar)·ε."""
        flat = x.reshape(x.shape[0], -1)
        mean, logvar = self.encode(flat)
        z = mean + torch.exp(0.5 * logvar) * self._eps(mean, noise)
        return flat, self.decode(z), mean, logvar

    def forward(self, x, noise=None):
        return self._posterior_forward(x, noise)[1].reshape(x.shape)

    def reconstruct(self, x, noise=None):
        return self.forward(x, noise)

    def objective(self, recon, kl, batch_size):
        return recon + self.config.get("beta", 1.0) * kl

    def loss(self, x, noise=None) -> dict:
        flat, probabilities, mean, logvar = self._posterior_forward(x, noise)
        recon = F.binary_cross_entropy(probabilities, flat, reduction="sum")
        kl = gaussian_kl(mean, logvar, "sum")
        return {"loss": self.objective(recon, kl, flat.shape[0]), "recon": recon, "kl": kl}


class VariationalAutoencoder(_Variational):
    """The pytorch/examples VAE, keys fc1, fc21, fc22, fc3, fc4."""

    name = "vae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, beta=1.0, *, generator=None):
        super().__init__()
        self.config = dict(input_dim=int(input_dim), latent_dim=int(latent_dim), hidden_dim=int(hidden_dim), beta=float(beta))
        self.generator = generator
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x):
        """(N, D) or (N, C, H, W) -> (μ, logvar), each (N, latent_dim)."""
        h = F.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))


class SeedVAE(_Variational):
    """The seed's VAE without its ReLU on μ and logvar: encoder.{0,2}, decoder.{0,2}."""

    name = "seed-vae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, beta=1.0, *, generator=None):
        super().__init__()
        self.config = dict(input_dim=int(input_dim), latent_dim=int(latent_dim), hidden_dim=int(hidden_dim), beta=float(beta))
        self.generator = generator
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, input_dim), nn.Sigmoid())

    def encode(self, x):
        """(N, D) or (N, C, H, W) -> (μ, logvar), each (N, latent_dim)."""
        mean, logvar = self.encoder(x.reshape(x.shape[0], -1)).chunk(2, dim=1)
        return mean, logvar

    def decode(self, z):
        return self.decoder(z)


class BetaVAE(VariationalAutoencoder):
    """β-VAE; with capacity_max, BCE + γ·|KL − N·C| (KL summed over a batch of N, C in nats per
    image) with C linear in the training step (Burgess et al. 2018)."""

    name = "beta-vae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, beta=4.0, capacity_max=None,
                 capacity_steps=10_000, gamma=1000.0, *, generator=None):
        super().__init__(input_dim, hidden_dim, latent_dim, beta, generator=generator)
        self.config.update(capacity_max=None if capacity_max is None else float(capacity_max),
                           capacity_steps=int(capacity_steps), gamma=float(gamma))
        self.step = 0

    def capacity(self) -> float:
        return self.config["capacity_max"] * min(1.0, self.step / self.config["capacity_steps"])

    def objective(self, recon, kl, batch_size):
        if self.config["capacity_max"] is None:
            return recon + self.config["beta"] * kl
        return recon + self.config["gamma"] * (kl - batch_size * self.capacity()).abs()

    def loss(self, x, noise=None) -> dict:
        parts = super().loss(x, noise)
        if self.training:
            self.step += 1
        return parts


class _ConvVariational(ImageExamples, _Variational):
    """The convolutional VAEs' image plumbing: (N, D) or (N, C, H, W) in, flat (N, D) out."""

    def encode(self, x):
        size = self.config["image_size"]
        h = self.encoder(x.reshape(x.shape[0], self.config["in_channels"], size, size))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return self.decoder(z).reshape(z.shape[0], -1)


class ConvVAE(_ConvVariational):
    """Twin of scratch's conv-vae: keys encoder.{0,2}, fc21, fc22, decoder.{0,3,5}."""

    name = "conv-vae"

    def __init__(self, in_channels=1, channels=(32, 64), latent_dim=20, image_size=28, beta=1.0, input_dim=None, *,
                 generator=None):
        super().__init__()
        if input_dim is not None and input_dim != in_channels * image_size * image_size:
            raise ValueError(f"ConvVAE: input_dim {input_dim} disagrees with in_channels·image_size²")
        narrow, wide = channels
        self.config = dict(input_dim=in_channels * image_size * image_size, latent_dim=int(latent_dim),
                           in_channels=int(in_channels), channels=list(channels), image_size=int(image_size),
                           beta=float(beta))
        self.generator = generator
        features = wide * 7 * 7
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, narrow, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(narrow, wide, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.fc21 = nn.Linear(features, latent_dim)
        self.fc22 = nn.Linear(features, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, features), nn.ReLU(), nn.Unflatten(1, (wide, 7, 7)),
                                     nn.ConvTranspose2d(wide, narrow, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(narrow, in_channels, 4, 2, 1), nn.Sigmoid())


def _conv_sizes(image_size, blocks):
    """Conv2d(3, stride 2, padding 1) maps s to ⌊(s - 1)/2⌋ + 1: 28 -> 14 -> 7 -> 4."""
    sizes = [int(image_size)]
    for _ in range(blocks):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


class DeepConvVAE(_ConvVariational):
    """Twin of scratch's deep-conv-vae (PyTorch-VAE's vanilla VAE on 28x28, Sigmoid output):
    encoder.{0,3,6} Conv2d (no bias) .{1,4,7} BatchNorm2d, LeakyReLU; fc21, fc22; decoder.0 Linear,
    Unflatten, decoder.{2,5,8} ConvTranspose2d (no bias) .{3,6,9} BatchNorm2d, LeakyReLU;
    decoder.11 Conv2d, Sigmoid (for three widths)."""

    name = "deep-conv-vae"

    def __init__(self, in_channels=1, hidden_dims=(32, 64, 128), latent_dim=20, image_size=28, beta=1.0,
                 input_dim=None, *, generator=None):
        super().__init__()
        if input_dim is not None and input_dim != in_channels * image_size * image_size:
            raise ValueError(f"DeepConvVAE: input_dim {input_dim} disagrees with in_channels·image_size²")
        hidden_dims = [int(width) for width in hidden_dims]
        if not hidden_dims:
            raise ValueError("DeepConvVAE: hidden_dims must hold at least one width")
        self.config = dict(input_dim=in_channels * image_size * image_size, latent_dim=int(latent_dim),
                           in_channels=int(in_channels), hidden_dims=list(hidden_dims), image_size=int(image_size),
                           beta=float(beta))
        self.generator = generator
        sizes = _conv_sizes(image_size, len(hidden_dims))
        last, side = hidden_dims[-1], sizes[-1]
        encoder, width = [], in_channels
        for h in hidden_dims:
            encoder += [nn.Conv2d(width, h, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(h), nn.LeakyReLU()]
            width = h
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        features = last * side * side
        self.fc21 = nn.Linear(features, latent_dim)
        self.fc22 = nn.Linear(features, latent_dim)
        widths = list(reversed(hidden_dims)) + [hidden_dims[0]]
        backwards = list(reversed(sizes))
        decoder = [nn.Linear(latent_dim, features), nn.Unflatten(1, (last, side, side))]
        for index, (wide, narrow) in enumerate(zip(widths, widths[1:])):
            size, target = backwards[index], backwards[index + 1]
            decoder += [nn.ConvTranspose2d(wide, narrow, 3, stride=2, padding=1, output_padding=target - (2 * size - 1),
                                           bias=False), nn.BatchNorm2d(narrow), nn.LeakyReLU()]
        self.decoder = nn.Sequential(*decoder, nn.Conv2d(hidden_dims[0], in_channels, 3, padding=1), nn.Sigmoid())

