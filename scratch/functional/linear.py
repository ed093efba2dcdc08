"""Linear layer as a pure forward/backward pair. Derivation: docs/linear.md.

Empty arrays pass through as in torch: a batch with no rows (``x`` of shape ``(*, 0, in)`` or
``(0, in)``) gives an empty output, an empty dx and no contribution to dW and db (each is a sum
over the rows, and an empty sum is 0); ``in_features == 0`` gives y = b in every row (an empty
dot product is 0) and an empty dW; ``out_features == 0`` gives an empty y and dx = 0. The
reshapes spell out the row count (``reshape(-1, 0)`` of an empty array is ambiguous to NumPy),
and no kernel runs on an empty array.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.kernels import linear as linear_kernels


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None):
    """y = x Wᵀ + b over the last axis, any leading dimensions (like torch).

    Parameters
    ----------
    x : (*, in_features)
    weight : (out_features, in_features)
    bias : (out_features,) or None

    Returns
    -------
    y : (*, out_features)
    cache : what ``linear_backward`` needs
    """
    leading = x.shape[:-1]
    x2d = x.reshape(math.prod(leading), x.shape[-1])  # (M, in), M = prod(leading); a view when x is contiguous
    y2d = x2d @ weight.T  # (M, out): one BLAS gemm
    if bias is not None:
        y2d += bias  # broadcast over the M rows
    cache = (x2d, weight, bias is not None, leading)
    return y2d.reshape(*leading, weight.shape[0]), cache


def linear_backward(grad_output: np.ndarray, cache):
    """dx = dy W,  dW = dyᵀ x,  db = Σ_rows dy.

    Parameters
    ----------
    grad_output : (*, out_features)
    cache : from ``linear_forward``

    Returns
    -------
    grad_input : (*, in_features)
    grad_weight : (out_features, in_features)
    grad_bias : (out_features,) or None
    """
    x2d, weight, has_bias, leading = cache
    dy2d = grad_output.reshape(x2d.shape[0], weight.shape[0])  # (M, out)
    grad_input = (dy2d @ weight).reshape(*leading, weight.shape[1])  # (M, in) -> (*, in)
    grad_weight = dy2d.T @ x2d  # (out, M) @ (M, in) -> (out, in)
    grad_bias = dy2d.sum(axis=0) if has_bias else None  # (out,)
    return grad_input, grad_weight, grad_bias


# -- the fused paths a Sequential takes (same numbers as the pairs above, fewer passes) ------------

#: Batches of at most this many rows accumulate dW with ``accumulate_outer_products``; larger ones
#: with one BLAS product (measured on a 2-core EPYC, 784→256 float32: the kernel is faster up to
#: 4 rows, 8 µs against 200 µs at one row; BLAS wins from 8 rows on).
OUTER_PRODUCT_ROWS = 4

ACTIVATIONS_WITH_BIAS_KERNELS = ("relu", "leaky_relu")


def linear_activation_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, activation: str,
                              negative_slope: float = 0.01):
    """out = act(x Wᵀ + b) with the bias and the activation in one pass over the GEMM's output.

    Parameters
    ----------
    x : (*, in_features)
    weight : (out_features, in_features)
    bias : (out_features,)
    activation : "relu" or "leaky_relu"

    Returns
    -------
    out : (*, out_features)
    linear_cache : what ``linear_backward`` needs (as ``linear_forward`` returns it)
    activation_cache : what the activation's backward needs (``out``; for LeakyReLU ``(out, slope)``)
    """
    if activation not in ACTIVATIONS_WITH_BIAS_KERNELS:
        raise ValueError(f"linear_activation_forward: activation must be one of "
                         f"{ACTIVATIONS_WITH_BIAS_KERNELS}, got {activation!r}")
    leading = x.shape[:-1]
    x2d = x.reshape(math.prod(leading), x.shape[-1])  # (M, in)
    out2d = x2d @ weight.T  # (M, out)
    if activation == "relu":
        if out2d.size:
            linear_kernels.bias_relu_forward(out2d, bias)
        activation_cache = out2d.reshape(*leading, weight.shape[0])
    else:
        slope = out2d.dtype.type(negative_slope)
        if out2d.size:
            linear_kernels.bias_leaky_relu_forward(out2d, bias, slope)
        activation_cache = (out2d.reshape(*leading, weight.shape[0]), slope)
    return out2d.reshape(*leading, weight.shape[0]), (x2d, weight, True, leading), activation_cache


def activation_backward_bias(grad_output: np.ndarray, activation_cache, activation: str,
                             grad_bias: np.ndarray) -> np.ndarray:
    """The activation's backward and the Linear bias's gradient in one pass.

    Parameters
    ----------
    grad_output : (*, out_features), dL/d(activation output)
    activation_cache : from ``linear_activation_forward`` (or the activation's own forward)
    grad_bias : (out_features,), ADDED into in place: += Σ_rows dL/d(pre-activation)

    Returns
    -------
    grad_pre_activation : (*, out_features)
    """
    if activation == "relu":
        out = activation_cache
    else:
        out, slope = activation_cache
    out2d = np.ascontiguousarray(out).reshape(math.prod(out.shape[:-1]), out.shape[-1])  # (M, out)
    dy2d = np.ascontiguousarray(grad_output).reshape(out2d.shape)
    grad_pre = np.empty_like(out2d)
    if out2d.size == 0:
        pass  # no rows (nothing to add to db) or no units: nothing to compute
    elif activation == "relu":
        linear_kernels.relu_backward_bias(dy2d, out2d, grad_pre, grad_bias)
    else:
        linear_kernels.leaky_relu_backward_bias(dy2d, out2d, slope, grad_pre, grad_bias)
    return grad_pre.reshape(out.shape)


def linear_backward_accumulate(grad_output: np.ndarray, cache, grad_weight: np.ndarray,
                               grad_bias: np.ndarray | None, input_grad: bool = True):
    """``linear_backward`` that ADDS dW (and db, unless ``grad_bias`` is None) into the given arrays.

    Parameters
    ----------
    grad_output : (*, out_features)
    cache : from ``linear_forward`` or ``linear_activation_forward``
    grad_weight : (out_features, in_features), += dyᵀ x in place
    grad_bias : (out_features,) or None (no bias, or its gradient already added by
        ``activation_backward_bias``), += Σ_rows dy in place
    input_grad : compute dx = dy W (False when nothing upstream needs it: the first layer)

    Returns
    -------
    grad_input : (*, in_features), or None when ``input_grad`` is False
    """
    x2d, weight, _, leading = cache
    dy2d = np.ascontiguousarray(grad_output).reshape(x2d.shape[0], weight.shape[0])  # (M, out)
    if dy2d.size == 0 or x2d.size == 0:
        pass  # no rows: dW gets nothing (an empty sum); or dW itself is empty (no inputs or units)
    elif dy2d.shape[0] <= OUTER_PRODUCT_ROWS and grad_weight.flags.c_contiguous and x2d.flags.c_contiguous:
        linear_kernels.accumulate_outer_products(dy2d, x2d, grad_weight)
    else:
        # A fresh product, not one written into a workspace: np.matmul(..., out=) with the
        # transposed operand measured 17% slower at batch 128 (784→400) than letting it allocate.
        grad_weight += dy2d.T @ x2d  # (out, M) @ (M, in)
    if grad_bias is not None:
        grad_bias += dy2d.sum(axis=0)
    if not input_grad:
        return None
    return (dy2d @ weight).reshape(*leading, weight.shape[1])  # (M, in) -> (*, in)
