"""Torch twins of scratch.models.regularized: the same layers, keys, configuration and losses.

They are written as a torch user would write them, and serve as oracles: the contractive
penalty here is the Jacobian ∂h/∂x computed by autograd (``create_graph=True``, so that the
penalty itself back-propagates), not the closed form that scratch derives by hand.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torch_impl.models._latent import LatentMethods

DEFAULT_SPARSITY_WEIGHT = {"kl": 3.0, "l1": 0.1}
ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh,
               "leaky_relu": lambda x: F.leaky_relu(x, 0.01)}


class _ShallowAutoencoder(LatentMethods, nn.Module):
    """x -> h = act(encoder(x)) -> x̂ = σ(decoder(h)); recon = BCE summed over pixels / N."""

    name = ""

    def __init__(self, input_dim, hidden_dim, generator=None, **config):
        super().__init__()
        self.config = dict(input_dim=int(input_dim), hidden_dim=int(hidden_dim), **config)
        self.generator = generator

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.config["input_dim"]:
            raise ValueError(f"{type(self).__name__}: expected {self.config['input_dim']} features, "
                             f"got shape {tuple(x.shape)}")
        return flat

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(self._flat(x)))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)).reshape(x.shape)

    def reconstruct(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        return self.forward(x)

    def code_and_penalty(self, flat: torch.Tensor):
        """(h, the penalty or None) for a batch of flat inputs."""
        hidden = self.encode(flat)
        return hidden, self.penalty(hidden)

    def penalty(self, hidden: torch.Tensor):
        return None

    def loss(self, x: torch.Tensor, noise=None) -> dict:
        if noise is not None:
            raise ValueError(f"{self.name} is deterministic and takes no noise")
        flat = self._flat(x)
        hidden, penalty = self.code_and_penalty(flat)
        # The target is data: dL/dx is the gradient through the model, as scratch's backward returns it.
        recon = F.binary_cross_entropy(self.decode(hidden), flat.detach(), reduction="sum") / flat.shape[0]
        if penalty is None:
            return {"loss": recon, "recon": recon}
        return {"loss": recon + penalty, "recon": recon, "penalty": penalty}


class SparseAutoencoder(_ShallowAutoencoder):
    """KL sparsity β Σ_j KL(ρ ‖ ρ̂_j) on the batch means ρ̂ (clamped to [√tiny, 1 - ε/2]), or L1 activity."""

    name = "sparse-ae"

    def __init__(self, input_dim=784, hidden_dim=256, penalty="kl", sparsity_target=0.05, sparsity_weight=None,
                 *, generator=None):
        if penalty not in DEFAULT_SPARSITY_WEIGHT:
            raise ValueError(f"{type(self).__name__}: unknown penalty {penalty!r}")
        weight = DEFAULT_SPARSITY_WEIGHT[penalty] if sparsity_weight is None else float(sparsity_weight)
        super().__init__(input_dim, hidden_dim, generator, penalty=penalty, sparsity_target=float(sparsity_target),
                         sparsity_weight=weight)
        self.encoder = nn.Linear(input_dim, hidden_dim)
        self.decoder = nn.Linear(hidden_dim, input_dim)

    def penalty(self, hidden):
        weight = self.config["sparsity_weight"]
        if self.config["penalty"] == "l1":
            return weight * hidden.abs().sum() / hidden.shape[0]
        rho = self.config["sparsity_target"]
        info = torch.finfo(hidden.dtype)  # [√tiny, 1 - ε/2]: only 0 and 1 themselves are clamped
        rho_hat = hidden.mean(dim=0).clamp(info.tiny ** 0.5, 1 - info.eps / 2)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return weight * kl.sum()


class ContractiveAutoencoder(_ShallowAutoencoder):
    """λ (1/N) Σ_n ‖∂h_n/∂x_n‖²_F, the Jacobian by autograd with ``create_graph=True``."""

    name = "contractive-ae"

    def __init__(self, input_dim=784, hidden_dim=256, contraction_weight=0.1, *, generator=None):
        super().__init__(input_dim, hidden_dim, generator, contraction_weight=float(contraction_weight))
        self.encoder = nn.Linear(input_dim, hidden_dim)
        self.decoder = nn.Linear(hidden_dim, input_dim)

    def code_and_penalty(self, flat):
        # The Jacobian is taken with respect to x, so x must require grad; grad mode is switched
        # on for it even under torch.no_grad() (evaluation), and the results are detached there.
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():
            # An input that already requires grad keeps its graph, so dL/dx includes the
            # penalty's second-order path (the Jacobian is differentiable: create_graph=True).
            inputs = flat if flat.requires_grad else flat.detach().requires_grad_(True)
            hidden = self.encode(inputs)
            penalty = self.jacobian_penalty(inputs, hidden)
        if not outer_grad:
            return hidden.detach(), penalty.detach()
        return hidden, penalty

    def jacobian_penalty(self, flat, hidden):
        # Row j of the batched vector-Jacobian products: (∂h_nj/∂x_n)_n for every example n at
        # once (example n's h depends on its own x only). jacobian: (H, N, D).
        units = hidden.shape[1]
        selectors = torch.eye(units, dtype=hidden.dtype).unsqueeze(1).expand(units, *hidden.shape)
        (jacobian,) = torch.autograd.grad(hidden, flat, grad_outputs=selectors, create_graph=True,
                                          is_grads_batched=True)
        return self.config["contraction_weight"] * jacobian.pow(2).sum() / hidden.shape[0]


class TiedDecoder(nn.Module):
    """y = h W + b with W the encoder Linear's weight (held there, not here): key ``bias`` only."""

    def __init__(self, source: nn.Linear):
        super().__init__()
        self._source = (source,)  # a tuple: not registered, so the weight is in the state_dict once
        self.bias = nn.Parameter(torch.zeros(source.in_features))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self._source[0].weight.t(), self.bias)


class TiedAutoencoder(_ShallowAutoencoder):
    """x̂ = σ(act(x Wᵀ + b) W + c): one weight, keys encoder.weight, encoder.bias, decoder.bias."""

    name = "tied-ae"

    def __init__(self, input_dim=784, hidden_dim=256, activation="sigmoid", *, generator=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: unknown activation {activation!r}")
        super().__init__(input_dim, hidden_dim, generator, activation=activation)
        self.encoder = nn.Linear(input_dim, hidden_dim)
        self.decoder = TiedDecoder(self.encoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.config["activation"]](self.encoder(self._flat(x)))
