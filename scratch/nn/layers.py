"""Layers per the contract: torch's constructor arguments plus keyword-only ``rng=``, ``dtype=``.

``layer(x)`` runs the forward pass and caches what the backward pass needs;
``layer.backward(grad_output)`` returns dL/dx and adds into each parameter's ``.grad``.
A cached array the caller can reach (the input, the returned output) is fingerprinted at forward
and checked at backward, which raises ``InplaceModificationError`` if it was modified in place in
between, as torch raises (``scratch.nn.inplace``; ``_CachingModule._save`` and ``_take``).

Empty inputs pass through as in torch (a batch of no rows, a zero-sized axis): empty outputs,
empty input gradients, nothing added to a parameter's ``.grad``. ``ReLU``, ``LeakyReLU``, ``SiLU``
and ``ELU`` with ``inplace=True`` write their result into their input and return it, as torch's do; an
array another layer kept for its backward and that such a write changes is caught at that
layer's backward (``_before_writing``), as torch's version counter catches it.
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.functional.activations import GELU_APPROXIMATIONS
from scratch.memory import check_parameter, uniform_array
from scratch.nn import inplace
from scratch.nn.module import Module, Parameter
from scratch.validate import check_array, check_float_dtype, check_integer, is_real_number, resolve_rng
from scratch.workspace import Workspace

#: torch's floating dtypes by name, for ``dtype=torch.float64`` (scratch never imports torch)
_TORCH_DTYPES = {"torch.float32": np.float32, "torch.float": np.float32, "torch.float64": np.float64,
                 "torch.double": np.float64}


def _resolve_dtype(dtype, owner: str) -> np.dtype:
    """A layer's ``dtype=``: None (float32, torch's default dtype), a NumPy float dtype, or
    torch.float32 / torch.float64 (recognised by name); anything else is refused."""
    if dtype is None:
        return np.dtype(np.float32)
    if type(dtype).__module__ == "torch":
        dtype = _TORCH_DTYPES.get(str(dtype), dtype)
    return check_float_dtype(dtype, owner)


def _check_device(device, owner: str) -> None:
    """A layer's ``device=``: None or the CPU (``"cpu"``, ``"cpu:0"``, ``torch.device("cpu")``,
    recognised by its text); scratch computes on the CPU only."""
    if device is None or str(device) in ("cpu", "cpu:0"):
        return
    raise ValueError(f"{owner}: device must be None or 'cpu' (scratch runs on the CPU with NumPy), got {device!r}")


def _check_flag(value, owner: str, name: str) -> bool:
    """True/False (or 0/1, which torch also takes) as a bool."""
    if isinstance(value, (bool, np.bool_)) or (is_real_number(value) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{owner}: {name} must be True or False, got {value!r} ({type(value).__name__})")


def _before_writing(x: np.ndarray, owner: str) -> None:
    """Call before a layer overwrites ``x`` in place (``inplace=True``).

    The write must not silently change an array another layer kept for its backward. Outside a
    container's pass every kept array the caller can reach is already fingerprinted, so that
    layer's backward sees the change. Inside a pass, kept arrays are fingerprinted only when the
    pass ends, after this write; so each layer of the pass that keeps an array this write may
    touch is fingerprinted now, before it (``inplace.Watch``, attached to the layer in place of
    the pass's placeholder): its backward then refuses if the write changed it, as torch refuses a
    saved tensor bumped by an in-place op (``scratch.nn.inplace``)."""
    if not x.flags.writeable:
        raise ValueError(f"{owner}: inplace=True writes the result into the input, which is read-only; "
                         f"pass a writeable array (e.g. x.copy()) or use inplace=False")
    inplace.before_write(x)


class _CachingModule(Module):
    """A module with one forward cache; backward refuses to run without a forward first.

    Besides the cache it remembers the shape and dtype of the last input and output, so that
    ``backward`` can check the gradient it is given and ``Sequential.backward`` can check that
    its children's caches come from one forward pass before any of them accumulates a gradient;
    and ``_watches``, the ``inplace.Watch`` of each cached array the caller may reach, which
    ``_take`` checks for in-place edits.
    """

    _CACHE_ATTRIBUTES = ("_cache", "_output_shape", "_output_dtype", "_input_shape", "_input_dtype", "_watches")
    _KEEPS_ARRAYS_PRIVATE = True

    def __init__(self) -> None:
        super().__init__()
        for attribute in self._CACHE_ATTRIBUTES:
            object.__setattr__(self, attribute, None)

    def _save(self, cache, output: np.ndarray, x: np.ndarray, watched=()) -> None:
        """Keep ``cache`` for backward, with the shapes and dtypes of ``output`` and input ``x``.

        ``watched``: ``(what, array)`` for each array in ``cache`` that is, or may view, ``x``
        or ``output`` ("input", "output"); fingerprinted when the caller can reach it
        (``inplace.watch``), for ``_take`` to check."""
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_output_shape", output.shape)
        object.__setattr__(self, "_output_dtype", output.dtype)
        object.__setattr__(self, "_input_shape", x.shape)
        object.__setattr__(self, "_input_dtype", x.dtype)
        object.__setattr__(self, "_watches", inplace.watch(self, watched, x, output) if watched else ())

    def _take(self, grad_output) -> object:
        """The forward cache, once ``grad_output`` is known to fit it and no watched array has
        been modified in place since forward (``InplaceModificationError``); nothing is changed here."""
        name = type(self).__name__
        if self._cache is None:
            raise RuntimeError(f"{name}.backward called before forward")
        check_array(grad_output, f"{name}.backward", name="grad_output")
        if grad_output.shape != self._output_shape:
            raise ValueError(
                f"{name}.backward: grad_output must have the forward output's shape "
                f"{self._output_shape}, got {grad_output.shape}"
            )
        if grad_output.dtype != self._output_dtype:
            raise TypeError(
                f"{name}.backward: grad_output has dtype {grad_output.dtype}, the forward ran in "
                f"{self._output_dtype}"
            )
        if self._watches:  # most layers inside a container watch nothing (see inplace)
            inplace.check(f"{name}.backward", self._watches)
        return self._cache


class Linear(_CachingModule):
    """y = x Wᵀ + b. x: (*, in_features) -> y: (*, out_features).

    Weight (out_features, in_features) and bias (out_features,) are drawn from
    U(-1/√in_features, 1/√in_features), the distribution torch's default init gives; with
    ``in_features == 0`` the weight is empty and the bias 0 (torch's bound is 0 then).

    torch's arguments, positionally too: ``Linear(in, out, bias, device, dtype)``. ``device``:
    None or the CPU. ``dtype``: None (float32), a NumPy float dtype or torch.float32/float64.
    Plus keyword-only ``rng=`` (a Generator or seed for the initial values).
    Either size may be 0, and the input may be empty: see ``scratch.functional.linear``.
    """

    takes_input_grad = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 rng=None):
        super().__init__()
        self.in_features = check_integer(in_features, "Linear", "in_features", minimum=0)
        self.out_features = check_integer(out_features, "Linear", "out_features", minimum=0)
        _check_device(device, "Linear")
        dtype = _resolve_dtype(dtype, "Linear")
        rng = resolve_rng(rng, "Linear")
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        owner = f"Linear({self.in_features}, {self.out_features})"
        # checked before allocating; drawn in float64 chunks, the values of rng.uniform(...).astype(dtype)
        check_parameter(owner, "weight", (self.out_features, self.in_features), dtype)
        self.weight = Parameter(uniform_array(rng, -bound, bound, (self.out_features, self.in_features), dtype))
        if bias:
            check_parameter(owner, "bias", (self.out_features,), dtype)
        self.bias = Parameter(uniform_array(rng, -bound, bound, (self.out_features,), dtype)) if bias else None

    def _check_input(self, x) -> None:
        owner = f"Linear({self.in_features}, {self.out_features})"
        check_array(x, owner, dtype=self.weight.dtype, min_ndim=1)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{owner}: input's last dimension must be {self.in_features}, got shape {x.shape}")

    def forward(self, input: np.ndarray) -> np.ndarray:
        x = input  # torch's name for the argument (forward(input=...)); x below
        self._check_input(x)
        y, cache = F.linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._save(cache, y, x, (("input", cache[0]),))  # x as (M, in_features), a view when it can be
        return y

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """dL/dx (None when ``input_grad`` is False: not computed), adding dL/dW and dL/db into ``.grad``."""
        cache = self._take(grad_output)
        bias_grad = None if self.bias is None else self.bias.grad
        return F.linear_backward_accumulate(grad_output, cache, self.weight.grad, bias_grad, input_grad)

    # -- fused with the activation that follows it in a Sequential (same numbers, fewer passes) --
    def fuses_with(self, following: Module) -> bool:
        """Whether ``Sequential`` may run this layer and ``following`` as one fused pair."""
        if self.bias is None:
            return False
        if type(following) is ReLU:
            return True
        # The fused backward reads the sign of the output, which is the input's for slope >= 0.
        return type(following) is LeakyReLU and following.negative_slope >= 0

    def forward_fused(self, x: np.ndarray, following: Module) -> np.ndarray:
        """``following(self(x))`` with the bias and the activation in one pass; both layers keep
        the caches their own forward would have left. An in-place activation fuses too: the
        array it would overwrite is this layer's fresh output, which nothing else holds. A pair
        that does not fuse (``fuses_with``: any other activation, no bias) runs as the two calls."""
        if not self.fuses_with(following):
            return following(self(x))
        self._check_input(x)
        kind = "relu" if type(following) is ReLU else "leaky_relu"
        slope = getattr(following, "negative_slope", 0.0)
        out, linear_cache, activation_cache = F.linear_activation_forward(
            x, self.weight.data, self.bias.data, kind, slope)
        self._save(linear_cache, out, x, (("input", linear_cache[0]),))
        # its input, the pre-activation, has out's shape; it keeps the output (for LeakyReLU too)
        following._save(activation_cache, out, out, (("output", out),))
        return out

    def backward_fused(self, grad_output: np.ndarray, following: Module, *, input_grad: bool = True):
        """``self.backward(following.backward(grad_output))`` with the activation's backward and
        the bias gradient in one pass (as the two calls for a pair that does not fuse)."""
        if not self.fuses_with(following):
            return self.backward(following.backward(grad_output), input_grad=input_grad)
        activation_cache = following._take(grad_output)
        cache = self._take(grad_output)  # the pre-activation has the output's shape and dtype
        kind = "relu" if type(following) is ReLU else "leaky_relu"
        grad_pre = F.activation_backward_bias(grad_output, activation_cache, kind, self.bias.grad)
        return F.linear_backward_accumulate(grad_pre, cache, self.weight.grad, None, input_grad)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _Activation(_CachingModule):
    """Shape-preserving element-wise layer backed by a functional forward/backward pair.

    Its backward reads the cached output (ReLU, Sigmoid, Tanh: ``_KEEPS = "output"``) or the
    cached input (LeakyReLU, GELU, SiLU, ELU, Softplus), which is watched for in-place edits. A
    layer with ``inplace`` (ReLU, LeakyReLU, SiLU, ELU) writes its result into its input and
    returns that array."""

    _forward = None
    _backward = None
    _KEEPS = "output"
    inplace = False

    def forward(self, input: np.ndarray) -> np.ndarray:
        x = input  # torch's name for the argument (forward(input=...)); x below
        owner = type(self).__name__
        check_array(x, owner)
        if self.inplace:
            _before_writing(x, owner)
            out, cache = type(self)._forward(x, *self._arguments(), inplace=True)
        else:
            out, cache = type(self)._forward(x, *self._arguments())
        self._save(cache, out, x, self._kept(cache))
        return out

    def _kept(self, cache) -> tuple:
        """``(what, array)`` of the array the backward reads, to watch."""
        return ((self._KEEPS, cache if self._KEEPS == "output" else cache[0]),)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return type(self)._backward(grad_output, self._take(grad_output))

    def _arguments(self) -> tuple:
        return ()

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class ReLU(_Activation):
    """max(x, 0); gradient 0 at x = 0, as torch. ``inplace=True``: the result is written into
    the input, which is returned (the backward reads the output either way)."""

    _forward = staticmethod(F.relu_forward)
    _backward = staticmethod(F.relu_backward)

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = _check_flag(inplace, "ReLU", "inplace")


class _InPlaceFromOutput(_Activation):
    """An activation whose backward reads its input, or after an in-place forward its output,
    which stands in for the input only for some arguments: where it cannot (the forward leaves
    ``None`` as the cache's array), the backward is refused, as torch refuses it, with
    ``_REFUSAL``'s reason; ``Sequential.backward`` asks ``_backward_refusal`` before any child runs."""

    _KEEPS = "input"
    _REFUSAL = ""

    def _kept(self, cache) -> tuple:
        if not self.inplace:
            return super()._kept(cache)
        return () if cache[0] is None else (("output", cache[0]),)

    def _backward_refusal(self) -> str | None:
        """Why the cached forward admits no backward, or None."""
        if self._cache is None or self._cache[0] is not None:
            return None
        return f"{self!r} ran its forward in place with {self._REFUSAL} (torch refuses this backward too)"

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        cache = self._take(grad_output)
        refusal = self._backward_refusal()
        if refusal:
            raise RuntimeError(f"{type(self).__name__}.backward: {refusal}")
        return type(self)._backward(grad_output, cache)


class LeakyReLU(_InPlaceFromOutput):
    """x if x > 0 else negative_slope · x.

    ``inplace=True``: the result is written into the input, which is returned; the backward then
    reads the output's sign, the input's for a slope >= 0. With a negative slope (or NaN) the
    backward is refused, as torch refuses it: the input is gone and the output's sign is not its
    sign. (Inference with it is fine.)"""

    _forward = staticmethod(F.leaky_relu_forward)
    _backward = staticmethod(F.leaky_relu_backward)
    _REFUSAL = ("a negative slope, so the input is gone and the output's sign is not the input's: expected a "
                "forward with inplace=False or a negative_slope >= 0")

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        if not is_real_number(negative_slope):
            raise TypeError(f"LeakyReLU: negative_slope must be a number, got {negative_slope!r} "
                            f"({type(negative_slope).__name__})")
        self.negative_slope = float(negative_slope)
        self.inplace = _check_flag(inplace, "LeakyReLU", "inplace")

    def _arguments(self) -> tuple:
        return (self.negative_slope,)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(_Activation):
    """1 / (1 + e^{-x}), computed without overflow."""

    _forward = staticmethod(F.sigmoid_forward)
    _backward = staticmethod(F.sigmoid_backward)

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "_workspace", Workspace())

    def _arguments(self) -> tuple:
        return (self._workspace,)


class Tanh(_Activation):
    """tanh(x)."""

    _forward = staticmethod(F.tanh_forward)
    _backward = staticmethod(F.tanh_backward)


def _check_number(value, owner: str, name: str):
    """A real number (a Python int or float is kept as given, so that the repr is torch's);
    anything else is refused with a TypeError naming the layer."""
    if not is_real_number(value):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r} ({type(value).__name__})")
    return value if isinstance(value, (int, float)) else float(value)


class GELU(_Activation):
    """x · Φ(x), Φ the standard normal CDF: ``approximate="none"`` by erf, ``"tanh"`` by
    ½x(1 + tanh(√(2/π)(x + 0.044715x³))), torch's two forms. The backward reads the input and the
    forward's Φ(x) (or tanh), which is private."""

    _forward = staticmethod(F.gelu_forward)
    _backward = staticmethod(F.gelu_backward)
    _KEEPS = "input"

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if not isinstance(approximate, str):
            raise TypeError(f"GELU: approximate must be the string 'none' or 'tanh', got {approximate!r} "
                            f"({type(approximate).__name__})")
        if approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh' (torch's two forms), got {approximate!r}")
        self.approximate = approximate

    def _arguments(self) -> tuple:
        return (self.approximate,)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Activation):
    """x · σ(x) (swish), overflow-free for any x. ``inplace=True``: the result is written into the
    input, which is returned; the backward then reads a copy of the input taken before the write
    (torch's in-place SiLU keeps one too), so a later edit of the output does not concern it."""

    _forward = staticmethod(F.silu_forward)
    _backward = staticmethod(F.silu_backward)
    _KEEPS = "input"

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = _check_flag(inplace, "SiLU", "inplace")

    def _kept(self, cache) -> tuple:
        return () if self.inplace else super()._kept(cache)  # in place it keeps a private copy


class ELU(_InPlaceFromOutput):
    """x for x > 0, alpha · (e^x - 1) for x <= 0 (by expm1).

    The backward reads the input, as torch's does. ``inplace=True``: the result is written into
    the input, which is returned; the backward then reads the output (alpha · e^x = out + alpha),
    which tells the branch only for alpha >= 0: with a negative alpha (or NaN) the backward is
    refused, as torch refuses it. (Inference with it is fine.)"""

    _forward = staticmethod(F.elu_forward)
    _backward = staticmethod(F.elu_backward)
    _REFUSAL = ("a negative alpha, so the input is gone and the output does not tell which branch each element "
                "took: expected a forward with inplace=False or an alpha >= 0")

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = _check_number(alpha, "ELU", "alpha")
        self.inplace = _check_flag(inplace, "ELU", "inplace")

    def _arguments(self) -> tuple:
        return (self.alpha,)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Softplus(_Activation):
    """log(1 + e^{beta·x}) / beta, and x itself where beta · x > threshold (torch's cut-off),
    evaluated without an exponential of a positive number. The backward reads the input and the
    forward's e^{-|beta·x|}, which is private."""

    _forward = staticmethod(F.softplus_forward)
    _backward = staticmethod(F.softplus_backward)
    _KEEPS = "input"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta = _check_number(beta, "Softplus", "beta")
        self.threshold = _check_number(threshold, "Softplus", "threshold")

    def _arguments(self) -> tuple:
        return (self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


def _normalize_dim(dim: int, shape: tuple, owner: str, name: str = "dim") -> int:
    """``dim`` in [0, ndim), counted from the end when negative; a 0-d input counts as one
    dimension, as torch wraps dims for a scalar (so only -1 and 0 fit it)."""
    ndim = max(len(shape), 1)
    if not -ndim <= dim < ndim:
        scalar = "; a 0-d input counts as one, as in torch" if not shape else ""
        raise ValueError(f"{owner}: {name} {dim} out of range for an input of shape {shape} "
                         f"(expected a dim in [{-ndim}, {ndim - 1}]{scalar})")
    return dim % ndim


class TiedLinear(_CachingModule):
    """y = x W + b with W the weight of another ``Linear`` (its transpose's map): a tied decoder.

    ``TiedLinear(source)`` maps (*, source.out_features) -> (*, source.in_features). It owns only
    its bias (in_features,), zeros at the start; the weight stays ``source.weight``, so a
    ``state_dict`` holds it once, and ``backward`` ADDS this use's dL/dW = (dyᵀ x)ᵀ into
    ``source.weight.grad``, beside whatever the source's own backward adds (the gradient of a
    shared weight is the sum over its uses). ``source`` is referenced, not registered as a child.
    """

    takes_input_grad = True

    def __init__(self, source: Linear, bias: bool = True):
        super().__init__()
        if not isinstance(source, Linear):
            raise TypeError(f"TiedLinear: source must be a scratch nn.Linear, got {type(source).__name__}")
        object.__setattr__(self, "source", source)
        self.in_features, self.out_features = source.out_features, source.in_features
        dtype = source.weight.dtype
        if bias:
            check_parameter(f"TiedLinear({self.in_features}, {self.out_features})", "bias", (self.out_features,), dtype)
        self.bias = Parameter(np.zeros(source.in_features, dtype=dtype)) if bias else None

    def forward(self, input: np.ndarray) -> np.ndarray:
        x = input  # torch's name for the argument (forward(input=...)); x below
        weight = self.source.weight
        owner = f"TiedLinear({self.in_features}, {self.out_features})"
        check_array(x, owner, dtype=weight.dtype, min_ndim=1)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{owner}: input's last dimension must be {self.in_features}, got shape {x.shape}")
        # Wᵀ (in_features of the source, out_features of the source) as this layer's weight: a view
        y, cache = F.linear_forward(x, weight.data.T, None if self.bias is None else self.bias.data)
        self._save(cache, y, x, (("input", cache[0]),))
        return y

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """dL/dx = dy Wᵀ; adds (dyᵀ x)ᵀ into ``source.weight.grad`` (through a transposed view)."""
        cache = self._take(grad_output)
        bias_grad = None if self.bias is None else self.bias.grad
        return F.linear_backward_accumulate(grad_output, cache, self.source.weight.grad.T, bias_grad, input_grad)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tied to Linear's weight"


class Flatten(_CachingModule):
    """Merge dims start_dim..end_dim: (N, C, H, W) -> (N, C·H·W) by default.

    As torch's ``flatten``: the merged size is the product of the merged sides, so empty inputs
    flatten too ((0, 3, 4) -> (0, 12); (2, 0, 4) -> (2, 0)); a 0-d input counts as one dimension
    (``Flatten(0)`` gives (1,); the default start_dim 1 is out of range for it, as in torch).
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = check_integer(start_dim, "Flatten", "start_dim")
        self.end_dim = check_integer(end_dim, "Flatten", "end_dim")

    def forward(self, input: np.ndarray) -> np.ndarray:
        x = input  # torch's name for the argument (forward(input=...)); x below
        check_array(x, "Flatten")
        start = _normalize_dim(self.start_dim, x.shape, "Flatten", "start_dim")
        end = _normalize_dim(self.end_dim, x.shape, "Flatten", "end_dim")
        if start > end:
            raise ValueError(f"Flatten: start_dim {self.start_dim} comes after end_dim {self.end_dim} for shape {x.shape}")
        if x.ndim == 0:
            y = x.reshape(1)
        else:  # the merged size spelled out: reshape(..., -1, ...) cannot infer it when another side is 0
            y = x.reshape(*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])
        self._save(x.shape, y, x)
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        input_shape = self._take(grad_output)  # checked before it is used
        return grad_output.reshape(input_shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


def _unflattened_sizes(unflattened_size) -> tuple[int, ...]:
    """``unflattened_size`` as a tuple of ints, each >= 0 or the one -1 torch infers."""
    if isinstance(unflattened_size, (str, bytes)) or not hasattr(unflattened_size, "__iter__"):
        raise TypeError(f"Unflatten: unflattened_size must be a tuple of ints, got {unflattened_size!r} "
                        f"({type(unflattened_size).__name__})")
    sizes = tuple(check_integer(size, "Unflatten", f"unflattened_size[{index}]")
                  for index, size in enumerate(unflattened_size))
    if not sizes:
        raise ValueError("Unflatten: unflattened_size must be non-empty (torch: sizes must be non-empty), got ()")
    if any(size < -1 for size in sizes) or sizes.count(-1) > 1:
        raise ValueError(f"Unflatten: unflattened_size must be sizes >= 0, with at most one -1 (inferred), "
                         f"got {sizes}")
    return sizes


class Unflatten(_CachingModule):
    """Split dimension ``dim`` into ``unflattened_size``: (N, 784) -> (N, 1, 28, 28).

    As torch's ``unflatten``: one size may be -1, inferred from the others (it is ambiguous, and
    refused, when the others multiply to 0); sizes may be 0, so empty inputs split too.
    """

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        self.dim = check_integer(dim, "Unflatten", "dim")
        self.unflattened_size = _unflattened_sizes(unflattened_size)

    def _sizes_for(self, x: np.ndarray, dim: int) -> tuple[int, ...]:
        """The sizes dimension ``dim`` of ``x`` splits into (the -1 worked out), or a ValueError."""
        size, sizes = x.shape[dim], self.unflattened_size
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes and known == 0:
            raise ValueError(f"Unflatten: dimension {self.dim} of shape {x.shape} cannot be split into {sizes}: "
                             f"the -1 is ambiguous when the other sizes multiply to 0")
        if -1 in sizes and size % known == 0:
            return tuple(size // known if s == -1 else s for s in sizes)
        if -1 not in sizes and known == size:
            return sizes
        raise ValueError(f"Unflatten: dimension {self.dim} of shape {x.shape} cannot be split into {sizes}")

    def forward(self, input: np.ndarray) -> np.ndarray:
        x = input  # torch's name for the argument (forward(input=...)); x below
        check_array(x, "Unflatten")
        dim = _normalize_dim(self.dim, x.shape, "Unflatten")
        if x.ndim == 0:
            raise ValueError(f"Unflatten: dimension {self.dim} of shape {x.shape} cannot be split into "
                             f"{self.unflattened_size}: a 0-d input has no dimension to split")
        sizes = self._sizes_for(x, dim)
        y = x.reshape(*x.shape[:dim], *sizes, *x.shape[dim + 1:])
        self._save(x.shape, y, x)
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        input_shape = self._take(grad_output)  # checked before it is used
        return grad_output.reshape(input_shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
