"""Oracle 3: each Numba kernel against the plain NumPy reference beside it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import activation_backward_terms, assert_close, loss_forward_terms
from scratch.kernels import activations as E
from scratch.kernels import linear as K
from scratch.kernels import losses as L
from scratch.kernels import vae as V


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


def _loss_inputs(name, rng, n, dtype):
    if name == "bce":
        p = rng.random(n)
        p[rng.random(n) < 0.05] = 0.0
        p[rng.random(n) < 0.05] = 1.0
        return p.astype(dtype), rng.random(n).astype(dtype)
    if name == "bce_with_logits":
        return (30 * rng.standard_normal(n)).astype(dtype), rng.random(n).astype(dtype)
    if name == "mse":
        return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    mean = rng.standard_normal(n).astype(dtype)
    return mean, np.clip(20 * rng.standard_normal(n), -80, 80).astype(dtype)


def _backward_terms(name, g, a, b):
    g, a, b = np.abs(g.astype(np.float64)), a.astype(np.float64), b.astype(np.float64)
    if name == "bce":
        return g * (np.abs(a) + np.abs(b)) / np.maximum(a * (1 - a), 1e-12)
    if name == "bce_with_logits":
        return g * (1 + np.abs(b))
    if name == "mse":
        return 2 * g * (np.abs(a) + np.abs(b))
    return g * (1 + np.abs(a) + np.exp(b))


@pytest.mark.parametrize("name", ["bce", "bce_with_logits", "mse", "gaussian_kl"])
@given(n=st.integers(1, 300), dtype=S.dtypes, seed=S.seeds, per_element=st.booleans())
def test_loss_kernels(name, n, dtype, seed, per_element):
    rng = np.random.default_rng(seed)
    a, b = _loss_inputs(name, rng, n, dtype)
    out = np.empty_like(a)
    if name == "bce":
        with np.errstate(divide="ignore"):
            L.bce_forward(a, b, np.log(a), np.log1p(-a), out)
    elif name == "bce_with_logits":
        L.bce_with_logits_forward(a, b, np.log1p(np.exp(-np.abs(a))), out)
    else:
        getattr(L, f"{name}_forward")(a, b, out)
    assert np.all(np.isfinite(out))
    assert_close(out, getattr(L, f"{name}_forward_reference")(a, b), "kernel", dtype, f"{name}_forward",
                 scale=loss_forward_terms(name, a, b))
    grad_output = (rng.standard_normal(n) if per_element else rng.standard_normal(1)).astype(dtype)
    reference = getattr(L, f"{name}_backward_reference")(grad_output, a, b)
    terms = _backward_terms(name, np.broadcast_to(grad_output, a.shape), a, b)
    if name == "gaussian_kl":
        grad_mean, grad_logvar = np.empty_like(a), np.empty_like(a)
        L.gaussian_kl_backward(grad_output, a, b, grad_mean, grad_logvar)
        assert_close(grad_mean, reference[0], "kernel", dtype, "gaussian_kl_backward mean", scale=terms)
        assert_close(grad_logvar, reference[1], "kernel", dtype, "gaussian_kl_backward logvar", scale=terms)
    elif name == "bce_with_logits":
        grad_input = np.empty_like(a)
        L.bce_with_logits_backward(grad_output, a, b, np.exp(-np.abs(a)), grad_input)
        assert_close(grad_input, reference, "kernel", dtype, f"{name}_backward", scale=terms)
    else:
        grad_input = np.empty_like(a)
        getattr(L, f"{name}_backward")(grad_output, a, b, grad_input)
        assert_close(grad_input, reference, "kernel", dtype, f"{name}_backward", scale=terms)


@given(n=st.integers(1, 300), dtype=S.dtypes, seed=S.seeds)
def test_reparameterize_kernels(n, dtype, seed):
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(n).astype(dtype)
    logvar = np.clip(20 * rng.standard_normal(n), -80, 80).astype(dtype)
    eps = rng.standard_normal(n).astype(dtype)
    z, std = np.empty_like(mean), np.empty_like(mean)
    V.reparameterize_forward(mean, logvar, eps, z, std)
    expected_z, expected_std = V.reparameterize_forward_reference(mean, logvar, eps)
    assert np.all(np.isfinite(z))
    assert_close(std, expected_std, "kernel", dtype, "reparameterize std", scale=np.abs(expected_std))
    assert_close(z, expected_z, "kernel", dtype, "reparameterize z", scale=np.abs(mean) + np.abs(expected_std * eps))
    grad_z = rng.standard_normal(n).astype(dtype)
    grad_mean, grad_logvar = np.empty_like(mean), np.empty_like(mean)
    V.reparameterize_backward(grad_z, eps, std, grad_mean, grad_logvar)
    expected_mean, expected_logvar = V.reparameterize_backward_reference(grad_z, eps, std)
    np.testing.assert_array_equal(grad_mean, expected_mean)
    assert_close(grad_logvar, expected_logvar, "kernel", dtype, "reparameterize dlogvar", scale=np.abs(expected_logvar))


@given(dtype=S.dtypes, seed=S.seeds, per_element=st.booleans(), n=st.integers(1, 300))
def test_sigmoid_bce_backward_kernel(dtype, seed, per_element, n):
    """The fused BCE-then-Sigmoid backward against the two references composed, saturated p included."""
    rng = np.random.default_rng(seed)
    p, y = _loss_inputs("bce", rng, n, dtype)
    grad_output = (rng.standard_normal(n) if per_element else rng.standard_normal(1)).astype(dtype)
    grad_logits = np.empty_like(p)
    L.sigmoid_bce_backward(grad_output, p, y, grad_logits)
    expected = L.sigmoid_bce_backward_reference(grad_output, p, y)
    terms = _backward_terms("bce", np.broadcast_to(grad_output, p.shape), p, y) * np.maximum(p * (1 - p), 1e-12)
    assert_close(grad_logits, expected, "kernel", dtype, "sigmoid_bce_backward", scale=terms)
    assert np.all(grad_logits[(p == 0) | (p == 1)] == 0), "a saturated output passes no gradient, as in torch"


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


# ---------------------------------------------------------------------------- penalties

from scratch.kernels import penalties as P  # noqa: E402


@given(units=st.integers(1, 40), target=S.sparsity_targets, dtype=S.dtypes, seed=S.seeds)
def test_kl_sparsity_kernels(units, target, dtype, seed):
    rng = np.random.default_rng(seed)
    rho, scale = np.dtype(dtype).type(target), np.dtype(dtype).type(rng.standard_normal())
    lower, upper = (np.dtype(dtype).type(b) for b in (0.01, 0.99))
    rho_hat = rng.random(units).astype(dtype)
    rho_hat[rng.random(units) < 0.2] = lower  # the bounds themselves pass the gradient
    rho_hat[rng.random(units) < 0.2] = upper
    rho_hat[[0, -1]] = lower, upper  # both bounds in every draw, even of one unit (the last wins)
    rho_hat[rng.random(units) < 0.1] = 0  # outside: none
    clamped = np.clip(rho_hat, lower, upper)
    out = np.empty_like(rho_hat)
    P.kl_sparsity_forward(clamped, rho, out)
    assert_close(out, P.kl_sparsity_forward_reference(clamped, rho), "kernel", dtype, "kl_sparsity_forward",
                 scale=np.abs(rho * np.log(rho / clamped)) + np.abs((1 - rho) * np.log((1 - rho) / (1 - clamped))))
    P.kl_sparsity_backward(rho_hat, rho, lower, upper, scale, out)
    expected = P.kl_sparsity_backward_reference(rho_hat, rho, lower, upper, scale)
    assert_close(out, expected, "kernel", dtype, "kl_sparsity_backward",
                 scale=np.abs(scale) * (rho / clamped + (1 - rho) / (1 - clamped)))
    assert not out[(rho_hat < lower) | (rho_hat > upper)].any()


@given(rows=S.rows, units=st.integers(1, 40), dtype=S.dtypes, seed=S.seeds)
def test_contractive_kernels(rows, units, dtype, seed):
    rng = np.random.default_rng(seed)
    hidden = rng.random((rows, units)).astype(dtype)
    hidden[rng.random((rows, units)) < 0.1] = 1  # saturated units: a = 0
    row_norms_sq = (rng.random(units) * 3).astype(dtype)
    scale = np.dtype(dtype).type(rng.standard_normal())
    per_example = np.empty(rows, dtype=dtype)
    P.contractive_forward(hidden, row_norms_sq, per_example)
    assert_close(per_example, P.contractive_forward_reference(hidden, row_norms_sq), "kernel", dtype,
                 "contractive_forward")
    grad_hidden, column_sums = np.empty_like(hidden), np.full(units, np.nan, dtype=dtype)  # overwritten
    P.contractive_backward(hidden, row_norms_sq, scale, grad_hidden, column_sums)
    expected_grad, expected_sums = P.contractive_backward_reference(hidden, row_norms_sq, scale)
    a = hidden.astype(np.float64) * (1 - hidden)
    assert_close(grad_hidden, expected_grad, "kernel", dtype, "contractive_backward dh",
                 scale=2 * abs(float(scale)) * row_norms_sq * a * (1 + 2 * hidden))
    assert_close(column_sums, expected_sums, "kernel", dtype, "contractive_backward column sums")
