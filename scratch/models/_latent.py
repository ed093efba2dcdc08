"""What a user asks of a model beyond its loss: ``interpolate`` on every model, ``sample`` on those
with a prior; the checks and the linear mix they share. torch_impl/models/_latent.py is the twin.

Both methods run the layers as ``encode``/``decode`` do, in the caller's mode, as ``reconstruct``
does: call ``model.eval()`` first for evaluation semantics (deep-conv-vae's BatchNorm then uses,
and does not move, its running statistics). Like ``encode``, they replace the layers' caches:
call ``loss`` again before a ``backward``. Every refusal comes before any layer runs or anything
is drawn from the model's generator.
"""

from __future__ import annotations

import numpy as np

from scratch.models._inputs import MODEL_DTYPE, _owner, check_model_array
from scratch.nn.inplace import forward_pass
from scratch.validate import check_array, check_integer


def check_steps(model, steps) -> int:
    """``steps`` as an int if it is one (a Python or NumPy int, not a bool) and >= 2, else a
    ValueError naming the model: the path holds both endpoints, t = 0 and t = 1."""
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"{_owner(model)}: steps must be an int >= 2 (both endpoints and the points between), "
                         f"got {steps!r} ({type(steps).__name__})")
    return int(steps)


def interpolation_inputs(model, x1, x2, steps) -> tuple[int, np.ndarray]:
    """Check ``interpolate``'s arguments; return (steps, x1 and x2 stacked into one batch).

    Parameters
    ----------
    x1, x2 : one example each, (D,) or (C, H, W), or batches of the same shape, (N, D) or
        (N, C, H, W), in the model's dtype; the model's input check decides which D, C, H, W.

    Returns
    -------
    steps : int >= 2
    both : (2N, ...) with N = 1 for single examples: x1's rows, then x2's.
    """
    steps = check_steps(model, steps)
    owner = _owner(model)
    for name, x in (("x1", x1), ("x2", x2)):
        check_array(x, owner, dtype=model.dtype, ndim=(1, 2, 3, 4), name=name, dtype_source=MODEL_DTYPE)
    if x1.shape != x2.shape:
        raise ValueError(f"{owner}: x1 and x2 must have the same shape (two examples, or two batches of as many), "
                         f"got {x1.shape} and {x2.shape}")
    single = x1.ndim in (1, 3)  # one example: (D,) or (C, H, W); else a batch of them
    suffix = " (one example, as a batch of 1)" if single else ""
    for name, x in (("x1", x1), ("x2", x2)):
        model._check_batch(x[None] if single else x, name + suffix)
    return steps, np.stack([x1, x2]) if single else np.concatenate([x1, x2])


def mix_codes(codes: np.ndarray, steps: int) -> np.ndarray:
    """(2N, ...) codes, z1 then z2 -> (steps·N, ...): z_t = (1 − t)·z1 + t·z2 at t = k/(steps − 1),
    k = 0 .. steps − 1 (t = 0 and 1 exactly), t varying slowest."""
    z1, z2 = np.split(codes, 2)
    t = (np.arange(steps) / (steps - 1)).astype(codes.dtype).reshape(steps, *[1] * z1.ndim)
    return ((1 - t) * z1 + t * z2).reshape(steps * len(z1), *z1.shape[1:])


class LatentMethods:
    """``interpolate`` for a model whose ``_code`` is its deterministic code and ``_decode_code``
    decodes such codes (defaults: ``encode`` and ``decode``); ``_check_batch`` is its input check."""

    def _check_batch(self, x, name="x"):
        return self._flatten_input(x, name)

    def _code(self, x):
        return self.encode(x)

    def _decode_code(self, z):
        return self.decode(z)

    @forward_pass
    def interpolate(self, x1, x2, steps=10):
        """Decode the linear path between the codes of x1 and x2.

        Parameters
        ----------
        x1, x2 : one example each, (D,) or (C, H, W), or two batches of the same shape (N, ...)
        steps : int >= 2, the number of points, both endpoints included

        Returns
        -------
        (steps, *x1.shape) probabilities: row k decodes (1 − t)·z1 + t·z2, t = k/(steps − 1), with
        z1, z2 the deterministic codes (posterior means for a VAE); row 0 decodes z1, the last z2.
        """
        steps, both = interpolation_inputs(self, x1, x2, steps)
        return self._decode_code(mix_codes(self._code(both), steps)).reshape(steps, *x1.shape)


class PriorSampling(LatentMethods):
    """``sample`` for a model with the prior p(z) = N(0, I) on its codes (N, latent_dim), whose
    ``decode`` returns flat (N, D) images (the input layout of every such model here)."""

    def _prior(self, n, noise):
        """z ~ N(0, I), (n, latent_dim), from the model's generator; or ``noise``, checked."""
        shape = (n, self._config["latent_dim"])
        if noise is None:
            return self.rng.standard_normal(shape).astype(self.dtype)
        return check_model_array(self, noise, "noise (z)", shape)

    @forward_pass
    def sample(self, n, noise=None):
        """Generate n images: decode z ~ N(0, I) drawn from the model's generator.

        Parameters
        ----------
        n : int >= 1
        noise : (n, latent_dim) or None, the draws z themselves

        Returns
        -------
        (n, D) probabilities (Bernoulli means).
        """
        n = check_integer(n, _owner(self), "n", minimum=1)  # before anything is drawn
        return self.decode(self._prior(n, noise))
