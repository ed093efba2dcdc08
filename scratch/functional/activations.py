"""Element-wise activations as pure forward/backward pairs over the Numba kernels.

Each ``*_forward(x) -> (out, cache)`` and ``*_backward(grad_output, cache) -> grad_input``;
shapes are preserved, ``(*) -> (*)``, 0-d and empty arrays included (no kernel runs on an empty
one). ``relu_forward`` and ``leaky_relu_forward`` also run in place (``inplace=True``, torch's
``relu_``/``leaky_relu_``): the result is written into ``x``, which is returned. Derivations:
docs/activations.md.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from scratch.kernels import activations as kernels


def _flat(a: np.ndarray) -> np.ndarray:
    # Kernels take flat contiguous arrays; ravel copies only when ``a`` is not contiguous.
    return np.asarray(a, order="C").reshape(-1)


def _apply(kernel, *arrays):
    """Run ``kernel(*flat arrays, flat result)`` into a new array of the first array's shape."""
    result = np.empty(arrays[0].shape, dtype=arrays[-1].dtype)
    if result.size:
        kernel(*(_flat(a) for a in arrays), result.reshape(-1))
    return result


def _in_place(kernel, x, *arguments):
    """Run ``kernel(flat x, *arguments, flat result)`` with the result written into ``x``; returns
    ``x``. Each kernel here reads element i before it writes element i, so input and output may
    be one array; a strided ``x`` is computed into a contiguous array and copied back."""
    if x.size == 0:
        return x
    if x.flags.c_contiguous:
        flat = x.reshape(-1)  # a view: the kernel writes x itself
        kernel(flat, *arguments, flat)
    else:
        out = np.empty(x.shape, dtype=x.dtype)
        kernel(_flat(x), *arguments, out.reshape(-1))
        np.copyto(x, out)
    return x


def relu_forward(x, inplace=False):
    """out = max(x, 0); ``inplace``: written into ``x`` (then out is x), as torch's ``relu_``.

    The cache is the output either way: the backward reads its sign."""
    out = _in_place(kernels.relu_forward, x) if inplace else _apply(kernels.relu_forward, x)
    return out, out


def relu_backward(grad_output, cache):
    """dx = dy · 1[out > 0]  (0 at x = 0, as torch)."""
    return _apply(kernels.relu_backward, grad_output, cache)


def leaky_relu_forward(x, negative_slope=0.01, inplace=False):
    """out = x if x > 0 else negative_slope · x; ``inplace``: written into ``x`` (then out is x),
    as torch's ``leaky_relu_``.

    The cache is ``(a, slope)`` with ``a`` the array whose sign the backward reads: the input,
    or in place the output, whose sign is the input's for a slope >= 0. In place with a negative
    slope (or NaN) it is ``(None, slope)``: the input is gone and the output's sign is not its
    sign, so ``leaky_relu_backward`` refuses, as torch's backward does."""
    slope = x.dtype.type(negative_slope)  # torch multiplies in the tensor's dtype
    if inplace:
        _in_place(kernels.leaky_relu_forward, x, slope)
        return x, (x if slope >= 0 else None, slope)
    out = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernels.leaky_relu_forward(_flat(x), slope, out.reshape(-1))
    return out, (np.asarray(x, order="C"), slope)


def leaky_relu_backward(grad_output, cache):
    """dx = dy · (1 if x > 0 else negative_slope), with x the input (or, after an in-place
    forward, the output: the same sign for slope >= 0)."""
    x, slope = cache
    if x is None:
        raise RuntimeError(
            f"leaky_relu_backward: the forward ran in place with the negative slope {slope}, so the input is "
            f"gone and the output's sign is not the input's (torch refuses this backward too); run the "
            f"forward with inplace=False")
    grad_input = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernels.leaky_relu_backward(_flat(grad_output), x.reshape(-1), slope, grad_input.reshape(-1))
    return grad_input


@functools.lru_cache(maxsize=None)
def sigmoid_zero_below(dtype) -> np.generic:
    """-L, L the largest value of ``dtype`` whose exponential is finite (88.72283 in float32,
    709.78271289338 in float64): σ(x) is exactly 0 below it, as in torch.

    torch evaluates σ(x) = 1 / (1 + e^{-x}); for x < -L, e^{-x} overflows to inf and σ(x) to 0,
    where the overflow-free e / (1 + e) would give a subnormal (3.8e-44 at x = -100 in float32).
    The convention matters downstream: BCE clamps log σ(x) at -100, so torch's loss there is 100
    where log(subnormal) would give |x| (89 to 100 nats per element in float32).
    """
    dtype = np.dtype(dtype)
    log_max = math.log(float(np.finfo(dtype).max))  # ln(max) in float64, accurate to 1e-16
    bound = dtype.type(log_max)
    if float(bound) > log_max:  # rounded up (float32: 88.72284 overflows exp): step down one value
        bound = np.nextafter(bound, dtype.type(0))
    return -bound


def sigmoid_forward(x, workspace=None):
    """out = σ(x) = 1 / (1 + e^{-x}), overflow-free for any x; 0 below ``sigmoid_zero_below``.

    ``workspace`` (a ``scratch.workspace.Workspace``): where e^{-|x|} is computed, reused from
    call to call; it never leaves this function.
    """
    if x.size == 0:  # nothing to compute (and no workspace to give up for it)
        out = np.empty(x.shape, dtype=x.dtype)
        return out, out
    exp_neg_abs = np.empty(x.shape, x.dtype) if workspace is None else workspace.get("exp_neg_abs", x.shape, x.dtype)
    np.abs(x, out=exp_neg_abs)  # (*); then in place: every exponent <= 0
    np.negative(exp_neg_abs, out=exp_neg_abs)
    np.exp(exp_neg_abs, out=exp_neg_abs)
    out = np.empty(x.shape, dtype=x.dtype)
    kernels.sigmoid_forward(_flat(x), _flat(exp_neg_abs), out.reshape(-1), sigmoid_zero_below(x.dtype))
    return out, out


def sigmoid_backward(grad_output, cache):
    """dx = dy · σ(x)(1 - σ(x)), from the cached output."""
    return _apply(kernels.sigmoid_backward, grad_output, cache)


def tanh_forward(x):
    """out = tanh(x), by NumPy's vectorized tanh (a scalar Numba loop calling ``math.tanh`` was
    12x slower than torch: this Numba build has no vector math library)."""
    out = np.tanh(x)
    return out, out


def tanh_backward(grad_output, cache):
    """dx = dy · (1 - tanh(x)²), from the cached output."""
    return _apply(kernels.tanh_backward, grad_output, cache)
