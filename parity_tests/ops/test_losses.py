"""BCE, BCE-with-logits, MSE and the Gaussian KL (docs/losses.md, docs/kl.md).

The three oracles of docs/README.md, for ``scratch/functional/losses.py``, ``scratch/kernels/losses.py``
and ``scratch.nn.BCELoss`` / ``BCEWithLogitsLoss`` / ``MSELoss`` / ``GaussianKL``:

1. torch parity (``torch.nn.functional.binary_cross_entropy`` / ``binary_cross_entropy_with_logits``
   / ``mse_loss``; the KL against ``torch_impl.functional.gaussian_kl``, written with torch ops):
   value and gradient for every reduction, extreme inputs (logits ±1e4, log-variance ±80,
   probabilities exactly 0 and 1) finite and equal to torch's, and the BCE-with-logits tail;
2. central differences: the functional pair and the module of each loss, every reduction;
3. kernels against their NumPy references, and the fused BCE-then-Sigmoid backward kernel
   against the two references composed.

Plus the BCE-through-Sigmoid fast path held bit for bit to the two backward passes, and the
workspaces (``scratch/workspace.py``: the losses', the Sigmoid's and Linear's reused temporaries)
never changing an array already handed out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close, loss_forward_terms, reduce_terms
from scratch import functional as F
from scratch import nn
from scratch.gradcheck import gradcheck
from scratch.kernels import losses as L
from torch_impl.functional import gaussian_kl

# ---------------------------------------------------------------------------- oracle 1: torch


def _cotangent(rng, reduction, shape, dtype):
    if reduction == "none":
        return rng.standard_normal(shape).astype(dtype)
    return float(rng.uniform(0.5, 2.0))


def _check(scratch_loss, torch_fn, x, target, rng, dtype, reduction, label, value_scale=None):
    loss = scratch_loss(x, target)
    cotangent = _cotangent(rng, reduction, x.shape, dtype)
    dx = scratch_loss.backward(cotangent)
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch_fn(tx, torch.tensor(target), reduction=reduction)
    tloss.backward(torch.tensor(cotangent, dtype=tx.dtype))
    assert_close(np.asarray(loss), tloss, "torch", dtype, f"{label} value", scale=value_scale)
    assert_close(dx, tx.grad, "torch", dtype, f"{label} dinput")
    return loss, dx


@given(shape=S.shapes(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds, soft=st.booleans())
def test_bce_matches_torch(shape, reduction, dtype, seed, soft):
    rng = np.random.default_rng(seed)
    p = rng.random(shape).astype(dtype)
    # exact 0 and 1 sprinkled in: torch clamps each log term at -100 and p(1-p) at 1e-12
    p = np.where(rng.random(shape) < 0.1, (rng.random(shape) < 0.5).astype(dtype), p).astype(dtype)
    y = S.binary_targets(rng, shape, soft).astype(dtype)
    _check(nn.BCELoss(reduction), torch.nn.functional.binary_cross_entropy, p, y, rng, dtype, reduction, "BCE")


@given(shape=S.shapes(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds, soft=st.booleans(),
       scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_bce_with_logits_matches_torch(shape, reduction, dtype, seed, soft, scale):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    y = S.binary_targets(rng, shape, soft).astype(dtype)
    terms = reduce_terms(loss_forward_terms("bce_with_logits", x, y), reduction)
    loss, dx = _check(nn.BCEWithLogitsLoss(reduction), torch.nn.functional.binary_cross_entropy_with_logits,
                      x, y, rng, dtype, reduction, "BCEWithLogits", value_scale=terms)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dx))


@given(shape=S.shapes(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds)
def test_mse_matches_torch(shape, reduction, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    _check(nn.MSELoss(reduction), torch.nn.functional.mse_loss, x, y, rng, dtype, reduction, "MSE")


@given(batch=S.batch_sizes, latent=S.features, reduction=S.kl_reductions, dtype=S.dtypes, seed=S.seeds,
       logvar_scale=st.sampled_from([1.0, 10.0, 80.0]))
def test_gaussian_kl_matches_torch(batch, latent, reduction, dtype, seed, logvar_scale):
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((batch, latent)).astype(dtype)
    logvar = np.clip(logvar_scale * rng.standard_normal((batch, latent)), -80, 80).astype(dtype)
    kl = nn.GaussianKL(reduction)
    value = kl(mean, logvar)
    cotangent = _cotangent(rng, reduction, mean.shape, dtype)
    dmean, dlogvar = kl.backward(cotangent)
    tmean, tlogvar = torch.tensor(mean, requires_grad=True), torch.tensor(logvar, requires_grad=True)
    tvalue = gaussian_kl(tmean, tlogvar, reduction)
    tvalue.backward(torch.tensor(cotangent, dtype=tmean.dtype))
    # torch's textbook form -½(1 + lv - μ² - e^lv) cancels near lv = 0 where ours uses expm1
    terms = loss_forward_terms("gaussian_kl", mean, logvar)
    assert_close(np.asarray(value), tvalue, "torch", dtype, "KL value", scale=reduce_terms(terms, reduction))
    assert_close(dmean, tmean.grad, "torch", dtype, "KL dmean")
    upstream = np.abs(np.broadcast_to(cotangent, mean.shape)) * (1 if reduction in ("sum", "none") else
                                                                   1 / (mean.shape[0] if reduction == "batchmean" else mean.size))
    assert_close(dlogvar, tlogvar.grad, "torch", dtype, "KL dlogvar", scale=upstream * (np.exp(logvar.astype(np.float64)) + 1))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(dlogvar))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extremes_stay_finite_and_equal_torch(dtype):
    """Logits ±1e4, log-variance ±80, probabilities exactly 0 and 1: finite, and torch's values."""
    logits = np.array([-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4], dtype=dtype)
    target = np.array([1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.0], dtype=dtype)
    loss = nn.BCEWithLogitsLoss("none")
    values = loss(logits, target)
    grads = loss.backward(np.ones_like(logits))
    tx = torch.tensor(logits, requires_grad=True)
    tvalues = torch.nn.functional.binary_cross_entropy_with_logits(tx, torch.tensor(target), reduction="none")
    tvalues.sum().backward()
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    assert_close(values, tvalues, "torch", dtype, "BCEWithLogits at ±1e4",
                 scale=loss_forward_terms("bce_with_logits", logits, target))
    assert_close(grads, tx.grad, "torch", dtype, "BCEWithLogits grad at ±1e4")
    assert values[0] == pytest.approx(1e4) and values[-1] == pytest.approx(1e4)

    sigmoid = nn.Sigmoid()
    assert np.all(np.isfinite(sigmoid(logits)))
    assert_close(sigmoid(logits), torch.sigmoid(torch.tensor(logits)), "torch", dtype, "sigmoid at ±1e4")

    p = np.array([0.0, 0.0, 1.0, 1.0], dtype=dtype)
    y = np.array([0.0, 1.0, 0.0, 1.0], dtype=dtype)
    bce = nn.BCELoss("none")
    values = bce(p, y)
    grads = bce.backward(np.ones_like(p))
    tp = torch.tensor(p, requires_grad=True)
    tvalues = torch.nn.functional.binary_cross_entropy(tp, torch.tensor(y), reduction="none")
    tvalues.sum().backward()
    np.testing.assert_array_equal(values, [0.0, 100.0, 100.0, 0.0])  # the -100 clamp
    assert_close(values, tvalues, "torch", dtype, "BCE at p in {0, 1}")
    assert_close(grads, tp.grad, "torch", dtype, "BCE grad at p in {0, 1}")

    mean = np.zeros(4, dtype=dtype)[None]
    logvar = np.array([[-80.0, -1e-9, 1e-9, 80.0]], dtype=dtype)
    kl = nn.GaussianKL("none")
    terms = kl(mean, logvar)
    dmean, dlogvar = kl.backward(np.ones_like(logvar))
    tlogvar = torch.tensor(logvar, requires_grad=True)
    tterms = gaussian_kl(torch.tensor(mean), tlogvar, "none")
    tterms.sum().backward()
    assert np.all(np.isfinite(terms)) and np.all(np.isfinite(dlogvar))
    assert_close(terms, tterms, "torch", dtype, "KL at logvar ±80")
    assert_close(dlogvar, tlogvar.grad, "torch", dtype, "KL dlogvar at ±80")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_accurate_in_the_tail(dtype):
    """Where the loss is ~e^{-|x|} (confident and right), it keeps full relative accuracy."""
    x = np.array([5.0, 20.0, 40.0, 80.0], dtype=dtype)
    loss = nn.BCEWithLogitsLoss("none")
    values = loss(np.concatenate([x, -x]), np.concatenate([np.ones_like(x), np.zeros_like(x)]))
    exact = np.log1p(np.exp(-x.astype(np.float64)))  # no cancellation in float64 here
    np.testing.assert_allclose(values, np.concatenate([exact, exact]), rtol=8 * np.finfo(dtype).eps)


# ---------------------------------------------------------------------------- oracle 2: central differences


@given(shape=S.shapes(), reduction=S.reductions, seed=S.seeds, soft=st.booleans())
def test_bce(shape, reduction, seed, soft):
    rng = np.random.default_rng(seed)
    p, y = S.probabilities(rng, shape), S.binary_targets(rng, shape, soft)
    gradcheck((F.bce_forward, F.bce_backward), p, y, reduction, rng=rng, **GRADCHECK)
    gradcheck(nn.BCELoss(reduction), p, y, rng=rng, **GRADCHECK)


@given(shape=S.shapes(), reduction=S.reductions, seed=S.seeds, soft=st.booleans(), scale=st.sampled_from([1.0, 20.0]))
def test_bce_with_logits(shape, reduction, seed, soft, scale):
    rng = np.random.default_rng(seed)
    x, y = scale * rng.standard_normal(shape), S.binary_targets(rng, shape, soft)
    gradcheck((F.bce_with_logits_forward, F.bce_with_logits_backward), x, y, reduction, rng=rng, **GRADCHECK)
    gradcheck(nn.BCEWithLogitsLoss(reduction), x, y, rng=rng, **GRADCHECK)


@given(shape=S.shapes(), reduction=S.reductions, seed=S.seeds)
def test_mse(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    gradcheck((F.mse_forward, F.mse_backward), x, y, reduction, rng=rng, **GRADCHECK)
    gradcheck(nn.MSELoss(reduction), x, y, rng=rng, **GRADCHECK)


@given(batch=S.batch_sizes, latent=S.features, reduction=S.kl_reductions, seed=S.seeds)
def test_gaussian_kl(batch, latent, reduction, seed):
    rng = np.random.default_rng(seed)
    mean, logvar = rng.standard_normal((batch, latent)), 2 * rng.standard_normal((batch, latent))
    result = gradcheck((F.gaussian_kl_forward, F.gaussian_kl_backward), mean, logvar, reduction, rng=rng, **GRADCHECK)
    assert result.elements_checked == 2 * mean.size  # both mean and logvar
    gradcheck(nn.GaussianKL(reduction), mean, logvar, rng=rng, **GRADCHECK)


# ---------------------------------------------------------------------------- oracle 3: kernels


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


# ---------------------------------------------------------------------------- fast paths against the plain ones


@given(rows=st.integers(1, 8), dtype=S.dtypes, seed=S.seeds, reduction=st.sampled_from(["mean", "sum"]))
def test_bce_through_sigmoid_equals_the_two_backward_passes(rows, dtype, seed, reduction):
    rng = np.random.default_rng(seed)
    logits = (20 * rng.standard_normal((rows, 5))).astype(dtype)  # some saturate: p = 0 or 1
    target = (rng.random((rows, 5)) < 0.5).astype(dtype)
    sigmoid, loss = nn.Sigmoid(), nn.BCELoss(reduction=reduction)
    loss(sigmoid(logits), target)
    fused = loss.backward_through_sigmoid(sigmoid, 0.7)
    np.testing.assert_array_equal(fused, sigmoid.backward(loss.backward(0.7)))
    other = nn.Sigmoid()
    other(logits + 1)  # a sigmoid whose output is not the loss's input: the plain path is taken
    np.testing.assert_array_equal(loss.backward_through_sigmoid(other, 0.7), other.backward(loss.backward(0.7)))


def test_workspaces_never_change_a_returned_or_cached_array():
    """Reused temporaries stay inside their call: earlier results are untouched by later calls."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 6, 5)).astype(np.float32)
    sigmoid = nn.Sigmoid()
    first = sigmoid(x1)
    kept = first.copy()
    sigmoid(x2)
    np.testing.assert_array_equal(first, kept)
    per_element = nn.BCELoss(reduction="none")
    target = (rng.random((6, 5)) < 0.5).astype(np.float32)
    terms = per_element(kept, target)
    kept_terms = terms.copy()
    per_element(sigmoid(x1), target)
    np.testing.assert_array_equal(terms, kept_terms)
    mean = nn.BCELoss()
    assert mean(kept, target) == pytest.approx(float(np.mean(kept_terms)), rel=1e-6)
    linear = nn.Linear(5, 3, rng=rng)
    x, grad = rng.standard_normal((2, 40, 5)).astype(np.float32), rng.standard_normal((40, 3)).astype(np.float32)
    linear(x[0])
    linear.backward(grad)
    once = linear.weight.grad.copy()
    linear.backward(grad)  # the same product again: accumulates
    np.testing.assert_array_equal(linear.weight.grad, once + once)


# -- 0-d inputs (issue 15): the output and the gradient are 0-d, as torch's ---------------------------


ZERO_D_LOSSES = [(nn.MSELoss, torch.nn.MSELoss, "value"), (nn.BCELoss, torch.nn.BCELoss, "probability"),
                 (nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss, "value")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scratch_loss, torch_loss, kind", ZERO_D_LOSSES, ids=["mse", "bce", "bce_with_logits"])
def test_a_0d_input_gives_0d_output_and_gradient_like_torch(scratch_loss, torch_loss, kind, reduction, dtype):
    rng = np.random.default_rng(7)
    for _ in range(4):
        value = rng.uniform(0.05, 0.95) if kind == "probability" else rng.normal(scale=3.0)
        x, target = np.array(value, dtype=dtype), np.array(rng.uniform(), dtype=dtype)
        cotangent = rng.standard_normal()
        loss = scratch_loss(reduction=reduction)
        out = loss(x, target)
        grad = loss.backward(np.array(cotangent, dtype=dtype) if reduction == "none" else cotangent)
        tx = torch.tensor(x, requires_grad=True)
        tout = torch_loss(reduction=reduction)(tx, torch.tensor(target))
        tout.backward(torch.tensor(cotangent, dtype=tx.dtype))
        assert np.shape(out) == tuple(tout.shape) == () and grad.shape == tuple(tx.grad.shape) == ()
        assert_close(np.asarray(out), tout.detach(), "torch", dtype, f"{scratch_loss.__name__} 0-d output")
        assert_close(grad, tx.grad, "torch", dtype, f"{scratch_loss.__name__} 0-d gradient")
