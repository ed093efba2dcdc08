"""Torch twin of scratch's cvae: the conditional VAE (Sohn et al. 2015) with the label as a one-hot
concatenated to the encoder's and the decoder's inputs, differentiated by autograd."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torch_impl.functional import gaussian_kl
from torch_impl.models._latent import interpolation_inputs, mix_codes
from torch_impl.models.vae import _Variational


class ConditionalVAE(_Variational):
    """Keys fc1 ((D+C)-hidden), fc21, fc22 (hidden-latent), fc3 ((latent+C)-hidden), fc4 (hidden-D)."""

    name = "cvae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, num_classes=10, beta=1.0, *, generator=None):
        super().__init__()
        self.config = dict(input_dim=int(input_dim), latent_dim=int(latent_dim), hidden_dim=int(hidden_dim),
                           num_classes=int(num_classes), beta=float(beta))
        self.generator = generator
        self.fc1 = nn.Linear(input_dim + num_classes, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim + num_classes, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def one_hot(self, labels, n=None):
        """(N, num_classes) in the parameters' dtype; labels an integer array or tensor (N,)."""
        labels = torch.as_tensor(labels)
        classes = self.config["num_classes"]
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise TypeError(f"ConditionalVAE: labels must be integer class indices, got {labels.dtype}")
        if labels.ndim != 1 or len(labels) == 0 or (n is not None and len(labels) != n):
            raise ValueError(f"ConditionalVAE: labels must have shape ({'N' if n is None else n},), "
                             f"got {tuple(labels.shape)}")
        if ((labels < 0) | (labels >= classes)).any():
            raise ValueError(f"ConditionalVAE: labels must lie in [0, {classes})")
        return F.one_hot(labels.long(), classes).to(self.fc1.weight.dtype)

    def encode(self, x, labels):
        flat = x.reshape(x.shape[0], -1)
        h = F.relu(self.fc1(torch.cat([flat, self.one_hot(labels, flat.shape[0])], dim=1)))
        return self.fc21(h), self.fc22(h)

    def decode(self, z, labels):
        h = F.relu(self.fc3(torch.cat([z, self.one_hot(labels, z.shape[0])], dim=1)))
        return torch.sigmoid(self.fc4(h))

    def _pass(self, x, noise, labels):
        """(flat x, x̂ probabilities, μ, logvar) with z = μ + exp(½ logvar)·ε, given the labels."""
        flat = x.reshape(x.shape[0], -1)
        mean, logvar = self.encode(flat, labels)
        z = mean + torch.exp(0.5 * logvar) * self._eps(mean, noise)
        return flat, self.decode(z, labels), mean, logvar

    def forward(self, x, noise=None, *, labels):
        return self._pass(x, noise, labels)[1].reshape(x.shape)

    def reconstruct(self, x, noise=None, *, labels):
        return self.forward(x, noise, labels=labels)

    def loss(self, x, noise=None, *, labels) -> dict:
        flat, probabilities, mean, logvar = self._pass(x, noise, labels)
        # the target is data: dL/dx is the gradient through the encoder, as scratch's backward returns it
        recon = F.binary_cross_entropy(probabilities, flat.detach(), reduction="sum")
        kl = gaussian_kl(mean, logvar, "sum")
        return {"loss": self.objective(recon, kl, flat.shape[0]), "recon": recon, "kl": kl}

    def sample(self, labels, noise=None):
        """Images of the chosen classes: z ~ N(0, I) (or ``noise``) decoded with ``labels``."""
        n = len(self.one_hot(labels))  # checked before anything is drawn
        return self.decode(self._prior(n, noise), labels)

    def interpolate(self, x1, x2, steps=10, *, labels):
        """(steps, *x1.shape) decodes of (1 − t)·μ1 + t·μ2, t = k/(steps − 1), μ the posterior means
        of x1, x2 given ``labels`` (N,) ((1,) for single examples), decoded with the same labels."""
        steps, both = interpolation_inputs(self, x1, x2, steps)
        labels = torch.as_tensor(labels)
        self.one_hot(labels, both.shape[0] // 2)  # checked before any layer runs
        mean, _ = self.encode(both, labels.repeat(2))
        return self.decode(mix_codes(mean, steps), labels.repeat(steps)).reshape(steps, *x1.shape)
