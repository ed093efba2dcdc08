"""MaxPool2d, MaxUnpool2d and AvgPool2d as pure forward/backward pairs.

Derivations: docs/pooling.md. Inputs are (N, C, H, W) or unbatched (C, H, W) (run as a batch of
one); geometry arguments are pairs ``(h, w)`` (the nn layers accept ints too). Shapes and values
are checked one level up (``scratch.nn``); the kernels trust what they are given.
"""

from __future__ import annotations

import numpy as np

from scratch.functional.conv import _geometry
from scratch.kernels import pooling as kernels


def pool2d_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """torch's pooling_output_shape along one axis.

    floor((size + 2·padding - dilation·(kernel - 1) - 1) / stride) + 1, the convolution's rule;
    with ``ceil_mode`` the division rounds up instead, and a last window that would start in the
    right padding or beyond (at (out - 1)·stride - padding >= size) is dropped again.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_unpool2d_output_size(size, kernel, stride, padding):
    """MaxUnpool2d's default along one axis: (size - 1)·stride - 2·padding + kernel."""
    return (size - 1) * stride - 2 * padding + kernel


def _batched(a: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (1, C, H, W) (a view); a batch as it is."""
    return a if a.ndim == 4 else a[np.newaxis]


def _batched_shape(shape: tuple) -> tuple:
    return tuple(shape) if len(shape) == 4 else (1, *shape)


def _unbatched_like(a: np.ndarray, input_ndim: int) -> np.ndarray:
    """A batch-of-one result back to (C, H, W) for an unbatched input."""
    return a if input_ndim == 4 else a[0]


def _shaped(a: np.ndarray, shape: tuple) -> np.ndarray:
    """``a`` itself when it has ``shape`` already (a batched input's gradient), else reshaped."""
    return a if a.shape == tuple(shape) else a.reshape(shape)


def _pool_shape(x4, kernel_size, stride, padding, dilation, ceil_mode):
    return (*x4.shape[:2], *(pool2d_output_size(x4.shape[2 + a], kernel_size[a], stride[a], padding[a], dilation[a],
                                                ceil_mode) for a in (0, 1)))


# ---------------------------------------------------------------------------- MaxPool2d


def max_pool2d_forward(x, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """y[n, c, i, j] = max over the (dilated) window; records each max's position.

    x : (N, C, H, W) or (C, H, W) -> y : (N, C, H_out, W_out) or (C, H_out, W_out), sized by
    ``pool2d_output_size``. cache[0] is the arg-max, (N, C, H_out, W_out) int64 h·W + v (torch's
    ``return_indices`` format; -1 for a window that holds no input element).
    """
    x = np.ascontiguousarray(x)
    x4 = _batched(x)
    out_shape = _pool_shape(x4, kernel_size, stride, padding, dilation, ceil_mode)
    y = np.empty(out_shape, dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int64)
    kernels.max_pool2d_forward(x4, y, argmax, int(kernel_size[0]), int(kernel_size[1]), *_geometry(stride, padding, dilation))
    return _unbatched_like(y, x.ndim), (argmax, x.shape, x.dtype)


def max_pool2d_backward(grad_output, cache):
    """dx[n, c, argmax] += dy[n, c, i, j]: each gradient goes to the element that won the max."""
    argmax, input_shape, dtype = cache
    grad_input = np.empty(_batched_shape(input_shape), dtype=dtype)
    kernels.max_pool2d_backward(_batched(np.ascontiguousarray(grad_output)), argmax, grad_input)
    return _shaped(grad_input, input_shape)


# ---------------------------------------------------------------------------- MaxUnpool2d


def max_unpool2d_forward(x, indices, output_size):
    """y[n, c, indices[n, c, i, j]] = x[n, c, i, j] in a zero (H_out, W_out) plane: a scatter.

    x, indices : (N, C, H, W) or (C, H, W), indices int64 h·W_out + v, each in [0, H_out·W_out)
    (the caller checks; any index is allowed when the output is empty). output_size : (H_out, W_out).
    Returns y (N, C, H_out, W_out) or (C, H_out, W_out) and the cache for backward.
    """
    x = np.ascontiguousarray(x)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    x4, indices4 = _batched(x), _batched(indices)
    n, c, h, w = x4.shape
    plane = int(output_size[0]) * int(output_size[1])
    out = np.zeros((n, c, plane), dtype=x.dtype)
    if out.size and x4.size:  # torch too returns zeros for an empty output, whatever the indices
        kernels.max_unpool2d_forward(x4.reshape(n, c, h * w), indices4.reshape(n, c, h * w), out)
    y = out.reshape(n, c, int(output_size[0]), int(output_size[1]))
    return _unbatched_like(y, x.ndim), (indices4, x.shape, x.dtype)


def max_unpool2d_backward(grad_output, cache):
    """dx[n, c, i, j] = dy[n, c, indices[n, c, i, j]]: the scatter's adjoint, a gather.

    Every index must lie in the output plane, which must not be empty unless x is (torch's
    backward raises too).
    """
    indices4, input_shape, dtype = cache
    grad4 = _batched(np.ascontiguousarray(grad_output))
    n, c = indices4.shape[:2]
    length = indices4.shape[2] * indices4.shape[3]
    grad_input = np.empty((n, c, length), dtype=dtype)
    if grad_input.size:
        kernels.max_unpool2d_backward(grad4.reshape(n, c, grad4.shape[2] * grad4.shape[3]), indices4.reshape(n, c, length),
                                      grad_input)
    return _shaped(grad_input, input_shape)


# ---------------------------------------------------------------------------- AvgPool2d


def _avg_arguments(kernel_size, stride, padding, count_include_pad, divisor_override):
    return (int(kernel_size[0]), int(kernel_size[1]), int(stride[0]), int(stride[1]), int(padding[0]), int(padding[1]),
            bool(count_include_pad), 0 if divisor_override is None else int(divisor_override))


def avg_pool2d_forward(x, kernel_size, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    """y[n, c, i, j] = (sum of x over the window inside the input) / divisor.

    divisor: ``divisor_override`` if given; else the window's area inside the padded input
    (``count_include_pad``) or inside the input itself; a ``ceil_mode`` window's part beyond the
    padding never counts. x : (N, C, H, W) or (C, H, W) -> y : (N, C, H_out, W_out) or
    (C, H_out, W_out), sized by ``pool2d_output_size`` (dilation 1).
    """
    x = np.ascontiguousarray(x)
    x4 = _batched(x)
    y = np.empty(_pool_shape(x4, kernel_size, stride, padding, (1, 1), ceil_mode), dtype=x.dtype)
    arguments = _avg_arguments(kernel_size, stride, padding, count_include_pad, divisor_override)
    kernels.avg_pool2d_forward(x4, y, *arguments)
    return _unbatched_like(y, x.ndim), (arguments, x.shape, x.dtype)


def avg_pool2d_backward(grad_output, cache):
    """dx[n, c, h, v] = sum over the windows (i, j) holding (h, v) of dy[n, c, i, j] / divisor(i, j)."""
    arguments, input_shape, dtype = cache
    grad_input = np.empty(_batched_shape(input_shape), dtype=dtype)
    kernels.avg_pool2d_backward(_batched(np.ascontiguousarray(grad_output)), grad_input, *arguments)
    return _shaped(grad_input, input_shape)
