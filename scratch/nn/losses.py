"""Loss modules: ``loss = loss_fn(input, target)`` then ``dinput = loss_fn.backward()``.

A reduced loss (``"mean"``, ``"sum"``) is returned as a Python float; ``"none"`` returns the
per-element array, and its ``backward`` then needs an upstream gradient of the same shape.
Editing the input, the target or a weight in place between the loss and its ``backward`` raises
``InplaceModificationError`` there, as in torch: they are fingerprinted (``scratch.nn.inplace``)
unless a model's pass vouches that its caller cannot reach them.

``BCELoss``, ``BCEWithLogitsLoss`` and ``MSELoss`` take torch's constructor arguments in torch's
order, ``weight`` / ``pos_weight`` (arrays that broadcast to the input's shape) and the
deprecated ``size_average`` / ``reduce`` included (mapped to a reduction as torch's
``_Reduction.legacy_get_string`` does, with its warning); an empty input passes through as in
torch. ``backward`` returns the gradient of the input only: torch's gradients with respect to
the target and the weights are out of scope. Like torch's modules they have ``state_dict()``
(the weights, under torch's buffer names) and the repr ``BCELoss()``.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import numpy as np

from scratch import functional as F
from scratch.nn import inplace
from scratch.nn.module import _address
from scratch.validate import (
    as_numpy_array,
    check_array,
    check_real_array,
    check_reduction,
    check_same_shape,
    is_real_number,
    is_torch_tensor,
)
from scratch.workspace import Workspace

#: the reductions the three torch losses take (``"elementwise_mean"``: torch's deprecated "mean")
REDUCTIONS = ("mean", "sum", "none")


def legacy_reduction(owner: str, size_average, reduce, reduction: str) -> str:
    """The reduction torch's loss modules use: ``reduction``, unless either deprecated argument is
    given, in which case torch's ``_Reduction.legacy_get_string`` decides (None counts as True;
    both True: "mean"; ``reduce`` True alone: "sum"; ``reduce`` False: "none") and warns as it
    does, ignoring ``reduction``. ``size_average`` / ``reduce`` must be a bool or None (torch
    takes any truthy value; a string there is a misplaced ``reduction``, so it is refused)."""
    for name, value in (("size_average", size_average), ("reduce", reduce)):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(
                f"{owner}: {name} must be True, False or None (deprecated: use reduction=), got {value!r} "
                f"({type(value).__name__}); torch's argument order is {owner}({_SIGNATURES.get(owner, '')}), "
                f"so pass reduction by keyword")
    if size_average is None and reduce is None:
        if reduction == "elementwise_mean":
            warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
                          UserWarning, stacklevel=4)
            return "mean"
        return check_reduction(reduction, owner, REDUCTIONS)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    resolved = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{resolved}' instead.",
                  UserWarning, stacklevel=4)
    return resolved


_SIGNATURES = {
    "BCELoss": "weight, size_average, reduce, reduction",
    "BCEWithLogitsLoss": "weight, size_average, reduce, reduction, pos_weight",
    "MSELoss": "size_average, reduce, reduction",
}


def _weight_array(value, owner: str, name: str):
    """``value`` (None, a NumPy array or a torch tensor of real numbers) as a NumPy array or None."""
    if value is None:
        return None
    if not (isinstance(value, np.ndarray) or is_torch_tensor(value)):
        hint = (f"; torch's argument order is {owner}({_SIGNATURES[owner]}), so pass reduction by keyword"
                if isinstance(value, str) else "")
        raise TypeError(f"{owner}: {name} must be a NumPy array or None, got {type(value).__name__} ({value!r}){hint}")
    return check_real_array(as_numpy_array(value, f"{owner}: {name}"), f"{owner}: {name}")


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` (torch's rules, as ``np.broadcast_to``)."""
    return len(shape) <= len(target) and all(size in (1, want) for size, want in zip(reversed(shape), reversed(target)))


class _Loss:
    """Shared call/backward plumbing for losses with no parameters."""

    _forward = None
    _backward = None
    _reductions = REDUCTIONS
    #: the names of the two arrays the cache starts with (the forward's two arguments), for errors
    _WATCHED = ("input", "target")
    #: the weight arrays (torch's buffers) the loss holds, by attribute name, in torch's order
    _BUFFERS: tuple[str, ...] = ()

    def __init__(self, reduction: str = "mean"):
        self.reduction = check_reduction(reduction, type(self).__name__, self._reductions)
        self._init_state()

    def _init_state(self) -> None:
        self._cache = None
        self._shape = None
        self._dtype = None
        self._watches = ()

    def _check_inputs(self, input, target):
        owner = type(self).__name__
        check_array(input, owner, name="input")
        check_array(target, owner, dtype=input.dtype, name="target", dtype_source="input is")
        self._check_target_shape(input, target)
        for name in self._BUFFERS:
            self._check_buffer(name, input.shape)

    def _check_target_shape(self, input, target) -> None:
        """torch's BCE losses refuse a target of another shape (MSELoss broadcasts: see there)."""
        check_same_shape(input, target, type(self).__name__)

    def _check_buffer(self, name: str, shape: tuple) -> None:
        """Refuse a weight that is not an array or does not broadcast to the input's shape."""
        owner = type(self).__name__
        value = _weight_array(getattr(self, name), owner, name)
        if value is not None and not _broadcasts_to(value.shape, shape):
            example = f"; one {name} per class along the last dimension has shape {shape[-1:]}" if shape else ""
            raise ValueError(
                f"{owner}: {name} must broadcast to the input's shape {shape} (torch's rules: its shape, "
                f"aligned at the right, no longer than the input's, each size 1 or the input's), "
                f"got shape {value.shape}{example}")

    def _output_shape(self, input, target) -> tuple:
        return input.shape

    def _arguments(self) -> tuple:
        return ()

    def _buffers(self) -> tuple:
        """(the weight arrays, their ``(name, array)`` pairs) for the watch: the backward reads them
        (or copies cast and broadcast from them), and torch refuses a backward after a weight was
        written in place, as it refuses one after the input was."""
        pairs = tuple((name, getattr(self, name)) for name in self._BUFFERS
                      if isinstance(getattr(self, name), np.ndarray))
        return tuple(array for _, array in pairs), pairs

    def __call__(self, input: np.ndarray, target: np.ndarray):
        return self.forward(input, target)

    def forward(self, input: np.ndarray, target: np.ndarray):
        self._check_inputs(input, target)
        loss, self._cache = type(self)._forward(input, target, self.reduction, *self._arguments())
        self._shape, self._dtype = self._output_shape(input, target), input.dtype
        given, kept = self._buffers()
        self._watches = inplace.watch(self, tuple(zip(self._WATCHED, self._cache[:2])) + kept, (input, target, *given))
        return loss if self.reduction == "none" else float(loss)

    def backward(self, grad_output=1.0) -> np.ndarray:
        """dL/d(input), scaled by ``grad_output`` (a float, or an array for ``"none"``)."""
        self._check_upstream(grad_output)
        return type(self)._backward(grad_output, self._cache)

    def _check_upstream(self, grad_output) -> None:
        """Refuse an upstream gradient the last forward cannot take: an array of the output's shape
        and dtype for ``"none"`` (a real number too, when that shape is ``()``), a real number
        otherwise; and refuse to run when the input, the target or a weight was modified in place
        since the forward (``InplaceModificationError``)."""
        owner = type(self).__name__
        if self._cache is None:
            raise RuntimeError(f"{owner}.backward called before the loss was computed")
        if self.reduction == "none" and not (self._shape == () and is_real_number(grad_output)
                                             and not isinstance(grad_output, np.ndarray)):
            if not isinstance(grad_output, np.ndarray) or grad_output.shape != self._shape:
                got = getattr(grad_output, "shape", type(grad_output).__name__)
                raise ValueError(
                    f"{owner}(reduction='none').backward: grad_output must be an array of shape "
                    f"{self._shape}, got {got}"
                )
            if grad_output.dtype != self._dtype:
                raise TypeError(
                    f"{owner}(reduction='none').backward: grad_output must have the input's dtype "
                    f"{self._dtype}, got {grad_output.dtype}"
                )
        elif not is_real_number(grad_output):
            got = f"shape {grad_output.shape}" if isinstance(grad_output, np.ndarray) else repr(grad_output)
            raise ValueError(
                f"{owner}.backward: grad_output of a reduced loss must be a real number, got {got}"
            )
        if self._watches:
            inplace.check(f"{owner}.backward", self._watches)

    # -- torch's Module API for a loss: no parameters; the weights are buffers ----------------
    def named_parameters(self, prefix: str = ""):
        return iter(())

    def parameters(self) -> list:
        return []

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of the weights that are set, under torch's buffer names (``weight``, ``pos_weight``)."""
        return OrderedDict((name, np.array(getattr(self, name))) for name in self._BUFFERS
                           if getattr(self, name) is not None)

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays into the weights that are set, in place and cast to their dtypes, as torch's
        ``load_state_dict`` copies into buffers; keys and shapes are checked first (``ValueError``)."""
        owner = type(self).__name__
        if not hasattr(state_dict, "items"):
            raise TypeError(f"{owner}.load_state_dict: expected a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        own = {name: getattr(self, name) for name in self._BUFFERS if getattr(self, name) is not None}
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        arrays, mismatched = {}, []
        for key in own:
            if key in state_dict:
                where = f"{owner}.load_state_dict[{key!r}]"
                arrays[key] = check_real_array(as_numpy_array(state_dict[key], where), where)
                if arrays[key].shape != own[key].shape:
                    mismatched.append(f"{key!r}: expected shape {own[key].shape}, got {arrays[key].shape}")
        problems = ([f"missing keys {missing}"] if strict and missing else []) + (
            [f"unexpected keys {unexpected}"] if strict and unexpected else []) + (
            ["shape mismatch " + "; ".join(mismatched)] if mismatched else [])
        if problems:
            raise ValueError(f"{owner}.load_state_dict: " + "; ".join(problems))
        for key, array in arrays.items():
            np.copyto(getattr(self, key), array, casting="unsafe")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"  # as torch's: its loss modules show no arguments


class _TorchLoss(_Loss):
    """A torch loss: torch's ``size_average`` / ``reduce`` / ``reduction`` (``legacy_reduction``)."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        self.reduction = legacy_reduction(type(self).__name__, size_average, reduce, reduction)
        self._init_state()


class BCELoss(_TorchLoss):
    """Binary cross-entropy on probabilities in [0, 1]; torch's clamps (log ≥ -100, p(1-p) ≥ 1e-12).

    ℓ = -w (y log p + (1 - y) log(1 - p)) with ``weight`` w (None: 1), an array that broadcasts
    to the input's shape (a scalar, one value per class along the last dimension, ...).
    """

    _forward = staticmethod(F.bce_forward)
    _backward = staticmethod(F.bce_backward)
    _BUFFERS = ("weight",)

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        self.weight = _weight_array(weight, "BCELoss", "weight")
        super().__init__(size_average, reduce, reduction)
        self._workspace = Workspace()

    def _arguments(self) -> tuple:
        return (self._workspace, self.weight)

    def _check_inputs(self, input, target):
        super()._check_inputs(input, target)
        # a NaN makes min/max NaN, so it fails too; an empty input has no value to check
        if input.size and not (input.min() >= 0 and input.max() <= 1):
            raise ValueError(
                f"BCELoss: input must be probabilities in [0, 1], got values in "
                f"[{np.nanmin(input):.4g}, {np.nanmax(input):.4g}]; for logits use BCEWithLogitsLoss"
            )


    def backward_through_sigmoid(self, sigmoid, grad_output=1.0) -> np.ndarray:
        """dL/d(logits) where this loss's input was the output of ``sigmoid`` (an ``nn.Sigmoid``).

        The BCE's backward and the Sigmoid's in one pass (``F.sigmoid_bce_backward``), giving the
        same numbers as ``sigmoid.backward(self.backward(grad_output))``; falls back to exactly
        that when the loss's input is not the sigmoid's cached output (the same memory), and
        when the loss has a ``weight`` (the fused kernel is the unweighted one).
        """
        self._check_upstream(grad_output)
        probabilities = self._cache[0]
        output = sigmoid._cache
        if not (self._cache[3] is None and isinstance(output, np.ndarray) and output.size == probabilities.size
                and output.dtype == probabilities.dtype and output.flags.c_contiguous
                and _address(output) == _address(probabilities)):
            if sigmoid._cache is not None and math.prod(sigmoid._output_shape) != probabilities.size:
                raise ValueError(
                    f"BCELoss.backward_through_sigmoid: the loss's input {probabilities.shape} is not "
                    f"the Sigmoid's last output {sigmoid._output_shape}: the Sigmoid ran again after "
                    f"the loss; compute the loss again before its backward")
            return sigmoid.backward(self.backward(grad_output).reshape(sigmoid._output_shape))
        return F.sigmoid_bce_backward(grad_output, self._cache).reshape(output.shape)


class BCEWithLogitsLoss(_TorchLoss):
    """Sigmoid + binary cross-entropy in one stable step; finite for logits up to ±1e4 and beyond.

    ℓ = w·((1 - y) x + (1 + (pw - 1) y)·softplus(-x)) with ``weight`` w and ``pos_weight`` pw
    (None: 1), arrays that broadcast to the input's shape; pw weighs the positive term, torch's
    way to rebalance classes: one value per class along the last dimension, shape (C,).
    """

    _forward = staticmethod(F.bce_with_logits_forward)
    _backward = staticmethod(F.bce_with_logits_backward)
    _BUFFERS = ("weight", "pos_weight")

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None):
        self.weight = _weight_array(weight, "BCEWithLogitsLoss", "weight")
        self.pos_weight = _weight_array(pos_weight, "BCEWithLogitsLoss", "pos_weight")
        super().__init__(size_average, reduce, reduction)

    def _arguments(self) -> tuple:
        return (self.weight, self.pos_weight)


class MSELoss(_TorchLoss):
    """Squared error (x - y)².

    A target of another shape broadcasts with the input, as in torch, with torch's warning (it
    is usually a mistake); the loss then has the broadcast shape and the gradient is summed
    back to the input's shape.
    """

    _forward = staticmethod(F.mse_forward)
    _backward = staticmethod(F.mse_backward)

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)

    def _check_target_shape(self, input, target) -> None:
        if input.shape == target.shape:
            return
        try:
            np.broadcast_shapes(input.shape, target.shape)
        except ValueError:
            raise ValueError(
                f"MSELoss: input and target must have the same shape, or shapes that broadcast (torch's rules), "
                f"got {input.shape} and {target.shape}") from None
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size ({input.shape}). "
                      "This will likely lead to incorrect results due to broadcasting. "
                      "Please ensure they have the same size.", UserWarning, stacklevel=5)

    def _output_shape(self, input, target) -> tuple:
        return np.broadcast_shapes(input.shape, target.shape)


class GaussianKL(_Loss):
    """KL(N(μ, diag e^{logvar}) ‖ N(0, I)); ``loss = kl(mean, logvar)``, ``dmean, dlogvar = kl.backward()``.

    reduction: "sum" (default; the VAE's loss), "batchmean", "mean" or "none".
    """

    _forward = staticmethod(F.gaussian_kl_forward)
    _backward = staticmethod(F.gaussian_kl_backward)
    _reductions = ("sum", "batchmean", "mean", "none")
    _WATCHED = ("mean", "logvar")

    def __init__(self, reduction: str = "sum"):
        super().__init__(reduction)

    def __repr__(self) -> str:
        return f"GaussianKL(reduction={self.reduction!r})"

    def _check_inputs(self, mean, logvar):
        owner = "GaussianKL"
        check_array(mean, owner, name="mean", min_ndim=1, allow_empty=False)
        check_array(logvar, owner, dtype=mean.dtype, name="logvar", dtype_source="mean is")
        check_same_shape(mean, logvar, owner, names=("mean", "logvar"))
