"""Numba kernels for resampling (``interpolate``, ``Upsample``), beside NumPy references (docs/upsampling.md).

Every mode torch's ``interpolate`` runs without antialiasing is *separable*: along each spatial
axis, output position i reads a few input positions ``index[i, t]`` with weights
``weight[i, t]``, t < ``count[i]``, and a 2-D or 3-D output is the nested sum over the axes,

    y[p, i, j, k] = Σ_a wd[i, a] · Σ_b wh[j, b] · Σ_e ww[k, e] · x[p, id[i, a], ih[j, b], iw[k, e]]

over planes p = (n, c). nearest and nearest-exact are one tap of weight 1, linear modes two,
bicubic four, area a window of ``count`` taps of weight 1/count. The tables come from
``scratch.functional.upsampling``, which computes the indices and weights with torch's own
arithmetic; the kernels hold no policy and know no mode. Every array is 3-D spatial, (D, H, W): a
1-D or 2-D resampling passes one-tap identity tables (index 0, weight 1, count 1) for the axes it
lacks, and 1·v is v exactly, so the result is the one of the lower-dimensional formula.

The backward is the adjoint, a scatter-add: each output's gradient, times the product of its taps'
weights, is added into every input element it read.

Each kernel's outer ``prange`` runs over planes p = (n, c) (the forward over chunks of
``PLANE_CHUNK`` of them), which it alone writes (the forward its output plane, the backward its
gradient plane): no two threads ever write one element, so the
scatter-add needs no atomics. Each exists twice, compiled from one Python function:
``parallel=True`` (the default) and a serial twin (``*_serial``), which tests hold the parallel
one against. Arithmetic is in the arrays' dtype (``error_model="numpy"``; no literal enters a sum:
each sum starts from its first term).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: planes per ``prange`` task of ``interpolate_forward``: the task's two scratch buffers (one plane's
#: width blends, one blended row) are allocated once per task, not once per plane
PLANE_CHUNK = 16


def _distinct_taps(index, count):
    """distinct[i]: output i's ``count[i]`` taps all read different input positions (false where a
    clamp made two taps read one position, as linear's last output does)."""
    size = index.shape[0]
    distinct = np.ones(size, np.bool_)
    for i in range(size):
        for s in range(count[i]):
            for t in range(s + 1, count[i]):
                if index[i, s] == index[i, t]:
                    distinct[i] = False
    return distinct


_distinct_taps_jit = njit(cache=True, error_model="numpy")(_distinct_taps)


def _taps_by_input(index, weight, count, size_in):
    """The axis table inverted: (start, outputs, weights), the taps that read input position w at
    ``start[w]:start[w + 1]``, each as its output i and weight, in (i, tap) order. Loop: a counting
    sort, stable, over the outputs and their taps."""
    start = np.zeros(size_in + 1, np.int64)
    for i in range(index.shape[0]):
        for t in range(count[i]):
            start[index[i, t] + 1] += 1
    for w in range(size_in):
        start[w + 1] += start[w]
    fill = start[:size_in].copy()
    outputs = np.empty(start[size_in], np.int64)
    weights = np.empty(start[size_in], weight.dtype)
    for i in range(index.shape[0]):
        for t in range(count[i]):
            w = index[i, t]
            outputs[fill[w]], weights[fill[w]] = i, weight[i, t]
            fill[w] += 1
    return start, outputs, weights


_taps_by_input_jit = njit(cache=True, error_model="numpy")(_taps_by_input)


def _interpolate_forward(x, out, index_d, weight_d, count_d, index_h, weight_h, count_h, index_w, weight_w, count_w):
    """y[p, i, j, k] = Σ_a wd[i, a] · Σ_b wh[j, b] · Σ_e ww[k, e] · x[p, id[i, a], ih[j, b], iw[k, e]].

    x (P, D, H, W), out (P, D_out, H_out, W_out), C-contiguous, planes p = (n, c) flattened; per
    axis an int64 ``index`` and a ``weight`` of shape (size_out, taps) and an int64 ``count``
    (size_out,), every count >= 1 and every index inside the input (the caller's tables). Each sum
    is started from its first term and added up in tap order, the inner axes first: torch's order
    for its generic kernel (``Interpolate<n>`` in UpSampleKernel.cpp: ``t0·w0 + t1·w1 + ...``).
    Loop nest: prange over chunks of ``PLANE_CHUNK`` planes; per plane two passes. (1) Width: for
    every input row (d, h), each output column k blends the row's taps, r[d, h, k] =
    Σ_e ww[k, e] · x[p, d, h, iw[k, e]], into a scratch plane in the dtype. (2) Height and depth:
    for each output row (i, j), per depth tap a the row blend Σ_b wh[j, b] · r[id[i, a], ih[j, b], :]
    into a scratch row, which times wd[i, a] starts (a = 0) or adds to the output row.
    Optimisations: the width blend of an input row is computed once, not once per output row that
    reads it (every value is the one the nested formula computes, rounded the same way: each
    intermediate is a value of the dtype either way); pass (2) runs over whole contiguous rows
    indexed from 0, which LLVM vectorizes; the scratch buffers are allocated once per chunk.
    """
    planes, depth, height = x.shape[0], x.shape[1], x.shape[2]
    out_d, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    for task in prange((planes + PLANE_CHUNK - 1) // PLANE_CHUNK):
        rows = np.empty((depth * height, out_w), x.dtype)  # one plane's width blends, row d·H + h
        line = np.empty(out_w, x.dtype)  # one height blend
        for p in range(task * PLANE_CHUNK, min(planes, (task + 1) * PLANE_CHUNK)):
            image = x[p]
            for d in range(depth):
                for h in range(height):
                    source, blended = image[d, h], rows[d * height + h]
                    for k in range(out_w):
                        total = source[index_w[k, 0]] * weight_w[k, 0]
                        for e in range(1, count_w[k]):
                            total += source[index_w[k, e]] * weight_w[k, e]
                        blended[k] = total
            for i in range(out_d):
                for j in range(out_h):
                    target = out[p, i, j]
                    for a in range(count_d[i]):
                        base = index_d[i, a] * height
                        source, scale = rows[base + index_h[j, 0]], weight_h[j, 0]
                        for k in range(out_w):
                            line[k] = source[k] * scale
                        for b in range(1, count_h[j]):
                            source, scale = rows[base + index_h[j, b]], weight_h[j, b]
                            for k in range(out_w):
                                line[k] += source[k] * scale
                        scale = weight_d[i, a]
                        if a == 0:
                            for k in range(out_w):
                                target[k] = line[k] * scale
                        else:
                            for k in range(out_w):
                                target[k] += line[k] * scale


def _interpolate_backward(grad_output, grad_input, index_d, weight_d, count_d, index_h, weight_h, count_h, index_w,
                          weight_w, count_w):
    """dx[p, id[i, a], ih[j, b], iw[k, e]] += ((wd[i, a] · wh[j, b]) · ww[k, e]) · dy[p, i, j, k]:
    the forward's adjoint, a scatter-add.

    grad_output (P, D_out, H_out, W_out), grad_input (P, D, H, W), C-contiguous, tables as the
    forward's. Each input element receives its contributions in the order of the outputs
    (i, j, k) in row-major order, then of the taps (a, b, e), depth outermost; the weight
    product is formed first and the gradient multiplied last, torch's order in its linear
    backward (``h0lambda * w0lambda * grad``), so two taps landing on one element add up as
    torch's do.
    Loop nest: prange over planes p, each plane zeroed and then written by its thread alone (no
    races, no atomics); then the output rows (i, j); then, where the depth taps of i read
    different depths and the height taps of j different rows (``_distinct_taps``), the (a, b)
    taps, each input row's target and the weight product wd·wh taken once, then the row's input
    columns w, each gathering its width taps (``_taps_by_input``: the (k, e) that read w, in (k, e)
    order) into a register started from the element's value and stored once; elsewhere (a clamped
    border, where two taps of one output read one row) k, then a, b, e, scattered. Optimisations:
    hoisting (a, b) above k reorders no element's additions, since for one (i, j) distinct (a, b)
    taps write distinct rows; gathering per column adds the same terms to the same element in the
    same (k, e) order, and (v + t1) + t2 in a register is v += t1; v += t2 in memory (every
    intermediate a value of the dtype); so each element still gets its terms in (i, j, k, a, b, e)
    order. It takes the tap loops and row lookups out of the per-output work and the chain of
    store-to-load round trips out of consecutive outputs landing on one column.
    """
    planes = grad_output.shape[0]
    out_d, out_h, out_w = grad_output.shape[1], grad_output.shape[2], grad_output.shape[3]
    width = grad_input.shape[3]
    distinct_d = _distinct_taps_jit(index_d, count_d)
    distinct_h = _distinct_taps_jit(index_h, count_h)
    start, outputs, weights = _taps_by_input_jit(index_w, weight_w, count_w, width)
    for p in prange(planes):
        plane = grad_input[p]
        plane[:, :, :] = 0
        for i in range(out_d):
            for j in range(out_h):
                gradients = grad_output[p, i, j]
                if distinct_d[i] and distinct_h[j]:
                    for a in range(count_d[i]):
                        d = index_d[i, a]
                        for b in range(count_h[j]):
                            target = plane[d, index_h[j, b]]
                            w_dh = weight_d[i, a] * weight_h[j, b]
                            for w in range(width):
                                if start[w] < start[w + 1]:
                                    total = target[w]
                                    for t in range(start[w], start[w + 1]):
                                        total += w_dh * weights[t] * gradients[outputs[t]]
                                    target[w] = total
                else:
                    for k in range(out_w):
                        g = gradients[k]
                        for a in range(count_d[i]):
                            d = index_d[i, a]
                            for b in range(count_h[j]):
                                target = plane[d, index_h[j, b]]
                                w_dh = weight_d[i, a] * weight_h[j, b]
                                for e in range(count_w[k]):
                                    target[index_w[k, e]] += w_dh * weight_w[k, e] * g


interpolate_forward = njit(parallel=True, cache=True, error_model="numpy")(_interpolate_forward)
interpolate_forward_serial = njit(cache=True, error_model="numpy")(_interpolate_forward)
interpolate_backward = njit(parallel=True, cache=True, error_model="numpy")(_interpolate_backward)
interpolate_backward_serial = njit(cache=True, error_model="numpy")(_interpolate_backward)


# ---------------------------------------------------------------------------- references
# Plain NumPy, tap-major where the kernels are output-major: for each combination of taps, one
# fancy-indexed gather of the whole output ``x[:, id[:, a], ih[:, b], iw[:, e]]``, weighted and
# added where the tap exists (t < count), the same nested sums in the same order.


def _tap(table, t):
    """Column t of an axis table: (index, weight, exists), each (size_out,)."""
    index, weight, count = table
    return index[:, t], weight[:, t], t < count


def interpolate_forward_reference(x, tables):
    """The forward as whole-array NumPy: x (P, D, H, W) -> (P, D_out, H_out, W_out).

    ``tables`` is ((index_d, weight_d, count_d), (index_h, ...), (index_w, ...)), as the kernels take them."""
    depth, height, width = tables
    total_d = None
    for a in range(depth[0].shape[1]):
        id_a, wd_a, in_d = _tap(depth, a)
        total_h = None
        for b in range(height[0].shape[1]):
            ih_b, wh_b, in_h = _tap(height, b)
            total_w = None
            for e in range(width[0].shape[1]):
                iw_e, ww_e, in_w = _tap(width, e)
                term = x[:, id_a[:, None, None], ih_b[None, :, None], iw_e[None, None, :]] * ww_e
                total_w = term if total_w is None else np.where(in_w, total_w + term, total_w)
            term = total_w * wh_b[:, None]
            total_h = term if total_h is None else np.where(in_h[:, None], total_h + term, total_h)
        term = total_h * wd_a[:, None, None]
        total_d = term if total_d is None else np.where(in_d[:, None, None], total_d + term, total_d)
    return total_d


def interpolate_backward_reference(grad_output, tables, input_shape):
    """The adjoint as whole-array NumPy: for each combination of taps, ``np.add.at`` of
    ((wd · wh) · ww) · dy into the elements that tap read. grad_output (P, D_out, H_out, W_out) ->
    (P, D, H, W) = ``input_shape``."""
    depth, height, width = tables
    grad_input = np.zeros(input_shape, dtype=grad_output.dtype)
    planes = np.arange(input_shape[0])[:, None, None, None]
    for a in range(depth[0].shape[1]):
        id_a, wd_a, in_d = _tap(depth, a)
        for b in range(height[0].shape[1]):
            ih_b, wh_b, in_h = _tap(height, b)
            for e in range(width[0].shape[1]):
                iw_e, ww_e, in_w = _tap(width, e)
                weight = (wd_a[:, None, None] * wh_b[None, :, None]) * ww_e[None, None, :]
                exists = in_d[:, None, None] & in_h[None, :, None] & in_w[None, None, :]
                contribution = np.where(exists, weight * grad_output, 0)
                np.add.at(grad_input, (planes, id_a[None, :, None, None], ih_b[None, None, :, None],
                                       iw_e[None, None, None, :]), contribution)
    return grad_input
