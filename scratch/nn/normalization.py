"""BatchNorm1d, BatchNorm2d, LayerNorm and GroupNorm with torch's arguments, buffers and checks.

Each takes torch's constructor arguments, positionally too (``device`` None or the CPU,
``dtype`` None (float32), a NumPy float dtype or torch.float32/float64; torch's keyword-only
``bias``), plus the keyword-only ``rng=`` every scratch layer takes (accepted and checked; the
initial values are torch's constants, weight ones and bias zeros, so nothing is drawn). The
``state_dict`` holds torch's keys in torch's order, shapes and dtypes: ``weight``, ``bias``
(parameters), then BatchNorm's buffers ``running_mean``, ``running_var`` (the layer's dtype) and
``num_batches_tracked`` (int64, 0-d); so ``load_state_dict(..., strict=True)`` moves weights and
running statistics between scratch and torch both ways.

``backward(dy)`` returns dx and ADDS into ``weight.grad`` / ``bias.grad``. In training mode
BatchNorm's backward runs through the batch statistics (every example's gradient depends on
every other example of the batch); in evaluation mode, with running statistics, it is a
per-channel affine map (docs/normalization.md).

What torch refuses is refused with a ValueError (TypeError for a value of the wrong kind) that
names the layer's repr, before anything changes: a training-mode BatchNorm call that is refused
leaves ``num_batches_tracked`` as it was (torch's module increments it before ``F.batch_norm``
refuses). Where torch does not look at an axis, neither does scratch: BatchNorm checks C against
``num_features`` only when it has a weight, bias or running statistics, GroupNorm without
``affine`` only that C is divisible by ``num_groups``.
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.memory import check_parameter
from scratch.nn.layers import _CachingModule, _check_device, _check_flag, _resolve_dtype
from scratch.nn.module import Parameter
from scratch.validate import check_array, check_integer, is_integer, is_real_number, resolve_rng


def _number(value, owner: str, name: str):
    """A real number (int or float, not a bool), kept as given (torch keeps it for its repr)."""
    if not is_real_number(value):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r} ({type(value).__name__})")
    return value.item() if isinstance(value, (np.ndarray, np.generic)) else value


def _common_arguments(owner: str, eps, device, dtype, rng):
    """eps checked as a number, device as the CPU, dtype resolved, rng checked (nothing is drawn)."""
    eps = _number(eps, owner, "eps")
    _check_device(device, owner)
    dtype = _resolve_dtype(dtype, owner)
    if rng is not None:
        resolve_rng(rng, owner)
    return eps, dtype


def _affine_parameters(module, owner: str, shape: tuple, dtype, affine: bool, bias: bool) -> None:
    """weight = ones(shape), bias = zeros(shape), as torch's ``reset_parameters``; None where absent."""
    if affine:
        check_parameter(owner, "weight", shape, dtype)
        module.weight = Parameter(np.ones(shape, dtype))
    else:
        module.weight = None
    if affine and bias:
        check_parameter(owner, "bias", shape, dtype)
        module.bias = Parameter(np.zeros(shape, dtype))
    else:
        module.bias = None


def _data(parameter):
    return None if parameter is None else parameter.data


class _Normalization(_CachingModule):
    """What the four layers share: the parameters' backward, the cache and ``extra_repr``."""

    _backward = None  # the functional backward, set by each layer

    def _run(self, forward, x, *arguments):
        """``forward(x, *arguments)``, its cache kept for backward with x watched (the cache holds x)."""
        y, cache = forward(x, *arguments)
        self._save(cache, y, x, (("input", cache[0]),))  # x reshaped, a view when contiguous
        return y

    def backward(self, grad_output):
        """dL/dx, adding dL/dweight and dL/dbias into their ``.grad``."""
        cache = self._take(grad_output)
        grad_input, grad_weight, grad_bias = type(self)._backward(grad_output, cache)
        if self.weight is not None:
            self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_input


# ---------------------------------------------------------------------------- BatchNorm


class _BatchNorm(_Normalization):
    """Per-channel normalisation with running statistics, torch's ``_BatchNorm``.

    y = γ·(x - μ)/√(σ² + eps) + β per channel c. In training mode μ and σ² are the batch's (σ²
    the biased variance, over the N·L values of each channel), and with ``track_running_stats``
    the running statistics are updated in place: running ← (1 - m)·running + m·statistic, the
    variance's statistic unbiased (·M/(M - 1)); m = ``momentum``, or with ``momentum=None``
    1/num_batches_tracked (the cumulative average), num_batches_tracked counting the training
    calls. In evaluation mode the running statistics are used, unless there are none
    (``track_running_stats=False``: the buffers are None and the batch's statistics are always
    used). A training call needs more than one value per channel (N·L > 1) and eps > 0; an
    evaluation call eps >= 0.
    """

    _backward = staticmethod(F.batch_norm_backward)
    _INPUT_NDIM: tuple[int, ...] = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True, rng=None):
        super().__init__()
        owner = type(self).__name__
        self.num_features = check_integer(num_features, owner, "num_features", minimum=0)
        self.eps, dtype = _common_arguments(owner, eps, device, dtype, rng)
        self.momentum = None if momentum is None else _number(momentum, owner, "momentum")
        self.affine = _check_flag(affine, owner, "affine")
        self.track_running_stats = _check_flag(track_running_stats, owner, "track_running_stats")
        self._dtype = dtype
        _affine_parameters(self, owner, (self.num_features,), dtype, self.affine, _check_flag(bias, owner, "bias"))
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def _check_input(self, owner: str, x) -> None:
        dims = " or ".join(f"{n}D" for n in self._INPUT_NDIM)
        check_array(x, owner, dtype=self._dtype, dtype_source="the layer is")
        if x.ndim not in self._INPUT_NDIM:
            raise ValueError(f"{owner}: expected {dims} input, got {x.ndim}D input of shape {x.shape}")
        sized = [name for name in ("weight", "bias", "running_mean", "running_var") if getattr(self, name) is not None]
        if sized and x.shape[1] != self.num_features:
            raise ValueError(f"{owner}: expected input with {self.num_features} channels (its {', '.join(sized)} "
                             f"hold one value per channel), got {x.shape[1]} in input of shape {x.shape}")

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = repr(self)
        self._check_input(owner, x)
        # torch's rule: the batch's statistics in training, and in evaluation when there are no running ones
        batch_statistics = self.training or (self.running_mean is None and self.running_var is None)
        eps = float(self.eps)
        if batch_statistics:
            if x.shape[0] * math.prod(x.shape[2:]) == 1:
                raise ValueError(f"{owner}: Expected more than 1 value per channel when training, got input of "
                                 f"shape {x.shape} (the batch's variance of one value is 0, its unbiased estimate 0/0)")
            if not eps > 0:
                raise ValueError(f"{owner}: eps must be positive when normalising with the batch's statistics "
                                 f"(as torch's batch_norm requires during training), got {self.eps}")
        elif not eps >= 0:
            raise ValueError(f"{owner}: eps must be non-negative, got {self.eps}")
        factor = 0.0 if self.momentum is None else float(self.momentum)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked[...] += 1  # in place: the buffer stays the array state_dict reads
            if self.momentum is None:  # the cumulative average of every batch so far
                factor = 1.0 / float(self.num_batches_tracked)
        # buffers are updated only in training with tracking, and read only when not in training
        keep = not self.training or self.track_running_stats
        return self._run(F.batch_norm_forward, x, _data(self.weight), _data(self.bias),
                         self.running_mean if keep else None, self.running_var if keep else None, batch_statistics,
                         factor, eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) or (N, C, L): statistics per channel over N (and L).

    ``BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None, *, bias=True, rng=None)``; see ``_BatchNorm`` for the semantics.
    """

    _INPUT_NDIM = (2, 3)


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W): statistics per channel over N, H and W.

    ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None, *, bias=True, rng=None)``; see ``_BatchNorm`` for the semantics.
    """

    _INPUT_NDIM = (4,)


# ---------------------------------------------------------------------------- LayerNorm, GroupNorm


class LayerNorm(_Normalization):
    """y = γ ⊙ (x - μ)/√(σ² + eps) + β over the trailing ``normalized_shape`` axes of x.

    ``LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
    dtype=None, *, rng=None)``: ``normalized_shape`` an int or a sequence of ints; x
    (*, *normalized_shape), μ and the biased σ² per leading index; weight and bias of
    ``normalized_shape``. The same in training and evaluation mode.
    """

    _backward = staticmethod(F.layer_norm_backward)

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None, *,
                 rng=None):
        super().__init__()
        owner = "LayerNorm"
        if is_integer(normalized_shape):
            normalized_shape = (normalized_shape,)
        if isinstance(normalized_shape, (str, bytes)) or not hasattr(normalized_shape, "__iter__"):
            raise TypeError(f"{owner}: normalized_shape must be an int or a sequence of ints, got "
                            f"{normalized_shape!r} ({type(normalized_shape).__name__})")
        self.normalized_shape = tuple(check_integer(size, owner, f"normalized_shape[{axis}]", minimum=0)
                                      for axis, size in enumerate(normalized_shape))
        if not self.normalized_shape:
            raise ValueError(f"{owner}: normalized_shape must hold at least one axis, as torch requires, got "
                             f"{normalized_shape!r}")
        self.eps, dtype = _common_arguments(owner, eps, device, dtype, rng)
        self.elementwise_affine = _check_flag(elementwise_affine, owner, "elementwise_affine")
        self._dtype = dtype
        _affine_parameters(self, owner, self.normalized_shape, dtype, self.elementwise_affine,
                           _check_flag(bias, owner, "bias"))

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = repr(self)
        check_array(x, owner, dtype=self._dtype, dtype_source="the layer is")
        count = len(self.normalized_shape)
        if x.ndim < count or x.shape[x.ndim - count:] != self.normalized_shape:
            raise ValueError(f"{owner}: expected input of shape (*, {', '.join(map(str, self.normalized_shape))}) "
                             f"(its last {count} axes normalized_shape), got shape {x.shape}")
        return self._run(F.layer_norm_forward, x, self.normalized_shape, _data(self.weight), _data(self.bias),
                         float(self.eps))

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(_Normalization):
    """y = γ_c·(x - μ)/√(σ² + eps) + β_c, μ and the biased σ² per example and group of channels.

    ``GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *,
    bias=True, rng=None)``: x (N, C, *); the C channels fall into ``num_groups`` groups of
    C/num_groups consecutive channels (``num_channels`` must be divisible by ``num_groups``), and
    each (example, group)'s statistics run over its channels' values. Weight and bias (C,). The
    same in training and evaluation mode.
    """

    _backward = staticmethod(F.group_norm_backward)

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True,
                 rng=None):
        super().__init__()
        owner = "GroupNorm"
        self.num_groups = check_integer(num_groups, owner, "num_groups", minimum=1)
        self.num_channels = check_integer(num_channels, owner, "num_channels", minimum=0)
        if self.num_channels % self.num_groups:
            raise ValueError(f"{owner}: num_channels ({self.num_channels}) must be divisible by num_groups "
                             f"({self.num_groups})")
        self.eps, dtype = _common_arguments(owner, eps, device, dtype, rng)
        self.affine = _check_flag(affine, owner, "affine")
        self._dtype = dtype
        _affine_parameters(self, owner, (self.num_channels,), dtype, self.affine, _check_flag(bias, owner, "bias"))

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = repr(self)
        check_array(x, owner, dtype=self._dtype, dtype_source="the layer is", min_ndim=2)
        channels = x.shape[1]
        if self.affine and channels != self.num_channels:
            raise ValueError(f"{owner}: expected input with {self.num_channels} channels (its weight holds one "
                             f"value per channel), got {channels} in input of shape {x.shape}")
        if channels % self.num_groups:
            raise ValueError(f"{owner}: expected a number of channels divisible by num_groups={self.num_groups}, "
                             f"got input of shape {x.shape}")
        # torch's check (F.group_norm): a lone example whose groups hold one value each
        if x.shape[0] * (channels // self.num_groups) * math.prod(x.shape[2:]) == 1:
            raise ValueError(f"{owner}: Expected more than 1 value per channel when training, got input of shape "
                             f"{x.shape} (each group holds a single value)")
        return self._run(F.group_norm_forward, x, self.num_groups, _data(self.weight), _data(self.bias),
                         float(self.eps))

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")
