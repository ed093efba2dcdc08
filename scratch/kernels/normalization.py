"""Numba kernels for BatchNorm, LayerNorm and GroupNorm, beside NumPy references (docs/normalization.md).

Two layouts, chosen one level up (``scratch.functional.normalization``), which also allocates the
outputs, picks the dtypes and holds all policy (running statistics, momentum, eps, which mode):

- **per channel** (BatchNorm): x viewed as (N, C, L), L the product of the axes after C (1 for
  an (N, C) input). Channel c's statistics run over its N·L elements: N contiguous runs of L.
- **per group row** (GroupNorm, and LayerNorm as its special case): x viewed as (N, J), each row
  split into G groups of K = J / G contiguous elements, one (mean, 1/σ) per (n, g). The affine
  weight and bias are indexed by c = j // L ("inner" L): GroupNorm's per-channel parameters on
  (N, C·L) with L the spatial size; LayerNorm is G = 1 and L = 1 on (rows, D), a weight per
  element of the normalized shape.

Precision. Element-wise arithmetic stays in the arrays' dtype (the per-channel or per-group mean,
1/σ, weight and bias come in as arrays of x's dtype; no float64 literal promotes a float32 loop).
Every *sum* (the statistics and the backward's reductions) is accumulated in a float64 scalar and
written to float64 outputs. For float32 this is what torch's CPU batch norm does
(``batch_norm_cpu_collect_stats_contiguous_impl``: ``acc_type<float, false>`` is double, a
two-pass mean then Σ(x - mean)²): a float32 running sum over M terms errs by up to ~M·u relative
(u = 6e-8), 6e-3 for a 10^5-element channel, whereas float64 keeps it at ~M·1e-16, so the
statistic comes out correctly rounded for any realistic M. The variance is two-pass, Σ(x - mean)²
about the mean already computed, never E[x²] - E[x]², which cancels catastrophically when
|mean| >> σ (a float32 channel at mean 1000 and σ 1 would lose every digit). float64 inputs
accumulate in float64 as they are, as torch's do.

Parallel kernels. Each exists twice, compiled from one Python function: ``parallel=True`` (the
default) and a serial twin (``*_serial``), which tests hold the parallel one against bit for bit.
Every ``prange`` iteration writes outputs no other iteration writes and sums its terms in a fixed
order, so the parallel and serial results are identical whatever the thread count. All kernels
are compiled with ``cache=True`` and ``error_model="numpy"`` (0/0 gives NaN, as NumPy and torch
do, e.g. for a negative ``eps`` that makes var + eps < 0 one level up).

The ``*_reference`` functions compute the same formulas with whole-array NumPy expressions.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: columns per ``prange`` task of ``group_norm_backward_params``: one block's running sums (two
#: float64 per column) stay in L1 while the rows stream past
COLUMN_BLOCK = 256
#: at most this many row chunks in ``group_norm_backward_params`` (the caller's choice, bounded by
#: the batch): enough tasks for the threads when the columns are few (LayerNorm over one image
#: row), while the partial sums to add afterwards stay small (chunks × J)
ROW_CHUNKS = 8


# ---------------------------------------------------------------------------- statistics


def _moments(x, mean, var):
    """mean[b] = (1/M) Σ_{a,k} x[a, b, k] and var[b] = (1/M) Σ_{a,k} (x[a, b, k] - mean[b])²,
    M = A·K: the biased variance, in float64.

    x (A, B, K) of either float dtype; mean, var (B,) float64. BatchNorm passes (N, C, L), one
    b per channel; LayerNorm and GroupNorm pass (1, N·G, K), one b per group row. M must be > 0.
    Loop nest: prange over b; per b two passes, each over a then k (K contiguous): the first sums
    x, the second (x - mean)², each in one float64 accumulator.
    """
    outer, count_b, inner = x.shape
    count = outer * inner
    for b in prange(count_b):
        total = 0.0
        for a in range(outer):
            for k in range(inner):
                total += x[a, b, k]
        centre = total / count
        squares = 0.0
        for a in range(outer):
            for k in range(inner):
                deviation = x[a, b, k] - centre  # float64: x promoted to the accumulator's precision
                squares += deviation * deviation
        mean[b] = centre
        var[b] = squares / count


# ---------------------------------------------------------------------------- BatchNorm (N, C, L)


def _batch_norm_forward(x, mean, invstd, weight, bias, out):
    """out[n, c, l] = (x[n, c, l] - mean[c])·invstd[c]·weight[c] + bias[c], in x's dtype.

    x, out (N, C, L); mean, invstd, weight, bias (C,) of x's dtype (weight ones and bias zeros
    when the layer has none). (x - mean) first, then the scale: x̂ keeps its relative accuracy
    where |mean| >> σ (torch's a·x + b form rounds a·x, of size |x|/σ, instead).
    Loop nest: prange over (n, c) planes; the channel's four values loaded once per plane; l
    contiguous.
    """
    batch, channels, length = x.shape
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        centre, scale, gain, shift = mean[c], invstd[c], weight[c], bias[c]
        for position in range(length):
            out[n, c, position] = (x[n, c, position] - centre) * scale * gain + shift


def _batch_norm_backward_reduce(grad_output, x, mean, invstd, sum_dy, sum_dy_xhat):
    """sum_dy[c] = Σ_{n,l} dy[n, c, l] and sum_dy_xhat[c] = Σ_{n,l} dy·x̂, x̂ = (x - mean[c])·invstd[c].

    dy, x (N, C, L) of one dtype; mean, invstd (C,) of that dtype; sum_dy, sum_dy_xhat (C,)
    float64. These are dβ and dγ, and (divided by N·L) the two means dx needs.
    Loop nest: prange over c; n; l contiguous; dy and x read together in one pass, dy·(x - mean)
    formed in the dtype and added to a float64 accumulator; the sum times invstd once at the end.
    """
    batch, channels, length = x.shape
    for c in prange(channels):
        centre = mean[c]
        total = 0.0
        dot = 0.0
        for n in range(batch):
            for position in range(length):
                gradient = grad_output[n, c, position]
                total += gradient
                dot += gradient * (x[n, c, position] - centre)
        sum_dy[c] = total
        sum_dy_xhat[c] = dot * invstd[c]


def _batch_norm_backward_input(grad_output, x, mean, invstd, weight, mean_dy, mean_dy_xhat, through_statistics,
                               grad_input):
    """dx = weight[c]·invstd[c]·(dy - mean_dy[c] - x̂·mean_dy_xhat[c]), x̂ = (x - mean[c])·invstd[c],
    in the dtype; without ``through_statistics`` (evaluation mode: the statistics are constants)
    dx = weight[c]·invstd[c]·dy and x is not read.

    dy, x, grad_input (N, C, L); mean, invstd, weight, mean_dy, mean_dy_xhat (C,) of x's dtype.
    Loop nest: prange over (n, c) planes; the channel's values loaded once per plane; l contiguous.
    """
    batch, channels, length = x.shape
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        scale = invstd[c]
        gain = weight[c] * scale
        if through_statistics:
            centre, direct, slope = mean[c], mean_dy[c], mean_dy_xhat[c]
            for position in range(length):
                xhat = (x[n, c, position] - centre) * scale
                grad_input[n, c, position] = gain * (grad_output[n, c, position] - direct - xhat * slope)
        else:
            for position in range(length):
                grad_input[n, c, position] = gain * grad_output[n, c, position]


# ---------------------------------------------------------------------------- GroupNorm / LayerNorm (N, J)


def _group_norm_forward(x, mean, rstd, weight, bias, inner, out):
    """out[n, j] = (x[n, j] - mean[n, g])·rstd[n, g]·weight[c] + bias[c], g = j // K, c = j // inner.

    x, out (N, J), J = G·K; mean, rstd (N, G) of x's dtype; weight, bias (J // inner,) of x's
    dtype. Each group holds whole channels (K is a multiple of ``inner``).
    Loop nest: prange over the N·G group rows; then the group's channels, their weight and bias
    loaded once; then the channel's ``inner`` contiguous elements.
    """
    batch, width = x.shape
    groups = mean.shape[1]
    per_group = width // groups // inner  # channels in a group
    for row in prange(batch * groups):
        n = row // groups
        g = row % groups
        centre, scale = mean[n, g], rstd[n, g]
        for c in range(g * per_group, (g + 1) * per_group):
            gain, shift = weight[c], bias[c]
            for j in range(c * inner, (c + 1) * inner):
                out[n, j] = (x[n, j] - centre) * scale * gain + shift


def _group_norm_backward_reduce(grad_output, x, mean, rstd, weight, inner, sum_gdy, sum_gdy_xhat):
    """Per group row (n, g), with the weight folded into the gradient (gdy = weight[c]·dy):
    sum_gdy[n, g] = Σ gdy and sum_gdy_xhat[n, g] = Σ gdy·x̂ over the group's elements.

    dy, x (N, J); mean, rstd (N, G) and weight (J // inner,) of x's dtype; sum_gdy,
    sum_gdy_xhat (N, G) float64.
    Loop nest: prange over the N·G group rows; the group's channels (weight loaded once); their
    ``inner`` contiguous elements; gdy and gdy·(x - mean) in the dtype, summed in float64; the
    second sum times rstd once at the end.
    """
    batch, width = x.shape
    groups = mean.shape[1]
    per_group = width // groups // inner
    for row in prange(batch * groups):
        n = row // groups
        g = row % groups
        centre = mean[n, g]
        total = 0.0
        dot = 0.0
        for c in range(g * per_group, (g + 1) * per_group):
            gain = weight[c]
            for j in range(c * inner, (c + 1) * inner):
                gradient = gain * grad_output[n, j]
                total += gradient
                dot += gradient * (x[n, j] - centre)
        sum_gdy[n, g] = total
        sum_gdy_xhat[n, g] = dot * rstd[n, g]


def _group_norm_backward_params(grad_output, x, mean, rstd, sum_dy, sum_dy_xhat):
    """Column sums over chunks of the batch: sum_dy[k, j] = Σ_n dy[n, j] and sum_dy_xhat[k, j] =
    Σ_n dy[n, j]·x̂[n, j] over the rows n of chunk k, x̂[n, j] = (x[n, j] - mean[n, g])·rstd[n, g],
    g = j // K. The caller adds the chunks (axis 0) and folds columns into channels (LayerNorm's
    weight has one per column, GroupNorm's one per L columns).

    dy, x (N, J); mean, rstd (N, G) of x's dtype; sum_dy, sum_dy_xhat (chunks, J) float64, the
    rows split into ``chunks`` near-equal consecutive runs.
    Loop nest: prange over (row chunk, block of ``COLUMN_BLOCK`` columns) pairs, each owning its
    slice of the outputs (no races; the chunks are fixed by the caller, not by the thread count, so
    every sum is added in the same order by the parallel and serial kernels); then the chunk's rows;
    the groups the block overlaps (their mean and 1/σ loaded once per row); their columns,
    contiguous; dy·x̂ in the dtype, added into the float64 outputs, which stay in L1 across rows.
    """
    batch, width = x.shape
    groups = mean.shape[1]
    per_group = width // groups
    chunks = sum_dy.shape[0]
    blocks = (width + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    for task in prange(chunks * blocks):
        chunk = task // blocks
        first = (task % blocks) * COLUMN_BLOCK
        last = min(first + COLUMN_BLOCK, width)
        for j in range(first, last):
            sum_dy[chunk, j] = 0.0
            sum_dy_xhat[chunk, j] = 0.0
        for n in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
            for g in range(first // per_group, (last - 1) // per_group + 1):
                centre, scale = mean[n, g], rstd[n, g]
                for j in range(max(first, g * per_group), min(last, (g + 1) * per_group)):
                    gradient = grad_output[n, j]
                    sum_dy[chunk, j] += gradient
                    sum_dy_xhat[chunk, j] += gradient * ((x[n, j] - centre) * scale)


def _group_norm_backward_input(grad_output, x, mean, rstd, weight, inner, mean_gdy, mean_gdy_xhat, grad_input):
    """dx[n, j] = rstd[n, g]·(weight[c]·dy - mean_gdy[n, g] - x̂·mean_gdy_xhat[n, g]), in the dtype.

    dy, x, grad_input (N, J); mean, rstd, mean_gdy, mean_gdy_xhat (N, G) and weight
    (J // inner,) of x's dtype.
    Loop nest: prange over the N·G group rows, the group's values loaded once; its channels
    (weight loaded once); their ``inner`` contiguous elements.
    """
    batch, width = x.shape
    groups = mean.shape[1]
    per_group = width // groups // inner
    for row in prange(batch * groups):
        n = row // groups
        g = row % groups
        centre, scale, direct, slope = mean[n, g], rstd[n, g], mean_gdy[n, g], mean_gdy_xhat[n, g]
        for c in range(g * per_group, (g + 1) * per_group):
            gain = weight[c]
            for j in range(c * inner, (c + 1) * inner):
                xhat = (x[n, j] - centre) * scale
                grad_input[n, j] = scale * (gain * grad_output[n, j] - direct - xhat * slope)


def _compiled(function):
    """(parallel, serial) kernels from one Python function."""
    return (njit(parallel=True, cache=True, error_model="numpy")(function),
            njit(cache=True, error_model="numpy")(function))


moments, moments_serial = _compiled(_moments)
batch_norm_forward, batch_norm_forward_serial = _compiled(_batch_norm_forward)
batch_norm_backward_reduce, batch_norm_backward_reduce_serial = _compiled(_batch_norm_backward_reduce)
batch_norm_backward_input, batch_norm_backward_input_serial = _compiled(_batch_norm_backward_input)
group_norm_forward, group_norm_forward_serial = _compiled(_group_norm_forward)
group_norm_backward_reduce, group_norm_backward_reduce_serial = _compiled(_group_norm_backward_reduce)
group_norm_backward_params, group_norm_backward_params_serial = _compiled(_group_norm_backward_params)
group_norm_backward_input, group_norm_backward_input_serial = _compiled(_group_norm_backward_input)


# ---------------------------------------------------------------------------- references
# Plain NumPy over whole arrays, in float64 where the kernels accumulate in float64 and in the
# dtype where they compute element-wise; broadcasting instead of loops.


def moments_reference(x):
    """(mean, var) per b of x (A, B, K), float64, two-pass."""
    wide = x.astype(np.float64)
    mean = wide.mean(axis=(0, 2))
    var = ((wide - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    return mean, var


def batch_norm_forward_reference(x, mean, invstd, weight, bias):
    per_channel = (slice(None), None)  # (C,) -> (C, 1): broadcasts over (N, C, L)
    return ((x - mean[per_channel]) * invstd[per_channel] * weight[per_channel] + bias[per_channel]).astype(x.dtype)


def batch_norm_backward_reduce_reference(grad_output, x, mean, invstd):
    """(Σ dy, Σ dy·x̂) per channel, float64."""
    dy = grad_output.astype(np.float64)
    xhat = (x.astype(np.float64) - mean[:, None]) * invstd.astype(np.float64)[:, None]
    return dy.sum(axis=(0, 2)), (dy * xhat).sum(axis=(0, 2))


def batch_norm_backward_input_reference(grad_output, x, mean, invstd, weight, mean_dy, mean_dy_xhat,
                                        through_statistics):
    per_channel = (slice(None), None)
    gain = (weight * invstd)[per_channel]
    if not through_statistics:
        return (gain * grad_output).astype(x.dtype)
    xhat = (x - mean[per_channel]) * invstd[per_channel]
    return (gain * (grad_output - mean_dy[per_channel] - xhat * mean_dy_xhat[per_channel])).astype(x.dtype)


def _by_group(a, groups):
    """(N, J) -> (N, G, K): each group row its own axis (a view)."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups)


def _per_column(parameter, inner):
    """A (J // inner,) parameter as one value per column j: parameter[j // inner]."""
    return np.repeat(parameter, inner)


def group_norm_forward_reference(x, mean, rstd, weight, bias, inner):
    groups = mean.shape[1]
    xhat = ((_by_group(x, groups) - mean[..., None]) * rstd[..., None]).reshape(x.shape)
    return (xhat * _per_column(weight, inner) + _per_column(bias, inner)).astype(x.dtype)


def _xhat_wide(x, mean, rstd):
    """x̂ (N, J) in float64."""
    groups = mean.shape[1]
    wide = _by_group(x.astype(np.float64), groups)
    return ((wide - mean.astype(np.float64)[..., None]) * rstd.astype(np.float64)[..., None]).reshape(x.shape)


def group_norm_backward_reduce_reference(grad_output, x, mean, rstd, weight, inner):
    """(Σ w·dy, Σ w·dy·x̂) per group row (N, G), float64."""
    groups = mean.shape[1]
    gdy = grad_output.astype(np.float64) * _per_column(weight, inner).astype(np.float64)
    return _by_group(gdy, groups).sum(axis=2), _by_group(gdy * _xhat_wide(x, mean, rstd), groups).sum(axis=2)


def group_norm_backward_params_reference(grad_output, x, mean, rstd):
    """(Σ_n dy, Σ_n dy·x̂) per column (J,), float64: the kernel's outputs summed over its chunks."""
    dy = grad_output.astype(np.float64)
    return dy.sum(axis=0), (dy * _xhat_wide(x, mean, rstd)).sum(axis=0)


def group_norm_backward_input_reference(grad_output, x, mean, rstd, weight, inner, mean_gdy, mean_gdy_xhat):
    groups = mean.shape[1]
    gdy = _by_group(grad_output * _per_column(weight, inner), groups)
    xhat = (_by_group(x, groups) - mean[..., None]) * rstd[..., None]
    dx = rstd[..., None] * (gdy - mean_gdy[..., None] - xhat * mean_gdy_xhat[..., None])
    return dx.reshape(x.shape).astype(x.dtype)
