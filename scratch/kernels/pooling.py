"""Numba kernels for 2-D pooling and unpooling in NCHW, beside NumPy references (docs/pooling.md).

Each kernel's outer ``prange`` runs over (n, c) planes, which it alone writes: no two threads
ever write one element. Each exists twice, compiled from one Python function: ``parallel=True``
(the default) and a serial twin (``*_serial``), which tests hold the parallel one against.

The kernels take batched arrays and any window geometry, ``ceil_mode``'s included: the caller
(``scratch.functional.pooling``) sizes the output by torch's rule, and every loop clips its
window to the input, so the partial windows ``ceil_mode`` adds need no special case.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


def _max_pool2d_forward(x, out, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    """Loop nest: prange over (n, c) planes; then (i, j) outputs; then the (p, q) window in
    row-major order, skipping taps outside the input (padding, or past the edge in the partial
    windows of ``ceil_mode``). torch's rule: a value replaces the running max if it is strictly
    greater or NaN, so the first of tied maxima wins and NaN propagates. ``argmax`` holds h·W + v;
    a window with no element inside the input (possible with padding and dilation) gives -inf
    and argmax -1, and no gradient."""
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
    (overlapping windows add up there, in row-major order of the outputs). The plane is the
    thread's own: no races."""
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


def _max_unpool2d_forward(x, indices, out):
    """out[n, c, indices[n, c, k]] = x[n, c, k]; every other element 0: a scatter.

    x and indices (N, C, L), out (N, C, M), planes flattened; every index in [0, M) (the caller
    checks). Loop nest: prange over (n, c) planes, which the thread zeroes and then fills in k
    order, so of two entries sharing an index the later one stays (torch leaves that order
    undefined; from MaxPool2d the two values are equal)."""
    batch, channels, length = x.shape
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        plane = out[n, c]
        plane[:] = 0
        for k in range(length):
            plane[indices[n, c, k]] = x[n, c, k]


def _max_unpool2d_backward(grad_output, indices, grad_input):
    """dx[n, c, k] = dy[n, c, indices[n, c, k]]: the scatter's adjoint, a gather (torch's too).

    grad_output (N, C, M), indices and grad_input (N, C, L), planes flattened; every index in
    [0, M). Loop nest: prange over (n, c) planes, then k; each dx element is written once."""
    batch, channels, length = grad_input.shape
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        for k in range(length):
            grad_input[n, c, k] = grad_output[n, c, indices[n, c, k]]


def _avg_window(i, stride, pad, kernel, size):
    """Output i's window along one axis: (first, end) inside the input, and its extent clipped to
    the padded input [-pad, size + pad) and to the input [0, size) (a ceil_mode window's part
    beyond the padding is no position at all)."""
    start = i * stride - pad
    end = min(start + kernel, size + pad)
    first, last = max(start, 0), min(end, size)
    return first, last, end - start, last - first


def _avg_divisor(rows, cols, rows_in, cols_in, count_include_pad, divisor_override):
    """torch's divisor: divisor_override if not 0, else the padded window's area with
    count_include_pad, the area inside the input without."""
    if divisor_override != 0:
        return divisor_override
    if count_include_pad:
        return rows * cols
    return rows_in * cols_in


_avg_window_jit = njit(cache=True, inline="always")(_avg_window)
_avg_divisor_jit = njit(cache=True, inline="always")(_avg_divisor)


def _avg_pool2d_forward(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad,
                        divisor_override):
    """y[n, c, i, j] = (sum of x over the window's part inside the input) / divisor.

    Loop nest: prange over (n, c) planes; then (i, j) outputs; then the window clipped to the
    input, rows then columns, summed in float64. The window
    starts at i·s - P and is first clipped to the padded extent [-P, H + P) (the part of a
    ``ceil_mode`` window beyond it is no position at all), then to the input [0, H). torch's
    divisor: ``divisor_override`` when it is not 0 (the caller passes 0 for None); else the
    clipped-to-padded area with ``count_include_pad``, the clipped-to-input area without."""
    batch, channels, height, width = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        image = x[n, c]
        for i in range(out_h):
            top_in, bottom_in, rows, rows_in = _avg_window_jit(i, stride_h, pad_h, kernel_h, height)
            for j in range(out_w):
                left_in, right_in, cols, cols_in = _avg_window_jit(j, stride_w, pad_w, kernel_w, width)
                divisor = _avg_divisor_jit(rows, cols, rows_in, cols_in, count_include_pad, divisor_override)
                total = 0.0
                for h in range(top_in, bottom_in):
                    for v in range(left_in, right_in):
                        total += image[h, v]
                out[n, c, i, j] = total / divisor


def _avg_pool2d_backward(grad_output, grad_input, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                         count_include_pad, divisor_override):
    """dx[n, c, h, v] = sum over the windows holding (h, v) of dy[n, c, i, j] / divisor(i, j).

    The forward's windows and divisors (see ``avg_pool2d_forward``). Loop nest: prange over
    (n, c) planes, which the thread zeroes; then (i, j) outputs in row-major order, adding
    dy / divisor to each input element of the clipped window (overlapping windows add up)."""
    batch, channels, out_h, out_w = grad_output.shape
    height, width = grad_input.shape[2], grad_input.shape[3]
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        plane = grad_input[n, c]
        plane[:, :] = 0
        for i in range(out_h):
            top_in, bottom_in, rows, rows_in = _avg_window_jit(i, stride_h, pad_h, kernel_h, height)
            for j in range(out_w):
                left_in, right_in, cols, cols_in = _avg_window_jit(j, stride_w, pad_w, kernel_w, width)
                divisor = _avg_divisor_jit(rows, cols, rows_in, cols_in, count_include_pad, divisor_override)
                share = grad_output[n, c, i, j] / divisor
                for h in range(top_in, bottom_in):
                    for v in range(left_in, right_in):
                        plane[h, v] += share


max_pool2d_forward = njit(parallel=True, cache=True)(_max_pool2d_forward)
max_pool2d_forward_serial = njit(cache=True)(_max_pool2d_forward)
max_pool2d_backward = njit(parallel=True, cache=True)(_max_pool2d_backward)
max_pool2d_backward_serial = njit(cache=True)(_max_pool2d_backward)
max_unpool2d_forward = njit(parallel=True, cache=True)(_max_unpool2d_forward)
max_unpool2d_forward_serial = njit(cache=True)(_max_unpool2d_forward)
max_unpool2d_backward = njit(parallel=True, cache=True)(_max_unpool2d_backward)
max_unpool2d_backward_serial = njit(cache=True)(_max_unpool2d_backward)
avg_pool2d_forward = njit(parallel=True, cache=True)(_avg_pool2d_forward)
avg_pool2d_forward_serial = njit(cache=True)(_avg_pool2d_forward)
avg_pool2d_backward = njit(parallel=True, cache=True)(_avg_pool2d_backward)
avg_pool2d_backward_serial = njit(cache=True)(_avg_pool2d_backward)


# ---------------------------------------------------------------------------- references
# Plain NumPy, tap-major where the kernels are window-major: the input padded far enough for
# every window (``ceil_mode``'s partial ones included), one strided view per window tap, and
# whole-array operations over the views.


def _extended(x, out_shape, kernel, stride, padding, dilation, value, beyond=None):
    """x padded by ``padding`` on each side with ``value``, and on the bottom and right further,
    with ``beyond`` (default ``value``), as far as the last window of ``out_shape`` reaches."""
    beyond = value if beyond is None else beyond
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=value)
    extra = [max(0, (out_shape[2 + a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1
                 - padded.shape[2 + a]) for a in (0, 1)]
    return np.pad(padded, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])), constant_values=beyond)


def _tap(padded, p, q, out_shape, stride, dilation):
    """padded[..., i·s + p·d, j·s + q·d] for every output (i, j): a view."""
    rows = slice(p * dilation[0], p * dilation[0] + stride[0] * (out_shape[2] - 1) + 1, stride[0])
    cols = slice(q * dilation[1], q * dilation[1] + stride[1] * (out_shape[3] - 1) + 1, stride[1])
    return padded[..., rows, cols]


def max_pool2d_forward_reference(x, out_shape, kernel, stride, padding, dilation):
    """Running max over the taps in row-major order, replacing on > or NaN: torch's tie rule.
    ``out_shape`` (N, C, H_out, W_out) carries ``ceil_mode``'s extra windows."""
    n, c, h, w = x.shape
    padded = _extended(x, out_shape, kernel, stride, padding, dilation, -np.inf)
    inside = _extended(np.ones((1, 1, h, w), bool), out_shape, kernel, stride, padding, dilation, False)
    rows = np.arange(padded.shape[2])[:, None] - padding[0]
    cols = np.arange(padded.shape[3])[None, :] - padding[1]
    flat_index = (rows * w + cols)[None, None]
    best = np.full(out_shape, -np.inf, dtype=x.dtype)
    best_index = np.full(out_shape, -1, dtype=np.int64)
    for p in range(kernel[0]):
        for q in range(kernel[1]):
            values = _tap(padded, p, q, out_shape, stride, dilation)
            take = _tap(inside, p, q, out_shape, stride, dilation) & (
                (values > best) | np.isnan(values) | (best_index < 0))
            best = np.where(take, values, best)
            best_index = np.where(take, _tap(flat_index, p, q, out_shape, stride, dilation), best_index)
    return best, best_index


def max_pool2d_backward_reference(grad_output, argmax, input_shape):
    n, c, h, w = input_shape
    grad_input = np.zeros((n, c, h * w), dtype=grad_output.dtype)
    for batch in range(n):
        for channel in range(c):
            index, gradient = argmax[batch, channel].reshape(-1), grad_output[batch, channel].reshape(-1)
            np.add.at(grad_input[batch, channel], index[index >= 0], gradient[index >= 0])
    return grad_input.reshape(input_shape)


def _avg_divisor(input_shape, out_shape, kernel, stride, padding, count_include_pad, divisor_override):
    """Each window's divisor, counted: the window sum of an indicator that is 1 on the input,
    1 (``count_include_pad``) or 0 on the padding, and 0 beyond it (``ceil_mode``'s extra)."""
    if divisor_override is not None:
        return np.asarray(divisor_override)
    ones = np.ones((1, 1, *input_shape[2:]))
    indicator = _extended(ones, out_shape, kernel, stride, padding, (1, 1), float(count_include_pad), 0.0)
    count = np.zeros((1, 1, *out_shape[2:]))
    for p in range(kernel[0]):
        for q in range(kernel[1]):
            count += _tap(indicator, p, q, out_shape, stride, (1, 1))
    return count


def avg_pool2d_forward_reference(x, out_shape, kernel, stride, padding, count_include_pad=True,
                                 divisor_override=None):
    """The window sums of the zero-padded input (one view per tap), over ``_avg_divisor``."""
    padded = _extended(x.astype(np.float64), out_shape, kernel, stride, padding, (1, 1), 0.0)
    total = np.zeros(out_shape)
    for p in range(kernel[0]):
        for q in range(kernel[1]):
            total += _tap(padded, p, q, out_shape, stride, (1, 1))
    divisor = _avg_divisor(x.shape, out_shape, kernel, stride, padding, count_include_pad, divisor_override)
    return (total / divisor).astype(x.dtype)


def avg_pool2d_backward_reference(grad_output, input_shape, kernel, stride, padding, count_include_pad=True,
                                  divisor_override=None):
    """The forward's transpose, tap by tap: dy / divisor added into each tap's view of a padded
    zero array (within one tap the windows hit distinct positions), then the padding cut off."""
    divisor = _avg_divisor(input_shape, grad_output.shape, kernel, stride, padding, count_include_pad,
                           divisor_override)
    share = grad_output.astype(np.float64) / divisor
    padded = _extended(np.zeros(input_shape), grad_output.shape, kernel, stride, padding, (1, 1), 0.0)
    for p in range(kernel[0]):
        for q in range(kernel[1]):
            _tap(padded, p, q, grad_output.shape, stride, (1, 1))[...] += share
    h, w = input_shape[2:]
    return padded[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w].astype(grad_output.dtype)


def max_unpool2d_forward_reference(x, indices, output_size):
    """np.put_along_axis over the flattened planes: (N, C, H, W) -> (N, C, *output_size)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, output_size[0] * output_size[1]), dtype=x.dtype)
    np.put_along_axis(out, indices.reshape(n, c, h * w), x.reshape(n, c, h * w), axis=2)
    return out.reshape(n, c, *output_size)


def max_unpool2d_backward_reference(grad_output, indices):
    """np.take_along_axis over the flattened planes: dx has the indices' shape."""
    n, c, h, w = grad_output.shape
    flat = grad_output.reshape(n, c, h * w)
    return np.take_along_axis(flat, indices.reshape(n, c, indices.shape[2] * indices.shape[3]), axis=2).reshape(indices.shape)
