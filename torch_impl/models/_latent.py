"""Twin of scratch/models/_latent.py: ``interpolate`` on every model, ``sample`` on those with a
prior, the same checks and the same linear mix, on tensors. Both run in the caller's mode and
grad mode (``model.eval()`` and ``torch.no_grad()`` for evaluation)."""

from __future__ import annotations

import math
from numbers import Integral

import torch

from torch_impl.functional import as_tensor


def owner(model) -> str:
    return f"{type(model).__name__}({model.name})"


def check_steps(model, steps) -> int:
    """``steps`` as an int if it is one (not a bool) and >= 2, else a ValueError naming the model."""
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 2:
        raise ValueError(f"{owner(model)}: steps must be an int >= 2 (both endpoints and the points between), "
                         f"got {steps!r} ({type(steps).__name__})")
    return int(steps)


def check_count(model, n) -> int:
    """``n``, the number of samples: an int >= 1 (TypeError for a non-int, ValueError below 1)."""
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"{owner(model)}: n must be a positive int, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"{owner(model)}: n must be a positive int, got {n!r}")
    return int(n)


def interpolation_inputs(model, x1, x2, steps) -> tuple[int, torch.Tensor]:
    """(steps, x1 and x2 stacked into one batch (2N, ...), N = 1 for single examples), checked."""
    steps = check_steps(model, steps)
    if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)):
        raise TypeError(f"{owner(model)}: x1 and x2 must be tensors, got {type(x1).__name__} and {type(x2).__name__}")
    if x1.shape != x2.shape or x1.dtype != x2.dtype:
        raise ValueError(f"{owner(model)}: x1 and x2 must have the same shape and dtype, got {tuple(x1.shape)} "
                         f"{x1.dtype} and {tuple(x2.shape)} {x2.dtype}")
    single = x1.ndim in (1, 3)  # one example: (D,) or (C, H, W); else a batch of them
    example = tuple(x1.shape) if single else tuple(x1.shape[1:])
    if x1.ndim not in (1, 2, 3, 4) or not model._accepts_example(example) or (not single and x1.shape[0] == 0):
        raise ValueError(f"{owner(model)}: x1 and x2 must be one example, {model._example_shapes()}, or a batch "
                         f"(N, ...) of them with N >= 1, got shape {tuple(x1.shape)}")
    return steps, torch.stack([x1, x2]) if single else torch.cat([x1, x2])


def mix_codes(codes: torch.Tensor, steps: int) -> torch.Tensor:
    """(2N, ...) codes, z1 then z2 -> (steps·N, ...): z_t = (1 − t)·z1 + t·z2, t = k/(steps − 1)."""
    z1, z2 = codes.chunk(2)
    t = (torch.arange(steps, dtype=torch.float64) / (steps - 1)).to(codes.dtype).reshape(steps, *[1] * z1.ndim)
    return ((1 - t) * z1 + t * z2).reshape(steps * z1.shape[0], *z1.shape[1:])


class LatentMethods:
    """``interpolate`` over ``_code`` (the deterministic code) and ``_decode_code`` (default
    ``encode``, ``decode``); ``_accepts_example`` and ``_example_shapes`` say what one example is
    (default: a flat model's (D,) or (C, H, W) with C·H·W = D)."""

    def _accepts_example(self, shape) -> bool:
        return len(shape) in (1, 3) and math.prod(shape) == self.config["input_dim"]

    def _example_shapes(self) -> str:
        return f"({self.config['input_dim']},) or (C, H, W) with C·H·W = {self.config['input_dim']}"

    def _code(self, x):
        return self.encode(x)

    def _decode_code(self, z):
        return self.decode(z)

    def interpolate(self, x1, x2, steps=10):
        """Decode the linear path between the codes of x1 and x2.

        Parameters
        ----------
        x1, x2 : tensors, one example each, (D,) or (C, H, W), or two batches of the same shape (N, ...)
        steps : int >= 2, the number of points, both endpoints included

        Returns
        -------
        (steps, *x1.shape) probabilities: row k decodes (1 − t)·z1 + t·z2, t = k/(steps − 1), with
        z1, z2 the deterministic codes (``_code``: posterior means for a VAE).
        """
        steps, both = interpolation_inputs(self, x1, x2, steps)
        return self._decode_code(mix_codes(self._code(both), steps)).reshape(steps, *x1.shape)


class ImageExamples:
    """What one example is for a model of ``image_size`` images with ``in_channels`` channels that
    also takes them flat: (C·H·W,) or (C, H, W). Mixed in before ``LatentMethods``."""

    def _accepts_example(self, shape) -> bool:
        size, channels = self.config["image_size"], self.config["in_channels"]
        return shape in ((channels * size * size,), (channels, size, size))

    def _example_shapes(self) -> str:
        size, channels = self.config["image_size"], self.config["in_channels"]
        return f"({channels * size * size},) or ({channels}, {size}, {size})"


class PriorSampling(LatentMethods):
    """``sample(n, noise=None)`` for a model with the prior N(0, I) on codes (n, latent_dim)."""

    def _prior(self, n, noise):
        """z ~ N(0, I), (n, latent_dim), from ``generator``; or ``noise``, checked."""
        like = torch.empty((n, self.config["latent_dim"]), dtype=next(self.parameters()).dtype)
        if noise is None:
            return torch.randn(like.shape, generator=self.generator, dtype=like.dtype)
        return as_tensor(noise, like, owner(self), "noise (z)")

    def sample(self, n, noise=None):
        """Generate n images: decode z ~ N(0, I) drawn from ``generator``.

        Parameters
        ----------
        n : int >= 1
        noise : (n, latent_dim) array or tensor, or None: the draws z themselves

        Returns
        -------
        (n, D) probabilities (Bernoulli means).
        """
        return self.decode(self._prior(check_count(self, n), noise))
