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
#: independent accumulators (b's, or group rows) per task of the reductions ``moments`` and
#: ``*_backward_reduce``: each keeps its own terms in its own order, and the four chains of adds
#: run side by side (the kernels unroll by hand: changing this needs their code changed too)
LANES = 4


# ---------------------------------------------------------------------------- statistics


def _moments(x, mean, var):
    """mean[b] = (1/M) Σ_{a,k} x[a, b, k] and var[b] = (1/M) Σ_{a,k} (x[a, b, k] - mean[b])²,
    M = A·K: the biased variance, in float64.

    x (A, B, K) of either float dtype, C-contiguous; mean, var (B,) float64. BatchNorm passes
    (N, C, L), one b per channel; LayerNorm and GroupNorm pass (1, N·G, K), one b per group row.
    M must be > 0.
    Loop nest: prange over blocks of ``LANES`` consecutive b's (the last block's missing lanes
    repeat its last b, computed twice and written twice with one value); per block two passes,
    each over a, then k, then the block's lanes: the first sums x, the second (x - mean)², each
    lane in its own float64 accumulator, its terms added in a-then-k order as one b alone would.
    Optimisations: a float64 sum is a chain of dependent adds (4 cycles each), which the strict
    order forbids splitting; the ``LANES`` independent chains of different b's fill the adder's
    pipeline instead (on (1, 1024, 784): 0.67 → 0.32 ms, every bit as before). Each lane reads a
    contiguous 1-D row ``x[a, b]`` indexed from 0, which Numba compiles without the
    negative-index wraparound test a ``range(start, stop)`` index needs.
    """
    outer, count_b, inner = x.shape
    count = outer * inner
    last = count_b - 1
    for block in prange((count_b + LANES - 1) // LANES):
        b0 = block * LANES
        b1, b2, b3 = min(b0 + 1, last), min(b0 + 2, last), min(b0 + 3, last)
        t0, t1, t2, t3 = 0.0, 0.0, 0.0, 0.0
        for a in range(outer):
            r0, r1, r2, r3 = x[a, b0], x[a, b1], x[a, b2], x[a, b3]
            for k in range(inner):
                t0 += r0[k]
                t1 += r1[k]
                t2 += r2[k]
                t3 += r3[k]
        c0, c1, c2, c3 = t0 / count, t1 / count, t2 / count, t3 / count
        s0, s1, s2, s3 = 0.0, 0.0, 0.0, 0.0
        for a in range(outer):
            r0, r1, r2, r3 = x[a, b0], x[a, b1], x[a, b2], x[a, b3]
            for k in range(inner):
                d0 = r0[k] - c0  # float64: x promoted to the accumulator's precision
                d1 = r1[k] - c1
                d2 = r2[k] - c2
                d3 = r3[k] - c3
                s0 += d0 * d0
                s1 += d1 * d1
                s2 += d2 * d2
                s3 += d3 * d3
        mean[b3], mean[b2], mean[b1], mean[b0] = c3, c2, c1, c0
        var[b3], var[b2], var[b1], var[b0] = s3 / count, s2 / count, s1 / count, s0 / count


# ---------------------------------------------------------------------------- BatchNorm (N, C, L)


def _batch_norm_forward(x, mean, invstd, weight, bias, out):
    """out[n, c, l] = (x[n, c, l] - mean[c])·invstd[c]·weight[c] + bias[c], in x's dtype.

    x, out (N, C, L), C-contiguous; mean, invstd, weight, bias (C,) of x's dtype (weight ones and
    bias zeros when the layer has none). (x - mean) first, then the scale: x̂ keeps its relative
    accuracy where |mean| >> σ (torch's a·x + b form rounds a·x, of size |x|/σ, instead).
    Loop nest: for L > 1, prange over (n, c) planes, the channel's four values loaded once per
    plane, then l; for L = 1 (BatchNorm1d on (N, C)), prange over n, then c, the channel's values
    read as arrays. Optimisations: the innermost loop runs over a contiguous 1-D slice indexed
    from 0 (Numba then emits no negative-index wraparound test and LLVM vectorizes it; a 2-D
    ``x[n, j]`` index over ``range(start, stop)`` was 7 to 10x slower); every element's
    arithmetic is the same whichever nest runs it.
    """
    batch, channels, length = x.shape
    if length == 1:
        for n in prange(batch):
            row, row_out = x[n].reshape(channels), out[n].reshape(channels)
            for c in range(channels):
                row_out[c] = (row[c] - mean[c]) * invstd[c] * weight[c] + bias[c]
    else:
        for block in prange(batch * channels):
            n = block // channels
            c = block % channels
            centre, scale, gain, shift = mean[c], invstd[c], weight[c], bias[c]
            plane, plane_out = x[n, c], out[n, c]
            for position in range(length):
                plane_out[position] = (plane[position] - centre) * scale * gain + shift


def _batch_norm_backward_reduce(grad_output, x, mean, invstd, sum_dy, sum_dy_xhat):
    """sum_dy[c] = Σ_{n,l} dy[n, c, l] and sum_dy_xhat[c] = Σ_{n,l} dy·x̂, x̂ = (x - mean[c])·invstd[c].

    dy, x (N, C, L) of one dtype, C-contiguous; mean, invstd (C,) of that dtype; sum_dy,
    sum_dy_xhat (C,) float64. These are dβ and dγ, and (divided by N·L) the two means dx needs.
    Loop nest: prange over blocks of ``LANES`` consecutive channels (the last block's missing
    lanes repeat its last channel, written twice with one value); n; l contiguous; the lanes: dy
    and x read together in one pass, dy·(x - mean) formed in the dtype and added to the lane's
    float64 accumulator, in n-then-l order as one channel alone would; each sum times invstd once
    at the end. Optimisations: the lanes' 2·``LANES`` independent chains of float64 adds run side
    by side (one channel's two chains left the adder idle); 1-D rows indexed from 0.
    """
    batch, channels, length = x.shape
    last = channels - 1
    for block in prange((channels + LANES - 1) // LANES):
        c0 = block * LANES
        c1, c2, c3 = min(c0 + 1, last), min(c0 + 2, last), min(c0 + 3, last)
        m0, m1, m2, m3 = mean[c0], mean[c1], mean[c2], mean[c3]
        t0, t1, t2, t3 = 0.0, 0.0, 0.0, 0.0
        p0, p1, p2, p3 = 0.0, 0.0, 0.0, 0.0
        for n in range(batch):
            g0, g1, g2, g3 = grad_output[n, c0], grad_output[n, c1], grad_output[n, c2], grad_output[n, c3]
            r0, r1, r2, r3 = x[n, c0], x[n, c1], x[n, c2], x[n, c3]
            for position in range(length):
                gradient = g0[position]
                t0 += gradient
                p0 += gradient * (r0[position] - m0)
                gradient = g1[position]
                t1 += gradient
                p1 += gradient * (r1[position] - m1)
                gradient = g2[position]
                t2 += gradient
                p2 += gradient * (r2[position] - m2)
                gradient = g3[position]
                t3 += gradient
                p3 += gradient * (r3[position] - m3)
        sum_dy[c3], sum_dy[c2], sum_dy[c1], sum_dy[c0] = t3, t2, t1, t0
        sum_dy_xhat[c3], sum_dy_xhat[c2] = p3 * invstd[c3], p2 * invstd[c2]
        sum_dy_xhat[c1], sum_dy_xhat[c0] = p1 * invstd[c1], p0 * invstd[c0]


def _batch_norm_backward_input(grad_output, x, mean, invstd, weight, mean_dy, mean_dy_xhat, through_statistics,
                               grad_input):
    """dx = weight[c]·invstd[c]·(dy - mean_dy[c] - x̂·mean_dy_xhat[c]), x̂ = (x - mean[c])·invstd[c],
    in the dtype; without ``through_statistics`` (evaluation mode: the statistics are constants)
    dx = weight[c]·invstd[c]·dy and x is not read.

    dy, x, grad_input (N, C, L), C-contiguous; mean, invstd, weight, mean_dy, mean_dy_xhat (C,)
    of x's dtype.
    Loop nest: for L > 1, prange over (n, c) planes, the channel's values loaded once per plane,
    then l; for L = 1, prange over n, then c. Optimisations: ``batch_norm_forward``'s (1-D slices
    indexed from 0, vectorized); the same arithmetic per element in either nest.
    """
    batch, channels, length = x.shape
    if length == 1:
        for n in prange(batch):
            dy, row, dx = grad_output[n].reshape(channels), x[n].reshape(channels), grad_input[n].reshape(channels)
            if through_statistics:
                for c in range(channels):
                    scale = invstd[c]
                    xhat = (row[c] - mean[c]) * scale
                    dx[c] = weight[c] * scale * (dy[c] - mean_dy[c] - xhat * mean_dy_xhat[c])
            else:
                for c in range(channels):
                    dx[c] = weight[c] * invstd[c] * dy[c]
    else:
        for block in prange(batch * channels):
            n = block // channels
            c = block % channels
            scale = invstd[c]
            gain = weight[c] * scale
            dy, dx = grad_output[n, c], grad_input[n, c]
            if through_statistics:
                centre, direct, slope = mean[c], mean_dy[c], mean_dy_xhat[c]
                plane = x[n, c]
                for position in range(length):
                    xhat = (plane[position] - centre) * scale
                    dx[position] = gain * (dy[position] - direct - xhat * slope)
            else:
                for position in range(length):
                    dx[position] = gain * dy[position]


# ---------------------------------------------------------------------------- GroupNorm / LayerNorm (N, J)


def _group_norm_forward(x, mean, rstd, weight, bias, inner, out):
    """out[n, j] = (x[n, j] - mean[n, g])·rstd[n, g]·weight[c] + bias[c], g = j // K, c = j // inner.

    x, out (N, J), C-contiguous, J = G·K; mean, rstd (N, G) of x's dtype; weight, bias
    (J // inner,) of x's dtype. Each group holds whole channels (K is a multiple of ``inner``).
    Loop nest: prange over the N·G group rows; for inner > 1 the group's channels, their weight
    and bias loaded once, then the channel's ``inner`` contiguous elements; for inner = 1
    (LayerNorm) the group's K elements, weight and bias read as arrays beside x.
    Optimisations: the innermost loop runs over contiguous 1-D slices indexed from 0, which LLVM
    vectorizes (the 2-D ``x[n, j]`` over ``range(start, stop)`` it replaced carried a
    negative-index test per element and ran 10x slower); the same arithmetic per element.
    """
    batch, width = x.shape
    groups = mean.shape[1]
    span = width // groups  # K
    per_group = span // inner  # channels in a group
    for row in prange(batch * groups):
        n = row // groups
        g = row % groups
        centre, scale = mean[n, g], rstd[n, g]
        if inner == 1:
            values, values_out = x[n, g * span:(g + 1) * span], out[n, g * span:(g + 1) * span]
            gains, shifts = weight[g * span:(g + 1) * span], bias[g * span:(g + 1) * span]
            for j in range(span):
                values_out[j] = (values[j] - centre) * scale * gains[j] + shifts[j]
        else:
            for c in range(g * per_group, (g + 1) * per_group):
                gain, shift = weight[c], bias[c]
                values, values_out = x[n, c * inner:(c + 1) * inner], out[n, c * inner:(c + 1) * inner]
                for j in range(inner):
                    values_out[j] = (values[j] - centre) * scale * gain + shift


def _group_norm_backward_reduce(grad_output, x, mean, rstd, weight, inner, sum_gdy, sum_gdy_xhat):
    """Per group row (n, g), with the weight folded into the gradient (gdy = weight[c]·dy):
    sum_gdy[n, g] = Σ gdy and sum_gdy_xhat[n, g] = Σ gdy·x̂ over the group's elements.

    dy, x (N, J), C-contiguous; mean, rstd (N, G) and weight (J // inner,) of x's dtype; sum_gdy,
    sum_gdy_xhat (N, G) float64.
    Loop nest: prange over (block of ``LANES`` consecutive n, group g) pairs (the last block's
    missing lanes repeat its last n, written twice with one value); the group's channels (weight
    loaded once); their ``inner`` contiguous elements; the lanes: gdy and gdy·(x - mean) in the
    dtype, each lane summed in its own float64 accumulators in the order one row alone would;
    the second sum times rstd once at the end. Optimisations: the lanes' rows share g, hence the
    weights, and their 2·``LANES`` independent chains of float64 adds run side by side; each lane's
    row taken once as a 1-D array ``x[n]``.
    """
    batch, width = x.shape
    groups = mean.shape[1]
    span = width // groups
    per_group = span // inner
    last = batch - 1
    blocks = (batch + LANES - 1) // LANES
    for task in prange(blocks * groups):
        g = task % groups
        n0 = (task // groups) * LANES
        n1, n2, n3 = min(n0 + 1, last), min(n0 + 2, last), min(n0 + 3, last)
        m0, m1, m2, m3 = mean[n0, g], mean[n1, g], mean[n2, g], mean[n3, g]
        d0, d1, d2, d3 = grad_output[n0], grad_output[n1], grad_output[n2], grad_output[n3]
        r0, r1, r2, r3 = x[n0], x[n1], x[n2], x[n3]
        t0, t1, t2, t3 = 0.0, 0.0, 0.0, 0.0
        p0, p1, p2, p3 = 0.0, 0.0, 0.0, 0.0
        for c in range(g * per_group, (g + 1) * per_group):
            gain = weight[c]
            start = c * inner
            for j in range(start, start + inner):
                gradient = gain * d0[j]
                t0 += gradient
                p0 += gradient * (r0[j] - m0)
                gradient = gain * d1[j]
                t1 += gradient
                p1 += gradient * (r1[j] - m1)
                gradient = gain * d2[j]
                t2 += gradient
                p2 += gradient * (r2[j] - m2)
                gradient = gain * d3[j]
                t3 += gradient
                p3 += gradient * (r3[j] - m3)
        sum_gdy[n3, g], sum_gdy[n2, g], sum_gdy[n1, g], sum_gdy[n0, g] = t3, t2, t1, t0
        sum_gdy_xhat[n3, g], sum_gdy_xhat[n2, g] = p3 * rstd[n3, g], p2 * rstd[n2, g]
        sum_gdy_xhat[n1, g], sum_gdy_xhat[n0, g] = p1 * rstd[n1, g], p0 * rstd[n0, g]


def _group_norm_backward_params(grad_output, x, mean, rstd, sum_dy, sum_dy_xhat):
    """Column sums over chunks of the batch: sum_dy[k, j] = Σ_n dy[n, j] and sum_dy_xhat[k, j] =
    Σ_n dy[n, j]·x̂[n, j] over the rows n of chunk k, x̂[n, j] = (x[n, j] - mean[n, g])·rstd[n, g],
    g = j // K. The caller adds the chunks (axis 0) and folds columns into channels (LayerNorm's
    weight has one per column, GroupNorm's one per L columns).

    dy, x (N, J), C-contiguous; mean, rstd (N, G) of x's dtype; sum_dy, sum_dy_xhat (chunks, J)
    float64, the rows split into ``chunks`` near-equal consecutive runs.
    Loop nest: prange over (row chunk, block of ``COLUMN_BLOCK`` columns) pairs, each owning its
    slice of the outputs (no races; the chunks are fixed by the caller, not by the thread count, so
    every sum is added in the same order by the parallel and serial kernels); then the chunk's rows;
    the groups the block overlaps (their mean and 1/σ loaded once per row); their columns,
    contiguous; dy·x̂ in the dtype, added into the float64 outputs, which stay in L1 across rows.
    Optimisations: each column's sum is its own chain, so the column loop, over contiguous 1-D
    slices indexed from 0, vectorizes across columns (each column's terms still added in n order).
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
        sum_dy[chunk, first:last] = 0.0
        sum_dy_xhat[chunk, first:last] = 0.0
        for n in range(chunk * batch // chunks, (chunk + 1) * batch // chunks):
            for g in range(first // per_group, (last - 1) // per_group + 1):
                centre, scale = mean[n, g], rstd[n, g]
                low, high = max(first, g * per_group), min(last, (g + 1) * per_group)
                dy, values = grad_output[n, low:high], x[n, low:high]
                totals, dots = sum_dy[chunk, low:high], sum_dy_xhat[chunk, low:high]
                for j in range(high - low):
                    gradient = dy[j]
                    totals[j] += gradient
                    dots[j] += gradient * ((values[j] - centre) * scale)


def _group_norm_backward_input(grad_output, x, mean, rstd, weight, inner, mean_gdy, mean_gdy_xhat, grad_input):
    """dx[n, j] = rstd[n, g]·(weight[c]·dy - mean_gdy[n, g] - x̂·mean_gdy_xhat[n, g]), in the dtype.

    dy, x, grad_input (N, J), C-contiguous; mean, rstd, mean_gdy, mean_gdy_xhat (N, G) and weight
    (J // inner,) of x's dtype.
    Loop nest: prange over the N·G group rows, the group's values loaded once; for inner > 1 its
    channels (weight loaded once), then their ``inner`` contiguous elements; for inner = 1
    (LayerNorm) its K elements, the weight read as an array beside x. Optimisations:
    ``group_norm_forward``'s (contiguous 1-D slices indexed from 0, vectorized); the same
    arithmetic per element.
    """
    batch, width = x.shape
    groups = mean.shape[1]
    span = width // groups
    per_group = span // inner
    for row in prange(batch * groups):
        n = row // groups
        g = row % groups
        centre, scale, direct, slope = mean[n, g], rstd[n, g], mean_gdy[n, g], mean_gdy_xhat[n, g]
        if inner == 1:
            dy, values = grad_output[n, g * span:(g + 1) * span], x[n, g * span:(g + 1) * span]
            dx, gains = grad_input[n, g * span:(g + 1) * span], weight[g * span:(g + 1) * span]
            for j in range(span):
                xhat = (values[j] - centre) * scale
                dx[j] = scale * (gains[j] * dy[j] - direct - xhat * slope)
        else:
            for c in range(g * per_group, (g + 1) * per_group):
                gain = weight[c]
                dy, values = grad_output[n, c * inner:(c + 1) * inner], x[n, c * inner:(c + 1) * inner]
                dx = grad_input[n, c * inner:(c + 1) * inner]
                for j in range(inner):
                    xhat = (values[j] - centre) * scale
                    dx[j] = scale * (gain * dy[j] - direct - xhat * slope)


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
