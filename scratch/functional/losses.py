"""Losses as pure forward/backward pairs over the Numba kernels. Derivations: docs/losses.md.

``*_forward(input, target, reduction, ...) -> (loss, cache)`` where ``loss`` is a 0-d array for
``"mean"``/``"sum"`` and an array of the output's shape for ``"none"``;
``*_backward(grad_output, cache) -> grad_input`` with ``grad_output`` a scalar (reduced) or an
array of the output's shape (``"none"``), and ``grad_input`` of the input's shape.

The output's shape is the input's, except for ``mse_forward`` with a target of another shape:
both broadcast (torch's rules) and the gradient is summed back to the input's shape. ``weight``
and ``pos_weight`` broadcast to the input's shape. An empty input gives an empty ``"none"``
loss, 0 for ``"sum"`` and NaN for ``"mean"`` (0/0), and an empty gradient, as torch's.
Shapes are checked one level up (``scratch.nn.losses``); here they are taken as valid.
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
        if elementwise.size == 0:  # torch's mean of nothing: 0/0 = NaN, without NumPy's warning
            with np.errstate(invalid="ignore"):
                return total / elementwise.dtype.type(0)
        return total / elementwise.dtype.type(elementwise.size)
    return total


def _upstream(grad_output, shape, dtype, reduction) -> np.ndarray:
    """The upstream gradient as a flat array the kernels take: 1 element, or one per element.
    (An empty input's gradient has no element to scale: its 1/N is taken as 1.)"""
    if reduction == "none":
        return _flat(np.asarray(grad_output, dtype=dtype))
    scale = 1.0 / max(np.prod(shape), 1) if reduction == "mean" else 1.0
    return np.array([float(grad_output) * scale], dtype=dtype)


def _per_element(weight, shape, dtype) -> np.ndarray:
    """``weight`` broadcast to ``shape`` as the flat array the kernels take: one element when it
    holds a single value (the kernel reads ``weight[0]`` for every element), else one per element."""
    weight = np.asarray(weight, dtype=dtype)
    if weight.size == 1:
        return weight.reshape(1)
    return np.ascontiguousarray(np.broadcast_to(weight, shape)).reshape(-1)


def _sum_to_shape(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """The gradient of a broadcast: ``grad`` summed over the axes broadcasting added or stretched,
    back to ``shape`` (the adjoint of ``np.broadcast_to(x, grad.shape)``)."""
    leading = grad.ndim - len(shape)
    stretched = tuple(leading + axis for axis, size in enumerate(shape) if size == 1 and grad.shape[leading + axis] != 1)
    summed = grad.sum(axis=tuple(range(leading)) + stretched, keepdims=True, dtype=grad.dtype)
    return summed.reshape(shape)


def _binary_loss_forward(kernel, input, target, reduction):
    elementwise = np.empty(input.shape, dtype=input.dtype)
    kernel(_flat(input), _flat(target), elementwise.reshape(-1))
    cache = (np.asarray(input, order="C"), np.asarray(target, order="C"), reduction)
    return _reduce(elementwise, reduction), cache


def _binary_loss_backward(kernel, grad_output, cache):
    input, target, reduction = cache[:3]
    grad_input = np.empty(input.shape, dtype=input.dtype)
    upstream = _upstream(grad_output, input.shape, input.dtype, reduction)
    kernel(upstream, input.reshape(-1), target.reshape(-1), grad_input.reshape(-1))
    return grad_input


def bce_forward(probabilities, target, reduction="mean", workspace=None, weight=None):
    """ℓ = -w (y log p + (1 - y) log(1 - p)), each log clamped at -100; p, y: (*).

    ``workspace`` (a ``scratch.workspace.Workspace``): where log p, log(1 - p) and, for a
    reduced loss, the per-element terms are computed, reused from call to call.
    ``weight``: None (w = 1: the unweighted kernel) or an array that broadcasts to p's shape,
    multiplying each element's loss (torch's ``weight``), cast to p's dtype.
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
    if weight is None:
        kernels.bce_forward(p.reshape(-1), _flat(target), log_p.reshape(-1), log_1mp.reshape(-1),
                            elementwise.reshape(-1))
    else:
        weight = _per_element(weight, p.shape, p.dtype)
        kernels.bce_weighted_forward(p.reshape(-1), _flat(target), log_p.reshape(-1), log_1mp.reshape(-1), weight,
                                     elementwise.reshape(-1))
    return _reduce(elementwise, reduction), (p, np.asarray(target, order="C"), reduction, weight)


def bce_backward(grad_output, cache):
    """dℓ/dp = w (p - y) / max(p (1 - p), 1e-12), times the upstream gradient (÷N for mean)."""
    p, target, reduction, weight = cache
    if weight is None:
        return _binary_loss_backward(kernels.bce_backward, grad_output, cache)
    grad_input = np.empty(p.shape, dtype=p.dtype)
    upstream = _upstream(grad_output, p.shape, p.dtype, reduction)
    kernels.bce_weighted_backward(upstream, p.reshape(-1), target.reshape(-1), weight, grad_input.reshape(-1))
    return grad_input


def sigmoid_bce_backward(grad_output, cache):
    """dL/d(logits) for L = BCE(σ(logits), y), from the BCE's cache alone (p = σ(logits) is its input).

    One pass computing exactly what ``bce_backward`` then ``sigmoid_backward`` compute:
    dp = g·(p - y) / max(p(1 - p), 1e-12), then dp·(1 - p)·p. Returns (*), the input's shape.
    Unweighted BCE only (``nn.BCELoss`` takes the two passes when it has a weight).
    """
    return _binary_loss_backward(kernels.sigmoid_bce_backward, grad_output, cache)


def _exp_neg_abs(x: np.ndarray) -> np.ndarray:
    """e^{-|x|} by NumPy's SIMD loops, a new array (every exponent <= 0: no overflow)."""
    e = np.abs(x, out=np.empty_like(x))  # out=: a 0-d x gives a 0-d array, not a NumPy scalar
    np.negative(e, out=e)
    return np.exp(e, out=e)


def bce_with_logits_forward(logits, target, reduction="mean", weight=None, pos_weight=None):
    """ℓ = (1 - y) x + softplus(-x) = BCE(σ(x), y) without forming σ(x); x, y: (*).

    With ``weight`` w and/or ``pos_weight`` pw (arrays that broadcast to x's shape, cast to its
    dtype; torch's arguments): ℓ = w·((1 - y) x + (1 + (pw - 1) y)·softplus(-x)), computed as
    w·((1 - y)·softplus(x) + pw·y·softplus(-x)) (docs/losses.md). Neither given: the unweighted
    kernel, as before.
    """
    x = np.asarray(logits, order="C")
    tail = np.log1p(_exp_neg_abs(x))  # log1p(e^{-|x|}), the part of softplus that needs a log
    elementwise = np.empty(x.shape, dtype=x.dtype)
    if weight is None and pos_weight is None:
        kernels.bce_with_logits_forward(x.reshape(-1), _flat(target), tail.reshape(-1), elementwise.reshape(-1))
    else:
        weight = _per_element(1 if weight is None else weight, x.shape, x.dtype)
        pos_weight = _per_element(1 if pos_weight is None else pos_weight, x.shape, x.dtype)
        kernels.bce_with_logits_weighted_forward(x.reshape(-1), _flat(target), tail.reshape(-1), weight, pos_weight,
                                                 elementwise.reshape(-1))
    return _reduce(elementwise, reduction), (x, np.asarray(target, order="C"), reduction, weight, pos_weight)


def bce_with_logits_backward(grad_output, cache):
    """dℓ/dx = σ(x) - y; weighted: w·((1 - y)·σ(x) - pw·y·σ(-x)); times the upstream gradient (÷N for mean)."""
    x, target, reduction, weight, pos_weight = cache
    grad_input = np.empty(x.shape, dtype=x.dtype)
    upstream = _upstream(grad_output, x.shape, x.dtype, reduction)
    if weight is None:  # (the forward sets both or neither)
        kernels.bce_with_logits_backward(upstream, x.reshape(-1), target.reshape(-1), _exp_neg_abs(x).reshape(-1),
                                         grad_input.reshape(-1))
    else:
        kernels.bce_with_logits_weighted_backward(upstream, x.reshape(-1), target.reshape(-1),
                                                  _exp_neg_abs(x).reshape(-1), weight, pos_weight,
                                                  grad_input.reshape(-1))
    return grad_input


def mse_forward(input, target, reduction="mean"):
    """ℓ = (x - y)²; x, y: (*), the same shape or two that broadcast (torch's rules; ℓ then has
    the broadcast shape, and "mean" divides by its size)."""
    if input.shape == target.shape:
        loss, cache = _binary_loss_forward(kernels.mse_forward, input, target, reduction)
        return loss, (*cache, input.shape)
    shape = np.broadcast_shapes(input.shape, target.shape)
    loss, cache = _binary_loss_forward(kernels.mse_forward, np.ascontiguousarray(np.broadcast_to(input, shape)),
                                       np.ascontiguousarray(np.broadcast_to(target, shape)), reduction)
    return loss, (*cache, input.shape)


def mse_backward(grad_output, cache):
    """dℓ/dx = 2 (x - y), times the upstream gradient (÷N for mean); summed back to the input's
    shape where the input was broadcast."""
    grad_input = _binary_loss_backward(kernels.mse_backward, grad_output, cache)
    input_shape = cache[3]
    return grad_input if grad_input.shape == input_shape else _sum_to_shape(grad_input, input_shape)


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
