"""Torch twin of scratch's iwae: the importance-weighted bound written with torch.distributions
and autograd (Burda et al. 2016), so it checks scratch's hand-derived softmax-weighted gradient."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from torch_impl.functional import as_tensor
from torch_impl.models.vae import _Variational


def _tanh_stack(widths) -> list:
    layers = []
    for narrow, wide in zip(widths, widths[1:]):
        layers += [nn.Linear(narrow, wide), nn.Tanh()]
    return layers


class ImportanceWeightedAutoencoder(_Variational):
    """Keys encoder.{0,2}, fc21, fc22, decoder.{0,2,4}; ε is (N, K, latent_dim)."""

    name = "iwae"

    def __init__(self, input_dim=784, hidden_dims=(200, 200), latent_dim=50, num_samples=5, *, generator=None):
        super().__init__()
        hidden_dims = [int(width) for width in hidden_dims]
        self.config = dict(input_dim=int(input_dim), latent_dim=int(latent_dim), hidden_dims=list(hidden_dims),
                           num_samples=int(num_samples))
        self.generator = generator
        self.encoder = nn.Sequential(*_tanh_stack([input_dim, *hidden_dims]))
        self.fc21 = nn.Linear(hidden_dims[-1], latent_dim)
        self.fc22 = nn.Linear(hidden_dims[-1], latent_dim)
        widths = [latent_dim, *reversed(hidden_dims)]
        self.decoder = nn.Sequential(*_tanh_stack(widths), nn.Linear(widths[-1], input_dim), nn.Sigmoid())

    def encode(self, x):
        h = self.encoder(x.reshape(x.shape[0], -1))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return self.decoder(z)

    def _samples(self, x, noise):
        """(flat x (N, D), μ, logvar (N, L), ε and z (N, K, L), probabilities (N, K, D))."""
        flat = x.reshape(x.shape[0], -1)
        mean, logvar = self.encode(flat)
        shape = (flat.shape[0], self.config["num_samples"], self.config["latent_dim"])
        if noise is None:
            eps = torch.randn(shape, generator=self.generator, dtype=mean.dtype)
        else:
            eps = as_tensor(noise, torch.empty(shape, dtype=mean.dtype), type(self).__name__, "noise (ε)")
        z = mean[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
        return flat, mean, logvar, eps, z, self.decode(z)

    def forward(self, x, noise=None):
        return self._samples(x, noise)[5][:, 0].reshape(x.shape)

    def loss(self, x, noise=None) -> dict:
        flat, mean, logvar, eps, z, probabilities = self._samples(x, noise)
        k = self.config["num_samples"]
        targets = flat[:, None].expand_as(probabilities)
        log_px = -F.binary_cross_entropy(probabilities, targets, reduction="none").sum(-1)  # (N, K)
        # log q(z|x) by the change of variables z = μ + σ·ε: log N(ε; 0, 1) − log σ. The same density as
        # Normal(μ, σ).log_prob(z), whose (z − μ)/σ loses ε entirely when σ ≪ |μ| (σ = e^{-40}, μ = 100)
        standard = Normal(torch.zeros_like(z), torch.ones_like(z))
        log_q = standard.log_prob(eps) - 0.5 * logvar[:, None]
        log_ratio = (log_q - standard.log_prob(z)).sum(-1)  # log q − log p, (N, K)
        bound = torch.logsumexp(log_px - log_ratio, dim=1) - math.log(k)  # (N,)
        return {"loss": -bound.sum(), "recon": -log_px.sum() / k, "kl": log_ratio.sum() / k}
