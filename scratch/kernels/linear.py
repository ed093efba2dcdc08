"""Numba kernels that fuse a Linear layer's bias with its activation, beside NumPy references.

The matrix products themselves stay in BLAS (``scratch.functional.linear``); these kernels do the
element-wise work around them in one pass each instead of two or three:

- ``bias_relu_forward``        out[m, o] = max(y[m, o] + b[o], 0), in place on the GEMM's output
- ``bias_leaky_relu_forward``  out[m, o] = z if z > 0 else slope·z, z = y[m, o] + b[o], in place
- ``relu_backward_bias``       dz[m, o] = dy[m, o]·1[out[m, o] > 0];  db[o] += Σ_m dz[m, o]
- ``leaky_relu_backward_bias`` dz[m, o] = dy[m, o]·(1 if out[m, o] > 0 else slope);  db[o] += Σ_m dz[m, o]
- ``accumulate_outer_products`` dW[o, i] += Σ_m dy[m, o]·x[m, i], for a few rows m

Conventions: 2-D C-contiguous arrays (M rows of a batch, O or I features), one float dtype,
every scalar in that dtype, outputs preallocated by the caller. Loop nest: rows m outside,
features innermost and contiguous, which LLVM vectorizes; the bias sums run over m in order
into a row of partial sums, the order NumPy's ``sum(axis=0)`` uses for two or more columns (a
single column it sums pairwise), so the fused and unfused paths agree bit for bit except in
the bias gradient of a one-unit layer, which agrees to rounding. The LeakyReLU kernels test the *output*'s sign: for slope > 0 it has
the input's sign. Serial on purpose (see ``scratch.kernels.activations``); cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def bias_relu_forward(y, bias):
    """y[m, o] ← max(y[m, o] + b[o], 0) in place (NaN stays NaN, as torch). Loop: m, then o."""
    rows, features = y.shape
    zero = y.dtype.type(0)
    for m in range(rows):
        for o in range(features):
            z = y[m, o] + bias[o]
            y[m, o] = zero if z <= zero else z


@njit(cache=True, error_model="numpy")
def bias_leaky_relu_forward(y, bias, negative_slope):
    """y[m, o] ← z if z > 0 else slope·z, z = y[m, o] + b[o], in place. Loop: m, then o."""
    rows, features = y.shape
    zero = y.dtype.type(0)
    for m in range(rows):
        for o in range(features):
            z = y[m, o] + bias[o]
            y[m, o] = z if z > zero else z * negative_slope


@njit(cache=True, error_model="numpy")
def relu_backward_bias(grad_output, out, grad_input, grad_bias):
    """grad_input = grad_output·1[out > 0] (torch: 0 at 0, NaN passes); grad_bias += Σ_m grad_input.

    Loop: m, then o; the row sums accumulate in a buffer of O partial sums.
    """
    rows, features = out.shape
    zero = out.dtype.type(0)
    sums = np.zeros(features, dtype=out.dtype)
    for m in range(rows):
        for o in range(features):
            g = zero if out[m, o] <= zero else grad_output[m, o]
            grad_input[m, o] = g
            sums[o] += g
    for o in range(features):
        grad_bias[o] += sums[o]


@njit(cache=True, error_model="numpy")
def leaky_relu_backward_bias(grad_output, out, negative_slope, grad_input, grad_bias):
    """grad_input = grad_output·(1 if out > 0 else slope); grad_bias += Σ_m grad_input. Loop: m, then o."""
    rows, features = out.shape
    zero = out.dtype.type(0)
    sums = np.zeros(features, dtype=out.dtype)
    for m in range(rows):
        for o in range(features):
            g = grad_output[m, o] if out[m, o] > zero else grad_output[m, o] * negative_slope
            grad_input[m, o] = g
            sums[o] += g
    for o in range(features):
        grad_bias[o] += sums[o]


@njit(cache=True, error_model="numpy")
def accumulate_outer_products(grad_output, x, grad_weight):
    """grad_weight[o, i] += Σ_m grad_output[m, o]·x[m, i]: dW of a Linear layer, accumulated in place.

    For a handful of rows only (batch 1 to 4): each row o of dW is read and written once while
    the M rows of x stay in cache, where BLAS would build dyᵀx in a temporary and a second pass
    would add it (measured at batch 1, 784→256: 8 µs here against 200 µs for ``+= dy.T @ x``).
    Loop: o, then m, then i (contiguous, vectorized).
    """
    outputs, inputs = grad_weight.shape
    for o in range(outputs):
        for m in range(x.shape[0]):
            d = grad_output[m, o]
            for i in range(inputs):
                grad_weight[o, i] += d * x[m, i]


def bias_relu_forward_reference(y, bias):
    return np.maximum(y + bias, y.dtype.type(0))


def bias_leaky_relu_forward_reference(y, bias, negative_slope):
    z = y + bias
    return np.where(z > 0, z, z * negative_slope)


def relu_backward_bias_reference(grad_output, out, grad_bias):
    grad_input = np.where(out <= 0, np.zeros_like(grad_output), grad_output)
    return grad_input, grad_bias + grad_input.sum(axis=0)


def leaky_relu_backward_bias_reference(grad_output, out, negative_slope, grad_bias):
    grad_input = np.where(out > 0, grad_output, grad_output * negative_slope)
    return grad_input, grad_bias + grad_input.sum(axis=0)


def accumulate_outer_products_reference(grad_output, x, grad_weight):
    return grad_weight + grad_output.T @ x
