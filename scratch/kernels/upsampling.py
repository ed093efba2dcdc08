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

Each kernel's outer ``prange`` runs over planes p = (n, c), which it alone writes (the forward its
output plane, the backward its gradient plane): no two threads ever write one element, so the
scatter-add needs no atomics. Each exists twice, compiled from one Python function:
``parallel=True`` (the default) and a serial twin (``*_serial``), which tests hold the parallel
one against. Arithmetic is in the arrays' dtype (``error_model="numpy"``; no literal enters a sum:
each sum starts from its first term).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


def _blend_w(image, d, h, k, index_w, weight_w, count_w):
    """Σ_e image[d, h, index_w[k, e]] · weight_w[k, e], e < count_w[k], in order of e."""
    total = image[d, h, index_w[k, 0]] * weight_w[k, 0]
    for e in range(1, count_w[k]):
        total += image[d, h, index_w[k, e]] * weight_w[k, e]
    return total


def _blend_hw(image, d, j, k, index_h, weight_h, count_h, index_w, weight_w, count_w):
    """Σ_b (row blend at index_h[j, b]) · weight_h[j, b], b < count_h[j], in order of b."""
    total = _blend_w_jit(image, d, index_h[j, 0], k, index_w, weight_w, count_w) * weight_h[j, 0]
    for b in range(1, count_h[j]):
        total += _blend_w_jit(image, d, index_h[j, b], k, index_w, weight_w, count_w) * weight_h[j, b]
    return total


_blend_w_jit = njit(cache=True, inline="always", error_model="numpy")(_blend_w)
_blend_hw_jit = njit(cache=True, inline="always", error_model="numpy")(_blend_hw)


def _interpolate_forward(x, out, index_d, weight_d, count_d, index_h, weight_h, count_h, index_w, weight_w, count_w):
    """y[p, i, j, k] = Σ_a wd[i, a] · Σ_b wh[j, b] · Σ_e ww[k, e] · x[p, id[i, a], ih[j, b], iw[k, e]].

    x (P, D, H, W), out (P, D_out, H_out, W_out), planes p = (n, c) flattened; per axis an int64
    ``index`` and a ``weight`` of shape (size_out, taps) and an int64 ``count`` (size_out,), every
    count >= 1 and every index inside the input (the caller's tables). Loop nest: prange over
    planes; then (i, j, k) outputs in row-major order; then the taps, depth outermost and width
    innermost, each sum started from its first term and added up in tap order: torch's order for
    its generic kernel (``Interpolate<n>`` in UpSampleKernel.cpp: ``t0·w0 + t1·w1 + ...``, the
    inner axes first). Optimisations: the taps' index and weight rows are looked up once per
    output, never searched; 1-tap axes (nearest, and the axes a lower-dimensional input lacks)
    cost one multiply by 1."""
    planes = x.shape[0]
    out_d, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    for p in prange(planes):
        image = x[p]
        for i in range(out_d):
            for j in range(out_h):
                for k in range(out_w):
                    total = _blend_hw_jit(image, index_d[i, 0], j, k, index_h, weight_h, count_h, index_w, weight_w,
                                          count_w) * weight_d[i, 0]
                    for a in range(1, count_d[i]):
                        total += _blend_hw_jit(image, index_d[i, a], j, k, index_h, weight_h, count_h, index_w, weight_w,
                                               count_w) * weight_d[i, a]
                    out[p, i, j, k] = total


def _interpolate_backward(grad_output, grad_input, index_d, weight_d, count_d, index_h, weight_h, count_h, index_w,
                          weight_w, count_w):
    """dx[p, id[i, a], ih[j, b], iw[k, e]] += ((wd[i, a] · wh[j, b]) · ww[k, e]) · dy[p, i, j, k]:
    the forward's adjoint, a scatter-add.

    grad_output (P, D_out, H_out, W_out), grad_input (P, D, H, W), tables as the forward's. Loop
    nest: prange over planes p, each plane zeroed and then written by its thread alone (no races,
    no atomics); then (i, j, k) outputs in row-major order; then the taps, depth outermost, each
    contribution added where it lands. The weight product is formed first and the gradient
    multiplied last, torch's order in its linear backward (``h0lambda * w0lambda * grad``), and
    the outputs are visited in its order, so two taps landing on one element add up as torch's
    do. Optimisations: the depth and height weights are multiplied once per (a, b), outside the
    innermost loop."""
    planes = grad_output.shape[0]
    out_d, out_h, out_w = grad_output.shape[1], grad_output.shape[2], grad_output.shape[3]
    for p in prange(planes):
        plane = grad_input[p]
        plane[:, :, :] = 0
        for i in range(out_d):
            for j in range(out_h):
                for k in range(out_w):
                    g = grad_output[p, i, j, k]
                    for a in range(count_d[i]):
                        d = index_d[i, a]
                        for b in range(count_h[j]):
                            h = index_h[j, b]
                            w_dh = weight_d[i, a] * weight_h[j, b]
                            for e in range(count_w[k]):
                                plane[d, h, index_w[k, e]] += w_dh * weight_w[k, e] * g


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
