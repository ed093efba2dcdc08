"""The autoencoder families; ``build(name, dtype=np.float32, rng=None, **config)``; the one registry
(``REGISTRY``, ``model_names(family=...)``, ``spec(name)``) in registry.py."""

from __future__ import annotations

import numpy as np

from scratch.models.conv import ConvAutoencoder
from scratch.models.cvae import ConditionalVAE
from scratch.models.iwae import ImportanceWeightedAutoencoder
from scratch.models.mlp import DenoisingAutoencoder, MLPAutoencoder
from scratch.models.registry import FAMILIES, REGISTRY, ModelSpec, model_names, spec
from scratch.models.regularized import ContractiveAutoencoder, SparseAutoencoder, TiedAutoencoder
from scratch.models.vae import BetaVAE, ConvVAE, DeepConvVAE, SeedVAE, VariationalAutoencoder
from scratch.models.vq import VQVAE
from scratch.models.wae import WAEMMD

# name -> class, read from the one registry (scratch/models/registry.py)
MODELS = {name: entry.cls for name, entry in REGISTRY.items()}


def build(name: str, dtype=np.float32, rng=None, **config):
    """A scratch model by name, e.g. ``build("mlp-ae", dtype=np.float64, latent_dim=32)``.

    ``rng``: a ``numpy.random.Generator`` or an int seed; it initialises the weights and then
    draws any noise the model needs that is not passed in explicitly. The parameters come
    flattened into one buffer (``Module.flatten_parameters``), so that an optimizer steps the
    whole model in one kernel call.
    """
    cls = spec(name).cls
    try:
        model = cls(**config, rng=rng, dtype=dtype)
    except TypeError as error:
        raise TypeError(f"build({name!r}): {error}") from None
    return model.flatten_parameters()


def draw_labels(name: str, config: dict, n: int, rng: np.random.Generator):
    """Uniform class labels (n,) int64 for a conditional model (None for the others): what tests and
    benchmarks feed where no dataset supplies labels."""
    if not spec(name).conditional:
        return None
    return rng.integers(0, config.get("num_classes", 10), n).astype(np.int64)


def draw_noise(name: str, config: dict, x_shape, rng: np.random.Generator, dtype=np.float32):
    """The noise model ``name`` needs for a batch of shape ``x_shape`` (None if deterministic).

    Lets a training loop draw noise once and feed the same array to both backends.
    """
    return spec(name).cls.noise_for(config, tuple(x_shape), rng, np.dtype(dtype))


__all__ = ["FAMILIES", "MODELS", "REGISTRY", "ModelSpec", "build", "draw_labels", "draw_noise", "model_names", "spec", "BetaVAE", "ConditionalVAE", "ContractiveAutoencoder", "ConvAutoencoder",
           "DeepConvVAE",
           "DenoisingAutoencoder", "ImportanceWeightedAutoencoder", "MLPAutoencoder", "SeedVAE", "SparseAutoencoder", "TiedAutoencoder", "VQVAE", "WAEMMD",
           "VariationalAutoencoder"]
