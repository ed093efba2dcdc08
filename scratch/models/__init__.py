"""The autoencoder families; ``build(name, dtype=np.float32, rng=None, **config)``."""

from __future__ import annotations

import numpy as np

from scratch.models.conv import ConvAutoencoder
from scratch.models.mlp import DenoisingAutoencoder, MLPAutoencoder
from scratch.models.regularized import ContractiveAutoencoder, SparseAutoencoder, TiedAutoencoder
from scratch.models.vae import BetaVAE, ConvVAE, SeedVAE, VariationalAutoencoder

MODELS = {
    "mlp-ae": MLPAutoencoder,
    "denoising-ae": DenoisingAutoencoder,
    "conv-ae": ConvAutoencoder,
    "vae": VariationalAutoencoder,
    "seed-vae": SeedVAE,
    "beta-vae": BetaVAE,
    "conv-vae": ConvVAE,
    "sparse-ae": SparseAutoencoder,
    "contractive-ae": ContractiveAutoencoder,
    "tied-ae": TiedAutoencoder,
}


def build(name: str, dtype=np.float32, rng=None, **config):
    """A scratch model by name, e.g. ``build("mlp-ae", dtype=np.float64, latent_dim=32)``.

    ``rng``: a ``numpy.random.Generator`` or an int seed; it initialises the weights and then
    draws any noise the model needs that is not passed in explicitly. The parameters come
    flattened into one buffer (``Module.flatten_parameters``), so that an optimizer steps the
    whole model in one kernel call.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        model = MODELS[name](**config, rng=rng, dtype=dtype)
    except TypeError as error:
        raise TypeError(f"build({name!r}): {error}") from None
    return model.flatten_parameters()


def draw_noise(name: str, config: dict, x_shape, rng: np.random.Generator, dtype=np.float32):
    """The noise model ``name`` needs for a batch of shape ``x_shape`` (None if deterministic).

    Lets a training loop draw noise once and feed the same array to both backends.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name].noise_for(config, tuple(x_shape), rng, np.dtype(dtype))


__all__ = ["MODELS", "build", "draw_noise", "BetaVAE", "ContractiveAutoencoder", "ConvAutoencoder",
           "DenoisingAutoencoder", "MLPAutoencoder", "SeedVAE", "SparseAutoencoder", "TiedAutoencoder",
           "VariationalAutoencoder"]
