"""Check your own layer against torch: the verification kit the parity suite itself uses.

- ``assert_matches_torch(scratch_layer, torch_layer, *inputs)``: the same weights and inputs
  through both, then the output, the gradient of each input and of every parameter compared
  under the tolerance table, with a *random* cotangent (an all-ones cotangent hides a backward
  that ignores its ``grad_output``, or errors that cancel in the sum).
- ``assert_model_matches_torch(model, twin, x, noise)``: a model's loss parts and every gradient
  against its torch twin, the same way.
- ``TOLERANCES``, ``tolerance(check, dtype)``, ``GRADCHECK``: the one tolerance table, and why
  each entry is what it is (below).
- ``assert_close``, ``assert_close_in_norm``, ``to_numpy``: the comparisons behind it.
- hypothesis strategies for shapes and layer geometries (``shapes``, ``linear_cases``,
  ``conv2d_cases``...); they need ``hypothesis`` (the ``test`` extra), the rest of this module
  does not. torch is imported only inside the functions that run it.

The tolerance table
-------------------
``assert_close(actual, expected, check, dtype)`` passes when, element-wise,

    |actual - expected| <= rtol · |expected| + atol · max|expected|

The absolute part is scaled by the array's largest magnitude: rounding errors of a sum scale with
the size of the terms summed, not with the (possibly cancelled) result, so a fixed atol would be
either meaningless for large arrays or impossible for small ones.

Justifications (u = unit roundoff: 1.1e-16 in float64, 6.0e-8 in float32):

- torch, float64: both sides evaluate the same formulas in a different order (BLAS blocking,
  pairwise vs vectorised sums). Reductions here are at most ~10^3 terms, so differences are
  ≲ 10^3 u ≈ 1e-13; 1e-10 leaves three orders of margin and still catches any formula error.
- torch, float32: the same reasoning at u = 6e-8 gives ≲ 6e-5 for 10^3-term sums; our kernels
  also carry some intermediates in float64 where torch rounds to float32 each op.
  rtol = atol = 2e-4 is the bound; a wrong formula is off by far more.
- kernel vs NumPy reference: same formula, same dtype, different evaluation order and
  math-library calls (Numba's libm vs NumPy's SIMD loops, float64 literals promoting float32
  intermediates): a few ulp (4e-7 ≈ 7 float32 ulp) of the formula's *terms*; tests pass the
  terms' magnitude as ``scale`` where a formula cancels.
- optimizer steps (25+ steps): per-step rounding differences compound mildly; Adam divides by
  √v̂ + ε, which amplifies differences where v̂ ~ ε², hence the looser float32 entry.
- training runs (30 Adam steps of a whole model on MNIST): measured agreement is ~2e-16 (float64)
  and ~1e-7 (float32) in every loss; the bounds leave room for 1-ulp differences that a ReLU
  boundary or Adam's 1/(√v̂ + ε) amplifies over 30 steps. float32 weights are compared per
  tensor by the relative norm of the difference (``assert_close_in_norm``), leaving out the units
  whose ReLU flipped: a hidden unit whose pre-activation sits within float32 rounding of 0 in
  one example is active in one backend and not in the other; Adam's second moment remembers the
  different gradient, so that unit's weights drift apart by up to percents over the run (beta-vae,
  fc1 row 115: 2.6e-2) while every other row stays within ~1e-4. The test finds flips by
  comparing the two backends' ReLU masks at every step and allows at most three.
  float64 weights are compared element by element, and no flip is allowed.
- gradcheck: central differences with eps = 1e-6 in float64 have truncation error
  O(eps²) ≈ 1e-12 and rounding error O(u·|L|/eps) ≈ 1e-10·|L|; rtol 1e-5 and atol 1e-8
  leave margin while a wrong backward (off by a term or a factor) fails by orders of magnitude.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

try:  # the strategies need hypothesis (a test dependency); nothing else here does
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - exercised where hypothesis is absent
    st = None

__all__ = [
    "GRADCHECK", "TOLERANCES", "TorchMatch", "assert_close", "assert_close_in_norm", "assert_matches_torch",
    "assert_model_matches_torch", "conv2d_cases", "conv_transpose2d_cases", "flatten_cases", "layer_arguments",
    "linear_cases", "max_pool2d_cases", "shapes", "to_numpy", "tolerance", "unflatten_cases",
]

# ---------------------------------------------------------------------------- the tolerance table

TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {
    # (check, dtype): (rtol, atol relative to max|expected|)
    ("torch", "float64"): (1e-10, 1e-10),
    ("torch", "float32"): (2e-4, 2e-4),
    ("kernel", "float64"): (1e-13, 1e-14),
    ("kernel", "float32"): (4e-7, 4e-7),
    ("optim", "float64"): (1e-10, 1e-10),
    ("optim", "float32"): (1e-4, 1e-5),
    ("training", "float64"): (1e-9, 1e-9),
    ("training", "float32"): (1e-4, 1e-4),
}

# scratch.gradcheck's arguments for every finite-difference test.
GRADCHECK = dict(eps=1e-6, rtol=1e-5, atol=1e-8)


def tolerance(check: str, dtype) -> tuple[float, float]:
    """(rtol, atol) of ``TOLERANCES[(check, dtype)]``; ``dtype`` as anything ``np.dtype`` takes."""
    return TOLERANCES[(check, np.dtype(dtype).name)]


def to_numpy(value) -> np.ndarray:
    """A NumPy array from an array, a torch tensor (detached, on the CPU) or a number."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# ---------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class _Outcome:
    """One array compared: its worst element-wise relative error and, on failure, the message."""

    max_rel_error: float
    worst_ratio: float  # max over elements of |error| / allowed; <= 1 passes
    failure: str | None


def _compare(actual, expected, check: str, dtype, what: str, scale=None,
             labels: tuple[str, str] = ("actual", "expected")) -> _Outcome:
    """Compare under TOLERANCES[(check, dtype)] (see ``assert_close``) without raising.

    The relative error of an element is |a - e| / max(|a|, |e|) (0 where both agree exactly,
    NaN pairs and equal infinities included); the message names ``what``, how many elements
    differ, and the worst one (largest |error| / allowed) with both values and both errors.
    """
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    rtol, atol = tolerance(check, dtype)
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    scale = np.asarray(scale, dtype=np.float64)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        error = np.abs(a - e)
        allowed = np.broadcast_to(rtol * np.abs(e) + atol * scale, a.shape)
        agree = (a == e) | (np.isnan(a) & np.isnan(e))  # equal infinities and NaN pairs agree
        bad = (~(error <= allowed) | (np.isnan(a) != np.isnan(e))) & ~agree
        relative = np.where(agree, 0.0, error / np.maximum(np.abs(a), np.abs(e)))
        relative = np.where(np.isnan(relative), np.inf, relative)
        ratio = np.where(agree, 0.0, error / np.where(allowed > 0, allowed, 0.0))
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
    max_rel = float(np.max(relative)) if a.size else 0.0
    worst_ratio = float(np.max(ratio)) if a.size else 0.0
    if not np.any(bad):
        return _Outcome(max_rel, worst_ratio, None)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.where(bad, ratio, -np.inf))), a.shape))
    message = (
        f"{what} [{check}, {np.dtype(dtype).name}: rtol={rtol:g}, atol={atol:g}·scale]: "
        f"{int(bad.sum())} of {a.size} elements differ; worst at {worst}: {labels[0]} {float(a[worst])!r}, "
        f"{labels[1]} {float(e[worst])!r}, |error| {error[worst]:.3e} (relative {relative[worst]:.3e}) "
        f"> allowed {allowed[worst]:.3e}"
    )
    return _Outcome(max_rel, worst_ratio, message)


def assert_close(actual, expected, check: str, dtype, what: str = "", scale=None) -> None:
    """Compare under TOLERANCES[(check, dtype)]; the message names ``what`` and the worst element.

    Parameters
    ----------
    actual, expected : arrays or torch tensors of one shape
    check : the table's row: "torch", "kernel", "optim" or "training"
    dtype : the precision compared in (the table's column)
    what : what is compared, for the message
    scale : scalar or array broadcasting to the shape; replaces max|expected| as the magnitude
        the absolute part is relative to: pass the magnitude of the *terms* of a formula whose
        result cancels (e.g. σ(x) - y), since rounding errors are relative to those, not to the
        small difference.
    """
    outcome = _compare(actual, expected, check, dtype, what, scale)
    if outcome.failure is not None:
        raise AssertionError(outcome.failure)


def assert_close_in_norm(actual, expected, check: str, dtype, what: str = "") -> None:
    """‖actual - expected‖₂ <= rtol · ‖expected‖₂ over the whole array (rtol from the table)."""
    actual, expected = to_numpy(actual).astype(np.float64), to_numpy(expected).astype(np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    rtol, _ = tolerance(check, dtype)
    difference, size = float(np.linalg.norm(actual - expected)), float(np.linalg.norm(expected))
    if not difference <= rtol * size:
        raise AssertionError(f"{what} [{check}, {np.dtype(dtype).name}: ‖Δ‖ <= {rtol:g}·‖expected‖]: "
                             f"‖Δ‖ = {difference:.3e}, ‖expected‖ = {size:.3e}, ratio {difference / size:.3e}")


# ---------------------------------------------------------------------------- a layer against torch


@dataclass(frozen=True)
class TorchMatch:
    """What ``assert_matches_torch`` compared, all of it within the tolerance.

    Per quantity ("output", "grad_input[0]", "grad 'weight'"...): the worst element-wise
    relative error |scratch - torch| / max(|scratch|, |torch|), and the worst |error| / allowed
    (<= 1: within the table's tolerance). Plain Python floats and strings.
    """

    dtype: str
    rtol: float
    atol: float
    max_rel_error: dict[str, float] = field(default_factory=dict)
    worst_ratio: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = "; ".join(f"{name} {error:.1e} (error/allowed {self.worst_ratio[name]:.2g})"
                          for name, error in self.max_rel_error.items())
        return f"matches torch in {self.dtype} (rtol={self.rtol:g}, atol={self.atol:g}·scale): {parts}"


def _torch():
    import torch

    return torch


def _comparison_dtype(inputs, dtype) -> np.dtype:
    """``dtype``, or that of the first floating-point array input (float64 when there is none)."""
    if dtype is not None:
        return np.dtype(dtype)
    for x in inputs:
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
            return x.dtype
    return np.dtype(np.float64)


def _cast_input(x, dtype: np.dtype):
    """A floating-point array in ``dtype``; anything else as it is."""
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
        return x.astype(dtype, copy=False)
    return x


def _to_tensor(torch, x):
    """A fresh tensor for torch's side: floating-point arrays require grad, other arrays do not."""
    if not isinstance(x, np.ndarray):
        return x
    return torch.tensor(x, requires_grad=bool(np.issubdtype(x.dtype, np.floating)))


def _scratch_parameters(layer) -> dict:
    named = getattr(layer, "named_parameters", None)
    return dict(named()) if callable(named) else {}


def _torch_parameters(torch, layer) -> dict:
    return dict(layer.named_parameters()) if isinstance(layer, torch.nn.Module) else {}


def _prepare_torch_layer(torch, scratch_layer, torch_layer, dtype: np.dtype, load_weights: bool) -> None:
    """Move ``torch_layer`` to ``dtype`` and, with ``load_weights``, load the scratch weights (strict)."""
    if isinstance(torch_layer, torch.nn.Module):
        torch_layer.to(getattr(torch, dtype.name))
    if load_weights and _scratch_parameters(scratch_layer):
        if not isinstance(torch_layer, torch.nn.Module):
            raise TypeError(f"assert_matches_torch: the scratch layer has parameters, so torch_layer must be a "
                            f"torch.nn.Module to load them into, got {type(torch_layer).__name__}")
        state = {key: torch.from_numpy(np.array(value)) for key, value in scratch_layer.state_dict().items()}
        torch_layer.load_state_dict(state, strict=True)


def _refuse_tuple(value, side: str) -> None:
    if isinstance(value, (tuple, list)):
        raise TypeError(f"assert_matches_torch: the {side} layer returned a {type(value).__name__} of outputs; "
                        f"only a single array output is supported (compare each output through a wrapper "
                        f"layer that returns one of them)")


def _draw_cotangent(out: np.ndarray, rng: np.random.Generator):
    """Standard normal of the output's shape and dtype (a float for a scalar output): never all ones."""
    if out.ndim == 0:
        return float(rng.standard_normal())
    return rng.standard_normal(out.shape).astype(out.dtype, copy=False)


def _input_gradients(grads, count: int) -> dict[int, object]:
    """{input index: gradient} from what a scratch backward returned: one array is input 0's,
    a tuple holds one per input (None where it gives none)."""
    if grads is None:
        return {}
    grads = grads if isinstance(grads, tuple) else (grads,)
    return {i: g for i, g in enumerate(grads[:count]) if g is not None}


class _Comparison:
    """Compares quantity after quantity under one tolerance; raises on the first mismatch."""

    def __init__(self, dtype: np.dtype, what: str, scale, caller: str = "assert_matches_torch"):
        self.dtype, self.prefix = dtype, f"{what}: " if what else ""
        self.scale = dict(scale or {})
        self.caller = caller
        self.used: set[str] = set()
        self.cotangent = self.torch_output = None  # what a scale function is given, once known
        rtol, atol = tolerance("torch", dtype)
        self.result = TorchMatch(dtype.name, rtol, atol)

    def __call__(self, quantity: str, actual, expected) -> None:
        scale = self.scale.get(quantity)
        if callable(scale):
            scale = scale(self.cotangent, self.torch_output)
        self.used.add(quantity)
        outcome = _compare(actual, expected, "torch", self.dtype, self.prefix + quantity, scale,
                           labels=("scratch", "torch"))
        if outcome.failure is not None:
            raise AssertionError(outcome.failure)
        self.result.max_rel_error[quantity] = outcome.max_rel_error
        self.result.worst_ratio[quantity] = outcome.worst_ratio

    def finish(self) -> TorchMatch:
        unknown = sorted(set(self.scale) - self.used)
        if unknown:
            raise ValueError(f"{self.caller}: scale names {unknown}, which were not compared; "
                             f"compared: {sorted(self.used)}")
        return self.result


def _compare_parameter_grads(compare: _Comparison, scratch_params: dict, torch_params: dict) -> None:
    if set(scratch_params) != set(torch_params):
        raise AssertionError(f"{compare.prefix}the parameters differ: scratch has {sorted(scratch_params)}, "
                             f"torch has {sorted(torch_params)}")
    for name, parameter in scratch_params.items():
        expected = torch_params[name].grad
        expected = np.zeros(parameter.shape, compare.dtype) if expected is None else expected
        compare(f"grad {name!r}", parameter.grad, expected)


def assert_matches_torch(scratch_layer, torch_layer, *inputs, dtype=None, rng=None, check_input_grad: bool = True,
                         load_weights: bool = True, what: str = "", scale=None) -> TorchMatch:
    """Assert that a scratch layer computes what a torch module computes, forward and backward.

    Both run on the same inputs (and, with ``load_weights``, the same weights); then one random
    cotangent c (standard normal, the output's shape) goes back through both: scratch's
    ``backward(c)`` and torch's ``out.backward(c)``. Compared, each under the table's
    ``("torch", dtype)`` tolerance (float64: 1e-10; float32: 2e-4, relative, with the absolute
    part scaled by max|torch|): the output, the gradient of every input that scratch's backward
    returns one for, and every parameter's gradient by name. Parameter gradients are zeroed on
    both sides first.

    Parameters
    ----------
    scratch_layer : a scratch Module (``layer(*inputs)`` runs forward, ``layer.backward(dout)``
        returns dx, or a tuple with one entry per input, and adds into each ``.grad``)
    torch_layer : its torch counterpart, a ``torch.nn.Module`` (or a function of tensors, for a
        layer without parameters). It is moved to ``dtype`` in place and receives the weights.
    *inputs : NumPy arrays, e.g. x of shape (N, in_features); floating-point ones are cast to
        ``dtype`` and given to torch as tensors that require grad. Other arrays go to torch as
        tensors, other values as they are.
    dtype : the precision compared in; default: the first floating-point input's dtype
    rng : Generator, int seed or None: where the cotangent comes from
    check_input_grad : compare the input gradients (False: only output and parameter gradients)
    load_weights : copy ``scratch_layer.state_dict()`` into ``torch_layer`` first (strict: the
        keys and shapes must be torch's); False compares the weights each already holds
    what : a label that starts every failure message
    scale : optional {quantity: magnitude} for quantities whose formula cancels (see
        ``assert_close``'s ``scale``): an array, or a function ``(cotangent, torch_output) -> array``
        (the cotangent is None for "output"), e.g. the magnitude of the terms g·(1 + y²) that
        tanh's dx = g·(1 - y²) combines

    Returns
    -------
    TorchMatch: the worst relative error per quantity ("output", "grad_input[0]", "grad 'weight'").

    Raises
    ------
    AssertionError naming the first quantity that differs, the worst element's index, both
    values, the absolute and relative error and the tolerance. TypeError for a layer whose
    output is a tuple (not supported: wrap it so that it returns one array).
    """
    torch = _torch()
    dtype = _comparison_dtype(inputs, dtype)
    rng = np.random.default_rng(rng)
    compare = _Comparison(dtype, what, scale)
    _prepare_torch_layer(torch, scratch_layer, torch_layer, dtype, load_weights)
    arrays = [_cast_input(x, dtype) for x in inputs]
    tensors = [_to_tensor(torch, x) for x in arrays]
    scratch_params, torch_params = _scratch_parameters(scratch_layer), _torch_parameters(torch, torch_layer)
    for parameter in scratch_params.values():
        parameter.grad[...] = 0
    for parameter in torch_params.values():
        parameter.grad = None

    out, torch_out = scratch_layer(*arrays), torch_layer(*tensors)
    _refuse_tuple(out, "scratch")
    _refuse_tuple(torch_out, "torch")
    compare.torch_output = to_numpy(torch_out)
    compare("output", out, torch_out)
    compare.cotangent = cotangent = _draw_cotangent(np.asarray(out), rng)
    torch_cotangent = torch.tensor(cotangent, dtype=torch_out.dtype)  # a copy, whatever scratch does to its own
    grads = _input_gradients(scratch_layer.backward(cotangent), len(arrays))
    torch_out.backward(torch_cotangent)
    if check_input_grad:
        _compare_input_grads(compare, grads, tensors)
    _compare_parameter_grads(compare, scratch_params, torch_params)
    return compare.finish()


def _compare_input_grads(compare: _Comparison, grads: dict, tensors: list) -> None:
    if not grads:
        raise AssertionError(f"{compare.prefix}grad_input[0]: the scratch backward returned no input gradient "
                             f"(pass check_input_grad=False to compare parameter gradients only)")
    for i, grad in grads.items():
        tensor = tensors[i]
        if not getattr(tensor, "requires_grad", False):
            raise AssertionError(f"{compare.prefix}grad_input[{i}]: the scratch backward returned a gradient for "
                                 f"input {i}, which is not a floating-point array")
        expected = np.zeros(tuple(tensor.shape), compare.dtype) if tensor.grad is None else tensor.grad
        compare(f"grad_input[{i}]", grad, expected)


# ---------------------------------------------------------------------------- hypothesis strategies
# Strategies draw *descriptions* (shapes, layer arguments); arrays are then generated from a NumPy
# generator, so examples shrink to small shapes. Geometries are built from the output size
# backwards, so every draw is valid: strides that do not divide the input evenly (the `extra` rows
# a floor division drops), padding, dilation, output_padding below max(stride, dilation), batch 1
# and channels 1 all occur.


def _composite(function):
    """``hypothesis.strategies.composite(function)``, built when first used, so that importing this
    module does not need hypothesis; without it, using a strategy raises ImportError saying so."""
    built = None

    @functools.wraps(function)
    def strategy(*args, **kwargs):
        nonlocal built
        if st is None:
            raise ImportError(f"scratch.testing.{function.__name__} is a hypothesis strategy: "
                              f"install hypothesis (pip install 'autoencoders[test]')")
        if built is None:
            built = st.composite(function)
        return built(*args, **kwargs)

    return strategy


@_composite
def shapes(draw, min_dims=1, max_dims=4, max_side=6):
    """Any shape with 1..max_side per axis (batch 1 and channels 1 included)."""
    ndim = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.integers(1, max_side)) for _ in range(ndim))


@_composite
def linear_cases(draw):
    """(leading_shape, in_features, out_features, bias): leading dims 0..2 extra axes, like torch;
    features 1..9."""
    leading = draw(shapes(min_dims=1, max_dims=3, max_side=4))
    return leading, draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.booleans())


@_composite
def flatten_cases(draw):
    """(shape, start_dim, end_dim) with start <= end after normalisation; negative dims too."""
    shape = draw(shapes(min_dims=1, max_dims=5, max_side=4))
    ndim = len(shape)
    start = draw(st.integers(0, ndim - 1))
    end = draw(st.integers(start, ndim - 1))
    start = start - ndim if draw(st.booleans()) else start
    end = end - ndim if draw(st.booleans()) else end
    return shape, start, end


@_composite
def unflatten_cases(draw):
    """(input_shape, dim, unflattened_size): the split sizes multiply to the chosen axis."""
    sizes = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3))))
    before = draw(shapes(min_dims=1, max_dims=2, max_side=3))
    after = draw(shapes(min_dims=0, max_dims=1, max_side=3)) if draw(st.booleans()) else ()
    shape = (*before, int(np.prod(sizes)), *after)
    dim = len(before)
    dim = dim - len(shape) if draw(st.booleans()) else dim
    return shape, dim, sizes


@_composite
def _axis_for_conv(draw, max_kernel=5):
    """(input size, kernel, stride, padding, dilation) along one axis, output >= 1."""
    kernel, stride, dilation = draw(st.integers(1, max_kernel)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    out = draw(st.integers(1, 4))
    extra = draw(st.integers(0, stride - 1))
    base = (out - 1) * stride + dilation * (kernel - 1) + 1 + extra  # input size with no padding
    padding = draw(st.integers(0, min(2, (base - 1) // 2)))
    return base - 2 * padding, kernel, stride, padding, dilation


@_composite
def conv2d_cases(draw):
    """dict(x_shape, in_channels, out_channels, kernel_size, stride, padding, dilation, bias)."""
    rows, cols = draw(_axis_for_conv()), draw(_axis_for_conv())
    batch, channels_in, channels_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return dict(x_shape=(batch, channels_in, rows[0], cols[0]), in_channels=channels_in, out_channels=channels_out,
                kernel_size=(rows[1], cols[1]), stride=(rows[2], cols[2]), padding=(rows[3], cols[3]),
                dilation=(rows[4], cols[4]), bias=draw(st.booleans()))


@_composite
def _axis_for_conv_transpose(draw, max_kernel=5):
    """(input size, kernel, stride, padding, output_padding, dilation) along one axis, output >= 1."""
    kernel, stride, dilation = draw(st.integers(1, max_kernel)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    size = draw(st.integers(1, 4))
    output_padding = draw(st.integers(0, max(stride, dilation) - 1))
    unpadded = (size - 1) * stride + dilation * (kernel - 1) + output_padding + 1
    padding = draw(st.integers(0, min(2, (unpadded - 1) // 2)))
    return size, kernel, stride, padding, output_padding, dilation


@_composite
def conv_transpose2d_cases(draw):
    """dict(x_shape, in_channels, out_channels, kernel_size, stride, padding, output_padding, dilation, bias)."""
    rows, cols = draw(_axis_for_conv_transpose()), draw(_axis_for_conv_transpose())
    batch, channels_in, channels_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return dict(x_shape=(batch, channels_in, rows[0], cols[0]), in_channels=channels_in, out_channels=channels_out,
                kernel_size=(rows[1], cols[1]), stride=(rows[2], cols[2]), padding=(rows[3], cols[3]),
                output_padding=(rows[4], cols[4]), dilation=(rows[5], cols[5]), bias=draw(st.booleans()))


@_composite
def _axis_for_pool(draw):
    """(input size, kernel, stride, padding, dilation): padding up to half the kernel (torch's
    limit); the input at least one window wide, so every window holds an element."""
    kernel, stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    effective = dilation * (kernel - 1) + 1
    padding = draw(st.integers(0, kernel // 2))
    size = effective + draw(st.integers(0, 4))
    return size, kernel, stride, padding, dilation


@_composite
def max_pool2d_cases(draw):
    """dict(x_shape, kernel_size, stride, padding, dilation)."""
    rows, cols = draw(_axis_for_pool()), draw(_axis_for_pool())
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), rows[0], cols[0])
    return dict(x_shape=shape, kernel_size=(rows[1], cols[1]), stride=(rows[2], cols[2]),
                padding=(rows[3], cols[3]), dilation=(rows[4], cols[4]))


def layer_arguments(case: dict) -> dict:
    """The constructor arguments in a case (everything but the input shape)."""
    return {k: v for k, v in case.items() if k != "x_shape"}


# ---------------------------------------------------------------------------- a model against its twin


def assert_model_matches_torch(model, twin, x, noise=None, *, dtype=None, input_grad: bool = False,
                               load_weights: bool = True, what: str = "", scale=None) -> TorchMatch:
    """Assert that a scratch model's loss, its parts and every gradient equal its torch twin's.

    ``model.loss(x, noise=noise)`` (a dict of floats) and ``twin.loss(x, noise=noise)`` (a dict of
    0-d tensors) run on the same batch, the same explicit noise and, with ``load_weights``, the
    same weights (the model's state_dict loaded into the twin, strictly); then the loss goes back
    through both (``model.backward()``, ``loss.backward()``). Compared under the table's
    ``("torch", dtype)`` row: every part ("loss", "recon", "kl", ...; the two dicts must name the
    same parts), every parameter gradient by name ("grad 'fc1.weight'"), and with ``input_grad``
    dL/dx ("grad_input"; torch differentiates through every use of x, so this suits twins whose
    loss treats x as a constant target, as the regularized models' do). ``scale``: {quantity: magnitude} where a gradient sums terms that cancel
    (see ``assert_close``). The twin is any torch module with ``loss(x, noise=None)``; scratch
    imports no twin itself.

    Parameters
    ----------
    model : a scratch model (``scratch.models.build``)
    twin : its torch counterpart (``torch_impl.models.build(name, **model.config)``)
    x : (N, D) or (N, C, H, W) batch in the model's dtype
    noise : the model's explicit noise (``model.draw_noise``), or None
    """
    torch = _torch()
    dtype = _comparison_dtype([x], dtype if dtype is not None else model.dtype)
    _prepare_torch_layer(torch, model, twin, dtype, load_weights)
    compare = _Comparison(dtype, what, scale, caller="assert_model_matches_torch")
    out = model.loss(x, noise=noise)
    model.zero_grad()
    grad_input = model.backward(input_grad=input_grad)
    tx = torch.tensor(np.array(x), requires_grad=input_grad)
    twin.zero_grad(set_to_none=True)
    tout = twin.loss(tx, noise=None if noise is None else torch.from_numpy(np.array(noise)))
    tout["loss"].backward()
    if set(out) != set(tout):
        raise AssertionError(f"{compare.prefix}the loss parts differ: scratch gives {sorted(out)}, torch {sorted(tout)}")
    for part in out:
        compare(part, np.asarray(out[part]), tout[part].detach())
    _compare_parameter_grads(compare, dict(model.named_parameters()), dict(twin.named_parameters()))
    if input_grad:
        compare("grad_input", grad_input, tx.grad)
    return compare.finish()
