"""Torch twins: ``build(name, dtype=torch.float32, generator=None, **config)`` -> nn.Module."""

from __future__ import annotations

import torch

from torch_impl.functional import resolve_dtype
from torch_impl.models.conv import ConvAutoencoder
from torch_impl.models.cvae import ConditionalVAE
from torch_impl.models.iwae import ImportanceWeightedAutoencoder
from torch_impl.models.mlp import DenoisingAutoencoder, MLPAutoencoder
from torch_impl.models.regularized import ContractiveAutoencoder, SparseAutoencoder, TiedAutoencoder
from torch_impl.models.vae import BetaVAE, ConvVAE, DeepConvVAE, SeedVAE, VariationalAutoencoder
from torch_impl.models.vq import VQVAE
from torch_impl.models.wae import WAEMMD

MODELS = {
    "mlp-ae": MLPAutoencoder,
    "denoising-ae": DenoisingAutoencoder,
    "conv-ae": ConvAutoencoder,
    "vae": VariationalAutoencoder,
    "seed-vae": SeedVAE,
    "beta-vae": BetaVAE,
    "conv-vae": ConvVAE,
    "deep-conv-vae": DeepConvVAE,
    "iwae": ImportanceWeightedAutoencoder,
    "cvae": ConditionalVAE,
    "wae-mmd": WAEMMD,
    "vq-vae": VQVAE,
    "sparse-ae": SparseAutoencoder,
    "contractive-ae": ContractiveAutoencoder,
    "tied-ae": TiedAutoencoder,
}


def build(name: str, dtype=torch.float32, generator: torch.Generator | int | None = None, **config) -> torch.nn.Module:
    """A torch model by name with the scratch model's configuration keys.

    ``generator`` (a torch.Generator or an int seed) draws noise not passed in explicitly;
    weights come from torch's default initialisation (load scratch weights to match exactly).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    return MODELS[name](**config, generator=generator).to(resolve_dtype(dtype))


__all__ = ["MODELS", "build"]
