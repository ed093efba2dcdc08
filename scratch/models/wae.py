"""The Wasserstein autoencoder with the MMD penalty, WAE-MMD (Tolstikhin et al. 2018, "Wasserstein
Auto-Encoders", Algorithm 2). Objective, estimator and gradients: docs/wae.md.

A deterministic encoder z = E(x) and a decoder x̂ = G(z) are trained on

    loss = recon + λ · MMD²(Q_Z, P_Z),   recon = (1/N) Σ_n Σ_i BCE(x̂_ni, x_ni)

with MMD² the unbiased U-statistic between the batch's codes z_q = E(x) (N, d) and as many
samples of the prior P_Z = N(0, I), z_p (N, d) (``scratch.functional.mmd``), the IMQ kernel
summed over seven bandwidths C = s·2·d (the authors' code) or a single-bandwidth RBF one.

Kept from the paper's MNIST setup (and the authors' ``configs.py``): the objective, the IMQ
kernel and its bandwidths, d = 8, λ = 10, the prior N(0, I), a deterministic encoder. Changed:

- the networks: a 784-400-8 / 8-400-784 ReLU MLP (the pytorch/examples VAE's sizes) instead of
  the DCGAN-style convolutional encoder and decoder with batch norm (1024 filters);
- the reconstruction cost: BCE against binarized MNIST, summed over the pixels and averaged over
  the batch, so ``recon`` is in nats per image (the paper uses c(x, y) = ‖x − y‖², which the
  authors' code scales by 0.05: of order 1 per image on MNIST against ~100 nats here, so λ = 10 weighs
  the MMD much less against the reconstruction than in the paper);
- no encoder pre-training and no input noise (the authors' ``e_pretrain``, ``e_add_noise``).

``noise`` is the prior sample z_p, (N, latent_dim), drawn from the model's generator when not
given: the VAE's ε's shape and distribution, another role (it never enters the code, only the
penalty: docs/wae.md §7); both backends can be fed identical arrays.
``state_dict`` keys: fc1, fc2 (the encoder), fc3, fc4 (the decoder), each ``.weight``, ``.bias``.
"""

from __future__ import annotations

import numpy as np

from scratch.functional.mmd import KERNELS, mmd_backward, mmd_forward
from scratch.models._inputs import FlatInputModel, check_backward_ready, check_loss_scale, check_model_array, mark_pass
from scratch.models._latent import LatentMethods
from scratch.nn import BCELoss, Linear, ReLU, Sigmoid
from scratch.nn.inplace import backward_pass, forward_pass, watch
from scratch.validate import check_float_dtype, check_integer, check_real_number, resolve_rng

NOISE_NAME = "noise (z_p, the prior samples)"


class WAEMMD(LatentMethods, FlatInputModel):
    """WAE-MMD with an MLP: fc1 D-400 ReLU, fc2 400-d (the code z, no activation); decoder fc3
    d-400 ReLU, fc4 400-D Sigmoid. 635,192 parameters with the defaults (784, 400, 8).

    ``loss(x, noise=None)`` -> ``{"loss", "recon", "mmd"}`` (floats; recon in nats per image,
    averaged over the batch; mmd the batch's MMD² estimate, which can be slightly negative);
    ``backward(grad_output=None, *, input_grad=True)``; ``encode(x)`` -> z (N, d);
    ``decode(z)`` -> (N, D) Bernoulli means; ``reconstruct(x)``; ``sample(n, noise=None)`` decodes
    n prior draws; ``interpolate(x1, x2, steps)`` decodes the path between the codes E(x1), E(x2).
    The loss needs a batch of N >= 2 (the estimator averages over pairs).
    """

    name = "wae-mmd"
    loss_reduction = "mean"  # loss parts are batch means (nats per image); the VAEs' are sums

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=8, reg_weight=10.0, kernel="imq", *,
                 rng=None, dtype=np.float32):
        super().__init__()
        owner = f"{type(self).__name__}({self.name})"
        input_dim = check_integer(input_dim, owner, "input_dim", minimum=1)
        hidden_dim = check_integer(hidden_dim, owner, "hidden_dim", minimum=1)
        latent_dim = check_integer(latent_dim, owner, "latent_dim", minimum=1)
        reg_weight = check_real_number(reg_weight, owner, "reg_weight (λ)", minimum=0)
        if not isinstance(kernel, str) or kernel not in KERNELS:
            raise ValueError(f"{owner}: kernel must be one of {KERNELS}, got {kernel!r}")
        rng, dtype = self._setup(owner, rng, dtype, dict(input_dim=input_dim, hidden_dim=hidden_dim,
                                                         latent_dim=latent_dim, reg_weight=reg_weight, kernel=kernel))
        layer = dict(rng=rng, dtype=dtype)
        self.fc1 = Linear(input_dim, hidden_dim, **layer)
        self.fc2 = Linear(hidden_dim, latent_dim, **layer)
        self.fc3 = Linear(latent_dim, hidden_dim, **layer)
        self.fc4 = Linear(hidden_dim, input_dim, **layer)
        self.relu1, self.relu3, self.sigmoid = ReLU(), ReLU(), Sigmoid()

    def _setup(self, owner, rng, dtype, config):
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        object.__setattr__(self, "rng", rng)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "bce", BCELoss(reduction="sum"))
        object.__setattr__(self, "_state", None)
        return rng, dtype

    @property
    def _owner(self) -> str:
        return f"{type(self).__name__}({self.name})"

    # -- the prior samples -----------------------------------------------------------------
    @staticmethod
    def noise_for(config: dict, x_shape, rng: np.random.Generator, dtype) -> np.ndarray:
        """z_p ~ P_Z = N(0, I), (N, latent_dim): one prior sample per image of the batch."""
        return rng.standard_normal((x_shape[0], config.get("latent_dim", 8))).astype(dtype)

    def draw_noise(self, shape) -> np.ndarray:
        return self.noise_for(self._config, shape, self.rng, self.dtype)

    def _noise(self, n, noise):
        if noise is None:
            return self.noise_for(self._config, (n,), self.rng, self.dtype)
        return check_model_array(self, noise, NOISE_NAME, (n, self._config["latent_dim"]))

    # -- the networks ----------------------------------------------------------------------
    @forward_pass
    def encode(self, x):
        """(N, D) or (N, C, H, W) -> the code z, (N, latent_dim): fc2(relu(fc1(x)))."""
        h = self.fc1.forward_fused(self._flatten_input(x), self.relu1)  # relu1(fc1(x)), (N, hidden)
        return self.fc2(h)  # (N, latent)

    @forward_pass
    def decode(self, z):
        """(N, latent_dim) -> (N, D) Bernoulli means: σ(fc4(relu(fc3(z))))."""
        return self.sigmoid(self.fc4(self.fc3.forward_fused(z, self.relu3)))

    @forward_pass
    def forward(self, x, noise=None):
        """The reconstruction x̂ = G(E(x)), in x's shape. The encoder is deterministic and the
        prior samples do not enter the reconstruction: ``noise`` is checked like the loss's (so
        the same call works for both), before any layer runs, and not used."""
        if noise is not None:
            self._noise(len(self._flatten_input(x)), noise)
        probabilities = self.decode(self.encode(x))
        mark_pass(self, from_loss=False)
        return probabilities.reshape(x.shape)

    def reconstruct(self, x, noise=None):
        return self.forward(x, noise)

    @forward_pass
    def sample(self, n, noise=None):
        """n images decoded from prior draws z_p ~ N(0, I), (n, D); ``noise``: those draws, (n, latent_dim)."""
        n = check_integer(n, self._owner, "n", minimum=1)
        return self.decode(self._noise(n, noise))

    # -- the objective -----------------------------------------------------------------------
    @forward_pass
    def loss(self, x, noise=None) -> dict:
        """{"loss": recon + λ·mmd, "recon": (1/N) Σ BCE(x̂, x), "mmd": MMD²(z, z_p)}, floats."""
        flat = self._flatten_input(x)
        count = flat.shape[0]
        if count < 2:
            raise ValueError(f"{self._owner}: the loss needs a batch of N >= 2 images (the MMD estimator averages "
                             f"over pairs of codes i ≠ j), got shape {x.shape}")
        # z_p is checked (or drawn) before the encoder runs, so that refused noise changes no cache
        prior = self._noise(count, noise)  # (N, latent)
        codes = self.encode(flat)  # (N, latent)
        probabilities = self.decode(codes)  # (N, D)
        recon = self.bce(probabilities, flat) / count
        mmd, cache = mmd_forward(codes, prior, self._config["kernel"])
        mmd = float(mmd)
        object.__setattr__(self, "_state", (x.shape, count, cache))
        # mmd_backward reads z_p (the cache holds it): the noise passed in is watched for in-place edits
        object.__setattr__(self, "_watches", watch(self, ((NOISE_NAME, prior),), (x, noise)))
        mark_pass(self, from_loss=True)
        return {"loss": recon + self._config["reg_weight"] * mmd, "recon": recon, "mmd": mmd}

    @backward_pass
    def backward(self, grad_output=None, *, input_grad: bool = True):
        """Back-propagate the last ``loss`` into every parameter's ``.grad``; returns dL/dx in x's
        shape (None when ``input_grad`` is False), through the model with the BCE's target x held
        fixed (it is data). ``grad_output``: dL/d(loss), default 1.

        dL/dz = the decoder's backward of (x̂ − x)/N (the Sigmoid and the BCE in one pass,
        ``BCELoss.backward_through_sigmoid``) + λ·dMMD²/dz_q (``mmd_backward``); then fc2 and
        fc1 + ReLU. dMMD²/dz_p is computed and dropped: the prior samples are inputs with no
        parameter behind them (docs/wae.md).
        """
        upstream = 1.0 if grad_output is None else check_loss_scale(self, grad_output)
        check_backward_ready(self, needs_loss=True)
        shape, count, cache = self._state
        grad_logits = self.bce.backward_through_sigmoid(self.sigmoid, upstream / count)  # (N, D)
        grad_codes = self.fc3.backward_fused(self.fc4.backward(grad_logits), self.relu3)  # (N, latent)
        grad_mmd, _ = mmd_backward(upstream * self._config["reg_weight"], cache)  # (N, latent), (N, latent)
        grad_codes += grad_mmd  # fc3's dx is a fresh array: add in place
        grad_hidden = self.fc2.backward(grad_codes)  # (N, hidden)
        grad_input = self.fc1.backward_fused(grad_hidden, self.relu1, input_grad=input_grad)  # (N, D)
        return None if grad_input is None else grad_input.reshape(shape)
