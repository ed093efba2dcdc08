"""The importance-weighted autoencoder (Burda, Grosse & Salakhutdinov 2016).

K samples z_k = μ + σ·ε_k per image and the bound L_K = log (1/K) Σ_k w_k with
log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x). Its gradient is the softmax-weighted sum
Σ_k w̃_k ∇ log w_k (w̃ = softmax_k log w, the normalized importance weights); K = 1 is the
one-sample Monte Carlo ELBO with its KL estimated from the same sample. Derivation: docs/iwae.md.

Like the other VAEs the loss is summed over the batch: loss = −Σ_n L_K(x_n) (nats), and ε is
the ``noise`` argument, now (N, K, latent_dim).
"""

from __future__ import annotations

import numpy as np

from scratch import functional as F
from scratch.models._inputs import check_backward_ready, check_model_array, mark_pass
from scratch.models.vae import _positive, _Variational
from scratch.nn import BCELoss, Linear, Sequential, Sigmoid, Tanh
from scratch.nn.inplace import backward_pass, forward_pass, watch
from scratch.validate import check_integer


def _check_widths(owner: str, hidden_dims) -> tuple[int, ...]:
    if isinstance(hidden_dims, (str, bytes)) or not hasattr(hidden_dims, "__iter__"):
        raise TypeError(f"{owner}: hidden_dims must be a sequence of positive ints (one Tanh layer per width), "
                        f"got {hidden_dims!r}")
    hidden_dims = tuple(hidden_dims)
    if not hidden_dims:
        raise ValueError(f"{owner}: hidden_dims must hold at least one width, got ()")
    return tuple(check_integer(width, owner, f"hidden_dims[{i}]", minimum=1) for i, width in enumerate(hidden_dims))


def _tanh_stack(widths, rng, dtype) -> list:
    """Linear(w0, w1) Tanh Linear(w1, w2) Tanh ... (the paper's deterministic layers)."""
    layers = []
    for narrow, wide in zip(widths, widths[1:]):
        layers += [Linear(narrow, wide, rng=rng, dtype=dtype), Tanh()]
    return layers


class ImportanceWeightedAutoencoder(_Variational):
    """IWAE with the paper's one-stochastic-layer MNIST architecture: encoder D-200-200 (Tanh)
    then fc21/fc22 to μ and logvar (50 each); decoder 50-200-200 (Tanh)-D Sigmoid; K = 5 samples
    in training (the paper trains with K in {1, 5, 50}). Keys encoder.{0,2}, fc21, fc22,
    decoder.{0,2,4}.

    ``loss(x, noise)`` returns {"loss": −Σ_n L_K(x_n), "recon": (1/K) Σ_n Σ_k −log p(x_n|z_nk),
    "kl": (1/K) Σ_n Σ_k [log q(z_nk|x_n) − log p(z_nk)]}: recon and kl are the ELBO's two terms
    estimated from the same K samples, so recon + kl is the K-sample ELBO estimate and
    loss ≤ recon + kl (Jensen), with equality at K = 1.
    """

    name = "iwae"

    def __init__(self, input_dim=784, hidden_dims=(200, 200), latent_dim=50, num_samples=5, *, rng=None,
                 dtype=np.float32):
        super().__init__()
        owner = f"{type(self).__name__}({self.name})"
        hidden_dims = _check_widths(owner, hidden_dims)
        _positive(owner, input_dim=input_dim, latent_dim=latent_dim, num_samples=num_samples)
        rng, dtype = self._setup(owner, input_dim, latent_dim, rng, dtype,
                                 dict(hidden_dims=list(hidden_dims), num_samples=int(num_samples)))
        layer = dict(rng=rng, dtype=dtype)
        self.encoder = Sequential(*_tanh_stack((input_dim, *hidden_dims), rng, dtype))
        self.fc21 = Linear(hidden_dims[-1], latent_dim, **layer)
        self.fc22 = Linear(hidden_dims[-1], latent_dim, **layer)
        widths = (latent_dim, *reversed(hidden_dims))
        self.decoder = Sequential(*_tanh_stack(widths, rng, dtype), Linear(widths[-1], input_dim, **layer), Sigmoid())
        # −log p(x|z) per sample and pixel: weighted by w̃ in backward, so not reduced here
        object.__setattr__(self, "bce", BCELoss(reduction="none"))

    # -- noise: K samples per image ---------------------------------------------------------
    @staticmethod
    def noise_for(config: dict, x_shape, rng: np.random.Generator, dtype) -> np.ndarray:
        """ε ~ N(0, I), (N, K, latent_dim)."""
        shape = (x_shape[0], config.get("num_samples", 5), config.get("latent_dim", 50))
        return rng.standard_normal(shape).astype(dtype)

    def _noise(self, n, noise):
        shape = (n, self._config["num_samples"], self._config["latent_dim"])
        if noise is None:
            return self.noise_for(self._config, (n,), self.rng, self.dtype)
        return check_model_array(self, noise, "noise (ε)", shape)

    # -- encoder and decoder ----------------------------------------------------------------
    @forward_pass
    def encode(self, x):
        """(N, D) or (N, C, H, W) -> (mean, logvar), each (N, latent_dim)."""
        h = self.encoder(self._flatten_input(x))  # (N, hidden_dims[-1])
        return self.fc21(h), self.fc22(h)

    def _encoder_backward(self, grad_mean, grad_logvar, input_grad=True):
        grad_h = self.fc21.backward(grad_mean) + self.fc22.backward(grad_logvar)
        return self.encoder.backward(grad_h, input_grad=input_grad)

    @forward_pass
    def decode(self, z):
        """(M, latent_dim) -> (M, D) Bernoulli means."""
        return self.decoder(z)

    # -- the bound ----------------------------------------------------------------------------
    def _forward(self, x, noise):
        """Encode once, decode all N·K samples in one batch; the reconstruction is sample 0's."""
        flat = self._flatten_input(x)
        eps = self._noise(len(flat), noise)  # (N, K, L), checked before any layer runs
        n, k, latent = eps.shape
        mean, logvar = self.encode(flat)  # (N, L) each
        broadcast = (n, k, latent)
        z, reparameterization = F.reparameterize_forward(  # z (N, K, L) = μ + σ·ε
            np.broadcast_to(mean[:, None], broadcast), np.broadcast_to(logvar[:, None], broadcast), eps)
        probabilities = self.decode(z.reshape(n * k, latent))  # (N·K, D)
        object.__setattr__(self, "_state", (x.shape, flat, mean, logvar, z, reparameterization))
        object.__setattr__(self, "_watches", watch(self, (("noise (ε)", reparameterization[0]),), (x, noise)))
        return flat, probabilities

    @forward_pass
    def forward(self, x, noise=None):
        """A sampled reconstruction x̂ (sample 0 of the K), in x's shape."""
        flat, probabilities = self._forward(x, noise)
        mark_pass(self, from_loss=False)
        k = self._config["num_samples"]
        return np.ascontiguousarray(probabilities.reshape(len(flat), k, -1)[:, 0]).reshape(x.shape)

    @forward_pass
    def loss(self, x, noise=None) -> dict:
        """{"loss": −Σ_n log (1/K) Σ_k w_nk, "recon", "kl"}: see the class docstring (floats)."""
        flat, probabilities = self._forward(x, noise)
        _, _, mean, logvar, z, (eps, _) = self._state
        n, k, _ = z.shape
        targets = np.broadcast_to(flat[:, None], (n, k, flat.shape[1])).reshape(n * k, -1)
        nll = self.bce(probabilities, targets).sum(axis=1).reshape(n, k)  # −log p(x|z_k), (N, K)
        # log q(z|x) − log p(z) = ½ Σ_j (z² − ε² − logvar); the log 2π terms cancel
        log_ratio = 0.5 * (np.square(z) - np.square(eps) - logvar[:, None]).sum(axis=2)  # (N, K)
        bound, cache = F.importance_weighted_bound_forward(-nll - log_ratio)  # (N,)
        object.__setattr__(self, "_bound_cache", cache)
        mark_pass(self, from_loss=True)
        return {"loss": float(-bound.sum()), "recon": float(nll.sum() / k), "kl": float(log_ratio.sum() / k)}

    @backward_pass
    def backward(self, grad_output=None, *, input_grad: bool = True):
        """Back-propagate the last ``loss`` into every ``.grad``; returns dL/dx (or None).

        dL/dlog w_nk = −w̃_nk; through log w = −BCE − ½Σ(z² − ε² − lv): dL/dlogits = w̃·(p − x)
        (the fused BCE-and-Sigmoid backward), dL/dz = w̃·z plus the decoder's, then the
        reparameterisation (summed over k) and dL/dlv gains −½ Σ_k w̃_k = −½ directly.
        """
        if grad_output is not None:
            raise ValueError(f"{type(self).__name__}.backward takes no gradient: it differentiates the last loss; "
                             f"got grad_output {type(grad_output).__name__}")
        check_backward_ready(self, needs_loss=True)
        shape, flat, mean, logvar, z, reparameterization = self._state
        n, k, latent = z.shape
        normalized = F.importance_weighted_bound_backward(np.ones(n, dtype=z.dtype), self._bound_cache)  # w̃ (N, K)
        # L = −Σ_n bound_n, so dL/dlog w = −w̃, and log w = −BCE − ½Σ_j(z² − ε² − lv):
        upstream = np.broadcast_to(normalized.reshape(n * k, 1), (n * k, flat.shape[1]))  # dL/dBCE = w̃ per pixel
        grad_logits = self.bce.backward_through_sigmoid(self.decoder[-1], np.ascontiguousarray(upstream))
        grad_z = self.decoder.backward(grad_logits, start=len(self.decoder) - 2).reshape(n, k, latent)
        grad_z += normalized[:, :, None] * z  # ½ z² in log q − log p
        grad_mean, grad_logvar = F.reparameterize_backward(grad_z, reparameterization)  # (N, K, L) each
        # the direct −½ lv in log q: dL/dlv gains −½ Σ_k w̃_k (= −½ up to rounding)
        grad_logvar = grad_logvar.sum(axis=1) - 0.5 * normalized.sum(axis=1)[:, None]
        grad_input = self._encoder_backward(grad_mean.sum(axis=1), grad_logvar, input_grad)
        return None if grad_input is None else grad_input.reshape(shape)
