"""ReLU, LeakyReLU, Sigmoid and Tanh (docs/activations.md).

The three oracles of docs/README.md, for ``scratch/functional/activations.py``,
``scratch/kernels/activations.py`` and ``scratch.nn.ReLU`` / ``LeakyReLU`` / ``Sigmoid`` / ``Tanh``:

1. torch parity (``torch.nn.ReLU`` / ``LeakyReLU`` / ``Sigmoid`` / ``Tanh``): output and dx through
   a random cotangent, exact zeros included (the gradient at the kink is torch's convention);
   NaN and ±inf propagate as in torch; the functional default slope is torch's;
2. central differences: the functional pair and the module, inputs kept away from the kink;
3. kernels against their NumPy references, exact zeros included.
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
@pytest.mark.parametrize("name", ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ReLU inplace", "LeakyReLU inplace"])
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
