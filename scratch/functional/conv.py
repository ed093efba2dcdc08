"""Conv2d and ConvTranspose2d as pure forward/backward pairs (NCHW).

Derivations: docs/conv.md. Geometry arguments are pairs ``(h, w)``; the nn layers accept ints
too. Shapes are checked one level up (``scratch.nn``); the kernels trust what they are given.
"""

from __future__ import annotations

import numpy as np

from scratch.kernels import conv as kernels


def conv2d_output_size(size, kernel, stride, padding, dilation):
    """torch's rule: floor((size + 2·padding - dilation·(kernel - 1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose2d_output_size(size, kernel, stride, padding, output_padding, dilation):
    """torch's rule: (size - 1)·stride - 2·padding + dilation·(kernel - 1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def batch_last(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C, H, W, N), contiguous: the layout the convolution kernels loop over."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0))


def _geometry(stride, padding, dilation):
    return (int(stride[0]), int(stride[1]), int(padding[0]), int(padding[1]), int(dilation[0]), int(dilation[1]))


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """y = conv(x, w) + b.

    Parameters
    ----------
    x : (N, C_in, H, W)
    weight : (C_out, C_in, kH, kW)
    bias : (C_out,) or None

    Returns
    -------
    y : (N, C_out, H_out, W_out), H_out = conv2d_output_size(H, kH, ...)
    cache
    """
    weight = np.ascontiguousarray(weight)
    out_h = conv2d_output_size(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0])
    out_w = conv2d_output_size(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1])
    x_t = batch_last(x)  # (C_in, H, W, N)
    y = np.empty((x.shape[0], weight.shape[0], out_h, out_w), dtype=x.dtype)  # (N, C_out, H_out, W_out)
    bias_values = np.zeros(weight.shape[0], dtype=x.dtype) if bias is None else bias
    kernels.conv2d_forward(x_t, weight, bias_values, y, *_geometry(stride, padding, dilation))
    return y, (x_t, weight, bias is not None, (stride, padding, dilation))


def conv2d_backward(grad_output, cache, input_grad=True):
    """dx = full correlation of dy with the flipped kernel (strided, dilated); dw = correlation
    of x with dy; db = Σ_{n,i,j} dy. Returns (dx (N, C_in, H, W), dw like weight, db or None);
    dx is None, and not computed, when ``input_grad`` is False."""
    x_t, weight, has_bias, geometry = cache
    dy_t = batch_last(grad_output)  # (C_out, H_out, W_out, N)
    channels, height, width, batch = x_t.shape
    grad_input = None
    if input_grad:
        grad_input = np.empty((batch, channels, height, width), dtype=x_t.dtype)  # (N, C_in, H, W)
        zeros = np.zeros(channels, dtype=x_t.dtype)
        kernels.conv2d_backward_input(dy_t, weight, zeros, grad_input, *_geometry(*geometry))
    grad_weight = np.empty_like(weight)
    kernels.conv2d_backward_weight(x_t, dy_t, grad_weight, *_geometry(*geometry))
    grad_bias = dy_t.sum(axis=(1, 2, 3)) if has_bias else None
    return grad_input, grad_weight, grad_bias


def conv_transpose2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1)):
    """y = conv_transpose(x, w) + b: the input gradient of the convolution with the same weight.

    Parameters
    ----------
    x : (N, C_in, H, W)
    weight : (C_in, C_out, kH, kW), torch's layout for ConvTranspose2d
    bias : (C_out,) or None

    Returns
    -------
    y : (N, C_out, H_out, W_out), H_out = (H - 1)·s - 2·p + d·(kH - 1) + output_padding + 1
    cache
    """
    weight = np.ascontiguousarray(weight)
    out_h = conv_transpose2d_output_size(x.shape[2], weight.shape[2], stride[0], padding[0], output_padding[0], dilation[0])
    out_w = conv_transpose2d_output_size(x.shape[3], weight.shape[3], stride[1], padding[1], output_padding[1], dilation[1])
    x_t = batch_last(x)  # (C_in, H, W, N)
    y = np.empty((x.shape[0], weight.shape[1], out_h, out_w), dtype=x.dtype)  # (N, C_out, H_out, W_out)
    # A convolution mapping y's shape to x's, with weight (C_in, C_out, k, k) = (its C_out, its C_in):
    # its input gradient, fed x as "dy", is the transposed convolution.
    bias_values = np.zeros(weight.shape[1], dtype=x.dtype) if bias is None else bias
    kernels.conv2d_backward_input(x_t, weight, bias_values, y, *_geometry(stride, padding, dilation))
    return y, (x_t, weight, bias is not None, (stride, padding, dilation))


def conv_transpose2d_backward(grad_output, cache, input_grad=True):
    """dx = conv(dy, w) (the convolution's forward); dw = the convolution's weight gradient with
    the roles of input and output gradient swapped; db = Σ_{n,i,j} dy. dx is None, and not
    computed, when ``input_grad`` is False."""
    x_t, weight, has_bias, geometry = cache
    dy_t = batch_last(grad_output)  # (C_out, H_out, W_out, N)
    channels, height, width, batch = x_t.shape
    grad_input = None
    if input_grad:
        grad_input = np.empty((batch, channels, height, width), dtype=x_t.dtype)  # (N, C_in, H, W)
        zeros = np.zeros(weight.shape[0], dtype=x_t.dtype)
        kernels.conv2d_forward(dy_t, weight, zeros, grad_input, *_geometry(*geometry))
    grad_weight = np.empty_like(weight)
    kernels.conv2d_backward_weight(dy_t, x_t, grad_weight, *_geometry(*geometry))
    grad_bias = dy_t.sum(axis=(1, 2, 3)) if has_bias else None
    return grad_input, grad_weight, grad_bias
