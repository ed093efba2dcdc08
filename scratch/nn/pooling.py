"""MaxPool2d, MaxUnpool2d and AvgPool2d with torch's arguments, input rules and checks.

Each takes (N, C, H, W) or unbatched (C, H, W) input, and an empty batch (N = 0: an empty output,
an empty gradient); C, H and W must be at least 1, as torch requires. Geometry arguments are what
torch's take (an int, or a sequence of one or two ints; MaxPool2d's and AvgPool2d's stride may
also be an empty sequence, meaning kernel_size). Everything torch refuses is refused, naming the
layer's repr, what was expected and what was given, before anything changes.

MaxPool2d keeps only the arg-max positions and AvgPool2d only its geometry, so no edit of their
input or output can change their gradient. The indices MaxPool2d returns (``return_indices``) are
the arg-max it keeps, and those MaxUnpool2d is given are kept for its backward: each backward
refuses its indices if they were edited in place since forward, as torch's does.
"""

from __future__ import annotations

import numpy as np

from scratch import functional as F
from scratch.functional.pooling import max_unpool2d_output_size, pool2d_output_size
from scratch.nn import inplace
from scratch.nn.conv import _pair
from scratch.nn.layers import _CachingModule
from scratch.validate import check_array, check_integer, is_integer


def _pool_pair(value, name: str, owner: str, minimum: int, default=None) -> tuple[int, int]:
    """torch's pooling argument as a pair: an int, or a sequence of one int (both axes) or two;
    with ``default``, an empty sequence means ``default`` (torch's ``stride=()``)."""
    expected = f"an int >= {minimum} or a sequence of one or two of them"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):  # one int for both axes
        size = check_integer(value, owner, name, minimum=minimum, expected=expected)
        return size, size
    items = tuple(value)
    if not items and default is not None:
        return default
    if len(items) not in (1, 2):
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    pair = tuple(check_integer(size, owner, f"{name}[{axis}]", minimum=minimum) for axis, size in enumerate(items))
    return (pair[0], pair[0]) if len(pair) == 1 else pair


def _flag(value, name: str, owner: str) -> bool:
    """A bool (Python's or NumPy's), as torch's functional ops require for their flags."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def _as_given(value):
    """An argument as torch keeps it for its repr: an int as an int, a list as a list, any other
    sequence as a tuple."""
    if isinstance(value, list):
        return [int(v) for v in value]
    if hasattr(value, "__iter__"):
        return tuple(int(v) for v in value)
    return int(value)


def _check_padding(layer) -> None:
    """torch's limit: padding at most half the kernel (kernel_size // 2) on each axis, whatever
    the dilation (torch checks padding <= half the dilated kernel too, which this implies)."""
    if any(p > k // 2 for p, k in zip(layer.padding, layer.kernel_size)):
        raise ValueError(f"{layer!r}: padding must be at most half the kernel size (padding <= kernel_size // 2 "
                         f"on each axis, as torch requires), got padding={layer.padding} for "
                         f"kernel_size={layer.kernel_size}")


def _check_input(owner: str, x, name: str = "input") -> None:
    """A float (N, C, H, W) or (C, H, W) array whose C, H and W are at least 1 (N may be 0)."""
    check_array(x, owner, ndim=(3, 4), name=name)
    if 0 in x.shape[-3:]:
        raise ValueError(f"{owner}: {name} has an empty channel, row or column axis (shape {x.shape}); expected "
                         f"C, H, W >= 1 in (N, C, H, W) or (C, H, W) (only the batch N may be 0, as in torch)")


class _Pool2d(_CachingModule):
    """What MaxPool2d and AvgPool2d share: the window's output size, checked before running."""

    def _output_size(self, owner: str, x, dilation=(1, 1)) -> tuple[int, int]:
        sizes = tuple(pool2d_output_size(x.shape[-2 + a], self.kernel_size[a], self.stride[a], self.padding[a],
                                         dilation[a], self.ceil_mode) for a in (0, 1))
        if min(sizes) < 1:
            raise ValueError(f"{owner}: input of shape {x.shape} is too small for this window (output {sizes})")
        return sizes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class MaxPool2d(_Pool2d):
    """Max over (dilated) windows; stride defaults to kernel_size; padding at most half the kernel.

    x (N, C, H, W) or (C, H, W) -> y (N, C, H_out, W_out) or (C, H_out, W_out), H_out by torch's
    rule (``F.pool2d_output_size``): the convolution's, or with ``ceil_mode`` rounded up, which
    adds a last, partial window wherever one would start inside the input or its left padding
    (it sees only the elements inside the input). With ``return_indices`` forward returns
    ``(y, indices)``, indices int64 h·W + v within each plane as torch's; backward takes dy for y.
    Backward routes each gradient to the element the forward picked (the first of tied maxima,
    as torch).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        owner = "MaxPool2d"
        self.kernel_size = _pool_pair(kernel_size, "kernel_size", owner, 1)
        self.stride = self.kernel_size if stride is None else _pool_pair(stride, "stride", owner, 1, self.kernel_size)
        self.padding = _pool_pair(padding, "padding", owner, 0)
        self.dilation = _pool_pair(dilation, "dilation", owner, 1)
        self.return_indices = _flag(return_indices, "return_indices", owner)
        self.ceil_mode = _flag(ceil_mode, "ceil_mode", owner)
        self._shown = {name: _as_given(value) for name, value in
                       (("kernel_size", kernel_size), ("stride", kernel_size if stride is None else stride),
                        ("padding", padding), ("dilation", dilation))}
        _check_padding(self)

    def forward(self, input):
        """y, or (y, indices) with ``return_indices``; backward refuses indices edited in place since."""
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = repr(self)
        _check_input(owner, x)
        self._output_size(owner, x, self.dilation)
        y, cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        self._save(cache, y, x)
        if not self.return_indices:
            return y
        indices = cache[0].reshape(y.shape)  # a view of the arg-max backward reads: watched, as torch does
        object.__setattr__(self, "_watches", inplace.watch(self, (("indices array", cache[0]),), x, (y, indices)))
        return y, indices

    def backward(self, grad_output):
        cache = self._take(grad_output)
        return F.max_pool2d_backward(grad_output, cache)

    def extra_repr(self) -> str:
        shown = self._shown
        return (f"kernel_size={shown['kernel_size']}, stride={shown['stride']}, padding={shown['padding']}, "
                f"dilation={shown['dilation']}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    """Mean over windows; stride defaults to kernel_size; padding at most half the kernel.

    x (N, C, H, W) or (C, H, W) -> y (N, C, H_out, W_out) or (C, H_out, W_out), H_out as
    MaxPool2d's (dilation 1). Each window's sum over the elements inside the input is divided by
    ``divisor_override`` if given (any int but 0), else by the number of the window's positions
    inside the padded input (``count_include_pad``, the default) or inside the input alone; the
    positions a ``ceil_mode`` window reaches beyond the padding never count. Backward spreads
    dy / divisor over each window.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        owner = "AvgPool2d"
        self.kernel_size = _pool_pair(kernel_size, "kernel_size", owner, 1)
        self.stride = self.kernel_size if stride is None else _pool_pair(stride, "stride", owner, 1, self.kernel_size)
        self.padding = _pool_pair(padding, "padding", owner, 0)
        self.ceil_mode = _flag(ceil_mode, "ceil_mode", owner)
        self.count_include_pad = _flag(count_include_pad, "count_include_pad", owner)
        if divisor_override is not None:
            expected = "None or a nonzero int (torch: divisor must be not zero)"
            divisor_override = check_integer(divisor_override, owner, "divisor_override", expected=expected)
            if divisor_override == 0:
                raise ValueError(f"{owner}: divisor_override must be {expected}, got 0")
        self.divisor_override = divisor_override
        self._shown = {name: _as_given(value) for name, value in
                       (("kernel_size", kernel_size), ("stride", kernel_size if stride is None else stride),
                        ("padding", padding))}
        _check_padding(self)

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = repr(self)
        _check_input(owner, x)
        self._output_size(owner, x)
        y, cache = F.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                        self.count_include_pad, self.divisor_override)
        self._save(cache, y, x)
        return y

    def backward(self, grad_output):
        cache = self._take(grad_output)
        return F.avg_pool2d_backward(grad_output, cache)

    def extra_repr(self) -> str:
        shown = self._shown
        return f"kernel_size={shown['kernel_size']}, stride={shown['stride']}, padding={shown['padding']}"


class MaxUnpool2d(_CachingModule):
    """The partial inverse of MaxPool2d: each input value placed at its index in a zero plane.

    ``forward(input, indices, output_size=None)``: input and indices (N, C, H, W) or (C, H, W),
    indices int64 h·W_out + v as MaxPool2d's ``return_indices`` gives them; output
    (N, C, H_out, W_out) or (C, H_out, W_out) with H_out = (H - 1)·stride - 2·padding + kernel,
    or ``output_size`` ((H_out, W_out), or (N, C, H_out, W_out) whose N and C are ignored, as
    torch's), which must lie strictly within stride of that default. Every index must address
    the output plane. Backward gathers: dx = dy at each index (torch's, also where two entries
    share an index and the forward kept only one of them).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        owner = "MaxUnpool2d"
        self.kernel_size = _pair(kernel_size, "kernel_size", owner, 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", owner, 1)
        self.padding = _pair(padding, "padding", owner, 0)

    def _output_size(self, owner: str, x, output_size) -> tuple[int, int]:
        """torch's _unpool_output_size: the default, or ``output_size`` checked against it."""
        default = tuple(max_unpool2d_output_size(x.shape[-2 + a], self.kernel_size[a], self.stride[a], self.padding[a])
                        for a in (0, 1))
        if output_size is None:
            sizes = default
        else:
            sizes = _output_size_pair(owner, output_size)
            for axis in (0, 1):
                low, high = default[axis] - self.stride[axis], default[axis] + self.stride[axis]
                if not low < sizes[axis] < high:
                    raise ValueError(f"{owner}: invalid output_size {output_size!r}: dim {axis} must be between "
                                     f"{low} and {high} (exclusive), the sizes a pool of this geometry maps to "
                                     f"the input's {x.shape[-2 + axis]}")
        for axis in (0, 1):
            if sizes[axis] < 0:
                raise ValueError(f"{owner}: the output size must be non-negative, got {sizes} for input of shape "
                                 f"{x.shape} (output_size[{axis}]={sizes[axis]})")
        return sizes

    def forward(self, input, indices, output_size=None):
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = repr(self)
        _check_unpool_input(owner, x)
        _check_indices(owner, indices, x)
        sizes = self._output_size(owner, x, output_size)
        plane = sizes[0] * sizes[1]
        if plane and indices.size and (indices.min() < 0 or indices.max() >= plane):
            bad = int(indices.reshape(-1)[np.flatnonzero((indices.reshape(-1) < 0) | (indices.reshape(-1) >= plane))[0]])
            raise ValueError(f"{owner}: indices must lie in [0, {plane}) to address the {sizes[0]}x{sizes[1]} output "
                             f"plane, found an invalid max index {bad}")
        y, cache = F.max_unpool2d_forward(x, indices, sizes)
        self._save(cache, y, x)
        # the indices kept for backward are the caller's (or a view of them): watched, as torch does
        object.__setattr__(self, "_watches", inplace.watch(self, (("indices array", cache[0]),), (x, indices), y))
        return y

    def backward(self, grad_output):
        cache = self._take(grad_output)
        if grad_output.shape[-1] * grad_output.shape[-2] == 0 and cache[0].size:
            raise ValueError(f"{type(self).__name__}.backward: the output plane {grad_output.shape[-2:]} is empty, so "
                             f"the indices address nothing to gather the gradient from (torch's backward raises too)")
        return F.max_unpool2d_backward(grad_output, cache)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def __repr__(self) -> str:
        return f"MaxUnpool2d({self.extra_repr()})"


def _check_unpool_input(owner: str, x) -> None:
    """As ``_check_input``, but for (C, H, W) only H and W must be at least 1: torch's max_unpool2d
    checks every axis but the first, so C = 0 there passes as an empty batch would."""
    if isinstance(x, np.ndarray) and x.ndim == 3:
        check_array(x, owner, ndim=3)
        if 0 in x.shape[1:]:
            raise ValueError(f"{owner}: input has an empty row or column axis (shape {x.shape}); expected H, W >= 1 "
                             f"in (C, H, W), as in torch")
        return
    _check_input(owner, x)


def _check_indices(owner: str, indices, x) -> None:
    if not isinstance(indices, np.ndarray):
        raise TypeError(f"{owner}: indices must be a NumPy array of int64, got {type(indices).__name__}")
    if indices.dtype != np.int64:
        raise TypeError(f"{owner}: indices must be int64 (torch's index dtype), got {indices.dtype}")
    if indices.shape != x.shape:
        raise ValueError(f"{owner}: indices must have the input's shape {x.shape}, got {indices.shape}")


def _output_size_pair(owner: str, output_size) -> tuple[int, int]:
    """(H_out, W_out) from torch's output_size: two ints, or four whose last two are taken."""
    if isinstance(output_size, (str, bytes)) or not hasattr(output_size, "__len__"):
        raise TypeError(f"{owner}: output_size must be a sequence of 2 or 4 ints, got {output_size!r}")
    sizes = tuple(output_size)
    if len(sizes) not in (2, 4):
        raise ValueError(f"{owner}: output_size must have 2 elements (H, W) or 4 (N, C, H, W), got {output_size!r} "
                         f"with {len(sizes)}")
    for size in sizes:
        if not is_integer(size):
            raise TypeError(f"{owner}: output_size must be a sequence of ints, got {output_size!r}")
    return int(sizes[-2]), int(sizes[-1])
