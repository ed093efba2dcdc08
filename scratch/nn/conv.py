"""Conv2d and ConvTranspose2d with torch's arguments, weight layouts, init and input rules.

Both take torch's whole constructor (groups, ``padding="same"``/``"valid"``, ``padding_mode``;
``dtype`` keyword-only and no ``device``), batched (N, C, H, W) or unbatched (C, H, W) input,
and an empty batch (N = 0: an empty output, no gradient); ``ConvTranspose2d.forward`` takes
torch's ``output_size``. Everything torch refuses is refused, with the layer's repr, before
anything changes.

The convolutions keep their input in the batch-last layout, a copy except for a batch of one
(then a view of the input, watched for in-place edits: ``scratch.nn.inplace``).
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.functional.conv import (
    PADDING_MODES,
    conv2d_output_size,
    conv_transpose2d_output_size,
    padding_sides,
)
from scratch.memory import check_parameter, uniform_array
from scratch.nn.layers import _CachingModule
from scratch.nn.module import Parameter
from scratch.validate import check_array, check_float_dtype, check_integer, resolve_rng


def _pair(value, name: str, owner: str, minimum: int, expected: str | None = None) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair; a bool or a float is refused."""
    expected = expected or f"an int >= {minimum} or a pair of them"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):  # one int for both axes
        size = check_integer(value, owner, name, minimum=minimum, expected=expected)
        return size, size
    pair = tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    first, second = (check_integer(size, owner, f"{name}[{axis}]", minimum=minimum) for axis, size in enumerate(pair))
    return first, second


def _conv_padding(value, owner: str, stride: tuple[int, int]):
    """Conv2d's padding: "same" (stride 1 only) or "valid", kept as the string as torch keeps
    it, or an int or pair of ints >= 0, as a pair."""
    expected = "'same', 'valid', an int >= 0 or a pair of them"
    if not isinstance(value, str):
        return _pair(value, "padding", owner, 0, expected)
    if value not in ("same", "valid"):
        raise ValueError(f"{owner}: padding must be {expected}, got {value!r}")
    if value == "same" and stride != (1, 1):
        raise ValueError(f"{owner}: padding='same' needs stride 1 (torch does not support it for strided "
                         f"convolutions), got stride={stride}")
    return value


def _check_groups(owner: str, groups, in_channels: int, out_channels: int) -> int:
    groups = check_integer(groups, owner, "groups", minimum=1)
    for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % groups:
            raise ValueError(f"{owner}: {name} must be divisible by groups, got {name}={channels}, groups={groups}")
    return groups


def _check_padding_mode(owner: str, padding_mode, allowed: tuple[str, ...]) -> str:
    if not isinstance(padding_mode, str) or padding_mode not in allowed:
        choices = ", ".join(repr(mode) for mode in allowed)
        raise ValueError(f"{owner}: padding_mode must be {'one of ' if len(allowed) > 1 else ''}{choices}"
                         f"{'' if len(allowed) > 1 else ' (torch supports no other for a transposed convolution)'}, "
                         f"got {padding_mode!r}")
    return padding_mode


class _ConvBase(_CachingModule):
    _TRANSPOSED = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                 rng, dtype, output_padding=0):
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_integer(in_channels, owner, "in_channels", minimum=1)
        self.out_channels = check_integer(out_channels, owner, "out_channels", minimum=1)
        self.kernel_size = _pair(kernel_size, "kernel_size", owner, 1)
        self.stride = _pair(stride, "stride", owner, 1)
        if self._TRANSPOSED:
            self.padding = _pair(padding, "padding", owner, 0)
            self.padding_mode = _check_padding_mode(owner, padding_mode, ("zeros",))
        else:
            self.padding = _conv_padding(padding, owner, self.stride)
            self.padding_mode = _check_padding_mode(owner, padding_mode, PADDING_MODES)
        self.dilation = _pair(dilation, "dilation", owner, 1)
        self.output_padding = _pair(output_padding, "output_padding", owner, 0)
        self.groups = _check_groups(owner, groups, self.in_channels, self.out_channels)
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        shape = ((self.out_channels, self.in_channels // self.groups) if not self._TRANSPOSED
                 else (self.in_channels, self.out_channels // self.groups)) + self.kernel_size
        # torch's default init: U(±1/√fan_in), fan_in = weight.shape[1]·kH·kW, for weight and bias
        bound = 1.0 / math.sqrt(shape[1] * self.kernel_size[0] * self.kernel_size[1])
        # checked before allocating; drawn in float64 chunks, the values of rng.uniform(...).astype(dtype)
        owner = f"{owner}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"
        check_parameter(owner, "weight", shape, dtype)
        self.weight = Parameter(uniform_array(rng, -bound, bound, shape, dtype))
        if bias:
            check_parameter(owner, "bias", (self.out_channels,), dtype)
        self.bias = Parameter(uniform_array(rng, -bound, bound, (self.out_channels,), dtype)) if bias else None

    takes_input_grad = True

    def _check_input(self, x) -> None:
        """x must be (N, C_in, H, W) or unbatched (C_in, H, W), of the layer's dtype; images may be
        empty only in an empty batch (N = 0), as torch allows."""
        owner = repr(self)
        check_array(x, owner, ndim=(3, 4), dtype=self.weight.dtype)
        channels, height, width = x.shape[-3:]
        if channels != self.in_channels:
            expected = f"(N, {self.in_channels}, H, W)" if x.ndim == 4 else f"({self.in_channels}, H, W) (unbatched)"
            raise ValueError(f"{owner}: expected input {expected}, got shape {x.shape}")
        batch = x.shape[0] if x.ndim == 4 else 1
        if batch and not (height and width):
            raise ValueError(f"{owner}: input has an empty image (shape {x.shape}); expected H, W >= 1 "
                             f"(only an empty batch, N = 0, may have empty images, as in torch)")

    def backward(self, grad_output, *, input_grad: bool = True):
        """dL/dx (None when ``input_grad`` is False: not computed), adding dL/dw and dL/db into ``.grad``."""
        cache = self._take(grad_output)
        grad_input, grad_weight, grad_bias = type(self)._backward(grad_output, cache, input_grad)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_input

    def extra_repr(self) -> str:
        """torch's: the geometry that differs from the defaults, in torch's order and format."""
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Conv2d(_ConvBase):
    """2-D convolution (cross-correlation, as torch). x (N, C_in, H, W) or (C_in, H, W) ->
    (N, C_out, H_out, W_out) or (C_out, H_out, W_out).

    Weight (C_out, C_in / groups, kH, kW); H_out = floor((H + top + bottom - d(kH - 1) - 1) / s) + 1,
    with top = bottom = padding, or for ``padding="same"`` the d(kH - 1) split with the odd row at
    the bottom. ``padding_mode`` other than "zeros" pads the input by a gather (torch's ``F.pad``)
    and convolves it unpadded.
    """

    _backward = staticmethod(F.conv2d_backward)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", *, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         rng, dtype)

    def _sides(self):
        return padding_sides(self.padding, self.kernel_size, self.dilation)

    def _check_padding_fits(self, x) -> None:
        """torch's F.pad rules for the modes that copy pixels: reflect needs each pad < the
        input's size along its axis, circular each pad <= it, reflect and replicate a non-empty image."""
        if self.padding_mode == "zeros":
            return
        sides, sizes = self._sides(), x.shape[-2:]
        if self.padding_mode != "circular" and not (sizes[0] and sizes[1]):
            raise ValueError(f"{self!r}: padding_mode={self.padding_mode!r} needs a non-empty image, got input shape {x.shape}")
        for axis, name in ((0, "height"), (1, "width")):
            pads, size = sides[axis], sizes[axis]
            if self.padding_mode == "reflect" and max(pads) >= size:
                raise ValueError(f"{self!r}: padding_mode='reflect' needs each padding < the input's {name} {size}, "
                                 f"got padding {pads} (input shape {x.shape})")
            if self.padding_mode == "circular" and max(pads) > size:
                raise ValueError(f"{self!r}: padding_mode='circular' needs each padding <= the input's {name} {size} "
                                 f"(it wraps around at most once), got padding {pads} (input shape {x.shape})")

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        self._check_input(x)
        self._check_padding_fits(x)
        sizes = [conv2d_output_size(x.shape[-2 + a] + sum(side), self.kernel_size[a], self.stride[a], 0, self.dilation[a])
                 for a, side in enumerate(self._sides())]
        if min(sizes) < 1:
            raise ValueError(f"{self!r}: input of spatial size {x.shape[-2:]} is too small for this kernel "
                             f"(output would be {tuple(sizes)})")
        y, cache = F.conv2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                    self.stride, self.padding, self.dilation, self.groups, self.padding_mode)
        self._save(cache, y, x, (("input", cache[0]),))  # x batch-last: a copy unless none is needed (N = 1)
        return y


class ConvTranspose2d(_ConvBase):
    """Transposed convolution, torch's: x (N, C_in, H, W) or (C_in, H, W) -> (N, C_out, H_out, W_out)
    or (C_out, H_out, W_out).

    Weight (C_in, C_out / groups, kH, kW); H_out = (H - 1)s - 2p + d(kH - 1) + output_padding + 1,
    or the ``output_size`` that ``forward`` is given (which picks output_padding for that call).
    """

    _backward = staticmethod(F.conv_transpose2d_backward)
    _TRANSPOSED = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", *, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         rng, dtype, output_padding)
        for axis in (0, 1):
            if self.output_padding[axis] >= max(self.stride[axis], self.dilation[axis]):
                raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than "
                                 f"stride or dilation ({self.stride}, {self.dilation}) in each dimension")

    def _output_padding(self, x, output_size) -> tuple[int, int]:
        """torch's ``_output_padding``: the layer's own, or the one that makes ``output_size``
        (2 spatial sizes, or the whole shape: N, C first for a batch, C for an unbatched input),
        each between the smallest output and stride - 1 more."""
        if output_size is None:
            return self.output_padding
        owner, leading = repr(self), x.ndim - 2
        try:
            sizes = tuple(output_size)
        except TypeError:
            raise TypeError(f"{owner}: output_size must be a sequence of ints, got {output_size!r}") from None
        if len(sizes) == leading + 2:
            sizes = sizes[leading:]
        if len(sizes) != 2:
            raise ValueError(f"{owner}: for a {x.ndim}-d input, output_size must have 2 or {leading + 2} elements, "
                             f"got {len(tuple(output_size))} ({output_size!r})")
        sizes = tuple(check_integer(size, owner, f"output_size[{axis}]") for axis, size in enumerate(sizes))
        smallest = [conv_transpose2d_output_size(x.shape[-2 + a], self.kernel_size[a], self.stride[a], self.padding[a], 0,
                                                 self.dilation[a]) for a in (0, 1)]
        largest = [size + self.stride[a] - 1 for a, size in enumerate(smallest)]
        if any(not low <= size <= high for size, low, high in zip(sizes, smallest, largest)):
            raise ValueError(f"{owner}: requested an output size of {list(sizes)}, but valid sizes range from "
                             f"{smallest} to {largest} (for an input of spatial size {tuple(x.shape[-2:])})")
        return sizes[0] - smallest[0], sizes[1] - smallest[1]

    def forward(self, input, output_size=None):
        x = input  # torch's name for the argument (forward(input=...)); x below
        self._check_input(x)
        output_padding = self._output_padding(x, output_size)
        sizes = [conv_transpose2d_output_size(x.shape[-2 + a], self.kernel_size[a], self.stride[a], self.padding[a],
                                              output_padding[a], self.dilation[a]) for a in (0, 1)]
        empty_batch = x.ndim == 4 and x.shape[0] == 0  # torch lets an empty batch have an output of height 0
        if min(sizes) < (0 if empty_batch else 1):
            least = "0 (an empty batch)" if empty_batch else "1"
            raise ValueError(f"{self!r}: input of spatial size {x.shape[-2:]} gives an output of size {tuple(sizes)}; "
                             f"expected each size >= {least}")
        y, cache = F.conv_transpose2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                              self.stride, self.padding, output_padding, self.groups, self.dilation)
        self._save(cache, y, x, (("input", cache[0]),))  # x batch-last: a copy unless none is needed (N = 1)
        return y
