"""Conv2d and ConvTranspose2d with torch's arguments, weight layouts and init.

The convolutions keep their input in the batch-last layout, a copy except for a batch of one
(then a view of the input, watched for in-place edits: ``scratch.nn.inplace``).
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.functional.conv import conv2d_output_size, conv_transpose2d_output_size
from scratch.memory import check_parameter, uniform_array
from scratch.nn.layers import _CachingModule
from scratch.nn.module import Parameter
from scratch.validate import check_array, check_float_dtype, check_integer, resolve_rng


def _pair(value, name: str, owner: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair; a bool or a float is refused."""
    expected = f"an int >= {minimum} or a pair of them"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):  # one int for both axes
        size = check_integer(value, owner, name, minimum=minimum, expected=expected)
        return size, size
    pair = tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    first, second = (check_integer(size, owner, f"{name}[{axis}]", minimum=minimum) for axis, size in enumerate(pair))
    return first, second


def _check_input(layer, x, channels: int) -> None:
    """x must be a non-empty (N, channels, H, W) array of the layer's dtype."""
    owner = repr(layer)
    check_array(x, owner, ndim=4, dtype=layer.weight.dtype)
    if x.shape[1] != channels:
        raise ValueError(f"{owner}: expected input (N, {channels}, H, W), got shape {x.shape}")
    # An empty batch or image is refused, as by every layer: a transposed convolution would
    # otherwise make a non-empty output (the bias alone) from an image of height 0.
    check_array(x, owner, allow_empty=False)


class _ConvBase(_CachingModule):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rng, dtype, fan_in_axis):
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_integer(in_channels, owner, "in_channels", minimum=1)
        self.out_channels = check_integer(out_channels, owner, "out_channels", minimum=1)
        self.kernel_size = _pair(kernel_size, "kernel_size", owner, 1)
        self.stride = _pair(stride, "stride", owner, 1)
        self.padding = _pair(padding, "padding", owner, 0)
        self.dilation = _pair(dilation, "dilation", owner, 1)
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        shape = ((out_channels, in_channels) if fan_in_axis == 1 else (in_channels, out_channels)) + self.kernel_size
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

    def backward(self, grad_output, *, input_grad: bool = True):
        """dL/dx (None when ``input_grad`` is False: not computed), adding dL/dw and dL/db into ``.grad``."""
        cache = self._take(grad_output)
        grad_input, grad_weight, grad_bias = type(self)._backward(grad_output, cache, input_grad)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_input

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Conv2d(_ConvBase):
    """2-D convolution (cross-correlation, as torch). x (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    Weight (C_out, C_in, kH, kW); H_out = floor((H + 2p - d(kH - 1) - 1) / s) + 1.
    """

    _backward = staticmethod(F.conv2d_backward)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 *, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rng, dtype, 1)

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        _check_input(self, x, self.in_channels)
        sizes = [conv2d_output_size(x.shape[2 + a], self.kernel_size[a], self.stride[a], self.padding[a], self.dilation[a])
                 for a in (0, 1)]
        if min(sizes) < 1:
            raise ValueError(f"{self!r}: input of spatial size {x.shape[2:]} is too small for this kernel "
                             f"(output would be {tuple(sizes)})")
        y, cache = F.conv2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                    self.stride, self.padding, self.dilation)
        self._save(cache, y, x, (("input", cache[0]),))  # x batch-last: a copy unless none is needed (N = 1)
        return y


class ConvTranspose2d(_ConvBase):
    """Transposed convolution, torch's: x (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    Weight (C_in, C_out, kH, kW); H_out = (H - 1)s - 2p + d(kH - 1) + output_padding + 1.
    """

    _backward = staticmethod(F.conv_transpose2d_backward)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, dilation=1,
                 bias=True, *, rng=None, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rng, dtype, 0)
        self.output_padding = _pair(output_padding, "output_padding", "ConvTranspose2d", 0)
        for axis in (0, 1):
            if self.output_padding[axis] >= max(self.stride[axis], self.dilation[axis]):
                raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than "
                                 f"stride or dilation ({self.stride}, {self.dilation}) in each dimension")

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        _check_input(self, x, self.in_channels)
        sizes = [conv_transpose2d_output_size(x.shape[2 + a], self.kernel_size[a], self.stride[a], self.padding[a],
                                              self.output_padding[a], self.dilation[a]) for a in (0, 1)]
        if min(sizes) < 1:
            raise ValueError(f"{self!r}: input of spatial size {x.shape[2:]} gives an empty output {tuple(sizes)}")
        y, cache = F.conv_transpose2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                              self.stride, self.padding, self.output_padding, self.dilation)
        self._save(cache, y, x, (("input", cache[0]),))  # x batch-last: a copy unless none is needed (N = 1)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", output_padding={self.output_padding}"
