"""Dropout and Dropout2d: torch's arguments, an explicit mask or the module's own generator.

In training mode with 0 < p, each forward multiplies by a keep-mask scaled by 1 / (1 - p)
(``scratch.functional.dropout``); the mask is ``forward(x, mask=...)`` when given (to feed both
backends the same draw) and drawn from the module's ``numpy.random.Generator`` otherwise. In
evaluation mode, or with p = 0, the layer is the identity and returns its input, as torch's does
(a mask passed then is ignored: there is nothing to drop).
"""

from __future__ import annotations

import warnings

import numpy as np

from scratch.functional import dropout as F
from scratch.nn.layers import _before_writing, _CachingModule, _check_flag
from scratch.validate import check_array, check_real_number, resolve_rng

_IDENTITY = "identity"  # the cache of a forward that dropped nothing


class _DropoutNd(_CachingModule):
    def __init__(self, p: float = 0.5, inplace: bool = False, *, rng=None):
        super().__init__()
        owner = type(self).__name__
        number = check_real_number(p, owner, "p", allow_inf=True)
        if not 0 <= number <= 1:
            raise ValueError(f"{owner}: dropout probability has to be between 0 and 1, but got {p!r}")
        self.p = number
        self.inplace = _check_flag(inplace, owner, "inplace")
        self.generator = resolve_rng(rng, owner)

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def forward(self, input: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """x (*) -> x · mask / (1 - p) in training mode; x itself in evaluation mode or for p = 0."""
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = type(self).__name__
        check_array(x, owner)
        shape = self._mask_shape(x.shape)  # checks the dims first, so a refusal draws nothing
        if not self.training or self.p == 0 or x.size == 0:
            self._save(_IDENTITY, x, x)
            return x
        if mask is None:
            mask = F.draw_dropout_mask(self.generator, shape, self.p)
        else:
            mask = F.check_dropout_mask(mask, shape, owner)
        if self.inplace:
            _before_writing(x, owner)
        out, noise = F.dropout_forward(x, mask, self.p, inplace=self.inplace)
        self._save(noise, out, x)
        return out

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        """dx = dy · mask / (1 - p); dy itself (a copy) after an identity forward."""
        cache = self._take(grad_output)
        if isinstance(cache, str):
            return grad_output.copy()
        return F.dropout_backward(grad_output, cache)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zero each element with probability p, scale the rest by 1 / (1 - p). x: (*) -> (*).

    ``Dropout(p=0.5, inplace=False, *, rng=None)``; ``forward(x, mask=None)`` with ``mask`` a
    bool or 0/1 array of x's shape (1: kept). ``rng``: a Generator or seed for the masks drawn
    when none is given."""


class Dropout2d(_DropoutNd):
    """Zero whole channels: one draw per (example, channel). x: (N, C, H, W) -> (N, C, H, W).

    ``forward(x, mask=None)``: ``mask`` of shape (N, C, 1, 1), bool or 0/1. As torch's, a 3-D
    input is read as (N, C, L) (with torch's warning, as it will one day mean (C, H, W)), and
    inputs that are not 3-D or 4-D are dropped per their first two dims, with torch's warning."""

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) < 2:
            raise ValueError(f"Dropout2d: channel-wise dropout needs an input of at least 2 dimensions "
                             f"(N, C, ...), got shape {shape}")
        if len(shape) not in (3, 4):
            warnings.warn(f"dropout2d: Received a {len(shape)}-D input to dropout2d, which is deprecated and "
                          f"will result in an error in a future release (torch's warning); use Dropout instead",
                          UserWarning, stacklevel=3)
        if len(shape) == 3:
            warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                          "behavior is desired - input is interpreted as shape (N, C, L), as torch does",
                          UserWarning, stacklevel=3)
        return F.feature_mask_shape(shape)
