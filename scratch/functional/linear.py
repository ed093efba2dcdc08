"""Linear layer as a pure forward/backward pair. Derivation: docs/linear.md."""

from __future__ import annotations

import numpy as np


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
    x2d = x.reshape(-1, x.shape[-1])  # (M, in), M = prod(leading); a view when x is contiguous
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
    dy2d = grad_output.reshape(-1, weight.shape[0])  # (M, out)
    grad_input = (dy2d @ weight).reshape(*leading, weight.shape[1])  # (M, in) -> (*, in)
    grad_weight = dy2d.T @ x2d  # (out, M) @ (M, in) -> (out, in)
    grad_bias = dy2d.sum(axis=0) if has_bias else None  # (out,)
    return grad_input, grad_weight, grad_bias
