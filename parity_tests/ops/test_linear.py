"""Linear, and Linear fused with the ReLU / LeakyReLU after it (docs/linear.md).

The three oracles of docs/README.md, for ``scratch/functional/linear.py``, ``scratch/kernels/linear.py``
and ``scratch.nn.Linear``:

1. torch parity (``torch.nn.Linear``): output, dx, dW, db through a random cotangent; gradients
   accumulate into ``.grad`` as torch's do; the fused Linear + activation pairs against torch's
   unfused layers; the functional defaults are torch's;
2. central differences: the functional pair, the module, and the fused pair in a Sequential;
3. kernels against their NumPy references: the fused bias + activation kernels and the
   outer-product accumulation of dW.

Plus the fused path held bit for bit to the two layers run apart, and the cases where it must not fuse.
``TiedLinear`` is checked with the tied autoencoder in ``parity_tests/test_regularized.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import functional as F
from scratch import nn
from scratch.gradcheck import gradcheck
from scratch.kernels import linear as K
from scratch.testing import assert_matches_torch

# ---------------------------------------------------------------------------- oracle 1: torch


@given(case=S.linear_cases(), dtype=S.dtypes, seed=S.seeds)
def test_linear_matches_torch(case, dtype, seed):
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=rng, dtype=dtype)
    twin = torch.nn.Linear(fan_in, fan_out, bias=bias)
    x = rng.standard_normal((*leading, fan_in)).astype(dtype)
    # output, dx, dweight and (with a bias) dbias, through a random cotangent
    assert_matches_torch(layer, twin, x, rng=rng, what="Linear")
    assert list(layer.state_dict()) == list(twin.state_dict())


@given(case=S.linear_cases(), seed=S.seeds)
def test_linear_backward_accumulates_like_torch(case, seed):
    """Two backward passes add their gradients into .grad, as torch's autograd does."""
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=rng, dtype=np.float64)
    twin = torch.nn.Linear(fan_in, fan_out, bias=bias).double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    for _ in range(2):
        x = rng.standard_normal((*leading, fan_in))
        grad_output = rng.standard_normal((*leading, fan_out))
        layer(x)
        layer.backward(grad_output)
        twin(torch.tensor(x)).backward(torch.tensor(grad_output))
    assert_close(layer.weight.grad, twin.weight.grad, "torch", np.float64, "accumulated dweight")


@given(batch=S.batch_sizes, widths=st.lists(S.features, min_size=2, max_size=4), dtype=S.dtypes, seed=S.seeds,
       slopes=st.lists(st.one_of(st.none(), S.non_negative_slopes), min_size=3, max_size=3))
def test_fused_linear_activation_pairs_match_torch(batch, widths, dtype, seed, slopes):
    """Sequential runs each Linear + ReLU / LeakyReLU(slope >= 0) as one fused pass (None: ReLU);
    output, dx and every gradient against torch's unfused layers."""
    rng = np.random.default_rng(seed)
    scratch_layers, torch_layers = [], []
    for (fan_in, fan_out), slope in zip(zip(widths[:-1], widths[1:]), slopes):
        scratch_layers.append(nn.Linear(fan_in, fan_out, rng=rng, dtype=dtype))
        torch_layers.append(torch.nn.Linear(fan_in, fan_out))
        scratch_layers.append(nn.ReLU() if slope is None else nn.LeakyReLU(slope))
        torch_layers.append(torch.nn.ReLU() if slope is None else torch.nn.LeakyReLU(slope))
    model = nn.Sequential(*scratch_layers)
    assert all(model[i].fuses_with(model[i + 1]) for i in range(0, len(model), 2)), "the fused path runs"
    x = rng.standard_normal((batch, widths[0])).astype(dtype)
    assert_matches_torch(model, torch.nn.Sequential(*torch_layers), x, rng=rng, what="fused Sequential")


def test_linear_activation_forward_default_slope_is_torchs():
    """With its optional slope left out, the public functional call equals torch's with its own
    left out (the layers always pass it, so no other test reaches this default)."""
    rng = np.random.default_rng(1)
    # float64, both signs: a slope shows
    x, weight, bias = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    out = F.linear_activation_forward(x, weight, bias, "leaky_relu")[0]
    expected = torch.nn.functional.leaky_relu(torch.nn.functional.linear(*map(torch.from_numpy, (x, weight, bias))))
    assert_close(out, expected, "torch", np.float64, "linear + leaky_relu default")


# ---------------------------------------------------------------------------- oracle 2: central differences


@given(case=S.linear_cases(), seed=S.seeds)
def test_linear_functional(case, seed):
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*leading, fan_in))
    weight = rng.standard_normal((fan_out, fan_in))
    b = rng.standard_normal(fan_out) if bias else None
    result = gradcheck((F.linear_forward, F.linear_backward), x, weight, b, rng=rng, **GRADCHECK)
    assert result.elements_checked == x.size + weight.size + (fan_out if bias else 0)


@given(case=S.linear_cases(), seed=S.seeds)
def test_linear_module(case, seed):
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=rng, dtype=np.float64)
    gradcheck(layer, rng.standard_normal((*leading, fan_in)), rng=rng, **GRADCHECK)


@given(batch=S.batch_sizes, fan_in=S.features, hidden=S.features, fan_out=S.features, seed=S.seeds,
       slope=st.one_of(st.none(), S.non_negative_slopes))
def test_fused_linear_activation_pair(batch, fan_in, hidden, fan_out, seed, slope):
    """Linear + ReLU / LeakyReLU (fused by Sequential) + Linear: every gradient by central differences.

    The kink is kept away by construction: each hidden unit's bias is set to the middle of the
    widest gap between its batch's pre-activations (or beyond them), at least 0.05 from every one,
    so no finite-difference step crosses it; units still mix signs across the batch."""
    rng = np.random.default_rng(seed)
    first = nn.Linear(fan_in, hidden, rng=rng, dtype=np.float64)
    activation = nn.ReLU() if slope is None else nn.LeakyReLU(slope)
    model = nn.Sequential(first, activation, nn.Linear(hidden, fan_out, rng=rng, dtype=np.float64))
    assert first.fuses_with(activation)
    x = rng.standard_normal((batch, fan_in))
    products = x @ first.weight.data.T  # (batch, hidden), before the bias
    for unit in range(hidden):
        points = np.sort(-products[:, unit])  # the biases at which an example's pre-activation is 0
        candidates = np.concatenate([[points[0] - 1.0], (points[:-1] + points[1:]) / 2, [points[-1] + 1.0]])
        gaps = np.abs(candidates[:, None] - points[None, :]).min(axis=1)  # the two ends always qualify
        first.bias.data[unit] = candidates[rng.choice(np.flatnonzero(gaps >= 0.05))]
    gradcheck(model, x, rng=rng, **GRADCHECK)


# ---------------------------------------------------------------------------- oracle 3: kernels


def _rows_features(rng, rows, features, dtype, zeros=True):
    a = rng.standard_normal((rows, features)).astype(dtype)
    if zeros:
        a[rng.random(a.shape) < 0.1] = 0  # exact zeros: the kink convention must agree too
    return a


@given(rows=S.rows, features=S.features, dtype=S.dtypes, seed=S.seeds, slope=S.non_negative_slopes,
       activation=st.sampled_from(["relu", "leaky_relu"]))
def test_bias_activation_kernels(rows, features, dtype, seed, slope, activation):
    """Fused bias + activation, forward in place and backward with the bias gradient's sum."""
    rng = np.random.default_rng(seed)
    y = _rows_features(rng, rows, features, dtype)
    bias = rng.standard_normal(features).astype(dtype)
    bias[rng.random(features) < 0.2] = 0
    slope = np.dtype(dtype).type(slope)
    out = y.copy()
    if activation == "relu":
        K.bias_relu_forward(out, bias)
        expected = K.bias_relu_forward_reference(y, bias)
    else:
        K.bias_leaky_relu_forward(out, bias, slope)
        expected = K.bias_leaky_relu_forward_reference(y, bias, slope)
    assert_close(out, expected, "kernel", dtype, f"bias_{activation}_forward")
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    grad_bias = rng.standard_normal(features).astype(dtype)  # accumulated into, not overwritten
    grad_input = np.empty_like(out)
    if activation == "relu":
        expected_input, expected_bias = K.relu_backward_bias_reference(grad_output, out, grad_bias)
        K.relu_backward_bias(grad_output, out, grad_input, grad_bias)
    else:
        expected_input, expected_bias = K.leaky_relu_backward_bias_reference(grad_output, out, slope, grad_bias)
        K.leaky_relu_backward_bias(grad_output, out, slope, grad_input, grad_bias)
    np.testing.assert_array_equal(grad_input, expected_input)
    terms = np.abs(expected_bias) + np.abs(grad_output).sum(axis=0)
    assert_close(grad_bias, expected_bias, "kernel", dtype, f"{activation}_backward_bias", scale=terms)


@given(rows=st.integers(1, 6), inputs=S.features, outputs=S.features, dtype=S.dtypes, seed=S.seeds)
def test_accumulate_outer_products_kernel(rows, inputs, outputs, dtype, seed):
    rng = np.random.default_rng(seed)
    grad_output = rng.standard_normal((rows, outputs)).astype(dtype)
    x = rng.standard_normal((rows, inputs)).astype(dtype)
    grad_weight = rng.standard_normal((outputs, inputs)).astype(dtype)
    expected = K.accumulate_outer_products_reference(grad_output, x, grad_weight)
    K.accumulate_outer_products(grad_output, x, grad_weight)
    terms = np.abs(expected) + np.abs(grad_output).T @ np.abs(x)
    assert_close(grad_weight, expected, "kernel", dtype, "accumulate_outer_products", scale=terms)


# ---------------------------------------------------------------------------- the fused path against the plain one
# Held *bit for bit* to the two layers run apart (same ops, same order, same dtype) or, where the
# summation order legitimately differs, to the kernel tolerance.


def _unfused_forward(sequential, x):
    for module in sequential:
        x = module(x)
    return x


def _unfused_backward(sequential, grad):
    for module in reversed(list(sequential)):
        grad = module.backward(grad)
    return grad


@given(rows=S.rows, sizes=st.lists(S.features, min_size=2, max_size=4), dtype=S.dtypes, seed=S.seeds,
       activation=st.sampled_from(["relu", "leaky_relu"]), slope=S.non_negative_slopes)
def test_fused_linear_activation_equals_the_two_layers(rows, sizes, dtype, seed, activation, slope):
    """Sequential's fused Linear+ReLU (or LeakyReLU) pass: the same output, input gradient and
    parameter gradients, bit for bit, as running each layer on its own (the bias gradient of a
    one-unit layer to rounding: see scratch.kernels.linear)."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(fan_in, fan_out, rng=rng, dtype=dtype))
        layers.append(nn.ReLU() if activation == "relu" else nn.LeakyReLU(slope))
    fused, plain = nn.Sequential(*layers), copy.deepcopy(nn.Sequential(*layers))
    assert fused[0].fuses_with(fused[1])
    x = rng.standard_normal((rows, sizes[0])).astype(dtype)
    x[rng.random(x.shape) < 0.2] = 0
    np.testing.assert_array_equal(fused(x), _unfused_forward(plain, x))
    grad = rng.standard_normal((rows, sizes[-1])).astype(dtype)
    np.testing.assert_array_equal(fused.backward(grad), _unfused_backward(plain, grad))
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        if name.endswith("bias") and a.shape == (1,):
            # NumPy sums a single column pairwise, the kernel (and NumPy, for wider layers) in order
            scale = np.sum(np.abs(grad)) + np.abs(b.grad)
            assert_close(a.grad, b.grad, "kernel", dtype, name, scale=scale)
        else:
            np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)
    # the activation keeps the cache its own forward would leave, so it can run alone afterwards
    np.testing.assert_array_equal(fused[-1].backward(grad), plain[-1].backward(grad))


def test_linear_does_not_fuse_where_the_kernel_would_be_wrong():
    linear = nn.Linear(3, 2, rng=0)
    assert not linear.fuses_with(nn.LeakyReLU(-0.5)), "a negative slope flips the output's sign"
    assert not nn.Linear(3, 2, bias=False, rng=0).fuses_with(nn.ReLU())
    assert not linear.fuses_with(nn.Sigmoid())


@pytest.mark.parametrize("following", [nn.Tanh(), nn.Sigmoid(), nn.LeakyReLU(-0.5), nn.GELU()], ids=repr)
def test_forward_fused_with_a_pair_that_does_not_fuse_is_the_two_calls(following):
    """The models call ``forward_fused(x, activation)`` directly; with an activation the kernel
    cannot fuse it ran ReLU anyway (a Tanh swapped in for a VAE's ReLU changed nothing)."""
    rng = np.random.default_rng(0)
    linear, x, dy = nn.Linear(3, 4, rng=0, dtype=np.float64), rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    expected = following(linear(x))
    expected_dx = linear.backward(following.backward(dy))
    expected_grads = (linear.weight.grad.copy(), linear.bias.grad.copy())
    linear.zero_grad()
    np.testing.assert_array_equal(linear.forward_fused(x, following), expected)
    np.testing.assert_array_equal(linear.backward_fused(dy, following), expected_dx)
    np.testing.assert_array_equal(linear.weight.grad, expected_grads[0])
    np.testing.assert_array_equal(linear.bias.grad, expected_grads[1])


# ---------------------------------------------------------------------------- empty inputs (issue 15)
# torch passes an empty batch through Linear: an empty output and dx, and dW, db get nothing (a sum
# over no rows). A layer may have no inputs (y = b) or no outputs too. docs/linear.md.


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")  # torch's, for Linear(0, k)
@given(case=S.linear_cases(empty=True), dtype=S.dtypes, seed=S.seeds)
def test_linear_on_empty_inputs_and_sizes_matches_torch(case, dtype, seed):
    """Oracle 1 over what torch takes that holds nothing: a leading axis of 0, 0 in or out features."""
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=rng, dtype=dtype)
    twin = torch.nn.Linear(fan_in, fan_out, bias=bias)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    x = rng.standard_normal((*leading, fan_in)).astype(dtype)
    assert_matches_torch(layer, twin, x, rng=rng, what="Linear")


@given(case=S.linear_cases(empty=True), seed=S.seeds)
def test_linear_on_empty_inputs_by_central_differences(case, seed):
    """Oracle 2: every element, of whatever is not empty (the bias of a layer without inputs)."""
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=rng, dtype=np.float64)
    gradcheck(layer, rng.standard_normal((*leading, fan_in)), rng=rng, **GRADCHECK)


@pytest.mark.parametrize("leading", [(0,), (3, 0), (0, 2)])
def test_an_empty_batch_adds_nothing_to_the_gradients(leading):
    """dW and db accumulate: an empty batch's backward leaves what earlier passes added, as torch's."""
    rng = np.random.default_rng(0)
    layer = nn.Linear(3, 2, rng=rng, dtype=np.float64)
    layer(rng.standard_normal((4, 3)))
    layer.backward(rng.standard_normal((4, 2)))
    before = [p.grad.copy() for p in layer.parameters()]
    y = layer(np.zeros((*leading, 3)))
    dx = layer.backward(np.zeros(y.shape))
    assert y.shape == (*leading, 2) and dx.shape == (*leading, 3)
    for got, want in zip((p.grad for p in layer.parameters()), before):
        np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_linear_with_no_inputs_is_its_bias_as_torch_builds_it():
    """torch's Linear(0, k): an empty weight, and a bias drawn from U(-0, 0) = 0 (its bound is 0)."""
    layer = nn.Linear(0, 3, rng=0, dtype=np.float64)
    twin = torch.nn.Linear(0, 3).double()
    assert layer.weight.shape == (3, 0) and not layer.bias.data.any() and not twin.bias.detach().numpy().any()
    x = np.zeros((5, 0))
    np.testing.assert_array_equal(layer(x), np.zeros((5, 3)))
    assert_matches_torch(layer, twin, x, rng=1, what="Linear(0, 3)")


@pytest.mark.parametrize("activation", ["relu", "relu inplace", "leaky_relu"])
@pytest.mark.parametrize("leading", [(0,), (2, 0)])
def test_the_fused_pair_and_a_sequential_on_an_empty_batch_match_torch(activation, leading):
    rng = np.random.default_rng(2)
    act, twin_act = {"relu": (nn.ReLU(), torch.nn.ReLU()),
                     "relu inplace": (nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
                     "leaky_relu": (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2))}[activation]
    model = nn.Sequential(nn.Linear(3, 4, rng=rng, dtype=np.float64), act, nn.Linear(4, 2, rng=rng, dtype=np.float64),
                          nn.Sigmoid())
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), twin_act, torch.nn.Linear(4, 2), torch.nn.Sigmoid())
    assert model[0].fuses_with(model[1])
    assert_matches_torch(model, twin, np.zeros((*leading, 3)), rng=rng, what=f"Sequential with {activation}")


def test_tied_linear_on_an_empty_batch_matches_torch():
    """TiedLinear(source): y = x W + b with W the source's weight, torch's F.linear(x, Wᵀ, b); dW
    goes into the source's .grad."""
    rng = np.random.default_rng(3)
    source = nn.Linear(3, 2, rng=rng, dtype=np.float64)
    tied = nn.TiedLinear(source)
    tied.bias.data[...] = rng.standard_normal(3)
    weight = torch.tensor(source.weight.data, requires_grad=True)
    bias = torch.tensor(tied.bias.data, requires_grad=True)
    for leading in [(0,), (4, 0), (2,)]:
        source.zero_grad()
        tied.zero_grad()
        weight.grad = bias.grad = None
        x = rng.standard_normal((*leading, 2))
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.linear(tx, weight.T, bias)
        cotangent = rng.standard_normal(ty.shape)
        ty.backward(torch.tensor(cotangent))
        assert_close(tied(x), ty.detach(), "torch", np.float64, f"TiedLinear {leading} output")
        assert_close(tied.backward(cotangent), tx.grad, "torch", np.float64, f"TiedLinear {leading} dx")
        assert_close(source.weight.grad, weight.grad, "torch", np.float64, f"TiedLinear {leading} dW")
        assert_close(tied.bias.grad, bias.grad, "torch", np.float64, f"TiedLinear {leading} db")


def test_no_kernel_runs_on_an_empty_array(monkeypatch):
    """The functional layer guards the Numba kernels against size 0 (docs/linear.md)."""
    def refuse(*arrays):
        assert all(np.size(a) for a in arrays if isinstance(a, np.ndarray)), "a kernel ran on an empty array"

    for name in ("bias_relu_forward", "bias_leaky_relu_forward", "relu_backward_bias", "leaky_relu_backward_bias",
                 "accumulate_outer_products"):
        monkeypatch.setattr(K, name, refuse)
    rng = np.random.default_rng(4)
    for shapes in [((0, 3), (3, 4)), ((5, 0), (0, 4)), ((2, 3), (3, 0)), ((2, 0, 3), (3, 4))]:
        (x_shape, (fan_in, fan_out)) = shapes
        for activation in (nn.ReLU(), nn.LeakyReLU(0.1)):
            model = nn.Sequential(nn.Linear(fan_in, fan_out, rng=rng, dtype=np.float64), activation)
            y = model(rng.standard_normal(x_shape))
            model.backward(np.ones(y.shape))


# ---------------------------------------------------------------------------- torch's constructor arguments


def test_linear_takes_torchs_positional_device_and_dtype():
    """torch's Linear(in, out, bias, device, dtype): device None or the CPU, dtype None (float32),
    NumPy's or torch's float dtypes; scratch's keyword-only rng= besides."""
    assert nn.Linear(3, 2).weight.dtype == np.float32  # dtype None: torch's default dtype
    assert nn.Linear(3, 2, True, "cpu", torch.float64).weight.dtype == np.float64
    assert nn.Linear(3, 2, False, torch.device("cpu"), np.float64, rng=0).bias is None
    assert nn.Linear(3, 2, device="cpu:0", dtype=torch.float32).weight.dtype == np.float32
    a, b = nn.Linear(3, 2, True, None, None, rng=5), nn.Linear(3, 2, rng=5, dtype=np.float32)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    for device in ("cuda", "meta", torch.device("meta"), 0):
        with pytest.raises(ValueError, match=r"^Linear: device must be None or 'cpu' \(scratch runs on the CPU"):
            nn.Linear(3, 2, device=device)
    with pytest.raises(TypeError, match=r"^Linear: dtype must be float32 or float64, got torch\.int64$"):
        nn.Linear(3, 2, dtype=torch.int64)
