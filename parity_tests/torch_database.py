"""The fourth oracle: torch's own test database, run against scratch.

torch ships the sample inputs its developers wrote for every operator, module and optimizer
(``torch.testing._internal``: ``op_db``'s OpInfos, ``module_db``'s ModuleInfos, ``optim_db``'s
OptimizerInfos). This module maps each sample onto scratch's API and compares what both compute:

- **modules**: every ModuleInfo whose class name is a class in ``scratch.nn`` (picked up by name:
  a layer scratch gains later brings its torch cases with it). Both are built from the sample's
  constructor arguments; torch's parameters and buffers are loaded into scratch (strict, so the
  ``state_dict`` keys must be torch's); then the output(s), the gradient of every input that
  requires grad (through one random cotangent), every parameter's gradient, and the
  ``state_dict`` (buffers) after the forward pass are compared.
- **ops**: every OpInfo in ``OP_ADAPTERS``, a map from torch's functional op to the scratch layer
  that computes it (``F.conv2d(x, w, b, stride, ...)`` is ``nn.Conv2d(...)`` holding w and b);
  compared as modules are, the op's tensor arguments that are parameters of the layer compared
  as parameter gradients. And every error input of those OpInfos (arguments torch refuses):
  scratch must refuse them too.
- **optimizers**: every OptimizerInfo whose class name is a class in ``scratch.optim``: the same
  parameters and the same random gradients through five steps of each, the parameters compared
  after every step and the optimizer state (``state_dict``) after the last; and every error
  input, which scratch must refuse with torch's exception type.

A case scratch cannot run is on ``EXCLUSIONS`` with its reason; no reason may be an argument of
the op itself. Counts per (source, name, dtype) are kept in ``COUNTS``; the suite prints them
(``parity_tests/conftest.py``) and so does ``python -m parity_tests.torch_database``.
float64 is compared under the table's ("torch", float64) tolerance, float32 under its float32 one.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from scratch import nn
from scratch import optim as scratch_optim
from scratch.testing import assert_close, to_numpy

DTYPES = (np.float64, np.float32)


@functools.cache
def databases():
    """(op_db, module_db, optim_db), imported once; the import's side effects on warning filters
    and the environment are undone, so that the rest of the suite runs as without it."""
    environment = dict(os.environ)
    with warnings.catch_warnings():
        from torch.testing._internal.common_methods_invocations import op_db
        from torch.testing._internal.common_modules import module_db
        from torch.testing._internal.common_optimizers import optim_db
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    return op_db, module_db, optim_db


# ---------------------------------------------------------------------------- ops onto layers
# Each adapter takes the case's dtype and then the op's arguments with torch's names and defaults
# (tensors as torch gave them), and returns (scratch layer, {parameter name: torch tensor or
# None}, forward args, forward kwargs). The parameters are loaded into the layer; the forward
# arguments are converted to NumPy.


def _linear(dtype, input, weight, bias=None):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=dtype)
    return layer, {"weight": weight, "bias": bias}, (input,), {}


def _conv2d(dtype, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride, padding, dilation,
                      groups, bias=bias is not None, dtype=dtype)
    return layer, {"weight": weight, "bias": bias}, (input,), {}


def _conv_transpose2d(dtype, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    layer = nn.ConvTranspose2d(weight.shape[0], weight.shape[1] * groups, tuple(weight.shape[2:]), stride, padding,
                               output_padding, groups, bias=bias is not None, dilation=dilation, dtype=dtype)
    return layer, {"weight": weight, "bias": bias}, (input,), {}


def _max_pool2d(dtype, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    layer = nn.MaxPool2d(kernel_size, stride, padding, dilation, return_indices=return_indices, ceil_mode=ceil_mode)
    return layer, {}, (input,), {}


def _avg_pool2d(dtype, input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    return nn.AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override), {}, (input,), {}


def _max_unpool2d(dtype, input, indices, kernel_size, stride=None, padding=0, output_size=None):
    return nn.MaxUnpool2d(kernel_size, stride, padding), {}, (input, indices), {"output_size": output_size}


# F.interpolate (every variant of its OpInfo: the adapter keys on the op's name, and each mode is
# an argument Upsample takes) and the deprecated F.upsample_nearest / F.upsample_bilinear, which are
# interpolate with mode "nearest", and "bilinear" with align_corners=True: UpsamplingNearest2d and
# UpsamplingBilinear2d are those.
def _interpolate(dtype, input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None, antialias=False):
    if antialias:
        raise NotImplementedError("antialias=True is not implemented in scratch's Upsample")
    return nn.Upsample(size, scale_factor, mode, align_corners, recompute_scale_factor), {}, (input,), {}


def _upsample(layer_class):
    def adapter(dtype, input, size=None, scale_factor=None):
        return layer_class(size, scale_factor), {}, (input,), {}
    return adapter


def _elementwise(layer_class):
    def adapter(dtype, input, *args, **kwargs):
        return layer_class(*args, **kwargs), {}, (input,), {}
    return adapter


def _bce(dtype, input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    return nn.BCELoss(_numpy(weight, dtype), size_average, reduce, reduction), {}, (input, target), {}


def _bce_with_logits(dtype, input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                     pos_weight=None):
    layer = nn.BCEWithLogitsLoss(_numpy(weight, dtype), size_average, reduce, reduction,
                                 pos_weight=_numpy(pos_weight, dtype))
    return layer, {}, (input, target), {}


def _mse(dtype, input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    if weight is not None:
        raise Excluded("weight= of torch's functional mse_loss: nn.MSELoss, which scratch implements, has none")
    return nn.MSELoss(size_average, reduce, reduction), {}, (input, target), {}


# torch draws a dropout mask from its global generator. Each op sample's torch call runs after
# torch.manual_seed(DRAW_SEED) (``_seeded``; the OpInfo may seed again inside), and the adapter
# replays that very call on a tensor of ones: torch's CPU dropout returns input · bernoulli(1 - p)
# / (1 - p), so the zeros of that output are the mask torch used, which scratch is handed.
DRAW_SEED = 0


def _seeded(call):
    with torch.random.fork_rng():
        torch.manual_seed(DRAW_SEED)
        return call()


def _dropout_adapter(layer_class, op_name, mask_of):
    def adapter(dtype, input, p=0.5, training=True, inplace=False):
        layer = layer_class(p, inplace)
        layer.train(training)
        op = next(op for op in databases()[0] if op.name == op_name)
        ones = torch.ones_like(input.detach())
        noise = _seeded(lambda: op.op(ones, p=p, training=True))
        return layer, {}, (input,), {"mask": mask_of(np.asarray(noise.numpy() != 0))}
    return adapter


def _flatten(dtype, input, start_dim=0, end_dim=-1):
    return nn.Flatten(start_dim, end_dim), {}, (input,), {}


def _unflatten(dtype, input, dim, sizes):
    return nn.Unflatten(dim, sizes), {}, (input,), {}


# F.batch_norm, F.layer_norm and F.group_norm run as the modules holding the same tensors: the
# running statistics F.batch_norm updates in place are the module's buffers (num_batches_tracked
# from 0), its ``training`` the module's mode and its momentum the module's.
_BATCH_NORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}
_BIAS_WITHOUT_WEIGHT = ("a bias without a weight: no normalization module holds one (affine=False drops both, "
                        "bias=False the bias)")


@dataclass(frozen=True)
class _Groups:
    """What a normalization adapter asks EXCLUSIONS about: the case's dtype and how many values
    each normalised group holds (a channel's N·L, a LayerNorm row, a GroupNorm group)."""

    dtype: np.dtype
    values: int


def _one_value_per_group(case) -> bool:
    return isinstance(case, _Groups) and case.values == 1


def _two_values_per_group_in_float32(case) -> bool:
    return isinstance(case, _Groups) and case.values == 2 and case.dtype == np.float32


def _raise_if_excluded(name: str, dtype, input, values: int) -> None:
    if not input.numel():  # an empty input has no group to normalise
        return
    reason = _exclusion("op", name, _Groups(np.dtype(dtype), int(values)))
    if reason:
        raise Excluded(reason)


def _batch_norm(dtype, input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                eps=1e-5):
    if input.dim() not in _BATCH_NORMS:
        raise Excluded(f"a {input.dim()}-D input: torch's BatchNorm1d / BatchNorm2d modules, which scratch implements, "
                       f"take (N, C), (N, C, L) or (N, C, H, W) only (F.batch_norm passes an empty 1-D tensor through "
                       f"unchecked; 5-D is BatchNorm3d's, not in scratch)")
    if weight is None and bias is not None:
        raise Excluded(_BIAS_WITHOUT_WEIGHT)
    tracked = running_mean is not None and running_var is not None
    if (training or not tracked) and input.shape[1]:  # normalised by the batch's statistics
        _raise_if_excluded("nn.functional.batch_norm", dtype, input, input.numel() // input.shape[1])
    layer = _BATCH_NORMS[input.dim()](input.shape[1], eps, momentum, weight is not None, tracked, bias=bias is not None,
                                      dtype=dtype)
    layer.train(training)
    buffers = {"running_mean": running_mean, "running_var": running_var,
               "num_batches_tracked": torch.tensor(0) if tracked else None}
    return layer, {"weight": weight, "bias": bias, **buffers}, (input,), {}


def _layer_norm(dtype, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    if weight is None and bias is not None:
        raise Excluded(_BIAS_WITHOUT_WEIGHT)
    _raise_if_excluded("nn.functional.layer_norm", dtype, input, np.prod(normalized_shape, dtype=np.int64))
    layer = nn.LayerNorm(normalized_shape, eps, weight is not None, bias is not None, dtype=dtype)
    return layer, {"weight": weight, "bias": bias}, (input,), {}


def _group_norm(dtype, input, num_groups, weight=None, bias=None, eps=1e-5):
    if weight is None and bias is not None:
        raise Excluded(_BIAS_WITHOUT_WEIGHT)
    # the channels torch checks the input against: the weight's, else the input's own
    channels = weight.shape[0] if weight is not None else input.shape[1] if input.dim() >= 2 else num_groups
    if input.dim() >= 2 and input.numel() and num_groups >= 1:
        _raise_if_excluded("nn.functional.group_norm", dtype, input, input.numel() // (input.shape[0] * num_groups))
    layer = nn.GroupNorm(num_groups, channels, eps, weight is not None, bias=bias is not None, dtype=dtype)
    return layer, {"weight": weight, "bias": bias}, (input,), {}


OP_ADAPTERS: dict[str, Callable] = {
    "nn.functional.linear": _linear,
    "nn.functional.conv2d": _conv2d,
    "nn.functional.conv_transpose2d": _conv_transpose2d,
    "nn.functional.max_pool2d": _max_pool2d,
    "nn.functional.avg_pool2d": _avg_pool2d,
    "nn.functional.max_unpool2d": _max_unpool2d,
    "nn.functional.interpolate": _interpolate,
    "nn.functional.upsample_nearest": _upsample(nn.UpsamplingNearest2d),
    "nn.functional.upsample_bilinear": _upsample(nn.UpsamplingBilinear2d),
    "nn.functional.relu": _elementwise(nn.ReLU),
    "nn.functional.leaky_relu": _elementwise(nn.LeakyReLU),
    "sigmoid": _elementwise(nn.Sigmoid),
    "tanh": _elementwise(nn.Tanh),
    "nn.functional.gelu": _elementwise(nn.GELU),
    "nn.functional.silu": _elementwise(nn.SiLU),
    "nn.functional.elu": _elementwise(nn.ELU),
    "nn.functional.softplus": _elementwise(nn.Softplus),
    "nn.functional.binary_cross_entropy": _bce,
    "nn.functional.binary_cross_entropy_with_logits": _bce_with_logits,
    "nn.functional.mse_loss": _mse,
    "nn.functional.dropout": _dropout_adapter(nn.Dropout, "nn.functional.dropout", lambda keep: keep),
    "nn.functional.dropout2d": _dropout_adapter(nn.Dropout2d, "nn.functional.dropout2d",
                                                lambda keep: keep[(slice(None), slice(None)) + (slice(0, 1),) * (keep.ndim - 2)]),
    "flatten": _flatten,
    "unflatten": _unflatten,
    "nn.functional.batch_norm": _batch_norm,
    "nn.functional.layer_norm": _layer_norm,
    "nn.functional.group_norm": _group_norm,
}


# ---------------------------------------------------------------------------- exclusions


class Excluded(Exception):
    """A case scratch does not run, with the reason (raised by an adapter or an exclusion rule)."""


def _tensor_hyperparameter(case) -> bool:
    values = list(case.kwargs.values()) + [v for value in case.kwargs.values() if isinstance(value, tuple) for v in value]
    return any(isinstance(value, torch.Tensor) for value in values)


# (source, torch name or "*", applies(case), reason). No reason is an argument of the op itself.
EXCLUSIONS: list[tuple[str, str, Callable, str]] = [
    ("optimizer", "*", _tensor_hyperparameter,
     "a Tensor-valued hyper-parameter (lr or betas as tensors, for torch.compile's capture): scratch has no tensors"),
    # F.batch_norm (training), F.layer_norm and F.group_norm on groups of one or two values: the
    # exact result is 0 or cancels below the dtype's resolution, so both libraries return rounding
    # noise (docs/normalization.md, "Groups of one or two values"); parity_tests/ops/
    # test_normalization.py checks these cases against float64 and the terms' size instead.
    ("op", "*", _one_value_per_group,
     "one value per normalised group: x - mean is exactly 0, so the exact dweight = Σ dy·x̂ is 0 (scratch's); "
     "torch's fused x·(1/σ) - mean·(1/σ) leaves its rounding there (-2.8e-16 in float64, -4.5e-6 in float32)"),
    ("op", "*", _two_values_per_group_in_float32,
     "two values per normalised group, in float32: x̂ = ±σ/√(σ² + eps), so dx = (1/σ)(g - mean g - x̂·mean(g·x̂)) "
     "cancels to eps/(σ² + eps) ≈ 1e-7 of its terms, below float32's resolution of them: both libraries return "
     "rounding noise (group_norm[20]: exact -2.07e-7, torch -2.68e-7, scratch -1.78e-7); float64 runs them"),
]


def _exclusion(source: str, name: str, case) -> str | None:
    for rule_source, rule_name, applies, reason in EXCLUSIONS:
        if rule_source == source and rule_name in ("*", name) and applies(case):
            return reason
    return None


# ---------------------------------------------------------------------------- comparing one case


def _numpy(value, dtype):
    """A torch value as scratch takes it: tensors as NumPy copies (floating ones in ``dtype``,
    or their own dtype where ``dtype`` is None),
    sequences element-wise, torch.Size as a tuple, anything else as it is."""
    if isinstance(value, torch.Tensor):
        array = value.detach().numpy().copy()
        return array.astype(dtype) if dtype is not None and np.issubdtype(array.dtype, np.floating) else array
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_numpy(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _numpy(v, dtype) for k, v in value.items()}
    return value


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _compare_outputs(out, torch_out, dtype, what):
    """Every output: floating ones under the tolerance (and in torch's dtype), others exactly."""
    outs, torch_outs = _as_tuple(out), _as_tuple(torch_out)
    assert len(outs) == len(torch_outs), f"{what}: scratch returned {len(outs)} outputs, torch {len(torch_outs)}"
    for k, (actual, expected) in enumerate(zip(outs, torch_outs)):
        expected = to_numpy(expected)
        if isinstance(actual, float) and expected.ndim == 0:  # a reduced loss is a float (DESIGN.md)
            actual = np.asarray(actual, dtype=expected.dtype)
        actual = np.asarray(actual)
        assert actual.shape == expected.shape, f"{what}: output {k} has shape {actual.shape}, torch's {expected.shape}"
        assert actual.dtype == expected.dtype, f"{what}: output {k} has dtype {actual.dtype}, torch's {expected.dtype}"
        if np.issubdtype(expected.dtype, np.floating):
            assert_close(actual, expected, "torch", dtype, f"{what}: output {k}")
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=f"{what}: output {k}")


def _compare_layer(layer, parameters: dict, args, kwargs, torch_forward, dtype, rng, what, state=None):
    """Forward and backward through the scratch layer and through torch; compare the outputs,
    the gradient of every input that requires grad and every parameter's gradient.

    ``state`` (torch's ``state_dict`` before its forward: parameters and buffers) is loaded into
    the layer, strictly; by default the non-None ``parameters``."""
    if state is None:
        state = {name: t for name, t in parameters.items() if t is not None}
    # floating values in the case's dtype; integer buffers (num_batches_tracked) as they are
    state = {name: _numpy(t, dtype) for name, t in state.items()}
    if state:
        layer.load_state_dict(state, strict=True)
    with warnings.catch_warnings():  # torch's note that its own "same" padding makes a copy
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel", category=UserWarning)
        torch_out = torch_forward()
    out = layer(*_numpy(args, dtype), **_numpy(kwargs, dtype))
    _compare_outputs(out, torch_out, dtype, what)
    # buffers the op took as arguments and updated in place (F.batch_norm's running statistics)
    buffers = dict(layer.named_buffers()) if hasattr(layer, "named_buffers") else {}
    for name, tensor in parameters.items():
        if name in buffers and isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            assert_close(buffers[name], tensor, "torch", dtype, f"{what}: buffer {name!r} after forward")
    first, torch_first = _as_tuple(out)[0], _as_tuple(torch_out)[0]
    if not torch_first.requires_grad:  # nothing to differentiate (e.g. no input requires grad)
        return
    inputs = [t for t in args if isinstance(t, torch.Tensor) and t.requires_grad]
    weights = {name: t for name, t in parameters.items() if t is not None and t.requires_grad}
    cotangent = rng.standard_normal(np.shape(first)).astype(dtype)  # random: never all ones
    torch_grads = torch.autograd.grad(torch_first, inputs + list(weights.values()),
                                      torch.from_numpy(cotangent.copy()), allow_unused=True)
    grads = _as_tuple(layer.backward(cotangent))  # a 0-d array for a 0-d output, as torch's
    for tensor, expected in zip(inputs, torch_grads):
        position = next(i for i, t in enumerate(args) if t is tensor)
        if position > 0 and (position >= len(grads) or grads[position] is None):
            continue  # a loss's target: scratch differentiates the input only (docs/losses.md)
        assert grads[position] is not None, f"{what}: scratch gave no gradient for input {position}"
        expected = torch.zeros_like(tensor) if expected is None else expected
        assert_close(grads[position], expected, "torch", dtype, f"{what}: grad of input {position}")
    own = dict(layer.named_parameters()) if weights else {}
    for (name, tensor), expected in zip(weights.items(), torch_grads[len(inputs):]):
        expected = torch.zeros_like(tensor) if expected is None else expected
        assert_close(own[name].grad, expected, "torch", dtype, f"{what}: grad {name!r}")


def _describe(args, kwargs) -> str:
    def short(value):
        if isinstance(value, torch.Tensor):
            return f"tensor{tuple(value.shape)}"
        return repr(value)
    return ", ".join([short(a) for a in args] + [f"{k}={short(v)}" for k, v in kwargs.items()])


# ---------------------------------------------------------------------------- the three sources


@dataclass
class Case:
    """One torch sample, ready to run against scratch (``run()``), or excluded with a reason."""

    source: str
    name: str
    description: str
    run: Callable[[], None] | None = None
    excluded: str | None = None


def _torch_dtype(dtype):
    return getattr(torch, np.dtype(dtype).name)


def op_cases(op, dtype) -> list[Case]:
    """Every sample of OpInfo ``op`` in ``dtype``, each mapped through ``OP_ADAPTERS``."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        samples = list(op.sample_inputs("cpu", _torch_dtype(dtype), requires_grad=True))
    name = op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")
    cases = []
    for k, sample in enumerate(samples):
        description = f"{name}[{k}]({_describe((sample.input, *sample.args), sample.kwargs)})"
        try:
            built = OP_ADAPTERS[op.name](dtype, sample.input, *sample.args, **sample.kwargs)
        except Excluded as reason:
            cases.append(Case("op", name, description, excluded=str(reason)))
            continue
        except Exception as error:  # noqa: BLE001 - scratch refused the arguments: the case fails when run
            built = error

        def run(sample=sample, built=built, k=k, description=description):
            if isinstance(built, Exception):
                raise built
            layer, parameters, args, kwargs = built
            rng = np.random.default_rng(k)
            _compare_layer(layer, parameters, args, kwargs,
                           lambda: _seeded(lambda: op.op(sample.input, *sample.args, **sample.kwargs)),
                           dtype, rng, description)
        cases.append(Case("op", name, description, run=run))
    return cases


def op_error_cases(op, dtype) -> list[Case]:
    """Every error input of OpInfo ``op`` (arguments torch refuses): scratch must refuse them too,
    when the layer is built or when it runs, with a ValueError or TypeError (scratch's errors
    for bad arguments, where torch raises RuntimeError). Error inputs come in torch's choice of
    dtype, so they run once, with the float64 cases."""
    if np.dtype(dtype) != np.float64 or op.error_inputs_func is None:
        return []
    name = op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")
    cases = []
    for k, error in enumerate(op.error_inputs("cpu")):
        sample = error.sample_input
        description = (f"{name} error input [{k}]({_describe((sample.input, *sample.args), sample.kwargs)}) "
                       f"-> {error.error_type.__name__}({error.error_regex!r})")
        cases.append(Case("op", name, description, run=functools.partial(_op_refuses, op, sample, description)))
    return cases


def _op_refuses(op, sample, what):
    floating = sample.input.dtype if sample.input.dtype.is_floating_point else torch.float64
    dtype = np.dtype(str(floating).removeprefix("torch."))
    try:
        layer, parameters, args, kwargs = OP_ADAPTERS[op.name](dtype, sample.input, *sample.args, **sample.kwargs)
        state = {name: to_numpy(t) for name, t in parameters.items() if t is not None}
        if state:
            layer.load_state_dict(state, strict=True)
        layer(*_numpy(args, None), **_numpy(kwargs, None))
    except (ValueError, TypeError):
        return
    raise AssertionError(f"{what}: scratch accepted it")


def module_cases(info, dtype) -> list[Case]:
    """Every ModuleInfo sample of ``info``'s class, built on both sides from the same arguments,
    in training mode, and in evaluation mode too where torch says the two differ
    (``train_and_eval_differ``: BatchNorm's batch against running statistics)."""
    scratch_class = getattr(nn, info.module_cls.__name__)
    cases = []
    for training in (True, False) if info.train_and_eval_differ else (True,):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            samples = info.module_inputs_func(info, device="cpu", dtype=_torch_dtype(dtype), requires_grad=True,
                                              training=training)
        mode = "" if training else " (eval)"
        for k, sample in enumerate(samples):
            constructor, forward = sample.constructor_input, sample.forward_input
            description = (f"{info.name}[{k}]{mode} {sample.desc or ''}: {info.module_cls.__name__}("
                           f"{_describe(constructor.args, constructor.kwargs)})"
                           f"({_describe(forward.args, forward.kwargs)})")
            run = functools.partial(_compare_module, info, scratch_class, constructor, forward, training, dtype, k,
                                    description)
            cases.append(Case("module", info.name, description, run=run))
    return cases


def _compare_module(info, scratch_class, constructor, forward, training, dtype, k, what):
    """One ModuleInfo sample: torch's module and scratch's built alike, torch's parameters *and*
    buffers loaded into scratch, both put in the sample's mode, then compared as layers are, and
    their state_dicts (the running statistics a training-mode forward updated) after forward."""
    with torch.random.fork_rng():
        torch.manual_seed(k)
        twin = info.module_cls(*constructor.args, **constructor.kwargs).to(_torch_dtype(dtype))
    twin.train(training)
    extra = {"dtype": dtype} if "dtype" in _parameter_names(scratch_class) else {}
    layer = scratch_class(*_numpy(constructor.args, dtype), **_numpy(constructor.kwargs, dtype), **extra)
    if hasattr(layer, "train"):
        layer.train(training)
    state = {key: value.detach().clone() for key, value in twin.state_dict().items()}
    args, kwargs = forward.args, forward.kwargs
    if not args and "input" in kwargs:  # forward(input=x): scratch takes torch's keyword too
        kwargs = dict(kwargs)
        args = (kwargs.pop("input"),)
    _compare_layer(layer, dict(twin.named_parameters()), args, kwargs, lambda: twin(*forward.args, **forward.kwargs),
                   dtype, np.random.default_rng(k), what, state=state)
    _compare_state(layer, twin, dtype, what)


def _parameter_names(cls) -> set[str]:
    """The names the constructor takes by keyword (``dtype=`` is scratch's, where torch has it too)."""
    return {name for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _compare_state(layer, twin, dtype, what):
    """The state_dicts after forward: torch's keys, and equal values (buffers included). A
    scratch loss is not a Module (DESIGN.md): its buffers (weight, pos_weight) are attributes."""
    expected = twin.state_dict()
    if hasattr(layer, "state_dict"):
        actual = layer.state_dict()
    else:
        actual = {key: getattr(layer, key, None) for key in expected}
    assert list(actual) == list(expected), f"{what}: state_dict keys {list(actual)}, torch's {list(expected)}"
    for key, value in expected.items():
        assert_close(actual[key], value, "torch", dtype, f"{what}: state_dict[{key!r}]")


OPTIMIZER_STEPS = 5
OPTIMIZER_SHAPES = ((4, 3), (4,), ())  # a weight, a bias and a scalar parameter


def optimizer_cases(info, dtype) -> list[Case]:
    """Every OptimizerInfo configuration of ``info``'s class: the same parameters and gradients
    through ``OPTIMIZER_STEPS`` steps on both sides; and every error input, which scratch must
    refuse with torch's exception type where torch does."""
    scratch_class = getattr(scratch_optim, info.optim_cls.__name__)
    cases = []
    for k, sample in enumerate(info.optim_inputs_func(device="cpu", dtype=_torch_dtype(dtype))):
        description = f"{info.name}[{k}] {sample.desc}: {_describe((), sample.kwargs)}"
        reason = _exclusion("optimizer", info.name, sample)
        if reason:
            cases.append(Case("optimizer", info.name, description, excluded=reason))
            continue
        cases.append(Case("optimizer", info.name, description,
                          run=functools.partial(_compare_steps, info.optim_cls, scratch_class, sample.kwargs, dtype,
                                                k, description)))
    for k, error in enumerate(info.optim_error_inputs_func(device="cpu", dtype=_torch_dtype(dtype))):
        sample = error.optimizer_error_input
        description = (f"{info.name} error input [{k}]: params {_describe((sample.params,), {})}, "
                       f"{_describe((), sample.kwargs)} -> {error.error_type.__name__}({error.error_regex!r})")
        reason = _exclusion("optimizer", info.name, sample)
        if reason:
            cases.append(Case("optimizer", info.name, description, excluded=reason))
            continue
        cases.append(Case("optimizer", info.name, description,
                          run=functools.partial(_compare_refusal, scratch_class, sample, error.error_type, dtype,
                                                description)))
    return cases


def _scratch_params(value, dtype, memo: dict):
    """torch's ``params`` argument in scratch's terms: each tensor a Parameter (one per tensor,
    so that a tensor given twice is one Parameter given twice), lists, dicts and (name, tensor)
    tuples kept as they are."""
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = nn.Parameter(value.detach().numpy().astype(dtype))
        return memo[id(value)]
    if isinstance(value, dict):
        return {k: _scratch_params(v, dtype, memo) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scratch_params(v, dtype, memo) for v in value)
    return value


def _compare_refusal(scratch_class, sample, error_type, dtype, what):
    """torch refuses this construction with ``error_type``: scratch must refuse it with that type.

    Where torch only warns (``error_type`` a Warning: a parameter listed twice in one group,
    which torch says it will stop supporting), scratch must warn alike or refuse with a
    ValueError; what it must not do is accept it silently."""
    if sample.params is None:
        params = [nn.Parameter(np.zeros((2, 2), dtype))]
    else:
        params = _scratch_params(sample.params, dtype, {})
    refusals = (error_type, ValueError) if issubclass(error_type, Warning) else error_type
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", error_type if issubclass(error_type, Warning) else Warning)
            scratch_class(params, **_numpy(sample.kwargs, dtype))
    except refusals:
        return
    except Exception as error:  # noqa: BLE001 - the wrong type is the failure reported
        raise AssertionError(f"{what}: scratch raised {type(error).__name__}: {error}") from error
    raise AssertionError(f"{what}: scratch accepted it")


def _compare_steps(torch_class, scratch_class, kwargs, dtype, seed, what):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape).astype(dtype) for shape in OPTIMIZER_SHAPES]
    twins = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    params = [nn.Parameter(v.copy()) for v in values]
    torch_optimizer = torch_class(twins, **kwargs)
    optimizer = scratch_class(params, **_numpy(kwargs, dtype))
    for step in range(OPTIMIZER_STEPS):
        for parameter, twin in zip(params, twins):
            gradient = rng.standard_normal(parameter.shape).astype(dtype)
            parameter.grad[...] = gradient
            twin.grad = torch.from_numpy(gradient.copy())
        torch_optimizer.step()
        optimizer.step()
        for number, (parameter, twin) in enumerate(zip(params, twins)):
            assert_close(parameter.data, twin, "optim", dtype, f"{what}: parameter {number} after step {step + 1}")
    expected, actual = torch_optimizer.state_dict(), optimizer.state_dict()
    assert actual["state"].keys() == expected["state"].keys(), f"{what}: state for {list(actual['state'])}"
    for index, entries in expected["state"].items():
        assert actual["state"][index].keys() == entries.keys(), \
            f"{what}: state[{index}] has {sorted(actual['state'][index])}, torch's {sorted(entries)}"
        for key, value in entries.items():
            assert_close(np.asarray(actual["state"][index][key]), value, "optim", dtype, f"{what}: state[{index}][{key!r}]")


# ---------------------------------------------------------------------------- enumeration and counts


def entries() -> list[tuple[str, str, object]]:
    """(source, name, torch entry) for every op, module and optimizer scratch implements."""
    op_db, module_db, optim_db = databases()
    found = [("op", op.name + (f".{op.variant_test_name}" if op.variant_test_name else ""), op)
             for op in op_db if op.name in OP_ADAPTERS]
    found += [("module", info.name, info) for info in module_db if hasattr(nn, info.module_cls.__name__)]
    found += [("optimizer", info.name, info) for info in optim_db if hasattr(scratch_optim, info.optim_cls.__name__)]
    return found


# (source, name, dtype) -> Counter(ran=, passed=, excluded=); filled as the tests run.
COUNTS: dict[tuple[str, str, str], Counter] = {}


def cases_of(source: str, entry, dtype) -> list[Case]:
    if source == "op":
        return op_cases(entry, dtype) + op_error_cases(entry, dtype)
    return {"module": module_cases, "optimizer": optimizer_cases}[source](entry, dtype)


def run_entry(source: str, name: str, entry, dtype) -> list[str]:
    """Run every case of one torch entry in ``dtype``; record the counts; return the failures."""
    counts = COUNTS.setdefault((source, name, np.dtype(dtype).name), Counter(ran=0, passed=0, excluded=0))
    counts.update(ran=0, passed=0, excluded=0)
    failures = []
    for case in cases_of(source, entry, dtype):
        if case.excluded:
            counts["excluded"] += 1
            continue
        counts["ran"] += 1
        try:
            case.run()
        except Exception as error:  # noqa: BLE001 - every failure is reported, with its case
            message = str(error)  # the comparisons' messages start with the case's description
            failures.append(message if message.startswith(case.description)
                            else f"{case.description}: {type(error).__name__}: {message}")
        else:
            counts["passed"] += 1
    return failures


def report() -> str:
    """The counts table: one row per (source, torch name, dtype)."""
    rows = [f"{'source':<10} {'torch entry':<52} {'dtype':<8} {'ran':>5} {'passed':>6} {'excluded':>8}"]
    for (source, name, dtype), c in sorted(COUNTS.items()):
        rows.append(f"{source:<10} {name:<52} {dtype:<8} {c['ran']:>5} {c['passed']:>6} {c['excluded']:>8}")
    total = Counter()
    for c in COUNTS.values():
        total.update(c)
    rows.append(f"{'total':<10} {'':<52} {'':<8} {total['ran']:>5} {total['passed']:>6} {total['excluded']:>8}")
    return "\n".join(rows)


def main() -> None:
    """Run every case and print the table and every failure (``python -m parity_tests.torch_database``)."""
    failures = []
    for source, name, entry in entries():
        for dtype in DTYPES:
            failures += run_entry(source, name, entry, dtype)
    print(report())
    for failure in failures:
        print("FAIL", failure[:600])


if __name__ == "__main__":
    main()
