"""Numba kernels for 2-D convolution in NCHW, beside NumPy references (pooling: ``pooling.py``).

Three convolution kernels serve both Conv2d and ConvTranspose2d (a transposed convolution's
forward pass *is* a convolution's input gradient, and vice versa; docs/conv.md):

- ``conv2d_forward``          y[n, o, i, j]  = b[o] + Σ_{c,p,q} x[n, g·C_g + c, i·s - pad + p·d, j·s - pad + q·d] w[o, c, p, q]
- ``conv2d_backward_input``   dx[n, g·C_g + c, h, v] = Σ_{o in group g, p, q: h = i·s - pad + p·d} dy[n, o, i, j] w[o, c, p, q]
- ``conv2d_backward_weight``  dw[o, c, p, q] = Σ_{n,i,j} dy[n, o, i, j] x[n, g·C_g + c, i·s - pad + p·d, j·s - pad + q·d]

with ``groups`` blocks of channels (docs/conv.md, "Groups"): the weight is (C_out, C_g, kH, kW) with
C_g = C_in / groups, and output channel o belongs to group g = o // (C_out / groups), reading only
that group's input channels g·C_g ... g·C_g + C_g - 1. With groups = 1 (g = 0, C_g = C_in) every
kernel runs exactly the loops, and so the floating-point operations in the order, it ran before
groups existed. ``pad`` is the top (left) padding; the output's shape, given by the caller, fixes
the bottom (right) one, so asymmetric padding (torch's ``padding="same"`` with an even
d·(k - 1)) needs nothing more.

Two more serve the GEMM path (``scratch.functional.conv.conv_path`` chooses a path per layer
shape): ``im2col`` gathers the taps into a (C·kH·kW, H_out·W_out·N) matrix for one BLAS product,
and ``col2im``, its adjoint, adds such a matrix back into an NCHW input gradient.

A further kernel, ``pad_backward``, is the backward pass of the non-zero padding modes (reflect,
replicate, circular): the forward pads by a *gather* ``x_pad = x[:, :, rows][:, :, :, cols]``
(``scratch.functional.conv.pad_forward``), so the backward *scatter-adds* the padded gradient
into dx through the same index maps.

The convolution kernels work in a batch-innermost layout, (C, H, W, N): the seed's layers are
small (3x3 to 28x28 planes, 1 to 16 channels), so loops over space are a handful of iterations,
while the batch is long and contiguous; with n innermost every multiply-add runs over 128 (say)
adjacent numbers, which the compiler vectorizes. ``scratch.functional.conv`` transposes the
inputs into this layout; the kernels write their outputs straight into NCHW arrays. Every
kernel *gathers*: its outer ``prange`` runs over output blocks that it alone writes ((o, i) rows
of y, (c, h) rows of dx, (o, c) slices of dw), so no two threads ever write one element and no
atomics are needed. Each exists twice, compiled from one Python function: ``parallel=True`` (the default) and a serial twin
(``*_serial``), which tests hold the parallel one against. Both are cached on disk.

Out-of-range taps (padding) are skipped, never read: the loops clip each kernel offset's range
of output positions up front, so the innermost loops carry no bounds tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


def _first_valid(offset, stride, size_in, size_out):
    """The range [lo, hi) of output positions i with 0 <= i·stride + offset < size_in."""
    # lo = ceil(-offset / stride), clipped at 0; hi = ceil((size_in - offset) / stride), clipped.
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = (size_in - offset + stride - 1) // stride
    if hi > size_out:
        hi = size_out
    if hi < lo:
        hi = lo
    return lo, hi


_first_valid_jit = njit(cache=True, inline="always")(_first_valid)


def _output_row(h, p, stride, pad, dilation, out_size):
    """The output position i whose tap p lands on input position h (h = i·stride - pad + p·dilation),
    or -1 when there is none in [0, out_size)."""
    shifted = h + pad - p * dilation
    if shifted < 0 or shifted % stride != 0:
        return -1
    i = shifted // stride
    return i if i < out_size else -1


_output_row_jit = njit(cache=True, inline="always")(_output_row)


def _conv2d_forward(x, weight, bias, out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups):
    """x (C_in, H, W, N) batch innermost, weight (C_out, C_in / groups, kH, kW), out (N, C_out, H_out, W_out).

    Loop nest: prange over output rows (o, i); then taps (p, q) and the valid j range of each;
    then the input channels c of o's group four at a time (``x_group``: x's channels from first);
    innermost the batch n, contiguous everywhere, which
    LLVM vectorizes. Four channels per pass means one load and one store of ``out`` per four
    multiply-adds instead of per one: the loop is bound by memory traffic, not arithmetic.
    Each thread owns its rows of ``out``: it accumulates a row (W_out, N) in a buffer of its own
    and writes it into the NCHW output at the end, so no separate transposing pass is needed.
    """
    _, height, width, batch = x.shape
    channels_out, channels_in, kernel_h, kernel_w = weight.shape  # channels_in: per group
    out_h, out_w = out.shape[2], out.shape[3]
    per_group_out = channels_out // groups
    whole = channels_in - channels_in % 4
    for block in prange(channels_out * out_h):
        o = block // out_h
        i = block % out_h
        first = (o // per_group_out) * channels_in  # x's channel of the group's c = 0 (0 for groups = 1)
        x_group = x[first:first + channels_in]  # a view: the loops below index it as they index x ungrouped
        row_out = np.empty((out_w, batch), dtype=out.dtype)
        row_out[:, :] = bias[o]
        for p in range(kernel_h):
            h = i * stride_h - pad_h + p * dil_h
            if h < 0 or h >= height:
                continue
            for q in range(kernel_w):
                offset_w = q * dil_w - pad_w
                j_lo, j_hi = _first_valid_jit(offset_w, stride_w, width, out_w)
                for j in range(j_lo, j_hi):
                    v = j * stride_w + offset_w
                    target = row_out[j]
                    for c in range(0, whole, 4):
                        w0, w1, w2, w3 = weight[o, c, p, q], weight[o, c + 1, p, q], weight[o, c + 2, p, q], weight[o, c + 3, p, q]
                        s0, s1, s2, s3 = x_group[c, h, v], x_group[c + 1, h, v], x_group[c + 2, h, v], x_group[c + 3, h, v]
                        for n in range(batch):
                            target[n] += w0 * s0[n] + w1 * s1[n] + w2 * s2[n] + w3 * s3[n]
                    for c in range(whole, channels_in):
                        tap = weight[o, c, p, q]
                        source = x_group[c, h, v]
                        for n in range(batch):
                            target[n] += tap * source[n]
        for n in range(batch):
            for j in range(out_w):
                out[n, o, i, j] = row_out[j, n]


def _conv2d_backward_input(grad_output, weight, bias, grad_input, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                           groups):
    """grad_output (C_out, H_out, W_out, N) batch innermost, weight (C_out, C_in / groups, kH, kW),
    bias (C_in,), grad_input (N, C_in, H, W). ``bias`` seeds each row: zeros for a convolution's input
    gradient, the bias for a transposed convolution's forward pass (one pass fewer over dx).

    Loop nest: prange over rows (c, h) of dx; then the p whose tap lands on row h, i.e.
    h = i·s - pad + p·d for an integer i in range; then q and the valid j range; then the output
    channels o of c's group four at a time (views from channel first); innermost the batch n, vectorized.
    dx[c, h, j·s + q·d - pad, :] += Σ_o w[o, c, p, q] · dy[o, i, j, :]: a gather into the
    thread's own row, four channels per load and store of dx (see ``_conv2d_forward``), built in
    a (W, N) buffer and written into the NCHW dx at the end.
    """
    _, out_h, out_w, batch = grad_output.shape
    channels_total, per_group_in, kernel_h, kernel_w = weight.shape
    channels_in, height, width = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    channels_out = channels_total // groups  # per group
    whole = channels_out - channels_out % 4
    for block in prange(channels_in * height):
        c_in = block // height  # dx's channel; c: its index within its group, the weight's
        h = block % height
        first = (c_in // per_group_in) * channels_out  # dy's channel of the group's o = 0 (0 for groups = 1)
        c = c_in - (c_in // per_group_in) * per_group_in
        # views of the group's output channels: the loops below index them as they index dy, w ungrouped
        weight_group, grad_group = weight[first:first + channels_out], grad_output[first:first + channels_out]
        row_in = np.empty((width, batch), dtype=grad_input.dtype)
        row_in[:, :] = bias[c_in]
        for p in range(kernel_h):
            i = _output_row_jit(h, p, stride_h, pad_h, dil_h, out_h)
            if i < 0:
                continue
            for q in range(kernel_w):
                offset_w = q * dil_w - pad_w
                j_lo, j_hi = _first_valid_jit(offset_w, stride_w, width, out_w)
                for j in range(j_lo, j_hi):
                    target = row_in[j * stride_w + offset_w]
                    for o in range(0, whole, 4):
                        w0, w1 = weight_group[o, c, p, q], weight_group[o + 1, c, p, q]
                        w2, w3 = weight_group[o + 2, c, p, q], weight_group[o + 3, c, p, q]
                        s0, s1 = grad_group[o, i, j], grad_group[o + 1, i, j]
                        s2, s3 = grad_group[o + 2, i, j], grad_group[o + 3, i, j]
                        for n in range(batch):
                            target[n] += w0 * s0[n] + w1 * s1[n] + w2 * s2[n] + w3 * s3[n]
                    for o in range(whole, channels_out):
                        tap = weight_group[o, c, p, q]
                        source = grad_group[o, i, j]
                        for n in range(batch):
                            target[n] += tap * source[n]
        for n in range(batch):
            for v in range(width):
                grad_input[n, c_in, h, v] = row_in[v, n]


def _conv2d_backward_weight(x, grad_output, grad_weight, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups):
    """x (C_in, H, W, N), grad_output (C_out, H_out, W_out, N), grad_weight (C_out, C_in / groups, kH, kW).

    Loop nest: prange over (o, four channels c of o's group, ``x_group``); then taps (p, q); then the valid
    (i, j) window; innermost the batch n, contiguous in both arrays: four dot products per tap
    sharing each load of dy. Compiled with ``fastmath={"reassoc", "contract"}`` (this kernel
    only) so that LLVM may split the sums into vector partial sums held in registers; the result
    differs from a left-to-right sum by rounding only. No NaN/inf assumptions are made.
    """
    _, height, width, batch = x.shape
    channels_out, channels_in, kernel_h, kernel_w = grad_weight.shape  # channels_in: per group
    out_h, out_w = grad_output.shape[1], grad_output.shape[2]
    per_group_out = channels_out // groups
    quads = (channels_in + 3) // 4
    zero = grad_weight.dtype.type(0)
    for block in prange(channels_out * quads):
        o = block // quads
        c = 4 * (block % quads)
        first = (o // per_group_out) * channels_in  # x's channel of the group's c = 0 (0 for groups = 1)
        x_group = x[first:first + channels_in]  # a view: the loops below index it as they index x ungrouped
        count = min(4, channels_in - c)
        for p in range(kernel_h):
            offset_h = p * dil_h - pad_h
            i_lo, i_hi = _first_valid_jit(offset_h, stride_h, height, out_h)
            for q in range(kernel_w):
                offset_w = q * dil_w - pad_w
                j_lo, j_hi = _first_valid_jit(offset_w, stride_w, width, out_w)
                t0, t1, t2, t3 = zero, zero, zero, zero
                for i in range(i_lo, i_hi):
                    h = i * stride_h + offset_h
                    row_out = grad_output[o, i]
                    for j in range(j_lo, j_hi):
                        v = j * stride_w + offset_w
                        gradient = row_out[j]
                        if count == 4:
                            s0, s1, s2, s3 = x_group[c, h, v], x_group[c + 1, h, v], x_group[c + 2, h, v], x_group[c + 3, h, v]
                            for n in range(batch):
                                g = gradient[n]
                                t0 += g * s0[n]
                                t1 += g * s1[n]
                                t2 += g * s2[n]
                                t3 += g * s3[n]
                        else:
                            for k in range(count):
                                source = x_group[c + k, h, v]
                                total = zero
                                for n in range(batch):
                                    total += gradient[n] * source[n]
                                if k == 0:
                                    t0 += total
                                elif k == 1:
                                    t1 += total
                                else:
                                    t2 += total
                grad_weight[o, c, p, q] = t0
                if count > 1:
                    grad_weight[o, c + 1, p, q] = t1
                if count > 2:
                    grad_weight[o, c + 2, p, q] = t2
                if count > 3:
                    grad_weight[o, c + 3, p, q] = t3


def _pad_backward(grad_padded, rows, cols, grad_input):
    """The adjoint of the padding gather x_pad[n, c, a, b] = x[n, c, rows[a], cols[b]]:
    dx[n, c, rows[a], cols[b]] += dx_pad[n, c, a, b] for every padded position (a, b).

    grad_padded (N, C, Hp, Wp), rows (Hp,) and cols (Wp,) int64 indices into H and W,
    grad_input (N, C, H, W), overwritten. Loop nest: prange over (n, c) planes, which each
    thread alone writes (no atomics: a pixel that several padded positions copy, as reflect and
    circular make, is summed by one thread); then a and b in row-major order, so each element's
    sum has one fixed order and the serial twin is bit-identical.
    """
    batch, channels, padded_h, padded_w = grad_padded.shape
    zero = grad_input.dtype.type(0)
    for block in prange(batch * channels):
        n = block // channels
        c = block % channels
        target = grad_input[n, c]
        target[:, :] = zero
        source = grad_padded[n, c]
        for a in range(padded_h):
            row = target[rows[a]]
            for b in range(padded_w):
                row[cols[b]] += source[a, b]


def _im2col(x, cols, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    """The GEMM path's gather: cols[c, p, q, i, j, n] = x[c, i·s - pad + p·d, j·s - pad + q·d, n],
    zero where that position is padding.

    x (C, H, W, N) batch innermost, cols (C, kH, kW, H_out, W_out, N), overwritten: viewed as a
    (C·kH·kW, H_out·W_out·N) matrix, its rows are ordered as a weight's (c, p, q), so one matmul
    with the weight (C_out, C·kH·kW) is the convolution. Loop nest: prange over the rows
    (c, p, q), which each thread alone writes; then the output positions (i, j), a copy of N
    contiguous numbers each (or zeros outside the valid window, clipped up front).
    """
    _, height, width, batch = x.shape
    channels, kernel_h, kernel_w, out_h, out_w = cols.shape[0], cols.shape[1], cols.shape[2], cols.shape[3], cols.shape[4]
    zero = cols.dtype.type(0)
    taps = kernel_h * kernel_w
    for block in prange(channels * taps):
        c = block // taps
        p = (block // kernel_w) % kernel_h
        q = block % kernel_w
        offset_h = p * dil_h - pad_h
        offset_w = q * dil_w - pad_w
        i_lo, i_hi = _first_valid_jit(offset_h, stride_h, height, out_h)
        j_lo, j_hi = _first_valid_jit(offset_w, stride_w, width, out_w)
        target = cols[c, p, q]
        for i in range(out_h):
            if i < i_lo or i >= i_hi:
                target[i, :, :] = zero
                continue
            source = x[c, i * stride_h + offset_h]
            row = target[i]
            for j in range(out_w):
                if j < j_lo or j >= j_hi:
                    row[j, :] = zero
                    continue
                values = source[j * stride_w + offset_w]
                destination = row[j]
                for n in range(batch):
                    destination[n] = values[n]


def _col2im(cols, bias, grad_input, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    """im2col's adjoint, the GEMM path's scatter-add done as a gather:
    dx[n, c, h, v] = bias[c] + Σ_{p, q, i, j: h = i·s - pad + p·d, v = j·s - pad + q·d} cols[c, p, q, i, j, n].

    cols (C, kH, kW, H_out, W_out, N), bias (C,) (zeros for a convolution's input gradient, the
    bias for a transposed convolution's forward), grad_input (N, C, H, W), overwritten. Loop nest
    as ``_conv2d_backward_input``'s: prange over rows (c, h) of dx, which each thread alone writes
    (no atomics); then the p whose taps land on row h, q, the valid j; innermost the batch n,
    contiguous. Each element's sum runs in one fixed order (p, q, j), so the serial twin is
    bit-identical. The row is built in a (W, N) buffer and written into the NCHW dx at the end.
    """
    channels, kernel_h, kernel_w, out_h, out_w, batch = cols.shape
    height, width = grad_input.shape[2], grad_input.shape[3]
    for block in prange(channels * height):
        c = block // height
        h = block % height
        row_in = np.empty((width, batch), dtype=grad_input.dtype)
        row_in[:, :] = bias[c]
        for p in range(kernel_h):
            i = _output_row_jit(h, p, stride_h, pad_h, dil_h, out_h)
            if i < 0:
                continue
            for q in range(kernel_w):
                offset_w = q * dil_w - pad_w
                j_lo, j_hi = _first_valid_jit(offset_w, stride_w, width, out_w)
                source = cols[c, p, q, i]
                for j in range(j_lo, j_hi):
                    target = row_in[j * stride_w + offset_w]
                    values = source[j]
                    for n in range(batch):
                        target[n] += values[n]
        for n in range(batch):
            for v in range(width):
                grad_input[n, c, h, v] = row_in[v, n]


conv2d_forward = njit(parallel=True, cache=True)(_conv2d_forward)
conv2d_forward_serial = njit(cache=True)(_conv2d_forward)
conv2d_backward_input = njit(parallel=True, cache=True)(_conv2d_backward_input)
conv2d_backward_input_serial = njit(cache=True)(_conv2d_backward_input)
_REASSOCIATE = {"reassoc", "contract"}  # reorder and fuse the dot products' sums; nothing else
conv2d_backward_weight = njit(parallel=True, cache=True, fastmath=_REASSOCIATE)(_conv2d_backward_weight)
conv2d_backward_weight_serial = njit(cache=True, fastmath=_REASSOCIATE)(_conv2d_backward_weight)
pad_backward = njit(parallel=True, cache=True)(_pad_backward)
pad_backward_serial = njit(cache=True)(_pad_backward)
im2col = njit(parallel=True, cache=True)(_im2col)
im2col_serial = njit(cache=True)(_im2col)
col2im = njit(parallel=True, cache=True)(_col2im)
col2im_serial = njit(cache=True)(_col2im)


# ---------------------------------------------------------------------------- references
# Plain NumPy, organised differently from the kernels on purpose: one strided view of the
# (zero-padded) input per kernel tap, contracted over channels with einsum, one group after
# another, and the input gradient *scattered* back through the same views, where the kernel
# gathers. ``padding`` is (pad_h, pad_w), the same on both sides, or ((top, bottom), (left, right)).


def _tap_view(padded, p, q, out_h, out_w, stride, dilation):
    """padded[:, :, i·s + p·d, j·s + q·d] for all (i, j): (N, C, out_h, out_w), a view."""
    (stride_h, stride_w), (dil_h, dil_w) = stride, dilation
    return padded[:, :, p * dil_h: p * dil_h + stride_h * (out_h - 1) + 1: stride_h,
                  q * dil_w: q * dil_w + stride_w * (out_w - 1) + 1: stride_w]


def _sides(padding):
    """((top, bottom), (left, right)) from (pad_h, pad_w) or from ((top, bottom), (left, right))."""
    return tuple((int(pad), int(pad)) if np.ndim(pad) == 0 else (int(pad[0]), int(pad[1])) for pad in padding)


def _pad(x, padding, value=0.0):
    (top, bottom), (left, right) = _sides(padding)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _group_slices(channels_in, channels_out, groups):
    """(input channels, output channels) of each group, as slices."""
    step_in, step_out = channels_in // groups, channels_out // groups
    return [(slice(g * step_in, (g + 1) * step_in), slice(g * step_out, (g + 1) * step_out)) for g in range(groups)]


def conv2d_forward_reference(x, weight, bias, out_shape, stride, padding, dilation, groups=1):
    padded = _pad(x, padding)
    out = np.zeros(out_shape, dtype=np.float64)
    for inputs, outputs in _group_slices(x.shape[1], weight.shape[0], groups):
        for p in range(weight.shape[2]):
            for q in range(weight.shape[3]):
                view = _tap_view(padded[:, inputs], p, q, out_shape[2], out_shape[3], stride, dilation)
                out[:, outputs] += np.einsum("ncij,oc->noij", view, weight[outputs, :, p, q])
    return (out + bias[None, :, None, None]).astype(x.dtype)


def conv2d_backward_input_reference(grad_output, weight, input_shape, stride, padding, dilation, groups=1):
    """dx with every contribution scattered through the taps' strided views (np.add via +=)."""
    (top, bottom), (left, right) = _sides(padding)
    n, c, h, w = input_shape
    padded = np.zeros((n, c, h + top + bottom, w + left + right), dtype=np.float64)
    out_h, out_w = grad_output.shape[2:]
    for inputs, outputs in _group_slices(c, weight.shape[0], groups):
        for p in range(weight.shape[2]):
            for q in range(weight.shape[3]):
                view = _tap_view(padded[:, inputs], p, q, out_h, out_w, stride, dilation)
                view += np.einsum("noij,oc->ncij", grad_output[:, outputs], weight[outputs, :, p, q])
    return padded[:, :, top: top + h, left: left + w].astype(grad_output.dtype)


def conv2d_backward_weight_reference(x, grad_output, weight_shape, stride, padding, dilation, groups=1):
    padded = _pad(x, padding)
    out_h, out_w = grad_output.shape[2:]
    grad_weight = np.zeros(weight_shape, dtype=np.float64)
    for inputs, outputs in _group_slices(x.shape[1], weight_shape[0], groups):
        for p in range(weight_shape[2]):
            for q in range(weight_shape[3]):
                view = _tap_view(padded[:, inputs], p, q, out_h, out_w, stride, dilation)
                grad_weight[outputs, :, p, q] = np.einsum("noij,ncij->oc", grad_output[:, outputs], view)
    return grad_weight.astype(x.dtype)


# torch's padding modes under NumPy's names: np.pad is the reference the index maps are held to
NUMPY_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad_forward_reference(x, padding, mode):
    """x (N, C, H, W) padded by ((top, bottom), (left, right)) in torch's ``mode``, by np.pad."""
    (top, bottom), (left, right) = _sides(padding)
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=NUMPY_PAD_MODES[mode])


def pad_backward_reference(grad_padded, rows, cols, input_shape):
    """dx[:, :, rows[a], cols[b]] += dx_pad[:, :, a, b] by ``np.add.at`` (unbuffered: repeated
    indices accumulate), in float64."""
    grad_input = np.zeros(input_shape, dtype=np.float64)
    np.add.at(grad_input, (slice(None), slice(None), rows[:, None], cols[None, :]), grad_padded)
    return grad_input.astype(grad_padded.dtype)


def im2col_reference(x, kernel_size, out_hw, stride, padding, dilation):
    """x (N, C, H, W) -> cols (C, kH, kW, H_out, W_out, N): one strided view of the zero-padded
    input per tap, stacked (``padding`` as the other references take it)."""
    padded = _pad(x, padding)
    taps = [[_tap_view(padded, p, q, *out_hw, stride, dilation) for q in range(kernel_size[1])]
            for p in range(kernel_size[0])]
    return np.array(taps).transpose(3, 0, 1, 4, 5, 2)  # (kH, kW, N, C, i, j) -> (C, kH, kW, i, j, N)


def col2im_reference(cols, bias, input_shape, stride, padding, dilation):
    """cols (C, kH, kW, H_out, W_out, N) scattered back by ``np.add.at`` at each entry's input
    position (unbuffered: overlapping taps accumulate), in float64; bias (C,) added."""
    (top, bottom), (left, right) = _sides(padding)
    batch, channels, height, width = input_shape
    _, kernel_h, kernel_w, out_h, out_w, _ = cols.shape
    grad = np.zeros((batch, channels, height + top + bottom, width + left + right))
    rows = np.arange(kernel_h)[:, None] * dilation[0] + np.arange(out_h)[None, :] * stride[0]  # (kH, H_out)
    columns = np.arange(kernel_w)[:, None] * dilation[1] + np.arange(out_w)[None, :] * stride[1]  # (kW, W_out)
    values = cols.transpose(5, 0, 1, 2, 3, 4)  # (N, C, kH, kW, H_out, W_out)
    np.add.at(grad, (slice(None), slice(None), rows[:, None, :, None], columns[None, :, None, :]), values)
    grad = grad[:, :, top: top + height, left: left + width] + np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return grad.astype(cols.dtype)
