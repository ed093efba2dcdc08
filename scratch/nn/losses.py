"""Loss modules: ``loss = loss_fn(input, target)`` then ``dinput = loss_fn.backward()``.

A reduced loss (``"mean"``, ``"sum"``) is returned as a Python float; ``"none"`` returns the
per-element array, and its ``backward`` then needs an upstream gradient of the same shape.
Editing the input or the target in place between the loss and its ``backward`` raises
``InplaceModificationError`` there, as in torch: both are fingerprinted (``scratch.nn.inplace``)
unless a model's pass vouches that its caller cannot reach them.
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.nn import inplace
from scratch.nn.module import _address
from scratch.validate import check_array, check_reduction, check_same_shape, is_real_number
from scratch.workspace import Workspace


class _Loss:
    """Shared call/backward plumbing for losses with no parameters."""

    _forward = None
    _backward = None
    _reductions = ("mean", "sum", "none")
    #: the names of the two arrays the cache starts with (the forward's two arguments), for errors
    _WATCHED = ("input", "target")

    def __init__(self, reduction: str = "mean"):
        self.reduction = check_reduction(reduction, type(self).__name__, self._reductions)
        self._cache = None
        self._shape = None
        self._dtype = None
        self._watches = ()

    def _check_inputs(self, input, target):
        owner = type(self).__name__
        check_array(input, owner, name="input", allow_empty=False)
        check_array(target, owner, dtype=input.dtype, name="target", dtype_source="input is")
        check_same_shape(input, target, owner)

    def _arguments(self) -> tuple:
        return ()

    def __call__(self, input: np.ndarray, target: np.ndarray):
        return self.forward(input, target)

    def forward(self, input: np.ndarray, target: np.ndarray):
        self._check_inputs(input, target)
        loss, self._cache = type(self)._forward(input, target, self.reduction, *self._arguments())
        self._shape, self._dtype = input.shape, input.dtype
        self._watches = inplace.watch(self, tuple(zip(self._WATCHED, self._cache[:2])), (input, target))
        return loss if self.reduction == "none" else float(loss)

    def backward(self, grad_output=1.0) -> np.ndarray:
        """dL/d(input), scaled by ``grad_output`` (a float, or an array for ``"none"``)."""
        self._check_upstream(grad_output)
        return type(self)._backward(grad_output, self._cache)

    def _check_upstream(self, grad_output) -> None:
        """Refuse an upstream gradient the last forward cannot take: an array of the input's shape
        and dtype for ``"none"``, a real number otherwise; and refuse to run when the input or
        the target was modified in place since the forward (``InplaceModificationError``)."""
        owner = type(self).__name__
        if self._cache is None:
            raise RuntimeError(f"{owner}.backward called before the loss was computed")
        if self.reduction == "none":
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class BCELoss(_Loss):
    """Binary cross-entropy on probabilities in [0, 1]; torch's clamps (log ≥ -100, p(1-p) ≥ 1e-12)."""

    _forward = staticmethod(F.bce_forward)
    _backward = staticmethod(F.bce_backward)

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction)
        self._workspace = Workspace()

    def _arguments(self) -> tuple:
        return (self._workspace,)

    def _check_inputs(self, input, target):
        super()._check_inputs(input, target)
        if not (input.min() >= 0 and input.max() <= 1):  # a NaN makes min/max NaN, so it fails too
            raise ValueError(
                f"BCELoss: input must be probabilities in [0, 1], got values in "
                f"[{np.nanmin(input):.4g}, {np.nanmax(input):.4g}]; for logits use BCEWithLogitsLoss"
            )


    def backward_through_sigmoid(self, sigmoid, grad_output=1.0) -> np.ndarray:
        """dL/d(logits) where this loss's input was the output of ``sigmoid`` (an ``nn.Sigmoid``).

        The BCE's backward and the Sigmoid's in one pass (``F.sigmoid_bce_backward``), giving the
        same numbers as ``sigmoid.backward(self.backward(grad_output))``; falls back to exactly
        that when the loss's input is not the sigmoid's cached output (the same memory).
        """
        self._check_upstream(grad_output)
        probabilities = self._cache[0]
        output = sigmoid._cache
        if not (isinstance(output, np.ndarray) and output.size == probabilities.size
                and output.dtype == probabilities.dtype and output.flags.c_contiguous
                and _address(output) == _address(probabilities)):
            if sigmoid._cache is not None and math.prod(sigmoid._output_shape) != probabilities.size:
                raise ValueError(
                    f"BCELoss.backward_through_sigmoid: the loss's input {probabilities.shape} is not "
                    f"the Sigmoid's last output {sigmoid._output_shape}: the Sigmoid ran again after "
                    f"the loss; compute the loss again before its backward")
            return sigmoid.backward(self.backward(grad_output).reshape(sigmoid._output_shape))
        return F.sigmoid_bce_backward(grad_output, self._cache).reshape(output.shape)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy in one stable step; finite for logits up to ±1e4 and beyond."""

    _forward = staticmethod(F.bce_with_logits_forward)
    _backward = staticmethod(F.bce_with_logits_backward)


class MSELoss(_Loss):
    """Squared error (x - y)²."""

    _forward = staticmethod(F.mse_forward)
    _backward = staticmethod(F.mse_backward)


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

    def _check_inputs(self, mean, logvar):
        owner = "GaussianKL"
        check_array(mean, owner, name="mean", min_ndim=1, allow_empty=False)
        check_array(logvar, owner, dtype=mean.dtype, name="logvar", dtype_source="mean is")
        check_same_shape(mean, logvar, owner, names=("mean", "logvar"))
