"""The one model registry: each model's name, class, family, input kind, noise kind and defaults.

Everything that iterates models (the CLI, the training loop, the benchmarks, the parity tests)
asks this table; ``torch_impl.models`` keys its twins by the same names (a test holds the two
equal). A model is added here once, and the parity families pick it up by its family.

- family: ``plain`` | ``denoising`` | ``variational`` | ``regularized`` | ``conv`` (DESIGN.md), and
  ``wasserstein`` (a deterministic code matched to the prior by a divergence of samples: wae-mmd)
  and ``quantized`` (a code of nearest codebook vectors: vq-vae), ``conditional`` (a VAE that also
  reads each image's class label: cvae; its loss, encode, decode and reconstruct take ``labels=``)
- input kind: ``flat`` (N, D), also accepting (N, C, H, W) with C·H·W = D; ``image`` (N, C, H, W)
- noise kind: what ``noise=`` carries: ``none``; ``corruption`` (the denoising mask or noise,
  shaped like x); ``gaussian`` (the reparameterisation ε, (N, latent_dim)); ``gaussian-samples``
  (K reparameterisation draws per image, (N, K, latent_dim)); ``prior`` (samples z ~ p(z) = N(0, I)
  that the loss compares the codes with, (N, latent_dim))
- defaults: the constructor's keyword defaults (the configuration keys the model accepts)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import MappingProxyType

from scratch.models.conv import ConvAutoencoder
from scratch.models.cvae import ConditionalVAE
from scratch.models.iwae import ImportanceWeightedAutoencoder
from scratch.models.mlp import DenoisingAutoencoder, MLPAutoencoder
from scratch.models.regularized import ContractiveAutoencoder, SparseAutoencoder, TiedAutoencoder
from scratch.models.vae import BetaVAE, ConvVAE, DeepConvVAE, SeedVAE, VariationalAutoencoder
from scratch.models.vq import VQVAE
from scratch.models.wae import WAEMMD

FAMILIES = ("plain", "denoising", "variational", "regularized", "conv", "wasserstein", "quantized", "conditional")
INPUT_KINDS = ("flat", "image")
NOISE_KINDS = ("none", "corruption", "gaussian", "gaussian-samples", "prior")


def _defaults(cls) -> MappingProxyType:
    """The keyword defaults of ``cls.__init__`` but ``rng`` and ``dtype`` (read-only)."""
    parameters = inspect.signature(cls.__init__).parameters
    return MappingProxyType({name: parameter.default for name, parameter in parameters.items()
                             if name not in ("self", "rng", "dtype") and parameter.default is not inspect.Parameter.empty})


@dataclass(frozen=True)
class ModelSpec:
    """One registered model; ``defaults`` is read from the class's constructor."""

    name: str
    cls: type
    family: str
    input_kind: str
    noise_kind: str
    defaults: MappingProxyType = field(init=False)

    def __post_init__(self):
        for value, allowed, what in ((self.family, FAMILIES, "family"), (self.input_kind, INPUT_KINDS, "input kind"),
                                     (self.noise_kind, NOISE_KINDS, "noise kind")):
            if value not in allowed:
                raise ValueError(f"model {self.name!r}: {what} must be one of {allowed}, got {value!r}")
        if getattr(self.cls, "name", None) != self.name:
            raise ValueError(f"model {self.name!r}: {self.cls.__name__}.name is {getattr(self.cls, 'name', None)!r}")
        object.__setattr__(self, "defaults", _defaults(self.cls))

    @property
    def variational(self) -> bool:
        return self.family == "variational"

    @property
    def generative(self) -> bool:
        """Whether the model has a prior p(z) = N(0, I) to draw from, hence a ``sample`` method: the
        variational family, wae-mmd, and cvae (``sample(labels, noise=None)``: the labels set n);
        the others (plain, denoising, regularized, conv autoencoders, vq-vae) have none."""
        return self.family in ("variational", "wasserstein", "conditional")

    @property
    def conditional(self) -> bool:
        """Whether the model reads class labels (``labels=``) besides the images."""
        return self.family == "conditional"

    def label_arguments(self, labels) -> dict:
        """``{"labels": labels}`` for a conditional model, ``{}`` for the others: the keyword
        arguments its loss, reconstruct and backends' calls take beside x and noise."""
        return {"labels": labels} if self.conditional else {}

    @property
    def options(self) -> frozenset[str]:
        """The configuration keys the constructor accepts."""
        return frozenset(self.defaults)


REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("mlp-ae", MLPAutoencoder, family="plain", input_kind="flat", noise_kind="none"),
    ModelSpec("denoising-ae", DenoisingAutoencoder, family="denoising", input_kind="flat", noise_kind="corruption"),
    ModelSpec("conv-ae", ConvAutoencoder, family="conv", input_kind="image", noise_kind="none"),
    ModelSpec("vae", VariationalAutoencoder, family="variational", input_kind="flat", noise_kind="gaussian"),
    ModelSpec("seed-vae", SeedVAE, family="variational", input_kind="flat", noise_kind="gaussian"),
    ModelSpec("beta-vae", BetaVAE, family="variational", input_kind="flat", noise_kind="gaussian"),
    ModelSpec("conv-vae", ConvVAE, family="variational", input_kind="flat", noise_kind="gaussian"),
    ModelSpec("deep-conv-vae", DeepConvVAE, family="variational", input_kind="flat", noise_kind="gaussian"),
    ModelSpec("iwae", ImportanceWeightedAutoencoder, family="variational", input_kind="flat",
              noise_kind="gaussian-samples"),
    ModelSpec("cvae", ConditionalVAE, family="conditional", input_kind="flat", noise_kind="gaussian"),
    ModelSpec("wae-mmd", WAEMMD, family="wasserstein", input_kind="flat", noise_kind="prior"),
    ModelSpec("vq-vae", VQVAE, family="quantized", input_kind="flat", noise_kind="none"),
    ModelSpec("sparse-ae", SparseAutoencoder, family="regularized", input_kind="flat", noise_kind="none"),
    ModelSpec("contractive-ae", ContractiveAutoencoder, family="regularized", input_kind="flat", noise_kind="none"),
    ModelSpec("tied-ae", TiedAutoencoder, family="regularized", input_kind="flat", noise_kind="none"),
)}


def model_names(*, family: str | None = None, input_kind: str | None = None, noise_kind: str | None = None,
                option: str | None = None) -> tuple[str, ...]:
    """The registered names, in registration order, that match every filter given.

    ``option``: only models whose constructor accepts that configuration key (e.g. "latent_dim").
    """
    for value, allowed, what in ((family, FAMILIES, "family"), (input_kind, INPUT_KINDS, "input_kind"),
                                 (noise_kind, NOISE_KINDS, "noise_kind")):
        if value is not None and value not in allowed:
            raise ValueError(f"model_names: {what} must be one of {allowed}, got {value!r}")
    return tuple(name for name, spec in REGISTRY.items()
                 if (family is None or spec.family == family) and (input_kind is None or spec.input_kind == input_kind)
                 and (noise_kind is None or spec.noise_kind == noise_kind) and (option is None or option in spec.defaults))


def spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; a ValueError lists the registered names."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]
