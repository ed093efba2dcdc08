"""The autoencoder families; ``build(name, dtype=np.float32, rng=None, **config)``."""

from __future__ import annotations

import numpy as np

from scratch.models.mlp import DenoisingAutoencoder, MLPAutoencoder

MODELS = {
    "mlp-ae": MLPAutoencoder,
    "denoising-ae": DenoisingAutoencoder,
}


def build(name: str, dtype=np.float32, rng=None, **config):
    """A scratch model by name, e.g. ``build("mlp-ae", dtype=np.float64, latent_dim=32)``.

    ``rng``: a ``numpy.random.Generator`` or an int seed; it initialises the weights and then
    draws any noise the model needs that is not passed in explicitly.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](**config, rng=rng, dtype=dtype)
    except TypeError as error:
        raise TypeError(f"build({name!r}): {error}") from None


__all__ = ["MODELS", "build", "DenoisingAutoencoder", "MLPAutoencoder"]
