"""BatchNorm, LayerNorm and GroupNorm as pure forward/backward pairs, with torch's semantics.

Derivations: docs/normalization.md. All three compute y = γ·x̂ + β with x̂ = (x - μ)/√(σ² + ε),
σ² the biased variance; they differ in the axes μ and σ² are taken over:

- BatchNorm: per channel c of x (N, C, *), over the N·L values of that channel (L = prod(*));
- LayerNorm: per row, over the trailing ``normalized_shape`` axes (γ, β of that shape);
- GroupNorm: per example n and group g of C/G channels, over the group's (C/G)·L values
  (γ, β per channel).

The statistics, the backward's reductions and its element-wise pass run in the kernels of
``scratch.kernels.normalization``, which sum in float64 (why, there). The policy lives here:
which statistics to use, the running-statistics update (momentum, the unbiased variance), ε, the
dtypes, and whether a kernel runs parallel or as its serial twin (``PARALLEL_FROM``). Shapes and
values are checked one level up (``scratch.nn``). Empty inputs (N = 0, or an empty channel or
row) give an empty output, an empty dx and zero parameter gradients, and leave running
statistics as they are (torch's too).
"""

from __future__ import annotations

import math

import numpy as np

from scratch.kernels import normalization as kernels

#: inputs of fewer elements than this run the kernels' serial twins (``*_serial``), larger ones the
#: parallel kernels. Below it a ``prange`` region's wake-up of the OpenMP pool costs more than the
#: second thread saves (docs/speed.md, "New layers (issue 17)"); either choice gives the same bits.
PARALLEL_FROM = 1 << 20


def _kernel(name: str, size: int):
    """The kernel ``name`` of ``scratch.kernels.normalization`` for an input of ``size`` elements:
    its serial twin below ``PARALLEL_FROM``, the parallel kernel from there."""
    return getattr(kernels, name if size >= PARALLEL_FROM else f"{name}_serial")


def _inverse_std(var64: np.ndarray, eps: float) -> np.ndarray:
    """1/√(σ² + ε) in float64; a negative σ² + ε (torch allows a negative ε for LayerNorm and
    GroupNorm) gives NaN and a zero one inf, silently, as in torch."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(var64 + eps)


def _update_running(running: np.ndarray, statistic64: np.ndarray, momentum: float) -> None:
    """running ← momentum·statistic + (1 - momentum)·running, in place, computed in float64 and
    stored in running's own dtype (torch's order of the terms, in its accumulate type)."""
    running[...] = momentum * statistic64 + (1.0 - momentum) * running.astype(np.float64)


# ---------------------------------------------------------------------------- BatchNorm


def _per_channel(x: np.ndarray) -> np.ndarray:
    """(N, C, *) -> (N, C, L), L = prod(*) (1 for (N, C)); C-contiguous, a view when x is."""
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """y = γ·(x - μ)/√(σ² + ε) + β per channel, torch's ``F.batch_norm``.

    Parameters
    ----------
    x : (N, C, *) (BatchNorm1d: (N, C) or (N, C, L); BatchNorm2d: (N, C, H, W))
    weight, bias : (C,) or None (γ = 1, β = 0)
    running_mean, running_var : (C,) or None
    training : True normalises with the batch's statistics, μ = mean and σ² = the *biased*
        variance (1/M)·Σ(x - μ)² over the M = N·L values of each channel; and, when given,
        updates running_mean and running_var in place (if M > 0):
        r_μ ← (1 - momentum)·r_μ + momentum·μ,  r_σ² ← (1 - momentum)·r_σ² + momentum·σ²·M/(M - 1)
        (the *unbiased* variance, an estimate for the population; docs/normalization.md).
        False normalises with running_mean and running_var, which must be given.
    momentum : the factor above (a float: the layer turns momentum=None into 1/num_batches_tracked)
    eps : ε

    Returns
    -------
    y : x's shape and dtype
    cache : what ``batch_norm_backward`` needs (x as (N, C, L), μ and 1/σ in x's dtype, γ, mode)
    """
    dtype = x.dtype
    x3 = _per_channel(x)  # (N, C, L)
    batch, channels, length = x3.shape
    count = batch * length  # M: the values of each channel
    if training:
        mean64, var64 = np.zeros(channels), np.zeros(channels)  # (C,) float64; unused when M = 0
        if x3.size:
            _kernel("moments", x3.size)(x3, mean64, var64)
            if running_mean is not None:
                _update_running(running_mean, mean64, momentum)
            if running_var is not None:
                with np.errstate(divide="ignore", invalid="ignore"):  # M = 1: the layer refuses it
                    _update_running(running_var, var64 * count / (count - 1), momentum)
    else:
        mean64, var64 = running_mean.astype(np.float64), running_var.astype(np.float64)  # (C,)
    mean, invstd = mean64.astype(dtype), _inverse_std(var64, eps).astype(dtype)  # (C,) in x's dtype
    gain = np.ones(channels, dtype) if weight is None else np.ascontiguousarray(weight, dtype)  # γ (C,)
    shift = np.zeros(channels, dtype) if bias is None else np.ascontiguousarray(bias, dtype)  # β (C,)
    out3 = np.empty_like(x3)  # (N, C, L)
    if x3.size:
        _kernel("batch_norm_forward", x3.size)(x3, mean, invstd, gain, shift, out3)
    cache = (x3, mean, invstd, None if weight is None else gain, bias is not None, bool(training), x.shape)
    return out3.reshape(x.shape), cache


def batch_norm_backward(grad_output, cache):
    """dx = (γ/σ)·(dy - mean(dy) - x̂·mean(dy·x̂)) in training, (γ/σ)·dy in evaluation; dγ = Σ dy·x̂, dβ = Σ dy.

    Means and sums per channel over its N·L values. In training μ and σ are the batch's, so every
    dx depends on every dy and x of its channel: the three terms are the direct path, the path
    through μ and the path through σ² (docs/normalization.md#batchnorm-backward). In evaluation
    they are constants and BatchNorm is a per-channel affine map.

    Returns
    -------
    grad_input : x's shape
    grad_weight, grad_bias : (C,), or None where the forward had no weight (bias)
    """
    x3, mean, invstd, weight, has_bias, batch_statistics, input_shape = cache
    dtype = x3.dtype
    batch, channels, length = x3.shape
    dy3 = np.ascontiguousarray(grad_output).reshape(x3.shape)  # (N, C, L)
    sum_dy, sum_dy_xhat = np.zeros(channels), np.zeros(channels)  # (C,) float64: Σ dy, Σ dy·x̂
    grad_input3 = np.empty_like(x3)  # (N, C, L)
    if x3.size:
        _kernel("batch_norm_backward_reduce", dy3.size)(dy3, x3, mean, invstd, sum_dy, sum_dy_xhat)
        count = batch * length
        gain = np.ones(channels, dtype) if weight is None else weight  # γ (C,)
        _kernel("batch_norm_backward_input", dy3.size)(dy3, x3, mean, invstd, gain, (sum_dy / count).astype(dtype),
                                          (sum_dy_xhat / count).astype(dtype), batch_statistics, grad_input3)
    grad_weight = None if weight is None else sum_dy_xhat.astype(dtype)
    grad_bias = sum_dy.astype(dtype) if has_bias else None
    return grad_input3.reshape(input_shape), grad_weight, grad_bias


# ---------------------------------------------------------------------------- GroupNorm and LayerNorm
# Both run on x as (N, J): each row split into G groups of K = J/G contiguous values, statistics
# per (n, g), and γ, β indexed by channel c = j // inner. GroupNorm: (N, C·L), inner = L.
# LayerNorm: (rows, D) with D = prod(normalized_shape), G = 1, inner = 1 (γ per element).


def _grouped_forward(x2, groups, channels, inner, weight, bias, eps, input_shape):
    """y for x2 (N, J) in G groups; weight, bias (channels,) or None; J = channels·inner."""
    dtype = x2.dtype
    batch, width = x2.shape
    mean64, var64 = np.zeros(batch * groups), np.zeros(batch * groups)  # (N·G,) float64
    if x2.size:
        _kernel("moments", x2.size)(x2.reshape(1, batch * groups, width // groups), mean64, var64)  # rows as (1, N·G, K)
    mean = mean64.astype(dtype).reshape(batch, groups)  # (N, G) in x's dtype
    rstd = _inverse_std(var64, eps).astype(dtype).reshape(batch, groups)  # (N, G): 1/σ
    gain = np.ones(channels, dtype) if weight is None else np.ascontiguousarray(weight, dtype).reshape(channels)
    shift = np.zeros(channels, dtype) if bias is None else np.ascontiguousarray(bias, dtype).reshape(channels)
    out2 = np.empty_like(x2)  # (N, J)
    if x2.size:
        _kernel("group_norm_forward", x2.size)(x2, mean, rstd, gain, shift, inner, out2)
    cache = (x2, mean, rstd, None if weight is None else gain, None if weight is None else np.shape(weight),
             bias is not None, np.shape(bias), channels, inner, input_shape)
    return out2.reshape(input_shape), cache


def _grouped_backward(grad_output, cache):
    """dx = (1/σ)·(g - mean(g) - x̂·mean(g·x̂)) with g = γ·dy, means per group; dγ = Σ dy·x̂ and
    dβ = Σ dy per channel over the batch (and the channel's inner positions)."""
    x2, mean, rstd, weight, weight_shape, has_bias, bias_shape, channels, inner, input_shape = cache
    dtype = x2.dtype
    batch, width = x2.shape
    groups = mean.shape[1]
    dy2 = np.ascontiguousarray(grad_output).reshape(x2.shape)  # (N, J)
    grad_input2 = np.empty_like(x2)  # (N, J)
    chunks = max(1, min(batch, kernels.ROW_CHUNKS))
    column_dy, column_dy_xhat = np.zeros((chunks, width)), np.zeros((chunks, width))  # float64: Σ dy, Σ dy·x̂ per row chunk
    if x2.size:
        gain = np.ones(channels, dtype) if weight is None else weight  # γ (channels,)
        sum_gdy, sum_gdy_xhat = np.zeros((batch, groups)), np.zeros((batch, groups))  # (N, G) float64
        _kernel("group_norm_backward_reduce", dy2.size)(dy2, x2, mean, rstd, gain, inner, sum_gdy, sum_gdy_xhat)
        count = width // groups  # K: the values of each group
        _kernel("group_norm_backward_input", dy2.size)(dy2, x2, mean, rstd, gain, inner, (sum_gdy / count).astype(dtype),
                                          (sum_gdy_xhat / count).astype(dtype), grad_input2)
        if weight is not None or has_bias:
            _kernel("group_norm_backward_params", dy2.size)(dy2, x2, mean, rstd, column_dy, column_dy_xhat)

    def per_channel(columns):  # (chunks, J) -> (channels,): the chunks and each channel's inner positions summed
        return columns.sum(axis=0).reshape(channels, inner).sum(axis=1).astype(dtype)

    grad_weight = None if weight is None else per_channel(column_dy_xhat).reshape(weight_shape)
    grad_bias = per_channel(column_dy).reshape(bias_shape) if has_bias else None
    return grad_input2.reshape(input_shape), grad_weight, grad_bias


def layer_norm_forward(x, normalized_shape, weight, bias, eps=1e-5):
    """y = γ ⊙ (x - μ)/√(σ² + ε) + β over the trailing axes, torch's ``F.layer_norm``.

    x (*, *normalized_shape); μ and the biased σ² per leading index, over its
    D = prod(normalized_shape) values; weight, bias of ``normalized_shape`` (element-wise) or
    None. Returns y (x's shape) and the cache for ``layer_norm_backward``.
    """
    width = math.prod(normalized_shape)  # D
    rows = math.prod(x.shape[:x.ndim - len(normalized_shape)])
    x2 = np.ascontiguousarray(x).reshape(rows, width)  # (rows, D)
    return _grouped_forward(x2, 1, width, 1, weight, bias, eps, x.shape)


def layer_norm_backward(grad_output, cache):
    """dx = (1/σ)·(g - mean(g) - x̂·mean(g·x̂)), g = γ ⊙ dy, means over each row; dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy.

    BatchNorm's derivation with the roles of the axes exchanged (docs/normalization.md#layernorm-and-groupnorm):
    the statistics are per row, and γ sits inside the mean (it varies along the normalised axes).
    Returns (grad_input, grad_weight, grad_bias); the last two of ``normalized_shape``, or None.
    """
    return _grouped_backward(grad_output, cache)


def group_norm_forward(x, num_groups, weight, bias, eps=1e-5):
    """y = γ_c·(x - μ)/√(σ² + ε) + β_c, μ and the biased σ² per (n, group), torch's ``F.group_norm``.

    x (N, C, *), C divisible by num_groups; each group holds C/num_groups consecutive channels
    and its statistics run over their (C/num_groups)·L values (L = prod(*)); weight, bias (C,)
    or None. Returns y (x's shape) and the cache for ``group_norm_backward``.
    """
    batch, channels = x.shape[:2]
    inner = math.prod(x.shape[2:])  # L
    x2 = np.ascontiguousarray(x).reshape(batch, channels * inner)  # (N, C·L)
    return _grouped_forward(x2, num_groups, channels, inner, weight, bias, eps, x.shape)


def group_norm_backward(grad_output, cache):
    """dx = (1/σ)·(g - mean(g) - x̂·mean(g·x̂)), g = γ_c·dy, means over each (n, group); dγ_c = Σ dy·x̂, dβ_c = Σ dy.

    The derivation of docs/normalization.md#layernorm-and-groupnorm; γ and β are per channel, so
    their sums run over the batch and the channel's positions. Returns (grad_input, grad_weight,
    grad_bias); the last two (C,), or None.
    """
    return _grouped_backward(grad_output, cache)
