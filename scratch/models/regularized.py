"""One-hidden-layer autoencoders whose interest is a penalty or a constraint on the code:
the sparse (Ng's KL sparsity, or L1 activity), the contractive (Rifai et al. 2011) and the
tied-weight autoencoder. Derivations: docs/penalties.md.

All three: x (N, D) -> h = act(x Wᵀ + b) (N, H) -> x̂ = σ(decoder(h)) (N, D), and

    loss = recon + penalty,   recon = (1/N) Σ_n Σ_i BCE(x̂_ni, x_ni)

the reconstruction summed over an image's pixels and averaged over the batch (the scale of Ng's
and Rifai's objectives, so that β and λ mean what they mean there); the penalty is averaged over
the batch likewise. ``loss(x)`` returns ``{"loss", "recon", "penalty"}`` (no "penalty" for the
tied autoencoder, which has none). Inputs are (N, D) or (N, C, H, W) with C·H·W = D.
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.models._inputs import FlatInputModel, check_backward_ready, check_loss_scale, mark_pass
from scratch.models._latent import LatentMethods
from scratch.nn import BCELoss, LeakyReLU, Linear, ReLU, Sigmoid, Tanh, TiedLinear
from scratch.nn.inplace import backward_pass, forward_pass
from scratch.validate import check_float_dtype, check_integer, resolve_rng

SPARSITY_PENALTIES = ("kl", "l1")
#: β for the KL penalty (Ng's notes); λ for the L1 one, which makes it start at a few percent of
#: the reconstruction on MNIST (256 units near 0.5 against ~540 nats per image).
DEFAULT_SPARSITY_WEIGHT = {"kl": 3.0, "l1": 0.1}
TIED_ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh}


def _non_negative(owner, label, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}: {label} must be a finite number >= 0, got {value!r}")
    return float(value)


class _ShallowAutoencoder(LatentMethods, FlatInputModel):
    """Shared plumbing: input checks, the summed-per-image BCE, and the backward pass around a
    penalty on h. Subclasses build ``encoder``, ``hidden_activation``, ``decoder`` and say what
    the penalty adds to dL/dh (``_penalty_forward``/``_penalty_backward``)."""

    name = ""

    def _setup(self, input_dim, hidden_dim, rng, dtype, **config):
        owner = type(self).__name__
        input_dim = check_integer(input_dim, owner, "input_dim", minimum=1)
        hidden_dim = check_integer(hidden_dim, owner, "hidden_dim", minimum=1)
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        object.__setattr__(self, "rng", rng)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_config", dict(input_dim=input_dim, hidden_dim=hidden_dim, **config))
        object.__setattr__(self, "bce", BCELoss(reduction="sum"))
        object.__setattr__(self, "_state", None)
        return input_dim, hidden_dim, rng, dtype

    @staticmethod
    def noise_for(config: dict, x_shape, rng: np.random.Generator, dtype) -> None:
        """These models are deterministic: no noise."""
        return None

    # -- the passes ------------------------------------------------------------------------
    @forward_pass
    def encode(self, x: np.ndarray) -> np.ndarray:
        """(N, D) or (N, C, H, W) -> the hidden code h (N, hidden_dim)."""
        return self.hidden_activation(self.encoder(self._flatten_input(x)))

    @forward_pass
    def decode(self, h: np.ndarray) -> np.ndarray:
        """(N, hidden_dim) -> (N, D) probabilities."""
        return self.output_activation(self.decoder(h))

    @forward_pass
    def forward(self, x: np.ndarray) -> np.ndarray:
        """The reconstruction x̂, in x's shape."""
        reconstruction = self.decode(self.encode(x)).reshape(x.shape)
        mark_pass(self, from_loss=False)
        return reconstruction

    def reconstruct(self, x: np.ndarray, noise=None) -> np.ndarray:
        """x̂ for x, in x's shape."""
        return self.forward(x)

    def _penalty_forward(self, hidden):
        """(penalty as a float or None, cache for ``_penalty_backward``)."""
        return None, None

    def _penalty_backward(self, cache, upstream=1.0):
        """d(upstream·penalty)/dh (N, H), adding any direct parameter gradient into ``.grad``; or None."""
        return None

    @forward_pass
    def loss(self, x: np.ndarray, noise=None) -> dict:
        """recon = (1/N) Σ BCE(x̂, x) and the penalty: ``{"loss", "recon"[, "penalty"]}``, floats."""
        if noise is not None:
            raise ValueError(f"{type(self).__name__}: {self.name} is deterministic and takes no noise, "
                             f"got {type(noise).__name__}")
        flat = self._flatten_input(x)
        hidden = self.encode(flat)  # (N, H)
        probabilities = self.decode(hidden)  # (N, D)
        count = flat.shape[0]
        recon = self.bce(probabilities, flat) / count
        penalty, cache = self._penalty_forward(hidden)
        object.__setattr__(self, "_state", (x.shape, count, cache))
        mark_pass(self, from_loss=True)
        if penalty is None:
            return {"loss": recon, "recon": recon}
        return {"loss": recon + penalty, "recon": recon, "penalty": penalty}

    @backward_pass
    def backward(self, grad_output=None, *, input_grad: bool = True):
        """Back-propagate the last ``loss`` into every ``.grad``; returns dL/dx in x's shape (None
        when ``input_grad`` is False), through the model with the target x held fixed (it is
        data). ``grad_output``: dL/d(loss), default 1.

        dL/dh = the decoder's backward of the reconstruction's gradient + dpenalty/dh; then the
        hidden activation's backward and the encoder's.
        """
        upstream = 1.0 if grad_output is None else check_loss_scale(self, grad_output)
        check_backward_ready(self, needs_loss=True)
        shape, count, cache = self._state
        grad_logits = self.bce.backward_through_sigmoid(self.output_activation, upstream / count)  # (N, D)
        grad_hidden = self.decoder.backward(grad_logits)  # (N, H)
        grad_penalty = self._penalty_backward(cache, upstream)
        if grad_penalty is not None:
            grad_hidden += grad_penalty  # the decoder's dx is a fresh array: add in place
        grad_pre_activation = self.hidden_activation.backward(grad_hidden)  # (N, H)
        grad_input = self.encoder.backward(grad_pre_activation, input_grad=input_grad)
        return None if grad_input is None else grad_input.reshape(shape)


class SparseAutoencoder(_ShallowAutoencoder):
    """784-H-784 with sigmoid units and a sparsity penalty on the hidden code.

    ``penalty="kl"`` (default): β Σ_j KL(ρ ‖ ρ̂_j), ρ̂_j the batch mean of unit j (ρ = 0.05,
    β = 3: Ng's CS294A notes and the UFLDL exercise). ``penalty="l1"``: (λ/N) Σ_n Σ_j |h_nj|, λ = ``sparsity_weight``
    (default 0.1). The KL penalty's gradient reaches every example through ρ̂.
    ``state_dict`` keys: ``encoder.{weight,bias}``, ``decoder.{weight,bias}``.
    """

    name = "sparse-ae"

    def __init__(self, input_dim=784, hidden_dim=256, penalty="kl", sparsity_target=0.05, sparsity_weight=None,
                 *, rng=None, dtype=np.float32):
        super().__init__()
        owner = type(self).__name__
        if penalty not in SPARSITY_PENALTIES:
            raise ValueError(f"{owner}: penalty must be one of {SPARSITY_PENALTIES}, got {penalty!r}")
        weight = DEFAULT_SPARSITY_WEIGHT[penalty] if sparsity_weight is None else sparsity_weight
        weight = _non_negative(owner, "sparsity_weight", weight)
        if isinstance(sparsity_target, bool) or not isinstance(sparsity_target, (int, float, np.floating)) \
                or not 0 < sparsity_target < 1:
            raise ValueError(f"{owner}: sparsity_target (ρ) must lie strictly between 0 and 1, got {sparsity_target!r}")
        input_dim, hidden_dim, rng, dtype = self._setup(
            input_dim, hidden_dim, rng, dtype, penalty=penalty, sparsity_target=float(sparsity_target),
            sparsity_weight=weight)
        self.encoder = Linear(input_dim, hidden_dim, rng=rng, dtype=dtype)
        self.hidden_activation = Sigmoid()
        self.decoder = Linear(hidden_dim, input_dim, rng=rng, dtype=dtype)
        self.output_activation = Sigmoid()

    def _penalty_forward(self, hidden):
        config = self._config
        if config["penalty"] == "kl":
            penalty, cache = F.kl_sparsity_forward(hidden, config["sparsity_target"], config["sparsity_weight"])
            return float(penalty), ("kl", cache)
        penalty, cache = F.l1_activity_forward(hidden, config["sparsity_weight"])
        return float(penalty), ("l1", cache)

    def _penalty_backward(self, cache, upstream=1.0):
        kind, cache = cache
        if kind == "kl":
            return F.kl_sparsity_backward(upstream, cache)
        return F.l1_activity_backward(upstream, cache)


class ContractiveAutoencoder(_ShallowAutoencoder):
    """784-H-784, sigmoid encoder, with λ‖∂h/∂x‖²_F averaged over the batch (Rifai et al. 2011).

    The penalty has the closed form Σ_j (h_j (1 - h_j))² Σ_i W_ji² for a sigmoid encoder; its
    gradient reaches W directly (through Σ_i W_ji²) and through h. λ = ``contraction_weight``
    (default 0.1). ``state_dict`` keys: ``encoder.{weight,bias}``, ``decoder.{weight,bias}``.
    """

    name = "contractive-ae"

    def __init__(self, input_dim=784, hidden_dim=256, contraction_weight=0.1, *, rng=None, dtype=np.float32):
        super().__init__()
        strength = _non_negative(type(self).__name__, "contraction_weight", contraction_weight)
        input_dim, hidden_dim, rng, dtype = self._setup(input_dim, hidden_dim, rng, dtype,
                                                        contraction_weight=strength)
        self.encoder = Linear(input_dim, hidden_dim, rng=rng, dtype=dtype)
        self.hidden_activation = Sigmoid()
        self.decoder = Linear(hidden_dim, input_dim, rng=rng, dtype=dtype)
        self.output_activation = Sigmoid()

    def _penalty_forward(self, hidden):
        penalty, cache = F.contractive_forward(hidden, self.encoder.weight.data, self._config["contraction_weight"])
        return float(penalty), cache

    def _penalty_backward(self, cache, upstream=1.0):
        grad_hidden, grad_weight = F.contractive_backward(upstream, cache)
        self.encoder.weight.grad += grad_weight  # the direct path: Σ_i W_ji² depends on W
        return grad_hidden


class TiedAutoencoder(_ShallowAutoencoder):
    """784-H-784 whose decoder's weight is the encoder's, transposed: x̂ = σ(act(x Wᵀ + b) W + c).

    dL/dW sums the encoder's use and the decoder's; the ``state_dict`` holds W once:
    ``encoder.weight`` (H, D), ``encoder.bias`` (H,), ``decoder.bias`` (D,), the last zeros at the
    start. ``activation``: the hidden units' (default "sigmoid").
    """

    name = "tied-ae"

    def __init__(self, input_dim=784, hidden_dim=256, activation="sigmoid", *, rng=None, dtype=np.float32):
        super().__init__()
        if activation not in TIED_ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: activation must be one of {sorted(TIED_ACTIVATIONS)}, "
                             f"got {activation!r}")
        input_dim, hidden_dim, rng, dtype = self._setup(input_dim, hidden_dim, rng, dtype, activation=activation)
        self.encoder = Linear(input_dim, hidden_dim, rng=rng, dtype=dtype)
        self.hidden_activation = TIED_ACTIVATIONS[activation]()
        self.decoder = TiedLinear(self.encoder)
        self.output_activation = Sigmoid()

    def _penalty_backward(self, cache, upstream=1.0):
        return None
