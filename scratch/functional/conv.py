"""Conv2d and ConvTranspose2d as pure forward/backward pairs (NCHW), with torch's semantics.

Derivations: docs/conv.md. Geometry arguments are pairs ``(h, w)``; the nn layers accept ints
too. ``padding`` is a pair (the same on both sides of each axis), torch's ``"valid"`` or
``"same"``, or ``((top, bottom), (left, right))``. An input may be batched (N, C, H, W) or, as in
torch, unbatched (C, H, W); N may be 0. Shapes are checked one level up (``scratch.nn``); the
kernels trust what they are given.
"""

from __future__ import annotations

import numpy as np

from scratch.kernels import conv as kernels
from scratch.workspace import Workspace

#: torch's padding modes for Conv2d; all but "zeros" pad by a gather (``pad_forward``)
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def conv2d_output_size(size, kernel, stride, padding, dilation):
    """torch's rule: floor((size + 2·padding - dilation·(kernel - 1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose2d_output_size(size, kernel, stride, padding, output_padding, dilation):
    """torch's rule: (size - 1)·stride - 2·padding + dilation·(kernel - 1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def same_padding(kernel, dilation):
    """(before, after) that keep a stride-1 output the input's size: d·(k - 1) in all, the odd
    one at the end (bottom, right), as torch pads for ``padding="same"``."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def padding_sides(padding, kernel_size, dilation):
    """((top, bottom), (left, right)) of a ``padding`` in any of the forms this module takes."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            return tuple(same_padding(int(k), int(d)) for k, d in zip(kernel_size, dilation))
        raise ValueError(f"padding must be 'same', 'valid' or numbers, got {padding!r}")
    return tuple((int(p), int(p)) if np.ndim(p) == 0 else (int(p[0]), int(p[1])) for p in padding)


def batch_last(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C, H, W, N), contiguous: the layout the convolution kernels loop over."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0))


def _geometry(stride, padding, dilation):
    """The six ints the kernels take: stride, (top, left) padding and dilation, (h, w) each
    (``scratch.functional.pooling`` passes its windows' geometry the same way)."""
    return (int(stride[0]), int(stride[1]), int(padding[0]), int(padding[1]), int(dilation[0]), int(dilation[1]))


# ---------------------------------------------------------------------------- two paths: direct and GEMM
# Every convolution below runs one of two implementations of the same three products, chosen per
# layer shape by ``conv_path`` (the measurements behind the rule: docs/speed.md):
# - "direct": the kernels of ``scratch.kernels.conv`` (batch innermost, fast for a few channels);
# - "gemm": im2col into a workspace, then one BLAS matmul per group (``np.matmul``), and for the
#   input gradient a matmul into columns then col2im (docs/conv.md, "The GEMM path").

#: None lets ``conv_path`` choose per layer; "direct" or "gemm" forces that path everywhere (tests).
FORCE_PATH: str | None = None

# The GEMM path's temporaries (columns, products) never leave the call that fills them: one per
# shape, reused from call to call (each layer of a model has its own shapes).
_WORKSPACE = Workspace()


# At most this many examples, every convolution takes the GEMM path: the direct kernels' innermost
# loop runs over the batch, and so short a loop leaves their vector units idle (docs/speed.md).
SMALL_BATCH = 8


def conv_path(weight_shape, groups=1, batch=None) -> str:
    """"direct" or "gemm" for a convolution whose weight is (C_out, C_in / groups, kH, kW) (a
    transposed convolution passes its own weight, (C_in, C_out / groups, kH, kW): the same roles),
    on a batch of ``batch`` examples (None: any).

    The rule (measured, docs/speed.md): GEMM when each group's product is wide on both sides,
    C_out / groups >= 32 and (C_in / groups)·kH·kW >= 128, or when the batch has at most
    SMALL_BATCH examples; the direct kernels otherwise. ``FORCE_PATH`` overrides it.
    """
    if FORCE_PATH is not None:
        return FORCE_PATH
    channels_out, channels_in, kernel_h, kernel_w = weight_shape
    wide = channels_out // groups >= 32 and channels_in * kernel_h * kernel_w >= 128
    small = batch is not None and batch <= SMALL_BATCH
    return "gemm" if wide or small else "direct"


def _columns(name, channels, kernel_h, kernel_w, out_h, out_w, batch, dtype):
    shape = (channels, kernel_h, kernel_w, out_h, out_w, batch)
    return _WORKSPACE.get(f"{name}{shape}", shape, dtype)


def _gemm_forward(x, weight, bias, out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups):
    """``kernels.conv2d_forward`` (same arguments) as y_g = W_g · im2col(x)_g per group, then
    transposed into the NCHW ``out`` with the bias added."""
    channels, _, _, batch = x.shape
    channels_out, per_group, kernel_h, kernel_w = weight.shape
    out_h, out_w = out.shape[2], out.shape[3]
    size, width = per_group * kernel_h * kernel_w, out_h * out_w * batch
    cols = _columns("cols", channels, kernel_h, kernel_w, out_h, out_w, batch, x.dtype)
    kernels.im2col(x, cols, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    products = _WORKSPACE.get(f"products{(channels_out, width)}", (channels_out, width), x.dtype)
    np.matmul(weight.reshape(groups, channels_out // groups, size), cols.reshape(groups, size, width),
              out=products.reshape(groups, channels_out // groups, width))
    np.add(products.reshape(channels_out, out_h, out_w, batch).transpose(3, 0, 1, 2), bias[:, None, None], out=out)


def _gemm_backward_input(grad_output, weight, bias, grad_input, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups):
    """``kernels.conv2d_backward_input`` (same arguments) as cols_g = W_gᵀ · dy_g per group, then
    col2im (the scatter-add, seeded with ``bias``)."""
    channels_out, out_h, out_w, batch = grad_output.shape
    _, per_group, kernel_h, kernel_w = weight.shape
    size, width = per_group * kernel_h * kernel_w, out_h * out_w * batch
    cols = _columns("cols", grad_input.shape[1], kernel_h, kernel_w, out_h, out_w, batch, grad_output.dtype)
    np.matmul(weight.reshape(groups, channels_out // groups, size).transpose(0, 2, 1),
              grad_output.reshape(groups, channels_out // groups, width), out=cols.reshape(groups, size, width))
    kernels.col2im(cols, bias, grad_input, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)


def _gemm_backward_weight(x, grad_output, grad_weight, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups):
    """``kernels.conv2d_backward_weight`` (same arguments) as dW_g = dy_g · im2col(x)_gᵀ per group."""
    channels, _, _, batch = x.shape
    channels_out, out_h, out_w, _ = grad_output.shape
    _, per_group, kernel_h, kernel_w = grad_weight.shape
    size, width = per_group * kernel_h * kernel_w, out_h * out_w * batch
    cols = _columns("cols", channels, kernel_h, kernel_w, out_h, out_w, batch, x.dtype)
    kernels.im2col(x, cols, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    np.matmul(grad_output.reshape(groups, channels_out // groups, width), cols.reshape(groups, size, width).transpose(0, 2, 1),
              out=grad_weight.reshape(groups, channels_out // groups, size))


_PATHS = {
    "direct": (kernels.conv2d_forward, kernels.conv2d_backward_input, kernels.conv2d_backward_weight),
    "gemm": (_gemm_forward, _gemm_backward_input, _gemm_backward_weight),
}


def _products(weight_shape, groups, batch):
    """(forward, backward_input, backward_weight) of the path ``conv_path`` picks."""
    return _PATHS[conv_path(weight_shape, groups, batch)]


# ---------------------------------------------------------------------------- padding modes


def padding_index(size, before, after, mode):
    """The gather behind a padding mode: index[a] is the input position that padded position a
    (of before + size + after) copies, torch's rule for ``mode``:

    - "reflect": mirror at the edge without repeating it (..., 2, 1 | 0, 1, 2, ... | ..., s-2);
      needs before, after < size;
    - "replicate": the edge repeated (0, 0 | 0, 1, ... | s-1, s-1); needs size >= 1;
    - "circular": wrapped around (s-1 | 0, 1, ... | 0); needs before, after <= size.

    Returns an int64 array (before + size + after,).
    """
    position = np.arange(-before, size + after, dtype=np.int64)
    if mode == "reflect":
        return np.where(position < 0, -position, np.where(position >= size, 2 * (size - 1) - position, position))
    if mode == "replicate":
        return np.clip(position, 0, size - 1)
    if mode == "circular":
        return position % size
    raise ValueError(f"padding_mode must be one of {PADDING_MODES[1:]} here, got {mode!r}")


def pad_forward(x, padding, mode):
    """x_pad = x[:, :, rows][:, :, :, cols]: torch's ``F.pad(x, ..., mode)`` as one gather.

    Parameters
    ----------
    x : (N, C, H, W)
    padding : ((top, bottom), (left, right)) (or a pair, the same on both sides)
    mode : "reflect", "replicate" or "circular"

    Returns
    -------
    x_pad : (N, C, top + H + bottom, left + W + right)
    cache : (rows, cols, input shape)
    """
    (top, bottom), (left, right) = padding_sides(padding, (1, 1), (1, 1))
    rows = padding_index(x.shape[2], top, bottom, mode)
    cols = padding_index(x.shape[3], left, right, mode)
    return np.ascontiguousarray(x[:, :, rows[:, None], cols[None, :]]), (rows, cols, x.shape)


def pad_backward(grad_output, cache):
    """dx[:, :, rows[a], cols[b]] += dx_pad[:, :, a, b]: the gather's adjoint, a scatter-add
    (a pixel copied to several padded positions receives each of their gradients)."""
    rows, cols, shape = cache
    grad_input = np.empty(shape, dtype=grad_output.dtype)
    kernels.pad_backward(np.ascontiguousarray(grad_output), rows, cols, grad_input)
    return grad_input


# ---------------------------------------------------------------------------- Conv2d


def _batched(x):
    """(x as (N, C, H, W), whether it came unbatched as (C, H, W))."""
    return (x[None], True) if x.ndim == 3 else (x, False)


def _unbatch(a, unbatched):
    return a[0] if unbatched and a is not None else a


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, padding_mode="zeros"):
    """y = conv(x, w) + b, torch's ``F.conv2d`` (and, for ``padding_mode``, ``nn.Conv2d``'s pad first).

    Parameters
    ----------
    x : (N, C_in, H, W) or (C_in, H, W)
    weight : (C_out, C_in / groups, kH, kW)
    bias : (C_out,) or None
    padding : a pair, "valid", "same" (stride 1 only) or ((top, bottom), (left, right))
    groups : C_in and C_out split into this many blocks; output block g reads input block g only
    padding_mode : "zeros", or "reflect" / "replicate" / "circular": the input padded by a
        gather (``pad_forward``), then convolved without padding

    Returns
    -------
    y : (N, C_out, H_out, W_out) (no N for an unbatched x), H_out = floor((H + top + bottom
        - d(kH - 1) - 1) / s) + 1
    cache
    """
    if isinstance(padding, str) and padding == "same" and tuple(stride) != (1, 1):
        raise ValueError(f"padding='same' is not supported for strided convolutions, got stride {tuple(stride)}")
    x, unbatched = _batched(x)
    weight = np.ascontiguousarray(weight)
    (top, bottom), (left, right) = padding_sides(padding, weight.shape[2:], dilation)
    gather = None
    if padding_mode == "zeros":
        x_t = batch_last(x)  # (C_in, H, W, N)
    else:  # gather straight into the batch-last layout: one pass over x
        rows = padding_index(x.shape[2], top, bottom, padding_mode)
        cols = padding_index(x.shape[3], left, right, padding_mode)
        x_t = np.ascontiguousarray(x.transpose(1, 2, 3, 0)[:, rows[:, None], cols[None, :]])  # (C_in, Hp, Wp, N)
        gather = (rows, cols, x.shape)
        top = bottom = left = right = 0
    out_h = conv2d_output_size(x_t.shape[1] + top + bottom, weight.shape[2], stride[0], 0, dilation[0])
    out_w = conv2d_output_size(x_t.shape[2] + left + right, weight.shape[3], stride[1], 0, dilation[1])
    y = np.empty((x.shape[0], weight.shape[0], out_h, out_w), dtype=x.dtype)  # (N, C_out, H_out, W_out)
    bias_values = np.zeros(weight.shape[0], dtype=x.dtype) if bias is None else bias
    geometry = (*_geometry(stride, (top, left), dilation), int(groups))
    forward, _, _ = _products(weight.shape, groups, x_t.shape[3])
    forward(x_t, weight, bias_values, y, *geometry)
    return _unbatch(y, unbatched), (x_t, weight, bias is not None, geometry, gather, unbatched)


def conv2d_backward(grad_output, cache, input_grad=True):
    """dx = full correlation of dy with the flipped kernel (strided, dilated), per group, then
    scattered back through the padding gather if there is one; dw = correlation of x with dy,
    per group; db = Σ_{n,i,j} dy. Returns (dx like x, dw like weight, db or None); dx is None,
    and not computed, when ``input_grad`` is False."""
    x_t, weight, has_bias, geometry, gather, unbatched = cache
    grad_output, _ = _batched(grad_output)
    dy_t = batch_last(grad_output)  # (C_out, H_out, W_out, N)
    channels, height, width, batch = x_t.shape
    _, backward_input, backward_weight = _products(weight.shape, geometry[-1], x_t.shape[3])
    grad_input = None
    if input_grad:
        grad_input = np.empty((batch, channels, height, width), dtype=x_t.dtype)  # (N, C_in, H, W), padded if gathered
        zeros = np.zeros(channels, dtype=x_t.dtype)
        backward_input(dy_t, weight, zeros, grad_input, *geometry)
        if gather is not None:
            grad_input = pad_backward(grad_input, gather)
    grad_weight = np.empty_like(weight)
    backward_weight(x_t, dy_t, grad_weight, *geometry)
    grad_bias = dy_t.sum(axis=(1, 2, 3)) if has_bias else None
    return _unbatch(grad_input, unbatched), grad_weight, grad_bias


# ---------------------------------------------------------------------------- ConvTranspose2d


def conv_transpose2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), groups=1,
                             dilation=(1, 1)):
    """y = conv_transpose(x, w) + b, torch's ``F.conv_transpose2d`` (its argument order): the
    input gradient of the convolution with the same weight.

    Parameters
    ----------
    x : (N, C_in, H, W) or (C_in, H, W)
    weight : (C_in, C_out / groups, kH, kW), torch's layout for ConvTranspose2d
    bias : (C_out,) or None
    padding, output_padding : pairs

    Returns
    -------
    y : (N, C_out, H_out, W_out) (no N for an unbatched x),
        H_out = (H - 1)·s - 2·p + d·(kH - 1) + output_padding + 1
    cache
    """
    x, unbatched = _batched(x)
    weight = np.ascontiguousarray(weight)
    channels_out = weight.shape[1] * groups
    out_h = conv_transpose2d_output_size(x.shape[2], weight.shape[2], stride[0], padding[0], output_padding[0], dilation[0])
    out_w = conv_transpose2d_output_size(x.shape[3], weight.shape[3], stride[1], padding[1], output_padding[1], dilation[1])
    x_t = batch_last(x)  # (C_in, H, W, N)
    y = np.empty((x.shape[0], channels_out, out_h, out_w), dtype=x.dtype)  # (N, C_out, H_out, W_out)
    # A convolution mapping y's shape to x's, with weight (C_in, C_out / groups, k, k) = (its C_out,
    # its C_in per group): its input gradient, fed x as "dy", is the transposed convolution.
    bias_values = np.zeros(channels_out, dtype=x.dtype) if bias is None else bias
    geometry = (*_geometry(stride, padding, dilation), int(groups))
    _, backward_input, _ = _products(weight.shape, groups, x_t.shape[3])
    backward_input(x_t, weight, bias_values, y, *geometry)
    return _unbatch(y, unbatched), (x_t, weight, bias is not None, geometry, unbatched)


def conv_transpose2d_backward(grad_output, cache, input_grad=True):
    """dx = conv(dy, w) (the convolution's forward); dw = the convolution's weight gradient with
    the roles of input and output gradient swapped; db = Σ_{n,i,j} dy; each per group. dx is
    None, and not computed, when ``input_grad`` is False."""
    x_t, weight, has_bias, geometry, unbatched = cache
    grad_output, _ = _batched(grad_output)
    dy_t = batch_last(grad_output)  # (C_out, H_out, W_out, N)
    channels, height, width, batch = x_t.shape
    forward, _, backward_weight = _products(weight.shape, geometry[-1], x_t.shape[3])
    grad_input = None
    if input_grad:
        grad_input = np.empty((batch, channels, height, width), dtype=x_t.dtype)  # (N, C_in, H, W)
        zeros = np.zeros(weight.shape[0], dtype=x_t.dtype)
        forward(dy_t, weight, zeros, grad_input, *geometry)
    grad_weight = np.empty_like(weight)
    backward_weight(dy_t, x_t, grad_weight, *geometry)
    grad_bias = dy_t.sum(axis=(1, 2, 3)) if has_bias else None
    return _unbatch(grad_input, unbatched), grad_weight, grad_bias
