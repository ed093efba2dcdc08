"""Numba kernels for the element-wise activations, each beside its plain NumPy reference.

Conventions shared by every kernel here:
- arguments are flat (1-D), C-contiguous arrays of one float dtype; outputs are preallocated by
  the caller (``scratch.functional``), which also checks shapes and chooses dtypes;
- loop nest: a single loop over the flat index ``i``; every iteration reads element ``i`` of its
  inputs and then writes only ``out[i]``, so a forward's ``out`` may be its ``x`` itself (the
  in-place forwards, ``scratch.functional.relu_forward(x, inplace=True)``);
  serial on purpose: these loops are memory-bound, and a Numba parallel region interleaved
  with NumPy's multi-threaded BLAS calls made both thread pools spin against each other on a
  2-core machine (a 2 µs ReLU took 8 ms when alternated with a matmul);
- compiled once per dtype and cached on disk (``cache=True``);
- arithmetic stays in the arrays' dtype: constants are made with ``x.dtype.type(...)``, since a
  bare ``1`` or ``0.5`` is an int64 or float64 to Numba and would promote a float32 loop to
  float64 (torch computes float32 ops in float32, too);
- ``error_model="numpy"``: dividing by zero gives inf/NaN as in NumPy instead of raising, and
  leaves LLVM free to vectorize loops that divide.

The ``*_reference`` functions compute the same op with whole-array NumPy expressions; tests hold
each kernel against its reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ---------------------------------------------------------------------------- ReLU


@njit(cache=True, error_model="numpy")
def relu_forward(x, out):
    """out[i] = max(x[i], 0); NaN stays NaN, as torch. Loop: one pass over i."""
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        out[i] = zero if x[i] <= zero else x[i]


@njit(cache=True, error_model="numpy")
def relu_backward(grad_output, out, grad_input):
    """grad_input[i] = 0 where out[i] <= 0, else grad_output[i] (torch: gradient 0 at x = 0).

    Reads the forward *output* and tests ``<= 0`` exactly as torch's ``threshold_backward``
    does, so a NaN passes its gradient through. Loop: one pass over i.
    """
    zero = out.dtype.type(0)
    for i in range(out.shape[0]):
        grad_input[i] = zero if out[i] <= zero else grad_output[i]


def relu_forward_reference(x):
    return np.maximum(x, x.dtype.type(0))  # propagates NaN


def relu_backward_reference(grad_output, out):
    return np.where(out <= 0, np.zeros_like(grad_output), grad_output)


# ---------------------------------------------------------------------------- LeakyReLU


@njit(cache=True, error_model="numpy")
def leaky_relu_forward(x, negative_slope, out):
    """out[i] = x[i] if x[i] > 0 else negative_slope * x[i]. Loop: one pass over i."""
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        out[i] = x[i] if x[i] > zero else x[i] * negative_slope


@njit(cache=True, error_model="numpy")
def leaky_relu_backward(grad_output, x, negative_slope, grad_input):
    """grad_input[i] = grad_output[i] * (1 if x[i] > 0 else negative_slope). Loop: one pass over i."""
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        grad_input[i] = grad_output[i] if x[i] > zero else grad_output[i] * negative_slope


def leaky_relu_forward_reference(x, negative_slope):
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward_reference(grad_output, x, negative_slope):
    return np.where(x > 0, grad_output, grad_output * x.dtype.type(negative_slope))


# ---------------------------------------------------------------------------- Sigmoid


@njit(cache=True, error_model="numpy")
def sigmoid_forward(x, exp_neg_abs, out, zero_below=-np.inf):
    """out[i] = 1 / (1 + e) if x[i] >= 0 else e / (1 + e), with e = exp(-|x[i]|) precomputed;
    out[i] = 0 where x[i] < ``zero_below``.

    exp only ever sees a non-positive argument, so nothing overflows for any x; ``e`` comes in
    from NumPy's SIMD exp (a scalar loop is ten times slower). ``zero_below`` is torch's
    underflow convention, chosen one level up (``scratch.functional.sigmoid_forward`` passes
    -L, L the largest x with e^x finite in the dtype): torch evaluates 1 / (1 + e^{-x}), which is
    exactly 0 once e^{-x} overflows, where e / (1 + e) would still give a subnormal. The default
    -inf flushes nothing. NaN stays NaN (every comparison with it is false). Loop: one pass,
    branch-free (an if/elif chain here measured 20% slower in float64).
    """
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.shape[0]):
        e = exp_neg_abs[i]
        value = one / (one + e) if x[i] >= zero else e / (one + e)
        out[i] = zero if x[i] < zero_below else value  # two selects: as fast as the one before


@njit(cache=True, error_model="numpy")
def sigmoid_backward(grad_output, out, grad_input):
    """grad_input[i] = grad_output[i] * out[i] * (1 - out[i]), from the forward output."""
    one = out.dtype.type(1)
    for i in range(out.shape[0]):
        grad_input[i] = grad_output[i] * (one - out[i]) * out[i]


def sigmoid_forward_reference(x, zero_below=-np.inf):
    # The same branches, evaluated on the whole array; exp's argument is always <= 0.
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)
    return np.where(x < zero_below, x.dtype.type(0), out)


def sigmoid_backward_reference(grad_output, out):
    return grad_output * (1 - out) * out


# ---------------------------------------------------------------------------- Tanh


@njit(cache=True, error_model="numpy")
def tanh_backward(grad_output, out, grad_input):
    """grad_input[i] = grad_output[i] * (1 - out[i]^2), from the forward output."""
    one = out.dtype.type(1)
    for i in range(out.shape[0]):
        grad_input[i] = grad_output[i] * (one - out[i] * out[i])


# tanh's forward has no kernel (so no reference): ``scratch.functional.tanh_forward`` calls NumPy's
# SIMD tanh, since a scalar ``math.tanh`` loop here (no SVML in this Numba) was 12x slower than torch.


def tanh_backward_reference(grad_output, out):
    return grad_output * (1 - out * out)
