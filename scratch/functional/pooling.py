"""MaxPool2d as a pure forward/backward pair (NCHW).

Derivations: docs/pooling.md. Geometry arguments are pairs ``(h, w)``; the nn layers accept ints
too. Shapes are checked one level up (``scratch.nn``); the kernels trust what they are given.
"""

from __future__ import annotations

import numpy as np

from scratch.functional.conv import _geometry, conv2d_output_size
from scratch.kernels import pooling as kernels


def max_pool2d_forward(x, kernel_size, stride, padding=(0, 0), dilation=(1, 1)):
    """y[n, c, i, j] = max over the (dilated) window; records each max's position.

    x : (N, C, H, W) -> y : (N, C, H_out, W_out) with conv2d_output_size's rule.
    """
    x = np.ascontiguousarray(x)
    out_h = conv2d_output_size(x.shape[2], kernel_size[0], stride[0], padding[0], dilation[0])
    out_w = conv2d_output_size(x.shape[3], kernel_size[1], stride[1], padding[1], dilation[1])
    y = np.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int64)
    kernels.max_pool2d_forward(x, y, argmax, int(kernel_size[0]), int(kernel_size[1]), *_geometry(stride, padding, dilation))
    return y, (argmax, x.shape, x.dtype)


def max_pool2d_backward(grad_output, cache):
    """dx[n, c, argmax] += dy[n, c, i, j]: each gradient goes to the element that won the max."""
    argmax, input_shape, dtype = cache
    grad_input = np.empty(input_shape, dtype=dtype)
    kernels.max_pool2d_backward(np.ascontiguousarray(grad_output), argmax, grad_input)
    return grad_input
