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
- distributed runs (N processes against one, float64, weights after each of 30 Adam steps): the
  only difference is the order of the gradient's sum over the batch: the one-process GEMM adds B
  per-example terms in one order, the ranks add their shards' partial sums and gloo adds those.
  Both are within B·u·Σ|terms| ≈ 64 × 1.1e-16 ≈ 7e-15 of the exact sum relative to the terms'
  magnitude; Adam turns a gradient error δg into an update error of at most lr·δg/(√v̂ + ε), and
  30 steps add 30 of them: far below 1e-9 of the weights' magnitude unless a component's √v̂ is
  near ε = 1e-8 (then lr·δg/ε ≈ 1e-3 × 7e-15 / 1e-8 ≈ 7e-10 a step, the bound's margin). Measured:
  ~1e-15 relative. A missing weight, a wrong shard weight or an unreduced gradient fails by
  orders of magnitude (a shard's gradient is half the batch's).
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
    "assert_model_matches_torch", "conv2d_cases", "conv_transpose2d_cases", "conv_transpose2d_output_size_cases",
    "flatten_cases", "layer_arguments",
    "linear_cases", "max_pool2d_cases", "avg_pool2d_cases", "max_unpool2d_cases", "max_unpool2d_scatter_cases", "shapes", "to_numpy", "tolerance",
    "unflatten_cases",
    "broadcastable_shapes", "loss_cases", "mse_broadcast_cases",
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
    ("distributed", "float64"): (1e-9, 1e-9),
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
    check : the table's row: "torch", "kernel", "optim", "training" or "distributed"
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
def shapes(draw, min_dims=1, max_dims=4, max_side=6, min_side=1):
    """Any shape with min_side..max_side per axis (batch 1 and channels 1 included; empty axes
    too with ``min_side=0``)."""
    ndim = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.integers(min_side, max_side)) for _ in range(ndim))


def _empty_axis(draw, shape) -> tuple:
    """``shape`` with one of its axes (drawn) set to 0 half the time: an empty batch or axis."""
    shape = list(shape)
    if shape and draw(st.booleans()):
        shape[draw(st.integers(0, len(shape) - 1))] = 0
    return tuple(shape)


@_composite
def broadcastable_shapes(draw, shape):
    """A shape that broadcasts to ``shape`` by construction (torch's rules): ``shape`` with some
    leading axes dropped (all of them: ``()``) and some of the others set to 1."""
    dropped = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else side for side in shape[dropped:])


@_composite
def loss_cases(draw, max_dims=4, max_side=5):
    """dict(shape, weight, pos_weight): an element-wise loss's input shape (0-d, and now and then
    an empty axis, included) and the shapes of a ``weight`` and a ``pos_weight`` that broadcast to
    it (``broadcastable_shapes``), each None (not given) a third of the time."""
    shape = list(draw(shapes(min_dims=0, max_dims=max_dims, max_side=max_side)))
    if shape and draw(st.integers(0, 7)) == 0:
        shape[draw(st.integers(0, len(shape) - 1))] = 0
    shape = tuple(shape)
    weight, pos_weight = (draw(st.one_of(st.none(), broadcastable_shapes(shape), broadcastable_shapes(shape)))
                          for _ in range(2))
    return dict(shape=shape, weight=weight, pos_weight=pos_weight)


@_composite
def mse_broadcast_cases(draw):
    """(input shape, target shape): two shapes that broadcast together (both broadcast to one drawn
    shape), the same shape now and then, 0-d and empty ones included."""
    full = draw(loss_cases())["shape"]
    return draw(broadcastable_shapes(full)), draw(broadcastable_shapes(full))


@_composite
def linear_cases(draw, empty=False):
    """(leading_shape, in_features, out_features, bias): leading dims 0..2 extra axes, like torch;
    features 1..9. ``empty``: also what torch takes that holds nothing: a leading axis of size 0
    (an empty batch) half the time, and 0 input or output features."""
    leading = draw(shapes(min_dims=1, max_dims=3, max_side=4))
    features = (0 if empty else 1, 9)
    fan_in, fan_out, bias = draw(st.integers(*features)), draw(st.integers(*features)), draw(st.booleans())
    return (_empty_axis(draw, leading) if empty else leading), fan_in, fan_out, bias


@_composite
def flatten_cases(draw, empty=False):
    """(shape, start_dim, end_dim) with start <= end after normalisation; negative dims too.
    ``empty``: also an axis of size 0 half the time, and now and then a 0-d input (which torch
    treats as one dimension: start and end in {0, -1})."""
    if empty and draw(st.integers(0, 5)) == 0:
        return (), draw(st.sampled_from([0, -1])), draw(st.sampled_from([0, -1]))
    shape = draw(shapes(min_dims=1, max_dims=5, max_side=4))
    shape = _empty_axis(draw, shape) if empty else shape
    ndim = len(shape)
    start = draw(st.integers(0, ndim - 1))
    end = draw(st.integers(start, ndim - 1))
    start = start - ndim if draw(st.booleans()) else start
    end = end - ndim if draw(st.booleans()) else end
    return shape, start, end


@_composite
def unflatten_cases(draw, empty=False, infer=False):
    """(input_shape, dim, unflattened_size): the split sizes multiply to the chosen axis.
    ``empty``: sizes of 0 too (then the split axis is empty), and an empty axis elsewhere half
    the time. ``infer``: half the time one size is -1, torch's inferred size, placed where the
    other sizes multiply to more than 0 (else the -1 would be ambiguous, which torch refuses)."""
    sizes = tuple(draw(st.integers(0 if empty else 1, 4)) for _ in range(draw(st.integers(1, 3))))
    before = draw(shapes(min_dims=1, max_dims=2, max_side=3))
    after = draw(shapes(min_dims=0, max_dims=1, max_side=3)) if draw(st.booleans()) else ()
    if empty:
        before = _empty_axis(draw, before)
    shape = (*before, int(np.prod(sizes)), *after)
    dim = len(before)
    dim = dim - len(shape) if draw(st.booleans()) else dim
    if infer and draw(st.booleans()):
        index = draw(st.integers(0, len(sizes) - 1))
        if int(np.prod(sizes[:index] + sizes[index + 1:])) > 0:
            sizes = (*sizes[:index], -1, *sizes[index + 1:])
    return shape, dim, sizes


CONV_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# "empty": an empty batch (N = 0), sometimes with an empty image too (torch allows both there)
CONV_LAYOUTS = ("batched", "unbatched", "empty")


@_composite
def _axis_for_conv(draw, max_kernel=5, padding_mode="zeros", kind="numbers"):
    """(input size, kernel, stride, padding, dilation) along one axis, output >= 1.

    ``kind``: "numbers" (padding an int, at most 2), "valid" (padding 0), "same" (stride 1;
    padding the pair (before, after) that torch's padding="same" pads, the odd one after) or
    "empty" (input size 0, zero padding wide enough to hold a window: an empty batch's image).
    The input size meets ``padding_mode``'s rule: reflect pads < size, circular pads <= size,
    replicate size >= 1.
    """
    kernel, dilation = draw(st.integers(1, max_kernel)), draw(st.integers(1, 2))
    span = dilation * (kernel - 1)  # the window's reach beyond its first pixel
    if kind == "same":
        before, after = span // 2, span - span // 2
        least = {"reflect": after + 1, "circular": max(after, 1)}.get(padding_mode, 1)
        return least + draw(st.integers(0, 3)), kernel, 1, (before, after), dilation
    stride = draw(st.integers(1, 3))
    if kind == "empty":  # 2·padding >= span + 1: the padding alone holds a window
        return 0, kernel, stride, span // 2 + 1 + draw(st.integers(0, 1)), dilation
    out = draw(st.integers(1, 4))
    extra = draw(st.integers(0, stride - 1))
    base = (out - 1) * stride + span + 1 + extra  # the padded input's size
    # the largest padding p that leaves an input size base - 2p the mode accepts
    limit = {"reflect": (base - 1) // 3, "circular": base // 3}.get(padding_mode, (base - 1) // 2)
    padding = 0 if kind == "valid" else draw(st.integers(0, min(2, limit)))
    return base - 2 * padding, kernel, stride, padding, dilation


def _conv_channels(draw, max_groups):
    """(groups, in_channels, out_channels): 1 to 3 channels per group on each side, so grouped,
    depthwise (one input channel per group) and single-channel layers all occur."""
    groups = draw(st.integers(1, max_groups))
    return groups, groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))


def _conv_x_shape(draw, layout, channels, height, width):
    if layout == "unbatched":
        return (channels, height, width)
    return (0 if layout == "empty" else draw(st.integers(1, 3)), channels, height, width)


@_composite
def conv2d_cases(draw, padding_modes=CONV_PADDING_MODES, layouts=CONV_LAYOUTS, max_groups=3):
    """dict(x_shape, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
    bias, padding_mode): every argument of torch's Conv2d.

    ``padding`` is a pair, "valid" or "same" (then stride 1); ``groups`` divides both channel
    counts (depthwise included); ``x_shape`` is batched, unbatched (C, H, W) or an empty batch
    (N = 0, with zero padding sometimes an empty image too), each from ``layouts``; the
    padding mode is one of ``padding_modes``, and the input is large enough for it.
    """
    padding_mode = draw(st.sampled_from(padding_modes))
    layout = draw(st.sampled_from(layouts))
    kind = draw(st.sampled_from(["numbers", "valid", "same"]))
    kinds = [kind, kind]
    if layout == "empty" and padding_mode == "zeros" and kind == "numbers" and draw(st.booleans()):
        kinds[draw(st.integers(0, 1))] = "empty"
    rows, cols = (draw(_axis_for_conv(padding_mode=padding_mode, kind=k)) for k in kinds)
    groups, channels_in, channels_out = _conv_channels(draw, max_groups)
    padding = kind if kind in ("same", "valid") else (rows[3], cols[3])
    return dict(x_shape=_conv_x_shape(draw, layout, channels_in, rows[0], cols[0]), in_channels=channels_in,
                out_channels=channels_out, kernel_size=(rows[1], cols[1]), stride=(rows[2], cols[2]), padding=padding,
                dilation=(rows[4], cols[4]), groups=groups, bias=draw(st.booleans()), padding_mode=padding_mode)


@_composite
def _axis_for_conv_transpose(draw, max_kernel=5, kind="numbers", output_padding=True):
    """(input size, kernel, stride, padding, output_padding, dilation) along one axis, output >= 1.

    ``kind``: "numbers", "empty_batch" (output >= 0: torch allows an empty output there) or
    "empty" (input size 0, output >= 0). ``output_padding``: False draws 0.
    """
    kernel, stride, dilation = draw(st.integers(1, max_kernel)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    output_padding = draw(st.integers(0, max(stride, dilation) - 1)) if output_padding else 0
    size = 0 if kind == "empty" else draw(st.integers(1, 4))
    unpadded = (size - 1) * stride + dilation * (kernel - 1) + output_padding + 1
    if unpadded < 0:  # only for size 0: a kernel wide enough to reach past the stride
        kernel += -(unpadded // dilation)  # ceil(-unpadded / dilation)
        unpadded = (size - 1) * stride + dilation * (kernel - 1) + output_padding + 1
    least = 1 if kind == "numbers" else 0  # the smallest output allowed
    padding = draw(st.integers(0, min(2, (unpadded - least) // 2)))
    return size, kernel, stride, padding, output_padding, dilation


def _conv_transpose_case(draw, layouts, max_groups, output_padding=True):
    layout = draw(st.sampled_from(layouts))
    kinds = ["numbers", "numbers"] if layout != "empty" else ["empty_batch", "empty_batch"]
    if layout == "empty" and draw(st.booleans()):
        kinds[draw(st.integers(0, 1))] = "empty"
    rows, cols = (draw(_axis_for_conv_transpose(kind=k, output_padding=output_padding)) for k in kinds)
    groups, channels_in, channels_out = _conv_channels(draw, max_groups)
    return dict(x_shape=_conv_x_shape(draw, layout, channels_in, rows[0], cols[0]), in_channels=channels_in,
                out_channels=channels_out, kernel_size=(rows[1], cols[1]), stride=(rows[2], cols[2]),
                padding=(rows[3], cols[3]), output_padding=(rows[4], cols[4]), groups=groups, bias=draw(st.booleans()),
                dilation=(rows[5], cols[5]))


@_composite
def conv_transpose2d_cases(draw, layouts=CONV_LAYOUTS, max_groups=3):
    """dict(x_shape, in_channels, out_channels, kernel_size, stride, padding, output_padding,
    groups, bias, dilation): every argument of torch's ConvTranspose2d (its only padding_mode
    is "zeros"). ``groups`` divides both channel counts; ``x_shape`` batched, unbatched or an
    empty batch (whose image, and output, may be empty too), each from ``layouts``."""
    return _conv_transpose_case(draw, layouts, max_groups)


@_composite
def conv_transpose2d_output_size_cases(draw, layouts=CONV_LAYOUTS, max_groups=3):
    """(case, output_size): a ``conv_transpose2d_cases`` case and an ``output_size`` for its
    forward, in torch's range (the smallest output, up to stride - 1 more per axis), as 2 sizes
    or as the whole output shape (N, C_out, H, W), or (C_out, H, W) for an unbatched input.
    The case's own output_padding, which output_size overrides, is any valid one."""
    case = _conv_transpose_case(draw, layouts, max_groups, output_padding=False)
    sizes = []
    for axis in (0, 1):
        smallest = ((case["x_shape"][-2 + axis] - 1) * case["stride"][axis] - 2 * case["padding"][axis]
                    + case["dilation"][axis] * (case["kernel_size"][axis] - 1) + 1)
        sizes.append(smallest + draw(st.integers(0, case["stride"][axis] - 1)))
    case["output_padding"] = tuple(draw(st.integers(0, max(case["stride"][a], case["dilation"][a]) - 1)) for a in (0, 1))
    if draw(st.booleans()):
        sizes = [*case["x_shape"][:-3], case["out_channels"], *sizes]
    return case, sizes


# "empty": an empty batch (N = 0); torch's pools refuse every other empty axis
POOL_LAYOUTS = ("batched", "unbatched", "empty")


@_composite
def _axis_for_pool(draw, ceil_mode=False, dilate=True):
    """(input size, kernel, stride, padding, dilation) along one axis, valid for torch: padding up
    to half the kernel; output >= 1 by torch's rule (with ``ceil_mode`` the input may be up to
    stride - 1 narrower than the padded window); the input at least ``dilation`` wide, which keeps
    an input element in every window (docs/pooling.md).

    With ``ceil_mode``, half the draws (where the geometry allows one) build a partial last window
    on purpose: size = reach + m·stride + r, where reach = dilation·(kernel - 1) + 1 - 2·padding is
    the input one window needs and r the remainder floor division drops; ceil_mode adds a window
    for it, which torch keeps when it starts inside the input or its left padding:
    m·stride + stride - padding < size + padding, i.e. r > stride - reach - padding."""
    kernel, stride = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2)) if dilate else 1
    padding = draw(st.integers(0, kernel // 2))
    reach = dilation * (kernel - 1) + 1 - 2 * padding
    remainders = range(max(1, stride - reach - padding + 1), stride)
    if ceil_mode and remainders and draw(st.booleans()):
        size = reach + draw(st.integers(0, 2)) * stride + draw(st.sampled_from(remainders))
        return size, kernel, stride, padding, dilation
    least = reach - (stride - 1 if ceil_mode else 0)
    return max(least, dilation, 1) + draw(st.integers(0, 4)), kernel, stride, padding, dilation


def _pool_geometry(draw, ceil_mode, dilate=True):
    """(x_shape, {kernel_size, stride, padding[, dilation]}) of a pool: layout batched (1 to 3
    images), unbatched or an empty batch; 1 to 3 channels."""
    rows, cols = draw(_axis_for_pool(ceil_mode, dilate)), draw(_axis_for_pool(ceil_mode, dilate))
    layout, channels = draw(st.sampled_from(POOL_LAYOUTS)), draw(st.integers(1, 3))
    image = (channels, rows[0], cols[0])
    shape = image if layout == "unbatched" else (0 if layout == "empty" else draw(st.integers(1, 3)), *image)
    geometry = dict(kernel_size=(rows[1], cols[1]), stride=(rows[2], cols[2]), padding=(rows[3], cols[3]))
    if dilate:
        geometry["dilation"] = (rows[4], cols[4])
    return shape, geometry


@_composite
def max_pool2d_cases(draw):
    """dict(x_shape, kernel_size, stride, padding, dilation, ceil_mode, return_indices): every
    argument of torch's MaxPool2d; ``x_shape`` (N, C, H, W), (C, H, W) or an empty batch."""
    ceil_mode = draw(st.booleans())
    shape, geometry = _pool_geometry(draw, ceil_mode)
    return dict(x_shape=shape, **geometry, ceil_mode=ceil_mode, return_indices=draw(st.booleans()))


@_composite
def avg_pool2d_cases(draw):
    """dict(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    every argument of torch's AvgPool2d (divisor_override None or a nonzero int, negative too)."""
    ceil_mode = draw(st.booleans())
    shape, geometry = _pool_geometry(draw, ceil_mode, dilate=False)
    return dict(x_shape=shape, **geometry, ceil_mode=ceil_mode, count_include_pad=draw(st.booleans()),
                divisor_override=draw(st.sampled_from([None, None, 1, 3, -2])))


@_composite
def max_unpool2d_cases(draw):
    """dict(x_shape, kernel_size, stride, padding, ceil_mode, output_size): MaxPool2d(kernel_size,
    stride, padding, ceil_mode=ceil_mode) pools an x of ``x_shape`` and MaxUnpool2d(kernel_size,
    stride, padding) takes back its output and indices, with ``output_size`` the pooled input's
    (H, W), or its whole shape (batched only: torch takes 2 or 4 sizes; that size is always in
    torch's range), or None (the default size, drawn only where its plane holds every index)."""
    from scratch.functional.pooling import max_unpool2d_output_size, pool2d_output_size

    ceil_mode = draw(st.booleans())
    shape, geometry = _pool_geometry(draw, ceil_mode, dilate=False)
    default = [max_unpool2d_output_size(pool2d_output_size(shape[-2 + a], geometry["kernel_size"][a],
                                                           geometry["stride"][a], geometry["padding"][a], 1, ceil_mode),
                                        geometry["kernel_size"][a], geometry["stride"][a], geometry["padding"][a])
               for a in (0, 1)]
    forms = ["pair"] + (["whole"] if len(shape) == 4 else []) + (["none"] if default[0] * default[1] >= shape[-2] * shape[-1]
                                                                    else [])
    form = draw(st.sampled_from(forms))
    output_size = {"pair": tuple(shape[-2:]), "whole": tuple(shape), "none": None}[form]
    return dict(x_shape=shape, **geometry, ceil_mode=ceil_mode, output_size=output_size)


@_composite
def max_unpool2d_scatter_cases(draw):
    """dict(x_shape, kernel_size, stride, padding, output_size): MaxUnpool2d's arguments and input
    shape with an output plane at least as large as the input's, so that each plane can take
    distinct indices from anywhere in it (the test draws them). Padding below half the kernel
    keeps the default size (H - 1)·stride - 2·padding + kernel >= H; ``output_size`` is None,
    (H_out, W_out) anywhere in torch's range that is >= the input's, or (batched) the whole shape."""
    axes = []
    for _ in (0, 1):
        kernel, stride, size = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
        padding = draw(st.integers(0, (kernel - 1) // 2))
        default = (size - 1) * stride - 2 * padding + kernel
        axes.append((size, kernel, stride, padding, draw(st.integers(max(size, default - stride + 1), default + stride - 1))))
    layout, channels = draw(st.sampled_from(POOL_LAYOUTS)), draw(st.integers(1, 3))
    image = (channels, axes[0][0], axes[1][0])
    shape = image if layout == "unbatched" else (0 if layout == "empty" else draw(st.integers(1, 3)), *image)
    sizes = (axes[0][4], axes[1][4])
    form = draw(st.sampled_from(["none", "pair"] + (["whole"] if len(shape) == 4 else [])))
    output_size = {"none": None, "pair": sizes, "whole": (*shape[:2], *sizes)}[form]
    return dict(x_shape=shape, kernel_size=(axes[0][1], axes[1][1]), stride=(axes[0][2], axes[1][2]),
                padding=(axes[0][3], axes[1][3]), output_size=output_size)


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
