"""Losses as pure forward/backward pairs over the Numba kernels. Derivations: docs/losses.md.

``*_forward(input, target, reduction) -> (loss, cache)`` where ``loss`` is a 0-d array for
``"mean"``/``"sum"`` and an array of the input's shape for ``"none"``;
``*_backward(grad_output, cache) -> grad_input`` with ``grad_output`` a scalar (reduced) or an
array of the input's shape (``"none"``).
"""

from __future__ import annotations

import numpy as np

from scratch.kernels import losses as kernels


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, order="C").reshape(-1)


def _reduce(elementwise: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        return elementwise
    total = elementwise.sum(dtype=elementwise.dtype)  # NumPy's pairwise summation
    if reduction == "mean":
        return total / elementwise.dtype.type(elementwise.size)
    return total


def _upstream(grad_output, shape, dtype, reduction) -> np.ndarray:
    """The upstream gradient as a flat array the kernels take: 1 element, or one per element."""
    if reduction == "none":
        return _flat(np.asarray(grad_output, dtype=dtype))
    scale = 1.0 / np.prod(shape) if reduction == "mean" else 1.0
    return np.array([float(grad_output) * scale], dtype=dtype)


def _binary_loss_forward(kernel, input, target, reduction):
    elementwise = np.empty(input.shape, dtype=input.dtype)
    kernel(_flat(input), _flat(target), elementwise.reshape(-1))
    cache = (np.asarray(input, order="C"), np.asarray(target, order="C"), reduction)
    return _reduce(elementwise, reduction), cache


def _binary_loss_backward(kernel, grad_output, cache):
    input, target, reduction = cache
    grad_input = np.empty(input.shape, dtype=input.dtype)
    upstream = _upstream(grad_output, input.shape, input.dtype, reduction)
    kernel(upstream, input.reshape(-1), target.reshape(-1), grad_input.reshape(-1))
    return grad_input


def bce_forward(probabilities, target, reduction="mean", workspace=None):
    """ℓ = -(y log p + (1 - y) log(1 - p)), each log clamped at -100; p, y: (*).

    ``workspace`` (a ``scratch.workspace.Workspace``): where log p, log(1 - p) and, for a
    reduced loss, the per-element terms are computed, reused from call to call.
    """
    p = np.asarray(probabilities, order="C")

    def temporary(name):
        return np.empty(p.shape, p.dtype) if workspace is None else workspace.get(name, p.shape, p.dtype)

    log_p, log_1mp = temporary("log_p"), temporary("log_1mp")
    with np.errstate(divide="ignore"):  # log(0) = -inf, clamped to -100 in the kernel
        np.log(p, out=log_p)
        np.negative(p, out=log_1mp)
        np.log1p(log_1mp, out=log_1mp)
    elementwise = np.empty(p.shape, dtype=p.dtype) if reduction == "none" else temporary("terms")
    kernels.bce_forward(p.reshape(-1), _flat(target), log_p.reshape(-1), log_1mp.reshape(-1), elementwise.reshape(-1))
    return _reduce(elementwise, reduction), (p, np.asarray(target, order="C"), reduction)


def bce_backward(grad_output, cache):
    """dℓ/dp = (p - y) / max(p (1 - p), 1e-12), times the upstream gradient (÷N for mean)."""
    return _binary_loss_backward(kernels.bce_backward, grad_output, cache)


def sigmoid_bce_backward(grad_output, cache):
    """dL/d(logits) for L = BCE(σ(logits), y), from the BCE's cache alone (p = σ(logits) is its input).

    One pass computing exactly what ``bce_backward`` then ``sigmoid_backward`` compute:
    dp = g·(p - y) / max(p(1 - p), 1e-12), then dp·(1 - p)·p. Returns (*), the input's shape.
    """
    return _binary_loss_backward(kernels.sigmoid_bce_backward, grad_output, cache)


def _exp_neg_abs(x: np.ndarray) -> np.ndarray:
    """e^{-|x|} by NumPy's SIMD loops, a new array (every exponent <= 0: no overflow)."""
    e = np.abs(x, out=np.empty_like(x))  # out=: a 0-d x gives a 0-d array, not a NumPy scalar
    np.negative(e, out=e)
    return np.exp(e, out=e)


def bce_with_logits_forward(logits, target, reduction="mean"):
    """ℓ = (1 - y) x + softplus(-x) = BCE(σ(x), y) without forming σ(x); x, y: (*)."""
    x = np.asarray(logits, order="C")
    tail = np.log1p(_exp_neg_abs(x))  # log1p(e^{-|x|}), the part of softplus that needs a log
    elementwise = np.empty(x.shape, dtype=x.dtype)
    kernels.bce_with_logits_forward(x.reshape(-1), _flat(target), tail.reshape(-1), elementwise.reshape(-1))
    return _reduce(elementwise, reduction), (x, np.asarray(target, order="C"), reduction)


def bce_with_logits_backward(grad_output, cache):
    """dℓ/dx = σ(x) - y, times the upstream gradient (÷N for mean)."""
    x, target, reduction = cache
    grad_input = np.empty(x.shape, dtype=x.dtype)
    upstream = _upstream(grad_output, x.shape, x.dtype, reduction)
    kernels.bce_with_logits_backward(upstream, x.reshape(-1), target.reshape(-1), _exp_neg_abs(x).reshape(-1),
                                     grad_input.reshape(-1))
    return grad_input


def mse_forward(input, target, reduction="mean"):
    """ℓ = (x - y)²; x, y: (*)."""
    return _binary_loss_forward(kernels.mse_forward, input, target, reduction)


def mse_backward(grad_output, cache):
    """dℓ/dx = 2 (x - y), times the upstream gradient (÷N for mean)."""
    return _binary_loss_backward(kernels.mse_backward, grad_output, cache)


def gaussian_kl_forward(mean, logvar, reduction="sum"):
    """KL(N(μ, diag e^{lv}) ‖ N(0, I)) = ½ Σ (μ² + e^{lv} - 1 - lv).

    Parameters
    ----------
    mean, logvar : (N, D)
    reduction : "sum" (over batch and latent: the VAE's loss), "batchmean" (sum / N),
        "mean" (over every element) or "none" (the (N, D) terms)
    """
    elementwise = np.empty(mean.shape, dtype=mean.dtype)
    kernels.gaussian_kl_forward(_flat(mean), _flat(logvar), elementwise.reshape(-1))
    cache = (np.asarray(mean, order="C"), np.asarray(logvar, order="C"), reduction)
    if reduction == "batchmean":
        total = elementwise.sum(dtype=elementwise.dtype)
        return total / mean.dtype.type(mean.shape[0]), cache
    return _reduce(elementwise, reduction), cache


def gaussian_kl_backward(grad_output, cache):
    """dKL/dμ = μ,  dKL/dlv = ½ (e^{lv} - 1), times the upstream gradient; returns (dμ, dlv)."""
    mean, logvar, reduction = cache
    if reduction == "batchmean":
        upstream = np.array([float(grad_output) / mean.shape[0]], dtype=mean.dtype)
    else:
        upstream = _upstream(grad_output, mean.shape, mean.dtype, reduction)
    grad_mean = np.empty(mean.shape, dtype=mean.dtype)
    grad_logvar = np.empty(mean.shape, dtype=mean.dtype)
    kernels.gaussian_kl_backward(
        upstream, mean.reshape(-1), logvar.reshape(-1), grad_mean.reshape(-1), grad_logvar.reshape(-1)
    )
    return grad_mean, grad_logvar
