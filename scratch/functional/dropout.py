"""Dropout as pure functions over a keep-mask that the caller draws or passes in.

out = x · m · s and dx = dy · m · s, with m ∈ {0, 1} (1: kept) and s = 1 / (1 - p) computed in
x's dtype, as torch's CPU dropout computes ``input * (bernoulli(1 - p) / (1 - p))``; so given
torch's mask the two agree to the bit. p = 1 multiplies by 0 (inf · 0 = NaN, as torch).
``Dropout2d`` draws one m per (example, channel): ``feature_mask_shape``. Derivation and the
conventions: docs/dropout.md.
"""

from __future__ import annotations

import numpy as np


def dropout_scale(p: float, dtype) -> np.generic:
    """s = 1 / (1 - p) in ``dtype`` (torch divides the 0/1 noise by 1 - p in the tensor's dtype);
    0 for p = 1, where torch multiplies the input by zeros."""
    dtype = np.dtype(dtype)
    if p == 1:
        return dtype.type(0)
    return dtype.type(1) / dtype.type(1 - p)


def feature_mask_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, C, 1, ..., 1) for an input of ``shape`` (N, C, *): one draw per example and channel."""
    return tuple(shape[:2]) + (1,) * (len(shape) - 2)


def draw_dropout_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    """A keep-mask of ``shape``: True with probability 1 - p, independently (bool array)."""
    return rng.random(shape) < 1 - p


def check_dropout_mask(mask, shape: tuple[int, ...], owner: str) -> np.ndarray:
    """``mask`` as a bool array of ``shape`` if it is one, or numbers that are all 0 or 1;
    otherwise a ``TypeError``/``ValueError`` naming ``owner``."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{owner}: mask must be a NumPy array of 0/1 or bools, got {type(mask).__name__}")
    if mask.shape != tuple(shape):
        raise ValueError(f"{owner}: mask must have shape {tuple(shape)}, got {mask.shape}")
    if mask.dtype == np.bool_:
        return mask
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise TypeError(f"{owner}: mask must hold 0/1 or bools, got dtype {mask.dtype}")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{owner}: mask must hold only 0 (dropped) and 1 (kept)")
    return mask != 0


def dropout_forward(x: np.ndarray, mask: np.ndarray, p: float, inplace: bool = False):
    """out = x · m · s. x: (*); mask: x's shape, or any shape broadcasting to it ((N, C, 1, 1) for
    Dropout2d), bools or 0/1. ``inplace``: the result is written into ``x``, which is returned.

    The cache is the scaled noise m · s (mask's shape, x's dtype): all the backward needs."""
    noise = mask.astype(x.dtype) * dropout_scale(p, x.dtype)  # (mask shape): 0 or s
    with np.errstate(invalid="ignore"):  # ±inf · 0 = NaN, as torch (which does not warn)
        out = np.multiply(x, noise, out=x) if inplace else x * noise  # (*)
    return out, noise


def dropout_backward(grad_output: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy · m · s (the same noise, broadcast over the dims it was drawn once for)."""
    with np.errstate(invalid="ignore"):
        return grad_output * cache
