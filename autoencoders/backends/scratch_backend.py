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
        does); the gradient and the loss parts, each scaled by ``weight``, are summed over the
        ranks in one all-reduce (a collective costs ~2 ms on this machine whatever its size), so
        ``before_update`` sees the global loss after the backward pass and before Adam steps."""
        if group is not None:
            return self._distributed_step(x, noise, before_update, labels, group, weight)
        self.optimizer.zero_grad()
        parts = self.model.loss(x, noise=noise, **self.spec.label_arguments(labels))
        if before_update is not None:
            before_update(parts)
        self.model.backward(input_grad=False)
        self.optimizer.step()
        return parts

    def _distributed_step(self, x, noise, before_update, labels, group, weight: float) -> dict[str, float]:
        for _, buffer in self.model.named_buffers():
            group.broadcast(buffer)
        self.optimizer.zero_grad()
        parts = self.model.loss(x, noise=noise, **self.spec.label_arguments(labels))
        self.model.backward(input_grad=False)
        parts = self._all_reduce(group, weight, parts)
        if before_update is not None:
            before_update(parts)  # the same global parts on every rank: all skip, or none
        self.optimizer.step()
        return parts

    def _all_reduce(self, group, weight: float, parts: dict) -> dict[str, float]:
        """Σ_r weight_r·(∇_r, parts_r) in one collective: the flat gradient buffer (a view of every
        parameter's .grad) and the loss parts packed into one array, reduced, unpacked in place."""
        layout = flat_layout(self.model.parameters())
        grads = [layout[1]] if layout is not None else [p.grad.reshape(-1) for p in self.model.parameters()]
        sizes = [grad.size for grad in grads]
        packed = np.empty(sum(sizes) + len(parts), dtype=np.float64)  # summed in float64, cast back on unpacking
        start = 0
        for grad, size in zip(grads, sizes):
            np.multiply(grad, weight, out=packed[start:start + size])
            start += size
        packed[start:] = [float(value) * weight for value in parts.values()]
        group.all_reduce(packed)
        start = 0
        for grad, size in zip(grads, sizes):
            grad[...] = packed[start:start + size]
            start += size
        return dict(zip(parts, (float(value) for value in packed[start:])))

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
