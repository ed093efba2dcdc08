"""MaxPool2d with torch's arguments.

MaxPool2d keeps only the argmax positions, so no edit of its input or output can change its
gradient.
"""

from __future__ import annotations

from scratch import functional as F
from scratch.functional.conv import conv2d_output_size
from scratch.nn.conv import _pair
from scratch.nn.layers import _CachingModule
from scratch.validate import check_array


class MaxPool2d(_CachingModule):
    """Max over (dilated) windows; stride defaults to kernel_size; padding at most half the window.

    Backward routes each gradient to the element the forward picked (the first of tied maxima,
    as torch). x (N, C, H, W) -> (N, C, H_out, W_out) with Conv2d's size rule.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", "MaxPool2d", 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", "MaxPool2d", 1)
        self.padding = _pair(padding, "padding", "MaxPool2d", 0)
        self.dilation = _pair(dilation, "dilation", "MaxPool2d", 1)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):  # torch's limit, dilation aside
            raise ValueError(f"MaxPool2d: padding {self.padding} must be at most half the kernel size "
                             f"{self.kernel_size}, as torch requires")

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = repr(self)
        check_array(x, owner, ndim=4, allow_empty=False)
        sizes = [conv2d_output_size(x.shape[2 + a], self.kernel_size[a], self.stride[a], self.padding[a], self.dilation[a])
                 for a in (0, 1)]
        if min(sizes) < 1:
            raise ValueError(f"{owner}: input of shape {x.shape} is too small for this window (output {tuple(sizes)})")
        y, cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation)
        self._save(cache, y, x)
        return y

    def backward(self, grad_output):
        cache = self._take(grad_output)
        return F.max_pool2d_backward(grad_output, cache)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"

    def __repr__(self) -> str:
        return f"MaxPool2d({self.extra_repr()})"
