"""ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, ELU and Softplus (docs/activations.md).

The three oracles of docs/README.md, for ``scratch/functional/activations.py``,
``scratch/kernels/activations.py`` and ``scratch.nn.ReLU`` / ``LeakyReLU`` / ``Sigmoid`` / ``Tanh`` /
``GELU`` / ``SiLU`` / ``ELU`` / ``Softplus``:

1. torch parity (their ``torch.nn`` twins): output and dx through a random cotangent, exact
   zeros included (the gradient at the kink is torch's convention), |x| up to ~1e4, every
   constructor argument (GELU's two forms, ELU's alpha 0 and negative, Softplus's beta and
   threshold); NaN and ±inf propagate as in torch where torch's result is defined; in place as
   torch (and ELU's in-place backward with a negative alpha refused as torch refuses it); the
   functional defaults are torch's;
2. central differences: the functional pair and the module (in place too), inputs kept away
   from any kink (ELU's at 0, Softplus's at beta · x = threshold);
3. kernels against their NumPy references, exact zeros included, and the forward kernels that
   run in place with their output the input array.

torch's own samples (oracle 4) for all of them run in ``test_torch_database.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, activation_backward_terms, assert_close
from scratch import functional as F
from scratch import nn
from scratch.functional.activations import sigmoid_zero_below
from scratch.gradcheck import gradcheck
from scratch.kernels import activations as E
from scratch.testing import assert_matches_torch

# ---------------------------------------------------------------------------- oracle 1: torch

ACTIVATIONS = {
    "ReLU": (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    "Tanh": (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
}


@given(name=st.sampled_from(sorted(ACTIVATIONS)), shape=S.shapes(), dtype=S.dtypes, seed=S.seeds,
       scale=st.sampled_from([1.0, 10.0]))
def test_activation_matches_torch(name, shape, dtype, seed, scale):
    rng = np.random.default_rng(seed)
    make_scratch, make_torch = ACTIVATIONS[name]
    # exact zeros included: the gradient convention at the kink must match torch's too
    x = (scale * rng.standard_normal(shape) * (rng.random(shape) > 0.1)).astype(dtype)
    # dx against the magnitude of the terms its formula combines (it cancels where |y| -> 1)
    terms = {"grad_input[0]": lambda cotangent, output: activation_backward_terms(name, cotangent, output)}
    assert_matches_torch(make_scratch(), make_torch(), x, rng=rng, what=name, scale=terms)


@given(slope=S.negative_slopes, shape=S.shapes(), dtype=S.dtypes, seed=S.seeds)
def test_leaky_relu_matches_torch(slope, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * (rng.random(shape) > 0.1)).astype(dtype)
    assert_matches_torch(nn.LeakyReLU(slope), torch.nn.LeakyReLU(slope), x, rng=rng, what="LeakyReLU")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["ReLU", "LeakyReLU", "Sigmoid", "Tanh"])
def test_activations_propagate_nan_and_inf_like_torch(name, dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 40.0], dtype=dtype)  # exact results only
    layer, twin = getattr(nn, name)(), getattr(torch.nn, name)()
    tx = torch.tensor(x, requires_grad=True)
    ty = twin(tx)
    grad_output = np.arange(1, 7, dtype=dtype)
    ty.backward(torch.tensor(grad_output))
    np.testing.assert_array_equal(layer(x), ty.detach().numpy())
    np.testing.assert_array_equal(layer.backward(grad_output), tx.grad.numpy())


def test_leaky_relu_forward_default_slope_is_torchs():
    """With its optional slope left out, the public functional call equals torch's with its own
    left out (the layers always pass it, so no other test reaches this default)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))  # float64, both signs: a slope shows
    out, _ = F.leaky_relu_forward(x)
    assert_close(out, torch.nn.functional.leaky_relu(torch.from_numpy(x)), "torch", np.float64, "leaky_relu default")



# GELU, SiLU, ELU and Softplus with their constructor arguments: every value that changes the
# numbers, drawn by construction (GELU's two forms; ELU's alpha, 0 and negative included, as torch
# allows; Softplus's beta and threshold, negative ones included).
ARGUMENTS = {
    "GELU": st.fixed_dictionaries({"approximate": st.sampled_from(["none", "tanh"])}),
    "SiLU": st.just({}),
    "ELU": st.fixed_dictionaries({"alpha": st.sampled_from([1.0, 0.5, 2.5, 0.0, -0.7])}),
    "Softplus": st.fixed_dictionaries({"beta": st.sampled_from([1.0, 2.0, 0.5, -1.5]),
                                       "threshold": st.sampled_from([20.0, 5.0, 0.2, -3.0])}),
}
activations_with_arguments = st.sampled_from(sorted(ARGUMENTS)).flatmap(
    lambda name: st.tuples(st.just(name), ARGUMENTS[name]))


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))  # float64, for the terms below


def output_terms(name, x):
    """|terms| of the forward formula, where it cancels, else None (max|expected| then scales):
    GELU's x · ½(1 + erf(x/√2)) and ½x(1 + tanh(u)) cancel in 1 + erf, 1 + tanh as x → -∞, and
    torch's float32 erf (vectorised, ~1e-7 absolute) is exact only to the terms there."""
    return np.abs(np.asarray(x, np.float64)) if name == "GELU" else None


def grad_terms(name, arguments, x, cotangent, out=None):
    """|terms| of the backward formula, where it cancels, else None. GELU's Φ + xφ and
    ½(1 + t) + ½x(1 - t²)u' cancel near their minimum (x ≈ -0.75), with Φ and 1 - t² rounded
    to u of 1; SiLU's σ(1 + x(1 - σ)) near x ≈ -1.28, with 1 - σ rounded to u of 1; ELU's
    in-place dy · (out + alpha) as out → -alpha (``out`` given)."""
    x, g = np.asarray(x, np.float64), np.abs(np.asarray(cotangent, np.float64))
    if name == "GELU" and arguments.get("approximate") == "tanh":
        t = np.tanh(E.GELU_TANH_SCALE * (x + E.GELU_TANH_KAPPA * x ** 3))
        inner_derivative = E.GELU_TANH_SCALE * (1 + 3 * E.GELU_TANH_KAPPA * x * x)
        return g * (0.5 * (1 + np.abs(t)) + 0.5 * np.abs(x) * (1 + t * t) * inner_derivative)
    if name == "GELU":
        return g * (1 + np.abs(x) * E.GELU_PDF_SCALE * np.exp(-0.5 * x * x))
    if name == "SiLU":
        return g * _sigmoid(x) * (1 + np.abs(x))
    if name == "ELU" and out is not None:
        return g * (np.abs(np.asarray(out, np.float64)) + abs(arguments.get("alpha", 1.0)))
    return None


def _scales(name, arguments, x) -> dict:
    """``assert_matches_torch``'s ``scale`` for the quantities whose formula cancels."""
    scale = {}
    if output_terms(name, x) is not None:
        scale["output"] = output_terms(name, x)
    if grad_terms(name, arguments, x, 1.0) is not None:
        scale["grad_input[0]"] = lambda cotangent, output: grad_terms(name, arguments, x, cotangent)
    return scale


@given(case=activations_with_arguments, shape=S.shapes(), dtype=S.dtypes, seed=S.seeds,
       scale=st.sampled_from([1.0, 10.0, 1e4]))
def test_gelu_silu_elu_softplus_match_torch(case, shape, dtype, seed, scale):
    """Output and dx, |x| up to ~1e4, every constructor argument; exact zeros pin the gradient at
    ELU's kink (torch takes the x <= 0 branch there). 0-d inputs:
    ``test_gelu_silu_elu_softplus_on_a_0d_input_like_torch``."""
    name, arguments = case
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape) * (rng.random(shape) > 0.1)).astype(dtype)
    layer, twin = getattr(nn, name)(**arguments), getattr(torch.nn, name)(**arguments)
    assert_matches_torch(layer, twin, x, rng=rng, what=repr(layer), scale=_scales(name, arguments, x))


EDGE_CASES = [("GELU", {}), ("GELU", {"approximate": "tanh"}), ("SiLU", {}), ("ELU", {}), ("ELU", {"alpha": 0.0}),
              ("ELU", {"alpha": -0.7}), ("Softplus", {}), ("Softplus", {"beta": -1.5, "threshold": 5.0}),
              ("Softplus", {"beta": 0.0})]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, arguments", EDGE_CASES, ids=[f"{n}{a}" for n, a in EDGE_CASES])
def test_gelu_silu_elu_softplus_propagate_nan_and_inf_like_torch(name, arguments, dtype):
    """NaN, ±inf, ±0 and ±1e4, where every result is exact (0, ±1e4, -alpha, ±inf, NaN; Softplus
    with beta 0 gives inf, as torch's log(2)/0): torch's values, bit for bit. One exception, where
    torch's value is an artifact of its float32 vectorised erf: GELU(+inf) is NaN there (inf in its
    float64); scratch gives inf in both dtypes."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e4, -1e4], dtype=dtype)
    grad_output = np.arange(1, 8, dtype=dtype)
    layer = getattr(nn, name)(**arguments)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # NumPy's passes make no NaN, no inf
        out, grad = layer(x), layer.backward(grad_output)
    tx = torch.tensor(x, requires_grad=True)
    tout = getattr(torch.nn, name)(**arguments)(tx)
    tout.backward(torch.from_numpy(grad_output))
    expected = tout.detach().numpy().copy()
    if name == "GELU" and not arguments and dtype == np.float32:
        assert np.isnan(expected[1]) and out[1] == np.inf  # torch's float32 artifact; scratch: inf
        expected[1] = np.inf
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(grad, tx.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, arguments", EDGE_CASES[:-1], ids=[f"{n}{a}" for n, a in EDGE_CASES[:-1]])
def test_gelu_silu_elu_softplus_on_a_0d_input_like_torch(name, arguments, dtype):
    """A 0-d input gives a 0-d output and gradient, torch's values (the kernels see one element)."""
    rng = np.random.default_rng(3)
    for value in (-1.5, 0.7, 0.0, rng.normal()):
        x, cotangent = np.array(value, dtype=dtype), np.array(rng.standard_normal(), dtype=dtype)
        layer = getattr(nn, name)(**arguments)
        out = layer(x)
        grad = layer.backward(cotangent)
        tx = torch.tensor(x, requires_grad=True)
        tout = getattr(torch.nn, name)(**arguments)(tx)
        tout.backward(torch.from_numpy(cotangent))
        assert out.shape == grad.shape == tuple(tout.shape) == tuple(tx.grad.shape) == ()
        assert_close(out, tout.detach(), "torch", dtype, f"{layer!r} 0-d output", scale=output_terms(name, x))
        assert_close(grad, tx.grad, "torch", dtype, f"{layer!r} 0-d gradient",
                     scale=grad_terms(name, arguments, x, cotangent))


def test_elu_is_accurate_near_zero_like_torch():
    """alpha · expm1(x), not alpha · (e^x - 1): for x = -1e-12 the latter is off by 9e-5 relative
    (e^x rounds to 1 - 1e-12 ± 1e-16); torch uses expm1 too. One element: the comparison is
    relative to it alone."""
    for value in (-1e-12, -3e-9, -1e-300):
        x = np.array([value])
        out = nn.ELU(0.5)(x)
        expected = torch.nn.ELU(0.5)(torch.from_numpy(x)).numpy()
        assert_close(out, expected, "torch", np.float64, f"ELU({value})")
        exact = 0.5 * (value + value * value / 2)  # e^x - 1 = x + x²/2 + O(x³), x³ below u here
        assert abs(out[0] - exact) <= 1e-15 * abs(exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_stays_finite_where_torchs_overflows(dtype):
    """With a threshold above L, the largest x with e^x finite (88.7 in float32, 709.8 in float64),
    torch's log1p(exp(βx)) is inf and its gradient e^{βx} / (e^{βx} + 1) NaN for L < βx <=
    threshold: an overflow of its evaluation, not its definition (log(1 + e^{βx}) = βx + log1p(e^{-βx})
    ≈ βx there). scratch's form never exponentiates a positive number: x and dy there, torch's
    numbers below L."""
    bound = -float(sigmoid_zero_below(dtype))  # L
    x = np.array([1.0, 0.5 * bound, bound - 1, bound + 1, 1.5 * bound, 5000.0], dtype=dtype)
    grad_output = np.linspace(0.5, 2.0, x.size).astype(dtype)
    layer = nn.Softplus(1.0, 1e4)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, grad = layer(x), layer.backward(grad_output)
    tx = torch.tensor(x, requires_grad=True)
    tout = torch.nn.Softplus(1.0, 1e4)(tx)
    tout.backward(torch.from_numpy(grad_output))
    overflowed = ~np.isfinite(tout.detach().numpy())
    np.testing.assert_array_equal(overflowed, x > bound)  # where torch's overflows
    np.testing.assert_array_equal(out[overflowed], x[overflowed])
    np.testing.assert_array_equal(grad[overflowed], grad_output[overflowed])
    assert np.all(np.isnan(tx.grad.numpy()[overflowed]))
    assert_close(out[~overflowed], tout.detach()[~overflowed], "torch", dtype, "Softplus below L")
    assert_close(grad[~overflowed], tx.grad[~overflowed], "torch", dtype, "Softplus backward below L")


def test_gelu_silu_elu_softplus_functional_defaults_are_torchs():
    """With their optional arguments left out, the public functional calls equal torch's with its
    own left out (the layers always pass them, so no other test reaches these defaults)."""
    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal((4, 5))  # float64, both signs
    tx = torch.from_numpy(x)
    TF = torch.nn.functional
    for forward, twin in ((F.gelu_forward, TF.gelu), (F.silu_forward, TF.silu), (F.elu_forward, TF.elu),
                          (F.softplus_forward, TF.softplus)):
        out, _ = forward(x)
        assert_close(out, twin(tx), "torch", np.float64, f"{forward.__name__} defaults")


# ---------------------------------------------------------------------------- oracle 2: central differences

SMOOTH = {
    "sigmoid": ((F.sigmoid_forward, F.sigmoid_backward), nn.Sigmoid),
    "tanh": ((F.tanh_forward, F.tanh_backward), nn.Tanh),
}


@given(name=st.sampled_from(sorted(SMOOTH)), shape=S.shapes(), seed=S.seeds, scale=st.sampled_from([1.0, 5.0]))
def test_smooth_activations(name, shape, seed, scale):
    rng = np.random.default_rng(seed)
    pair, module = SMOOTH[name]
    x = scale * rng.standard_normal(shape)
    gradcheck(pair, x, rng=rng, **GRADCHECK)
    gradcheck(module(), x, rng=rng, **GRADCHECK)


@given(shape=S.shapes(), seed=S.seeds)
def test_relu(shape, seed):
    rng = np.random.default_rng(seed)
    x = S.away_from_zero(rng, shape)
    gradcheck((F.relu_forward, F.relu_backward), x, rng=rng, **GRADCHECK)
    gradcheck(nn.ReLU(), x, rng=rng, **GRADCHECK)


@given(shape=S.shapes(), seed=S.seeds, slope=S.negative_slopes)
def test_leaky_relu(shape, seed, slope):
    rng = np.random.default_rng(seed)
    x = S.away_from_zero(rng, shape)
    gradcheck((F.leaky_relu_forward, F.leaky_relu_backward), x, slope, rng=rng, **GRADCHECK)
    gradcheck(nn.LeakyReLU(slope), x, rng=rng, **GRADCHECK)



PAIRS = {"GELU": (F.gelu_forward, F.gelu_backward), "SiLU": (F.silu_forward, F.silu_backward),
         "ELU": (F.elu_forward, F.elu_backward), "Softplus": (F.softplus_forward, F.softplus_backward)}


def away_from_kinks(name, arguments, rng, shape, scale):
    """float64 inputs where the function is smooth within any central difference: GELU and SiLU
    everywhere; ELU off 0 (its derivative jumps from alpha to 1 there); Softplus off
    beta · x = threshold (where it jumps from log1p(e^threshold)/beta to x)."""
    if name == "ELU":
        return scale * S.away_from_zero(rng, shape)
    if name == "Softplus":
        beta, threshold = arguments["beta"], arguments["threshold"]
        return (threshold + scale * S.away_from_zero(rng, shape)) / beta
    return scale * rng.standard_normal(shape)


@given(case=activations_with_arguments, shape=S.shapes(), seed=S.seeds, scale=st.sampled_from([1.0, 4.0]))
def test_gelu_silu_elu_softplus_by_central_differences(case, shape, seed, scale):
    """The functional pair and the module, every constructor argument."""
    name, arguments = case
    rng = np.random.default_rng(seed)
    x = away_from_kinks(name, arguments, rng, shape, scale)
    forward, backward = PAIRS[name]
    gradcheck((lambda a: forward(a, **arguments), backward), x, rng=rng, **GRADCHECK)
    gradcheck(getattr(nn, name)(**arguments), x, rng=rng, **GRADCHECK)


# ---------------------------------------------------------------------------- oracle 3: kernels


def _flat(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(int(np.prod(shape)))).astype(dtype)


UNARY = ["relu", "sigmoid", "tanh"]


@given(name=st.sampled_from(UNARY), shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds,
       scale=st.sampled_from([1.0, 100.0]))
def test_unary_kernels(name, shape, dtype, seed, scale):
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype, scale)
    x[rng.random(x.size) < 0.1] = 0  # exact zeros: the kink convention must agree too
    out = np.empty_like(x)
    if name == "tanh":  # its forward is NumPy's ufunc, no kernel (torch parity checks it): the backward's input
        out = np.tanh(x)
    else:
        if name == "sigmoid":
            E.sigmoid_forward(x, np.exp(-np.abs(x)), out)
        else:
            E.relu_forward(x, out)
        assert_close(out, getattr(E, f"{name}_forward_reference")(x), "kernel", dtype, f"{name}_forward")
    grad_output = _flat(rng, shape, dtype)
    grad_input = np.empty_like(x)
    getattr(E, f"{name}_backward")(grad_output, out, grad_input)
    expected = getattr(E, f"{name}_backward_reference")(grad_output, out)
    terms = activation_backward_terms(name, grad_output, out)
    assert_close(grad_input, expected, "kernel", dtype, f"{name}_backward", scale=terms)


@given(shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds, slope=S.negative_slopes)
def test_leaky_relu_kernels(shape, dtype, seed, slope):
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype)
    slope = np.dtype(dtype).type(slope)
    out = np.empty_like(x)
    E.leaky_relu_forward(x, slope, out)
    assert_close(out, E.leaky_relu_forward_reference(x, slope), "kernel", dtype, "leaky_relu_forward")
    grad_output, grad_input = _flat(rng, shape, dtype), np.empty_like(x)
    E.leaky_relu_backward(grad_output, x, slope, grad_input)
    assert_close(grad_input, E.leaky_relu_backward_reference(grad_output, x, slope), "kernel", dtype,
                 "leaky_relu_backward")



@given(shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds, scale=st.sampled_from([1.0, 10.0]))
def test_gelu_kernels(shape, dtype, seed, scale):
    """Both forms, forward (and the Φ(x) or tanh it keeps) and backward; the terms scale where the
    formulas cancel (see ``output_terms``, ``grad_terms``)."""
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype, scale)
    x[rng.random(x.size) < 0.1] = 0
    grad_output = _flat(rng, shape, dtype)
    aux, out, grad_input = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    E.gelu_forward(x, aux, out)
    expected_out, expected_cdf = E.gelu_forward_reference(x)
    assert_close(aux, expected_cdf, "kernel", dtype, "gelu_forward Φ", scale=1.0)  # ½(1 + erf): terms <= 1
    assert_close(out, expected_out, "kernel", dtype, "gelu_forward", scale=np.abs(x))
    E.gelu_backward(grad_output, x, aux, grad_input)
    assert_close(grad_input, E.gelu_backward_reference(grad_output, x, aux), "kernel", dtype, "gelu_backward",
                 scale=grad_terms("GELU", {}, x, grad_output))
    E.gelu_tanh_inner(x, aux)
    np.tanh(aux, out=aux)
    E.gelu_tanh_forward(x, aux, out)
    expected_out, expected_tanh = E.gelu_tanh_forward_reference(x)
    assert_close(aux, expected_tanh, "kernel", dtype, "gelu_tanh_inner, tanh", scale=1.0)
    assert_close(out, expected_out, "kernel", dtype, "gelu_tanh_forward", scale=np.abs(x))
    E.gelu_tanh_backward(grad_output, x, aux, grad_input)
    assert_close(grad_input, E.gelu_tanh_backward_reference(grad_output, x, aux), "kernel", dtype,
                 "gelu_tanh_backward", scale=grad_terms("GELU", {"approximate": "tanh"}, x, grad_output))


@given(shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds, scale=st.sampled_from([1.0, 100.0]))
def test_silu_kernels(shape, dtype, seed, scale):
    """Forward (with σ, 0 below torch's cut-off: x down to -300 here) and backward."""
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype, scale)
    x[rng.random(x.size) < 0.1] = 0
    zero_below = sigmoid_zero_below(dtype)
    sigmoid, out = np.exp(-np.abs(x)), np.empty_like(x)
    E.silu_forward(x, sigmoid, zero_below, sigmoid, out)  # σ over e^{-|x|}, as the functional runs it
    expected_out, expected_sigmoid = E.silu_forward_reference(x, zero_below)
    assert_close(sigmoid, expected_sigmoid, "kernel", dtype, "silu_forward σ")
    assert_close(out, expected_out, "kernel", dtype, "silu_forward")
    grad_output, grad_input = _flat(rng, shape, dtype), np.empty_like(x)
    E.silu_backward(grad_output, x, sigmoid, grad_input)
    assert_close(grad_input, E.silu_backward_reference(grad_output, x, sigmoid), "kernel", dtype, "silu_backward",
                 scale=grad_terms("SiLU", {}, x, grad_output))


@given(shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds, scale=st.sampled_from([1.0, 10.0]),
       arguments=ARGUMENTS["ELU"])
def test_elu_kernels(shape, dtype, seed, scale, arguments):
    """Forward, the backward from the input and the one from the output (in place)."""
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype, scale)
    x[rng.random(x.size) < 0.1] = 0
    alpha = np.dtype(dtype).type(arguments["alpha"])
    out = np.empty_like(x)
    E.elu_forward(x, np.expm1(np.minimum(x, 0)), alpha, out)
    assert_close(out, E.elu_forward_reference(x, alpha), "kernel", dtype, "elu_forward")
    grad_output, grad_input = _flat(rng, shape, dtype), np.empty_like(x)
    E.elu_backward(grad_output, x, np.exp(np.minimum(x, 0)), alpha, grad_input)
    assert_close(grad_input, E.elu_backward_reference(grad_output, x, alpha), "kernel", dtype, "elu_backward")
    E.elu_backward_from_output(grad_output, out, alpha, grad_input)
    assert_close(grad_input, E.elu_backward_from_output_reference(grad_output, out, alpha), "kernel", dtype,
                 "elu_backward_from_output", scale=grad_terms("ELU", arguments, x, grad_output, out))


@given(shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds, scale=st.sampled_from([1.0, 30.0]),
       arguments=ARGUMENTS["Softplus"])
def test_softplus_kernels(shape, dtype, seed, scale, arguments):
    """Forward (the exponent, NumPy's exp and log1p between the two kernels, as the functional
    runs them) and backward, both sides of the threshold."""
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype, scale)
    x[rng.random(x.size) < 0.1] = 0
    beta, threshold = (np.dtype(dtype).type(arguments[key]) for key in ("beta", "threshold"))
    exp_neg_abs, out = np.empty_like(x), np.empty_like(x)
    E.softplus_exponent(x, beta, exp_neg_abs)
    np.exp(exp_neg_abs, out=exp_neg_abs)
    np.log1p(exp_neg_abs, out=out)
    E.softplus_forward(x, beta, threshold, out, out)
    assert_close(out, E.softplus_forward_reference(x, beta, threshold), "kernel", dtype, "softplus_forward")
    grad_output, grad_input = _flat(rng, shape, dtype), np.empty_like(x)
    E.softplus_backward(grad_output, x, beta, threshold, exp_neg_abs, grad_input)
    assert_close(grad_input, E.softplus_backward_reference(grad_output, x, beta, threshold), "kernel", dtype,
                 "softplus_backward")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make, twin", [(nn.ReLU, torch.nn.ReLU), (nn.LeakyReLU, torch.nn.LeakyReLU),
                                        (nn.Sigmoid, torch.nn.Sigmoid), (nn.Tanh, torch.nn.Tanh)],
                         ids=["relu", "leaky_relu", "sigmoid", "tanh"])
def test_a_0d_input_gives_0d_output_and_gradient_like_torch(make, twin, dtype):
    """Issue 15: LeakyReLU's backward returned (1,) for a 0-d input, where torch returns ()."""
    rng = np.random.default_rng(3)
    for value in (-1.5, 0.7, rng.normal()):
        x, cotangent = np.array(value, dtype=dtype), np.array(rng.standard_normal(), dtype=dtype)
        layer = make()
        out = layer(x)
        grad = layer.backward(cotangent)
        tx = torch.tensor(x, requires_grad=True)
        tout = twin()(tx)
        tout.backward(torch.from_numpy(cotangent))
        assert out.shape == grad.shape == tuple(tout.shape) == tuple(tx.grad.shape) == ()
        assert_close(out, tout.detach(), "torch", dtype, f"{make.__name__} 0-d output")
        assert_close(grad, tx.grad, "torch", dtype, f"{make.__name__} 0-d gradient")


# ---------------------------------------------------------------------------- empty and in-place (issue 15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 4)])
@pytest.mark.parametrize("name", ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ReLU inplace", "LeakyReLU inplace",
                                  "GELU", "SiLU", "ELU", "Softplus", "SiLU inplace", "ELU inplace"])
def test_an_empty_array_passes_through_like_torch(name, shape, dtype):
    base, _, inplace = name.partition(" ")
    options = {"inplace": True} if inplace else {}
    layer, twin = getattr(nn, base)(**options), getattr(torch.nn, base)(**options)
    x = np.zeros(shape, dtype)
    out = layer(x)
    grad = layer.backward(np.zeros(shape, dtype))
    tx = torch.zeros(shape, dtype=torch.from_numpy(x).dtype, requires_grad=True)
    tout = twin(tx * 1)  # a non-leaf, as torch's in-place forms need
    tout.backward(torch.zeros_like(tout))
    assert out.shape == grad.shape == tuple(tout.shape) == tuple(tx.grad.shape) == shape
    assert out.dtype == grad.dtype == dtype
    assert (out is x) == bool(inplace)


INPLACE = {  # name: (scratch layer, torch layer), each writing its result into its input
    "ReLU": (lambda slope: nn.ReLU(inplace=True), lambda slope: torch.nn.ReLU(inplace=True)),
    "LeakyReLU": (lambda slope: nn.LeakyReLU(slope, inplace=True), lambda slope: torch.nn.LeakyReLU(slope, inplace=True)),
}


@given(name=st.sampled_from(sorted(INPLACE)), shape=S.shapes(min_dims=0), dtype=S.dtypes, seed=S.seeds,
       slope=S.non_negative_slopes, strided=st.booleans())
def test_inplace_activations_match_torch(name, shape, dtype, seed, slope, strided):
    """Oracle 1: the result is written into the input, which is returned (a strided view too, as
    torch writes through one); the output and dx are torch's, exact zeros included."""
    rng = np.random.default_rng(seed)
    make, make_twin = INPLACE[name]
    base = (rng.standard_normal((*shape, 2)) * (rng.random((*shape, 2)) > 0.1)).astype(dtype)
    x = base[..., 0] if strided else base[..., 0].copy()  # a strided view of base, or its own array
    expected_base = base.copy()
    layer = make(slope)
    out = layer(x)
    assert out is x
    if strided:  # written through the view: the other half of base is as it was
        np.testing.assert_array_equal(base[..., 1], expected_base[..., 1])
    tx = torch.tensor(expected_base[..., 0], requires_grad=True)
    tout = make_twin(slope)(tx * 1)
    cotangent = rng.standard_normal(shape).astype(dtype)
    tout.backward(torch.tensor(cotangent))
    np.testing.assert_array_equal(out, tout.detach().numpy())  # one rounding, the same on both sides
    np.testing.assert_array_equal(layer.backward(cotangent), tx.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_layers_give_the_numbers_of_the_plain_ones(name, dtype):
    """In place or not, the same bits: output, dx, NaN and ±inf included."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 40.0, -3.5], dtype=dtype)
    grad_output = np.arange(1, 8, dtype=dtype)
    plain = getattr(nn, name)()
    expected = plain(x.copy()), plain.backward(grad_output)
    layer = getattr(nn, name)(inplace=True)
    got = layer(x), layer.backward(grad_output)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("slope", [-0.3, float("nan")])
def test_inplace_leaky_relu_with_a_negative_slope_refuses_backward_like_torch(slope):
    """torch refuses that backward (the input is gone and the output's sign is not its sign);
    the forward itself runs, as torch's does (inference)."""
    x = np.array([-1.0, 0.5, 2.0])
    layer = nn.LeakyReLU(slope, inplace=True)
    out = layer(x)
    np.testing.assert_array_equal(out, torch.nn.LeakyReLU(slope)(torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)))
    with pytest.raises(RuntimeError, match=r"^LeakyReLU\.backward: LeakyReLU\(negative_slope=.*, inplace=True\) ran its "
                                           r"forward in place with a negative slope"):
        layer.backward(np.ones(3))
    tx = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    tout = torch.nn.LeakyReLU(slope, inplace=True)(tx * 1)
    with pytest.raises(RuntimeError, match="In-place leakyReLu backward calculation is triggered with a negative slope"):
        tout.backward(torch.ones(3))


def test_inplace_repr_and_arguments_are_torchs():
    for make in (lambda m: m.ReLU(), lambda m: m.ReLU(inplace=True), lambda m: m.ReLU(True),
                 lambda m: m.LeakyReLU(), lambda m: m.LeakyReLU(0.2, True), lambda m: m.LeakyReLU(negative_slope=-1.5)):
        assert repr(make(nn)) == repr(make(torch.nn))
    assert nn.ReLU().inplace is False and nn.LeakyReLU(inplace=1).inplace is True
    assert nn.LeakyReLU(2).negative_slope == 2.0



def test_gelu_silu_elu_softplus_repr_and_arguments_are_torchs():
    for make in (lambda m: m.GELU(), lambda m: m.GELU("tanh"), lambda m: m.GELU(approximate="none"),
                 lambda m: m.SiLU(), lambda m: m.SiLU(True), lambda m: m.SiLU(inplace=False),
                 lambda m: m.ELU(), lambda m: m.ELU(0.5, True), lambda m: m.ELU(alpha=-2), lambda m: m.ELU(0),
                 lambda m: m.Softplus(), lambda m: m.Softplus(2, -100), lambda m: m.Softplus(beta=0.5, threshold=5.0)):
        assert repr(make(nn)) == repr(make(torch.nn))
    assert nn.SiLU().inplace is False and nn.ELU(inplace=1).inplace is True
    assert nn.ELU().alpha == 1.0 and nn.Softplus().beta == 1.0 and nn.Softplus().threshold == 20.0
    assert nn.GELU().approximate == "none"


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.GELU("asdf"), ValueError, r"^GELU: approximate must be 'none' or 'tanh' \(torch's two forms\), got 'asdf'$"),
    (lambda: nn.GELU(None), TypeError, r"^GELU: approximate must be the string 'none' or 'tanh', got None \(NoneType\)$"),
    (lambda: nn.SiLU(inplace="yes"), TypeError, r"^SiLU: inplace must be True or False, got 'yes' \(str\)$"),
    (lambda: nn.ELU("1"), TypeError, r"^ELU: alpha must be a real number, got '1' \(str\)$"),
    (lambda: nn.ELU(True), TypeError, r"^ELU: alpha must be a real number, got True \(bool\)$"),
    (lambda: nn.ELU(inplace=2), TypeError, r"^ELU: inplace must be True or False, got 2 \(int\)$"),
    (lambda: nn.Softplus(beta="2"), TypeError, r"^Softplus: beta must be a real number, got '2' \(str\)$"),
    (lambda: nn.Softplus(threshold=None), TypeError, r"^Softplus: threshold must be a real number, got None"),
    (lambda: F.gelu_forward(np.zeros(2), "asdf"), ValueError, r"^gelu_forward: approximate must be 'none' or 'tanh'"),
], ids=["gelu-approximate", "gelu-approximate-type", "silu-inplace", "elu-alpha", "elu-alpha-bool", "elu-inplace",
        "softplus-beta", "softplus-threshold", "gelu_forward"])
def test_gelu_silu_elu_softplus_refuse_bad_arguments(make, error, message):
    """Refused when built, with the layer's name and what it expects (torch refuses an unknown GELU
    form at its forward: 'approximate argument must be either none or tanh')."""
    with pytest.raises(error, match=message):
        make()


INPLACE_SMOOTH = {  # name: (scratch layer, torch layer) for an alpha >= 0 (ELU's in-place backward needs it)
    "SiLU": (lambda alpha: nn.SiLU(inplace=True), lambda alpha: torch.nn.SiLU(inplace=True)),
    "ELU": (lambda alpha: nn.ELU(alpha, inplace=True), lambda alpha: torch.nn.ELU(alpha, inplace=True)),
}


@given(name=st.sampled_from(sorted(INPLACE_SMOOTH)), shape=S.shapes(min_dims=0), dtype=S.dtypes, seed=S.seeds,
       alpha=st.sampled_from([1.0, 0.5, 2.5, 0.0]), strided=st.booleans(), scale=st.sampled_from([1.0, 10.0]))
def test_inplace_silu_and_elu_match_torch(name, shape, dtype, seed, alpha, strided, scale):
    """Oracle 1 in place: the result is written into the input, which is returned (a strided view
    too); output and dx are torch's (its in-place ELU backward reads the output, as scratch's)."""
    rng = np.random.default_rng(seed)
    make, make_twin = INPLACE_SMOOTH[name]
    base = (scale * rng.standard_normal((*shape, 2)) * (rng.random((*shape, 2)) > 0.1)).astype(dtype)
    x = base[..., 0] if strided else base[..., 0].copy()
    expected_base = base.copy()
    layer = make(alpha)
    out = layer(x)
    assert out is x
    if strided:
        np.testing.assert_array_equal(base[..., 1], expected_base[..., 1])
    tx = torch.tensor(expected_base[..., 0], requires_grad=True)
    tout = make_twin(alpha)(tx * 1)  # a non-leaf, as torch's in-place forms need
    cotangent = rng.standard_normal(shape).astype(dtype)
    tout.backward(torch.tensor(cotangent))
    arguments = {"alpha": alpha} if name == "ELU" else {}
    assert_close(out, tout.detach(), "torch", dtype, f"{layer!r} output")
    terms = grad_terms(name, arguments, expected_base[..., 0], cotangent, tout.detach().numpy())
    assert_close(layer.backward(cotangent), tx.grad, "torch", dtype, f"{layer!r} gradient", scale=terms)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(INPLACE_SMOOTH))
def test_inplace_silu_and_elu_give_the_numbers_of_the_plain_ones(name, dtype):
    """In place or not, the same forward bits (NaN and ±inf included), and for SiLU the same
    backward bits (it keeps a copy of the input); ELU's in-place backward computes alpha · e^x as
    out + alpha, equal to the rounding of those terms."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 40.0, -3.5, 1e-3, -1e-3, -30.0], dtype=dtype)
    grad_output = np.arange(1, x.size + 1, dtype=dtype)
    plain = getattr(nn, name)()
    expected = plain(x.copy()), plain.backward(grad_output)
    layer = getattr(nn, name)(inplace=True)
    out = layer(x)
    grad = layer.backward(grad_output)
    np.testing.assert_array_equal(out, expected[0])
    if name == "SiLU":
        np.testing.assert_array_equal(grad, expected[1])
    else:
        finite = np.isfinite(expected[1])
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(expected[1]))
        assert_close(grad[finite], expected[1][finite], "torch", dtype, "ELU in place",
                     scale=grad_terms("ELU", {}, x, grad_output, out)[finite])


def test_inplace_silu_keeps_its_own_copy_of_the_input_like_torch():
    """torch's in-place SiLU saves its input before the write, so editing the output afterwards
    does not change the gradient (no error either); scratch's keeps a private copy alike."""
    x = np.array([-1.0, 0.5, 3.0])
    layer = nn.SiLU(inplace=True)
    expected = nn.SiLU()(x.copy())
    out = layer(x)
    np.testing.assert_array_equal(out, expected)
    out *= 2  # an edit of the output (which is x)
    tx = torch.tensor([-1.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    tout = torch.nn.SiLU(inplace=True)(tx * 1)
    tout.mul_(2)  # torch's gradient is then twice the SiLU's
    tout.backward(torch.ones(3, dtype=torch.float64))
    assert_close(layer.backward(np.ones(3)), tx.grad / 2, "torch", np.float64, "SiLU in place, output edited")


@pytest.mark.parametrize("alpha", [-0.3, float("nan")])
def test_inplace_elu_with_a_negative_alpha_refuses_backward_like_torch(alpha):
    """torch refuses that backward (it reads the output, which no longer tells the branch); the
    forward itself runs, as torch's does (inference). A Sequential refuses before any child runs."""
    values = [-1.0, 0.5, 2.0]
    x = np.array(values)
    layer = nn.ELU(alpha, inplace=True)
    out = layer(x)
    assert out is x
    np.testing.assert_array_equal(out, torch.nn.ELU(alpha)(torch.tensor(values, dtype=torch.float64)))
    with pytest.raises(RuntimeError, match=r"^ELU\.backward: ELU\(alpha=.*, inplace=True\) ran its forward in "
                                           r"place with a negative alpha"):
        layer.backward(np.ones(3))
    with pytest.raises(RuntimeError, match=r"^elu_backward: the forward ran in place with the negative alpha"):
        F.elu_backward(np.ones(3), F.elu_forward(np.array(values), alpha, inplace=True)[1])
    identity = nn.Linear(3, 3, bias=False, dtype=np.float64)
    model = nn.Sequential(identity, nn.ELU(alpha, inplace=True))
    model(np.array([values]))
    with pytest.raises(RuntimeError, match=r"^Sequential\.backward: child 1 \(ELU\): ELU\(alpha="):
        model.backward(np.ones((1, 3)))
    assert not identity.weight.grad.any()  # refused before the Linear added anything
    tx = torch.tensor(values, requires_grad=True)
    tout = torch.nn.ELU(alpha, inplace=True)(tx * 1)
    with pytest.raises(RuntimeError, match="In-place elu backward calculation is triggered with a negative slope"):
        tout.backward(torch.ones(3, dtype=torch.float64))


def test_elu_backward_sees_an_edit_of_what_it_reads():
    """Plain ELU reads its input, in-place ELU its output; an edit of either between forward and
    backward is refused, as torch's version counter refuses it."""
    x = np.array([-1.0, 0.5, 2.0])
    layer = nn.ELU()
    layer(x)
    x[0] = 5.0
    with pytest.raises(nn.InplaceModificationError, match=r"^ELU\.backward: its input"):
        layer.backward(np.ones(3))
    layer = nn.ELU(inplace=True)
    out = layer(np.array([-1.0, 0.5, 2.0]))
    out[0] = 5.0
    with pytest.raises(nn.InplaceModificationError, match=r"^ELU\.backward: its output"):
        layer.backward(np.ones(3))


@given(shape=S.shapes(), seed=S.seeds, slope=S.non_negative_slopes)
def test_inplace_activations_by_central_differences(shape, seed, slope):
    """Oracle 2: the in-place forwards against the backward that reads the output; the functional
    pairs on a copy (central differences perturb their input, which an in-place forward would
    overwrite), the modules after a Linear without bias (so that they do not fuse), whose fresh
    output they overwrite. The kink stays away: the Linear is the identity."""
    rng = np.random.default_rng(seed)
    x = S.away_from_zero(rng, shape)
    gradcheck((lambda a: F.relu_forward(a.copy(), inplace=True), F.relu_backward), x, rng=rng, **GRADCHECK)
    gradcheck((lambda a, s: F.leaky_relu_forward(a.copy(), s, inplace=True), F.leaky_relu_backward), x, slope,
              rng=rng, **GRADCHECK)
    for activation in (nn.ReLU(inplace=True), nn.LeakyReLU(slope, inplace=True)):
        identity = nn.Linear(shape[-1], shape[-1], bias=False, dtype=np.float64)
        identity.weight.data[...] = np.eye(shape[-1])
        model = nn.Sequential(identity, activation)
        assert not identity.fuses_with(activation)
        gradcheck(model, x, rng=rng, **GRADCHECK)


@given(shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds, slope=S.negative_slopes)
def test_forward_kernels_run_in_place(shape, dtype, seed, slope):
    """Oracle 3: each forward kernel with its output the input array itself (the in-place
    forwards) against its NumPy reference."""
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype)
    x[rng.random(x.size) < 0.1] = 0
    slope = np.dtype(dtype).type(slope)
    for kernel, reference, arguments in ((E.relu_forward, E.relu_forward_reference, ()),
                                         (E.leaky_relu_forward, E.leaky_relu_forward_reference, (slope,))):
        a = x.copy()
        kernel(a, *arguments, a)
        np.testing.assert_array_equal(a, reference(x, *arguments))



@given(shape=S.shapes(), seed=S.seeds, alpha=st.sampled_from([1.0, 0.5, 2.5, 0.0]))
def test_inplace_silu_and_elu_by_central_differences(shape, seed, alpha):
    """Oracle 2 in place, as ``test_inplace_activations_by_central_differences``: the functional
    pairs on a copy, the modules after a Linear without bias (the identity) whose fresh output
    they overwrite; ELU away from its kink, and with alpha >= 0 (its in-place backward reads the
    output)."""
    rng = np.random.default_rng(seed)
    x = S.away_from_zero(rng, shape)
    gradcheck((lambda a: F.silu_forward(a.copy(), inplace=True), F.silu_backward), x, rng=rng, **GRADCHECK)
    gradcheck((lambda a: F.elu_forward(a.copy(), alpha, inplace=True), F.elu_backward), x, rng=rng, **GRADCHECK)
    for activation in (nn.SiLU(inplace=True), nn.ELU(alpha, inplace=True)):
        identity = nn.Linear(shape[-1], shape[-1], bias=False, dtype=np.float64)
        identity.weight.data[...] = np.eye(shape[-1])
        gradcheck(nn.Sequential(identity, activation), x, rng=rng, **GRADCHECK)


@given(shape=S.shapes(max_dims=3, max_side=40), dtype=S.dtypes, seed=S.seeds, arguments=ARGUMENTS["ELU"])
def test_silu_and_elu_forward_kernels_run_in_place(shape, dtype, seed, arguments):
    """Oracle 3 in place: SiLU's and ELU's forward kernels with their output the input array itself
    (and SiLU's σ written over its e^{-|x|}) give the bits of the same kernels out of place."""
    rng = np.random.default_rng(seed)
    x = _flat(rng, shape, dtype, 10.0)
    x[rng.random(x.size) < 0.1] = 0
    zero_below, alpha = sigmoid_zero_below(dtype), np.dtype(dtype).type(arguments["alpha"])
    sigmoid, out = np.exp(-np.abs(x)), np.empty_like(x)
    E.silu_forward(x, sigmoid.copy(), zero_below, sigmoid, out)
    a, e = x.copy(), np.exp(-np.abs(x))
    E.silu_forward(a, e, zero_below, e, a)
    np.testing.assert_array_equal(a, out)
    np.testing.assert_array_equal(e, sigmoid)
    expm1 = np.expm1(np.minimum(x, 0))
    E.elu_forward(x, expm1, alpha, out)
    a = x.copy()
    E.elu_forward(a, expm1, alpha, a)
    np.testing.assert_array_equal(a, out)
