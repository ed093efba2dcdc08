"""Torch twin of scratch.models.wae: WAE-MMD (Tolstikhin et al. 2018) with the same layers, keys,
configuration, prior samples and objective, differentiated by autograd.

The MMD is written here again, plainly, as the paper's U-statistic over torch ops (it is the
oracle the scratch ``mmd_forward``/``mmd_backward`` are checked against, so it shares no code
with them): the i = j terms of the two same-set sums are masked out as in the authors' code
(``tf.multiply(res1, 1. - tf.eye(n))``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torch_impl.functional import as_tensor
from torch_impl.models._latent import LatentMethods, check_count

KERNELS = ("imq", "rbf")
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str, bandwidths) -> torch.Tensor:
    """k(a_i, b_j), (n, m), summed over the bandwidths; squared distances from the differences."""
    squared = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
    total = torch.zeros_like(squared)
    for c in bandwidths:
        total = total + (c / (c + squared) if kernel == "imq" else torch.exp(-squared / c))
    return total


def mmd(z_q: torch.Tensor, z_p: torch.Tensor, kernel: str = "imq", scales=None, prior_variance: float = 1.0):
    """Unbiased MMD² between codes z_q (n, d) and prior samples z_p (m, d), n, m >= 2:
    1/(m(m−1)) Σ_{i≠j} k(p_i, p_j) + 1/(n(n−1)) Σ_{i≠j} k(q_i, q_j) − 2/(nm) Σ_{i,j} k(q_i, p_j),
    IMQ k = Σ_s C_s/(C_s + ‖x − y‖²) or RBF k = Σ_s exp(−‖x − y‖²/C_s), C_s = s·2·d·σ²."""
    if kernel not in KERNELS:
        raise ValueError(f"mmd: kernel must be one of {KERNELS}, got {kernel!r}")
    n, d = z_q.shape
    m = z_p.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd: needs at least 2 samples in each set, got {tuple(z_q.shape)} and {tuple(z_p.shape)}")
    if scales is None:
        scales = IMQ_SCALES if kernel == "imq" else (1.0,)
    bandwidths = [2.0 * d * prior_variance * float(s) for s in scales]
    off_q = 1 - torch.eye(n, dtype=z_q.dtype)
    off_p = 1 - torch.eye(m, dtype=z_p.dtype)
    within_q = (_kernel_matrix(z_q, z_q, kernel, bandwidths) * off_q).sum() / (n * (n - 1))
    within_p = (_kernel_matrix(z_p, z_p, kernel, bandwidths) * off_p).sum() / (m * (m - 1))
    cross = _kernel_matrix(z_q, z_p, kernel, bandwidths).sum() * 2 / (n * m)
    return within_q + within_p - cross


class WAEMMD(LatentMethods, nn.Module):
    """Twin of scratch's wae-mmd: fc1 D-400 ReLU, fc2 400-d; fc3 d-400 ReLU, fc4 400-D Sigmoid.
    loss = (1/N) Σ BCE(x̂, x) + λ·MMD²(z, z_p); ``noise`` is z_p (N, latent_dim), drawn from
    ``generator`` when not given."""

    name = "wae-mmd"
    loss_reduction = "mean"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=8, reg_weight=10.0, kernel="imq", *,
                 generator=None):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"WAEMMD(wae-mmd): kernel must be one of {KERNELS}, got {kernel!r}")
        if not reg_weight >= 0:
            raise ValueError(f"WAEMMD(wae-mmd): reg_weight (λ) must be >= 0, got {reg_weight!r}")
        self.config = dict(input_dim=int(input_dim), hidden_dim=int(hidden_dim), latent_dim=int(latent_dim),
                           reg_weight=float(reg_weight), kernel=kernel)
        self.generator = generator
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x):
        return self.fc2(F.relu(self.fc1(x.reshape(x.shape[0], -1))))

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def _prior(self, n, like, noise):
        shape = (n, self.config["latent_dim"])
        if noise is None:
            return torch.randn(shape, generator=self.generator, dtype=like.dtype)
        return as_tensor(noise, torch.empty(shape, dtype=like.dtype), type(self).__name__, "noise (z_p)")

    def forward(self, x, noise=None):
        return self.decode(self.encode(x)).reshape(x.shape)

    def reconstruct(self, x, noise=None):
        return self.forward(x, noise)

    def sample(self, n, noise=None):
        """n images decoded from prior draws z_p ~ N(0, I) (or the given ``noise``, (n, latent_dim))."""
        return self.decode(self._prior(check_count(self, n), self.fc3.weight, noise))

    def loss(self, x, noise=None) -> dict:
        flat = x.reshape(x.shape[0], -1)
        prior = self._prior(flat.shape[0], flat, noise)
        codes = self.encode(flat)
        # the target is data: dL/dx is the gradient through the model, as scratch's backward returns it
        recon = F.binary_cross_entropy(self.decode(codes), flat.detach(), reduction="sum") / flat.shape[0]
        penalty = mmd(codes, prior, self.config["kernel"])
        return {"loss": recon + self.config["reg_weight"] * penalty, "recon": recon, "mmd": penalty}
