"""The torch twin and torch.optim.Adam behind the training loop's backend interface."""

from __future__ import annotations

import numpy as np
import torch

from autoencoders.backends.modes import evaluation_mode
from scratch.models import REGISTRY
from torch_impl.models import build


class TorchBackend:
    """The torch twin behind the ``Backend`` protocol (``autoencoders.backends``); arrays in and out are NumPy."""

    name = "torch"

    def __init__(self, config, model_config: dict):
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        self.model = build(config.model, dtype=self.dtype, **model_config)
        self.spec = REGISTRY[config.model]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    @staticmethod
    def _tensor(array):
        return None if array is None else torch.from_numpy(np.ascontiguousarray(array))

    def train_step(self, x: np.ndarray, noise, before_update=None, labels=None, group=None,
                   weight: float = 1.0) -> dict[str, float]:
        """One step; ``before_update(parts)`` runs between the loss and the backward pass and may
        raise to leave the weights and the optimizer untouched. ``labels``: a conditional model's.

        With a process ``group``, the loss runs in ``DistributedDataParallel`` on this rank's shard
        ``x`` (rank 0's buffers broadcast first, gradients averaged during backward); it is scaled by
        ``weight · world_size`` so that the average is the one-process gradient, and the loss parts
        returned (and given to ``before_update``) are the global ones."""
        if group is not None:
            return self._distributed_step(x, noise, before_update, labels, group, weight)
        self.optimizer.zero_grad()
        parts = self.model.loss(self._tensor(x), noise=self._tensor(noise), **self.spec.label_arguments(labels))
        if before_update is not None:
            before_update({key: float(value.detach()) for key, value in parts.items()})
        parts["loss"].backward()
        self.optimizer.step()
        return {key: float(value.detach()) for key, value in parts.items()}

    def _distributed_step(self, x, noise, before_update, labels, group, weight: float) -> dict[str, float]:
        if getattr(self, "_parallel", None) is None:
            from torch.nn.parallel import DistributedDataParallel

            self._parallel = DistributedDataParallel(_LossOf(self.model))
        self.optimizer.zero_grad()
        parts = self._parallel(self._tensor(x), self._tensor(noise), self.spec.label_arguments(labels))
        total = group.sum_values({key: float(value.detach()) * weight for key, value in parts.items()})
        try:
            if before_update is not None:
                before_update(total)
        except BaseException:
            (parts["loss"] * 0).backward()  # every rank skips alike; DDP's reducer still sees its backward
            self.optimizer.zero_grad()
            raise
        (parts["loss"] * (weight * group.world_size)).backward()
        self.optimizer.step()
        return total

    @torch.no_grad()
    def evaluate(self, x: np.ndarray, noise, labels=None) -> tuple[dict[str, float], np.ndarray]:
        with evaluation_mode(self.model):
            tx, tnoise, conditions = self._tensor(x), self._tensor(noise), self.spec.label_arguments(labels)
            parts = {key: float(value) for key, value in self.model.loss(tx, noise=tnoise, **conditions).items()}
            return parts, self.model.reconstruct(tx, noise=tnoise, **conditions).numpy()

    def weights(self) -> dict[str, np.ndarray]:
        return {key: value.detach().cpu().numpy().copy() for key, value in self.model.state_dict().items()}

    def parameter_names(self) -> list[str]:
        """The keys of ``weights()`` that the optimizer steps, in its order (the rest are buffers)."""
        return [key for key, _ in self.model.named_parameters()]

    def weights_finite(self) -> bool:
        """Whether every parameter is finite (no NaN, no ±inf)."""
        with torch.no_grad():
            return all(bool(torch.isfinite(parameter).all()) for parameter in self.model.parameters())

    def load_weights(self, weights) -> None:
        self.model.load_state_dict({key: torch.as_tensor(np.asarray(value)) for key, value in weights.items()}, strict=True)

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict) -> None:
        """Load a torch-layout state whose buffers are arrays (a checkpoint of either backend)."""
        current = self.optimizer.state_dict()
        converted = {}
        for index, entries in state["state"].items():
            converted[int(index)] = {
                name: (torch.tensor(float(value), dtype=torch.float32) if name == "step"
                       else torch.as_tensor(np.asarray(value), dtype=self.dtype))
                for name, value in entries.items()
            }
        groups = []
        for saved, own in zip(state["param_groups"], current["param_groups"]):
            groups.append({**own, **{k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k in own and k != "params"}})
        if len(groups) != len(current["param_groups"]):
            raise ValueError("optimizer state has a different number of parameter groups")
        self.optimizer.load_state_dict({"state": converted, "param_groups": groups})

    def corrupted_input(self, x: np.ndarray, noise) -> np.ndarray | None:
        if self.spec.family != "denoising":
            return None
        with torch.no_grad():
            return self.model.corrupt(self._tensor(x), self._tensor(noise)).numpy()

    @torch.no_grad()
    def encode(self, x: np.ndarray):
        """A VAE's (μ, logvar), or the code of a deterministic encoder (wae-mmd's z), as arrays."""
        with evaluation_mode(self.model):
            code = self.model.encode(self._tensor(x))
        return tuple(part.numpy() for part in code) if isinstance(code, tuple) else code.numpy()

    @torch.no_grad()
    def codebook_usage(self, x: np.ndarray) -> np.ndarray:
        """vq-vae: how many code vectors of images x chose each codebook entry, (K,) int64."""
        with evaluation_mode(self.model):
            return np.asarray(self.model.codebook_usage(self._tensor(x)), dtype=np.int64)

    @torch.no_grad()
    def decode(self, z: np.ndarray, labels=None) -> np.ndarray:
        with evaluation_mode(self.model):
            return self.model.decode(self._tensor(z), *([labels] if self.spec.conditional else [])).numpy()

    @torch.no_grad()
    def hidden_activations(self, x: np.ndarray) -> np.ndarray:
        """The hidden code h (N, hidden_dim) of sparse-, contractive- or tied-ae for images x."""
        with evaluation_mode(self.model):
            return self.model.encode(self._tensor(x)).numpy()


class _LossOf(torch.nn.Module):
    """The twin's loss as a module's forward: what DistributedDataParallel wraps (it hooks forward)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, noise, conditions: dict):
        return self.model.loss(x, noise=noise, **conditions)
