"""The scratch model and scratch.optim.Adam behind the training loop's ``Backend`` protocol."""

from __future__ import annotations

import numpy as np

from autoencoders.backends.modes import evaluation_mode
from scratch import optim
from scratch.models import REGISTRY, build
from scratch.nn.module import flat_layout


class ScratchBackend:
    """The scratch model and scratch.optim.Adam behind the loop's interface."""

    name = "scratch"

    def __init__(self, config, model_config: dict):
        self.model = build(config.model, dtype=np.dtype(config.dtype), rng=config.seed, **model_config)
        self.spec = REGISTRY[config.model]
        self.optimizer = optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def train_step(self, x: np.ndarray, noise, before_update=None, labels=None, group=None,
                   weight: float = 1.0) -> dict[str, float]:
        """One step; ``before_update(parts)``, called between the loss and the backward pass, may
        raise to leave the weights and the optimizer untouched. ``labels``: a conditional model's.

        With a process ``group`` (``autoencoders.distributed``), ``x`` is this rank's shard and
        ``weight`` its share of the global loss: rank 0's buffers are broadcast first (as DDP
        does), the loss parts returned (and given to ``before_update``) are the global ones, and
        the flat gradient buffer is scaled by ``weight`` and all-reduced in place before Adam steps."""
        if group is not None:
            for _, buffer in self.model.named_buffers():
                group.broadcast(buffer)
        self.optimizer.zero_grad()
        parts = self.model.loss(x, noise=noise, **self.spec.label_arguments(labels))
        if group is not None:
            parts = group.sum_values({key: float(value) * weight for key, value in parts.items()})
        if before_update is not None:
            before_update(parts)
        self.model.backward(input_grad=False)
        if group is not None:
            self._all_reduce_gradients(group, weight)
        self.optimizer.step()
        return parts

    def _all_reduce_gradients(self, group, weight: float) -> None:
        """Σ_r weight_r·∇_r over the ranks, in the flat gradient buffer itself (one collective)."""
        layout = flat_layout(self.model.parameters())
        grads = [layout[1]] if layout is not None else [p.grad for p in self.model.parameters()]
        for grad in grads:
            grad *= grad.dtype.type(weight)
            group.all_reduce(grad)

    def evaluate(self, x: np.ndarray, noise, labels=None) -> tuple[dict[str, float], np.ndarray]:
        conditions = self.spec.label_arguments(labels)
        with evaluation_mode(self.model):
            parts = self.model.loss(x, noise=noise, **conditions)
            return parts, self.model.reconstruct(x, noise=noise, **conditions)

    def weights(self) -> dict[str, np.ndarray]:
        return dict(self.model.state_dict())

    def parameter_names(self) -> list[str]:
        """The keys of ``weights()`` that the optimizer steps, in its order (the rest are buffers)."""
        return [key for key, _ in self.model.named_parameters()]

    def weights_finite(self) -> bool:
        """Whether every parameter is finite (no NaN, no ±inf)."""
        return all(bool(np.isfinite(parameter.data).all()) for parameter in self.model.parameters())

    def load_weights(self, weights) -> None:
        self.model.load_state_dict(weights)

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    def corrupted_input(self, x: np.ndarray, noise) -> np.ndarray | None:
        return self.model.corrupt(x, noise) if self.spec.family == "denoising" else None

    def encode(self, x: np.ndarray):
        """(μ, logvar) of a VAE's posterior, or wae-mmd's code z, for flat images (N, D), in evaluation mode."""
        with evaluation_mode(self.model):
            return self.model.encode(x)

    def codebook_usage(self, x: np.ndarray) -> np.ndarray:
        """vq-vae: how many code vectors of images x chose each codebook entry, (K,) int64."""
        with evaluation_mode(self.model):
            return np.asarray(self.model.codebook_usage(x), dtype=np.int64)

    def decode(self, z: np.ndarray, labels=None) -> np.ndarray:
        """A VAE's Bernoulli means (N, D) for latents (N, latent_dim) (and a conditional model's
        labels (N,)), in evaluation mode."""
        with evaluation_mode(self.model):
            return self.model.decode(z, *([labels] if self.spec.conditional else []))

    def hidden_activations(self, x: np.ndarray) -> np.ndarray:
        """The hidden code h (N, hidden_dim) of a one-hidden-layer model (``HIDDEN_CODE_MODELS``)
        for images x (N, D) or (N, C, H, W), in evaluation mode."""
        with evaluation_mode(self.model):
            return np.asarray(self.model.encode(x))
