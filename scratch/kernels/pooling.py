"""Numba kernels for 2-D pooling in NCHW, beside NumPy references (docs/pooling.md).

Each kernel's outer ``prange`` runs over (n, c) planes, which it alone writes: no two threads
ever write one element. Each exists twice, compiled from one Python function: ``parallel=True``
(the default) and a serial twin (``*_serial``), which tests hold the parallel one against.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from scratch.kernels.conv import _pad, _tap_view


def _max_pool2d_forward(x, out, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    """Loop nest: prange over (n, c) planes; then (i, j) outputs; then the (p, q) window in
    row-major order. torch's rule: a value replaces the running max if it is strictly greater
    or NaN, so the first of tied maxima wins and NaN propagates. ``argmax`` holds h·W + v; a
    window with no element inside the input (possible with padding and dilation) gives -inf and
    argmax -1, and no gradient (torch gives -inf too, and drops its gradient)."""
    batch, channels, height, width = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        image = x[n, c]
        for i in range(out_h):
            for j in range(out_w):
                best = -np.inf
                best_index = -1
                for p in range(kernel_h):
                    h = i * stride_h - pad_h + p * dil_h
                    if h < 0 or h >= height:
                        continue
                    for q in range(kernel_w):
                        v = j * stride_w - pad_w + q * dil_w
                        if v < 0 or v >= width:
                            continue
                        value = image[h, v]
                        if value > best or np.isnan(value) or best_index < 0:
                            best = value
                            best_index = h * width + v
                out[n, c, i, j] = best
                argmax[n, c, i, j] = best_index


def _max_pool2d_backward(grad_output, argmax, grad_input):
    """Loop nest: prange over (n, c) planes; each output's gradient goes to its recorded arg-max
    (overlapping windows add up there). The plane is the thread's own: no races."""
    batch, channels, out_h, out_w = grad_output.shape
    width = grad_input.shape[3]
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        plane = grad_input[n, c]
        plane[:, :] = 0
        for i in range(out_h):
            for j in range(out_w):
                index = argmax[n, c, i, j]
                if index >= 0:
                    plane[index // width, index % width] += grad_output[n, c, i, j]


max_pool2d_forward = njit(parallel=True, cache=True)(_max_pool2d_forward)
max_pool2d_forward_serial = njit(cache=True)(_max_pool2d_forward)
max_pool2d_backward = njit(parallel=True, cache=True)(_max_pool2d_backward)
max_pool2d_backward_serial = njit(cache=True)(_max_pool2d_backward)


# ---------------------------------------------------------------------------- references
# Plain NumPy: one strided view of the padded input per window tap, a vectorised running max.


def max_pool2d_forward_reference(x, out_shape, kernel, stride, padding, dilation):
    """Running max over the taps in row-major order, replacing on > or NaN: torch's tie rule."""
    padded = _pad(x, padding, value=-np.inf)
    n, c, h, w = x.shape
    (pad_h, pad_w) = padding
    rows, cols = np.meshgrid(np.arange(h + 2 * pad_h) - pad_h, np.arange(w + 2 * pad_w) - pad_w, indexing="ij")
    flat_index = np.broadcast_to(rows * w + cols, padded.shape)
    best = np.full(out_shape, -np.inf, dtype=x.dtype)
    best_index = np.full(out_shape, -1, dtype=np.int64)
    for p in range(kernel[0]):
        for q in range(kernel[1]):
            values = _tap_view(padded, p, q, out_shape[2], out_shape[3], stride, dilation)
            indices = _tap_view(flat_index, p, q, out_shape[2], out_shape[3], stride, dilation)
            inside = _tap_view(np.broadcast_to(_pad(np.zeros_like(x), padding, 1.0) == 0, padded.shape),
                               p, q, out_shape[2], out_shape[3], stride, dilation)
            take = inside & ((values > best) | np.isnan(values) | (best_index < 0))
            best = np.where(take, values, best)
            best_index = np.where(take, indices, best_index)
    return best, best_index


def max_pool2d_backward_reference(grad_output, argmax, input_shape):
    n, c, h, w = input_shape
    grad_input = np.zeros((n, c, h * w), dtype=grad_output.dtype)
    for batch in range(n):
        for channel in range(c):
            index, gradient = argmax[batch, channel].reshape(-1), grad_output[batch, channel].reshape(-1)
            np.add.at(grad_input[batch, channel], index[index >= 0], gradient[index >= 0])
    return grad_input.reshape(input_shape)
