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

torch's whole contract for the three torch losses (issue 15), each variant under the three oracles
(section "weights, broadcasting, empty inputs, legacy arguments" below): ``weight`` on BCELoss and
BCEWithLogitsLoss, ``pos_weight`` on BCEWithLogitsLoss, both together, every reduction; MSELoss's
broadcasting of a target of another shape (and its warning); empty inputs ("none": empty, "sum":
0, "mean": NaN, an empty gradient); the deprecated ``size_average`` / ``reduce``; torch's repr and
``state_dict``; refusals where torch refuses. Torch parity compares the loss and dL/d(input) in
float64 and float32: scratch's ``backward`` returns the input's gradient only, so torch's
gradients with respect to the target, ``weight`` and ``pos_weight`` are out of scope (never
compared). Weight shapes are drawn to broadcast by construction (``S.loss_cases``,
``S.broadcastable_shapes``, ``S.mse_broadcast_cases``).
"""

from __future__ import annotations

import warnings

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
from scratch.nn.inplace import InplaceModificationError
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
    _check(nn.BCELoss(reduction=reduction), torch.nn.functional.binary_cross_entropy, p, y, rng, dtype, reduction, "BCE")


@given(shape=S.shapes(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds, soft=st.booleans(),
       scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_bce_with_logits_matches_torch(shape, reduction, dtype, seed, soft, scale):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    y = S.binary_targets(rng, shape, soft).astype(dtype)
    terms = reduce_terms(loss_forward_terms("bce_with_logits", x, y), reduction)
    loss, dx = _check(nn.BCEWithLogitsLoss(reduction=reduction), torch.nn.functional.binary_cross_entropy_with_logits,
                      x, y, rng, dtype, reduction, "BCEWithLogits", value_scale=terms)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dx))


@given(shape=S.shapes(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds)
def test_mse_matches_torch(shape, reduction, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    _check(nn.MSELoss(reduction=reduction), torch.nn.functional.mse_loss, x, y, rng, dtype, reduction, "MSE")


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
    loss = nn.BCEWithLogitsLoss(reduction="none")
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
    bce = nn.BCELoss(reduction="none")
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
    loss = nn.BCEWithLogitsLoss(reduction="none")
    values = loss(np.concatenate([x, -x]), np.concatenate([np.ones_like(x), np.zeros_like(x)]))
    exact = np.log1p(np.exp(-x.astype(np.float64)))  # no cancellation in float64 here
    np.testing.assert_allclose(values, np.concatenate([exact, exact]), rtol=8 * np.finfo(dtype).eps)


# ---------------------------------------------------------------------------- oracle 2: central differences


@given(shape=S.shapes(), reduction=S.reductions, seed=S.seeds, soft=st.booleans())
def test_bce(shape, reduction, seed, soft):
    rng = np.random.default_rng(seed)
    p, y = S.probabilities(rng, shape), S.binary_targets(rng, shape, soft)
    gradcheck((F.bce_forward, F.bce_backward), p, y, reduction, rng=rng, **GRADCHECK)
    gradcheck(nn.BCELoss(reduction=reduction), p, y, rng=rng, **GRADCHECK)


@given(shape=S.shapes(), reduction=S.reductions, seed=S.seeds, soft=st.booleans(), scale=st.sampled_from([1.0, 20.0]))
def test_bce_with_logits(shape, reduction, seed, soft, scale):
    rng = np.random.default_rng(seed)
    x, y = scale * rng.standard_normal(shape), S.binary_targets(rng, shape, soft)
    gradcheck((F.bce_with_logits_forward, F.bce_with_logits_backward), x, y, reduction, rng=rng, **GRADCHECK)
    gradcheck(nn.BCEWithLogitsLoss(reduction=reduction), x, y, rng=rng, **GRADCHECK)


@given(shape=S.shapes(), reduction=S.reductions, seed=S.seeds)
def test_mse(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    gradcheck((F.mse_forward, F.mse_backward), x, y, reduction, rng=rng, **GRADCHECK)
    gradcheck(nn.MSELoss(reduction=reduction), x, y, rng=rng, **GRADCHECK)


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


# ---------------------------------------------------------------------------- weights, broadcasting, empty inputs, legacy arguments
# (issue 15) The arrays of a case: the input shape and the weights' shapes come from S.loss_cases.


def _array(rng, shape, dtype, low=None, high=None):
    """An array of ``shape`` (a 0-d array for ``()``), standard normal or uniform in [low, high)."""
    values = rng.standard_normal(shape) if low is None else rng.uniform(low, high, shape)
    return np.asarray(values).astype(dtype)


def _weights(rng, case, dtype):
    """(weight, pos_weight) for a case: weights of either sign (torch takes any), pos_weight >= 0."""
    weight = None if case["weight"] is None else _array(rng, case["weight"], dtype, -1.0, 2.0)
    pos_weight = None if case["pos_weight"] is None else _array(rng, case["pos_weight"], dtype, 0.0, 4.0)
    return weight, pos_weight


def _tensor(array):
    return None if array is None else torch.tensor(array)


def _broadcast_abs(array, shape):
    return np.ones(shape) if array is None else np.abs(np.broadcast_to(array.astype(np.float64), shape))


def _upstream_abs(cotangent, shape, reduction):
    """|the upstream gradient each element's loss gets|: the cotangent, ÷N for "mean"."""
    size = max(int(np.prod(shape)), 1)
    return np.abs(np.broadcast_to(np.asarray(cotangent, dtype=np.float64), shape)) / (size if reduction == "mean" else 1)


def _logits_terms(x, y, weight, pos_weight):
    """|terms| of both forms of the pos-weighted loss: torch's (1 - y) x + (1 + (pw - 1) y)·softplus(-x)
    and ours, (1 - y)·softplus(x) + pw·y·softplus(-x), times |w| (softplus(±x) <= |x| + 1)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    w, pw = _broadcast_abs(weight, x.shape), _broadcast_abs(pos_weight, x.shape)
    return w * (np.abs(x) + 1) * (2 * np.abs(1 - y) + 1 + (pw + 1) * np.abs(y) + pw * np.abs(y))


def _logits_grad_terms(upstream, x, y, weight, pos_weight):
    """|terms| of both forms of its gradient, times |g w|: torch's ((pw·y + 1) - y)·σ(x) - pw·y
    (|pw y| + 1 + |y|, then |pw y|: the sum pw·y + 1 rounds at the scale of 1 even when y ≈ 1
    cancels it) and ours, (1 - y)·σ(x) - pw·y·σ(-x) (|1 - y| + |pw y|)."""
    y = y.astype(np.float64)
    w, pw = _broadcast_abs(weight, x.shape), _broadcast_abs(pos_weight, x.shape)
    return upstream * w * (1 + np.abs(y) + np.abs(1 - y) + 3 * pw * np.abs(y))


def _compare_with_torch(loss, torch_fn, x, target, rng, dtype, reduction, label, value_scale=None, grad_scale=None,
                        **torch_kwargs):
    """One forward and backward through the scratch loss and through ``torch_fn``: the loss (shape,
    value) and dL/d(input) compared; a random cotangent ("none") or upstream scalar."""
    out = loss(x, target)
    shape = np.shape(out)
    cotangent = _array(rng, shape, dtype) if reduction == "none" else float(rng.uniform(0.5, 2.0))
    dx = loss.backward(cotangent)
    tx = torch.tensor(x, requires_grad=True)
    tout = torch_fn(tx, torch.tensor(target), reduction=reduction, **torch_kwargs)
    tout.backward(torch.tensor(cotangent, dtype=tx.dtype))
    assert np.shape(out) == tuple(tout.shape) and dx.shape == x.shape == tuple(tx.grad.shape)
    assert dx.dtype == x.dtype and (reduction == "none" or isinstance(out, float))
    scale = value_scale if x.size else None  # (an empty input's terms have no mean)
    assert_close(np.asarray(out), tout.detach(), "torch", dtype, f"{label} value", scale=scale)
    assert_close(dx, tx.grad, "torch", dtype, f"{label} dinput", scale=grad_scale(cotangent) if grad_scale else None)
    return out, dx


@given(case=S.loss_cases(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds, soft=st.booleans())
def test_weighted_bce_matches_torch(case, reduction, dtype, seed, soft):
    rng = np.random.default_rng(seed)
    shape = case["shape"]
    p = _array(rng, shape, dtype, 0.0, 1.0)
    p = np.where(rng.random(shape) < 0.1, (rng.random(shape) < 0.5), p).astype(dtype)  # exact 0s and 1s: the clamps
    y = np.asarray(S.binary_targets(rng, shape, soft)).astype(dtype)
    weight, _ = _weights(rng, case, dtype)
    terms = loss_forward_terms("bce", p, y) * _broadcast_abs(weight, shape)  # weights of either sign: sums cancel
    _compare_with_torch(nn.BCELoss(weight, reduction=reduction), torch.nn.functional.binary_cross_entropy, p, y, rng,
                        dtype, reduction, f"BCE weight {case['weight']}",
                        value_scale=reduce_terms(terms, reduction) if p.size else None,
                        weight=_tensor(weight))


@given(case=S.loss_cases(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds, soft=st.booleans(),
       scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_weighted_bce_with_logits_matches_torch(case, reduction, dtype, seed, soft, scale):
    """weight, pos_weight, both or neither (S.loss_cases draws each or None), logits up to ±1e4."""
    rng = np.random.default_rng(seed)
    shape = case["shape"]
    x = np.asarray(scale * _array(rng, shape, dtype)).astype(dtype)
    y = np.asarray(S.binary_targets(rng, shape, soft)).astype(dtype)
    weight, pos_weight = _weights(rng, case, dtype)
    terms = _logits_terms(x, y, weight, pos_weight)
    out, dx = _compare_with_torch(
        nn.BCEWithLogitsLoss(weight, reduction=reduction, pos_weight=pos_weight),
        torch.nn.functional.binary_cross_entropy_with_logits, x, y, rng, dtype, reduction,
        f"BCEWithLogits weight {case['weight']} pos_weight {case['pos_weight']}",
        value_scale=reduce_terms(terms, reduction) if x.size else None,
        grad_scale=lambda g: _logits_grad_terms(_upstream_abs(g, shape, reduction), x, y, weight, pos_weight),
        weight=_tensor(weight), pos_weight=_tensor(pos_weight))
    assert np.all(np.isfinite(dx)) and (np.size(out) == 0 or reduction == "mean" and not np.size(x)
                                        or np.all(np.isfinite(out)))


@given(shapes=S.mse_broadcast_cases(), reduction=S.reductions, dtype=S.dtypes, seed=S.seeds)
def test_mse_broadcasting_matches_torch(shapes, reduction, dtype, seed):
    """A target of another shape broadcasts with the input, with torch's warning; the gradient is
    summed back to the input's shape. The same shape: no warning."""
    rng = np.random.default_rng(seed)
    input_shape, target_shape = shapes
    x, y = _array(rng, input_shape, dtype), _array(rng, target_shape, dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _compare_with_torch(nn.MSELoss(reduction=reduction), torch.nn.functional.mse_loss, x, y, rng, dtype,
                            reduction, f"MSE {input_shape} vs target {target_shape}")
    mine = [str(w.message) for w in caught if w.filename == __file__ and "torch.Size" not in str(w.message)]
    if input_shape == target_shape:
        assert not mine
    else:
        assert mine == [f"Using a target size ({target_shape}) that is different to the input size ({input_shape}). "
                        "This will likely lead to incorrect results due to broadcasting. "
                        "Please ensure they have the same size."], mine


EMPTY_CASES = [  # (scratch loss, torch function, constructor arguments, how to make its input)
    ("BCELoss", torch.nn.functional.binary_cross_entropy, {}, "probability"),
    ("BCELoss", torch.nn.functional.binary_cross_entropy, {"weight": (3,)}, "probability"),
    ("BCEWithLogitsLoss", torch.nn.functional.binary_cross_entropy_with_logits, {}, "value"),
    ("BCEWithLogitsLoss", torch.nn.functional.binary_cross_entropy_with_logits, {"weight": (1, 3), "pos_weight": (3,)},
     "value"),
    ("MSELoss", torch.nn.functional.mse_loss, {}, "value"),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("name, torch_fn, weights, kind", EMPTY_CASES,
                         ids=["bce", "bce-weight", "bce_with_logits", "bce_with_logits-weights", "mse"])
def test_an_empty_input_passes_through_as_torch(name, torch_fn, weights, kind, reduction, dtype):
    """"none": an empty loss of the input's shape; "sum": 0; "mean": NaN (0/0, as torch); and an
    empty gradient, of the input's shape and dtype. No warning (torch gives none)."""
    rng = np.random.default_rng(3)
    arguments = {key: _array(rng, shape, dtype, 0.5, 2.0) for key, shape in weights.items()}
    x, y = np.zeros((0, 3), dtype), np.zeros((0, 3), dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = getattr(nn, name)(reduction=reduction, **arguments)
        out = loss(x, y)
        dx = loss.backward(np.zeros((0, 3), dtype) if reduction == "none" else 1.0)
    tout = torch_fn(torch.tensor(x), torch.tensor(y), reduction=reduction,
                    **{key: torch.tensor(value) for key, value in arguments.items()})
    assert dx.shape == (0, 3) and dx.dtype == dtype
    if reduction == "none":
        assert out.shape == (0, 3) == tuple(tout.shape) and out.dtype == dtype
    elif reduction == "sum":
        assert out == 0.0 == tout.item()
    else:
        assert np.isnan(out) and np.isnan(tout.item())


def test_an_empty_broadcast_mse_gradient_is_zeros_as_torch():
    """MSE of a (3,) input against a (0, 3) target: the loss is empty, and the input's gradient is
    the sum over no rows: zeros (torch's too), for "mean" as well (its NaN never reaches dx)."""
    for reduction in ("none", "sum", "mean"):
        x, y = np.ones(3), np.zeros((0, 3))
        loss = nn.MSELoss(reduction=reduction)
        with pytest.warns(UserWarning, match="different to the input size"):
            loss(x, y)
        dx = loss.backward(np.zeros((0, 3)) if reduction == "none" else 1.0)
        tx = torch.tensor(x, requires_grad=True)
        with pytest.warns(UserWarning):
            tout = torch.nn.functional.mse_loss(tx, torch.tensor(y), reduction=reduction)
        tout.backward(torch.zeros(0, 3, dtype=tx.dtype) if reduction == "none" else None)
        np.testing.assert_array_equal(dx, tx.grad.numpy())
        np.testing.assert_array_equal(dx, np.zeros(3))


LEGACY = [(size_average, reduce) for size_average in (None, True, False) for reduce in (None, True, False)
          if (size_average, reduce) != (None, None)]


@pytest.mark.parametrize("size_average, reduce", LEGACY)
@pytest.mark.parametrize("name", ["BCELoss", "BCEWithLogitsLoss", "MSELoss"])
def test_legacy_size_average_and_reduce_map_to_torch_reduction(name, size_average, reduce):
    """torch's _Reduction.legacy_get_string: the same reduction, the same warning, ``reduction``
    ignored; and the loss then computes what torch's module computes (value and dinput)."""
    with pytest.warns(UserWarning) as caught:
        twin = getattr(torch.nn, name)(size_average=size_average, reduce=reduce, reduction="sum")
    with pytest.warns(UserWarning) as mine:
        loss = getattr(nn, name)(size_average=size_average, reduce=reduce, reduction="sum")
    assert loss.reduction == twin.reduction
    assert [str(w.message) for w in mine] == [str(w.message) for w in caught]
    assert mine[0].filename == __file__, "the warning points at the caller's line"
    rng = np.random.default_rng(5)
    x = rng.uniform(0.05, 0.95, (4, 3))
    y = rng.random((4, 3))
    cotangent = rng.standard_normal((4, 3)) if loss.reduction == "none" else 1.3
    out, dx = loss(x, y), loss.backward(cotangent)
    tx = torch.tensor(x, requires_grad=True)
    tout = twin(tx, torch.tensor(y))
    tout.backward(torch.tensor(cotangent, dtype=torch.float64))
    assert_close(np.asarray(out), tout.detach(), "torch", np.float64, f"{name} legacy value")
    assert_close(dx, tx.grad, "torch", np.float64, f"{name} legacy dinput")


@pytest.mark.parametrize("name", ["BCELoss", "BCEWithLogitsLoss", "MSELoss"])
def test_torch_signature_repr_and_state_dict(name):
    """torch's argument order (positional, as torch's own samples pass them), the repr ``BCELoss()``,
    ``reduction='elementwise_mean'`` (deprecated: "mean" with torch's warning), and a state_dict
    holding the weights under torch's buffer names."""
    import inspect

    expected = list(inspect.signature(getattr(torch.nn, name).__init__).parameters)
    assert list(inspect.signature(getattr(nn, name).__init__).parameters) == expected
    weights = {"weight": np.arange(3.0), "pos_weight": np.full(3, 2.0)} if name == "BCEWithLogitsLoss" else (
        {"weight": np.arange(3.0)} if name == "BCELoss" else {})
    loss, twin = getattr(nn, name)(**weights), getattr(torch.nn, name)(**{k: torch.tensor(v) for k, v in weights.items()})
    assert repr(loss) == repr(twin) == f"{name}()"
    state, torch_state = loss.state_dict(), twin.state_dict()
    assert list(state) == list(torch_state) and list(loss.named_parameters()) == list(twin.named_parameters()) == []
    for key, value in torch_state.items():
        np.testing.assert_array_equal(state[key], value.numpy())
    if state:
        loss.load_state_dict({key: value + 1 for key, value in state.items()})
        for key, value in state.items():
            np.testing.assert_array_equal(getattr(loss, key), value + 1)
    with pytest.warns(UserWarning, match=r"^reduction='elementwise_mean' is deprecated\. Please use reduction='mean'"):
        assert getattr(nn, name)(reduction="elementwise_mean").reduction == "mean"


# -- refusals where torch refuses (and before anything changes: test_reliability_inputs.py) -----------


REFUSALS = [
    (lambda: nn.BCELoss(reduction="avg"), ValueError, r"^BCELoss: reduction must be one of \('mean', 'sum', 'none'\), got 'avg'$"),
    (lambda: nn.BCELoss("sum"), TypeError,
     r"^BCELoss: weight must be a NumPy array or None, got str \('sum'\); torch's argument order is "
     r"BCELoss\(weight, size_average, reduce, reduction\), so pass reduction by keyword$"),
    (lambda: nn.MSELoss("sum"), TypeError,
     r"^MSELoss: size_average must be True, False or None \(deprecated: use reduction=\), got 'sum' \(str\); "
     r"torch's argument order is MSELoss\(size_average, reduce, reduction\), so pass reduction by keyword$"),
    (lambda: nn.BCEWithLogitsLoss(reduce=1), TypeError, r"^BCEWithLogitsLoss: reduce must be True, False or None"),
    (lambda: nn.BCEWithLogitsLoss(pos_weight=[1.0, 2.0]), TypeError,
     r"^BCEWithLogitsLoss: pos_weight must be a NumPy array or None, got list \(\[1\.0, 2\.0\]\)$"),
    (lambda: nn.BCELoss(np.ones(2, complex)), TypeError,
     r"^BCELoss: weight: expected real numbers \(bool, int or float\), got dtype complex128$"),
    (lambda: nn.BCEWithLogitsLoss(pos_weight=np.ones(4))(np.zeros((2, 3)), np.zeros((2, 3))), ValueError,
     r"^BCEWithLogitsLoss: pos_weight must broadcast to the input's shape \(2, 3\) \(torch's rules: its shape, aligned "
     r"at the right, no longer than the input's, each size 1 or the input's\), got shape \(4,\); one pos_weight per "
     r"class along the last dimension has shape \(3,\)$"),
    (lambda: nn.BCELoss(np.ones((1, 2, 3)))(np.zeros((2, 3)), np.zeros((2, 3))), ValueError,
     r"^BCELoss: weight must broadcast to the input's shape \(2, 3\) .* got shape \(1, 2, 3\)"),
    (lambda: nn.BCEWithLogitsLoss(np.ones(2))(np.zeros(()), np.zeros(())), ValueError,
     r"^BCEWithLogitsLoss: weight must broadcast to the input's shape \(\) .* got shape \(2,\)$"),
    (lambda: nn.BCEWithLogitsLoss()(np.zeros((2, 3)), np.zeros(3)), ValueError,
     r"^BCEWithLogitsLoss: input and target must have the same shape, got \(2, 3\) and \(3,\)$"),
    (lambda: nn.BCELoss()(np.zeros(3), np.zeros((2, 3))), ValueError,
     r"^BCELoss: input and target must have the same shape, got \(3,\) and \(2, 3\)$"),
    (lambda: nn.MSELoss()(np.zeros((2, 3)), np.zeros((0, 3))), ValueError,
     r"^MSELoss: input and target must have the same shape, or shapes that broadcast \(torch's rules\), "
     r"got \(2, 3\) and \(0, 3\)$"),
]


@pytest.mark.parametrize("call, error, message", REFUSALS)
def test_refusals_name_the_loss_what_was_expected_and_what_was_given(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_each_refused_weight_or_target_shape_is_refused_by_torch_too():
    """The conditions scratch refuses on, given to torch: it refuses each as well."""
    F_ = torch.nn.functional
    with pytest.raises(RuntimeError):
        F_.binary_cross_entropy_with_logits(torch.zeros(2, 3), torch.zeros(2, 3), pos_weight=torch.ones(4))
    with pytest.raises(RuntimeError):
        F_.binary_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(1, 2, 3))
    with pytest.raises(RuntimeError):
        F_.binary_cross_entropy_with_logits(torch.zeros(()), torch.zeros(()), torch.ones(2))
    with pytest.raises(ValueError):
        F_.binary_cross_entropy_with_logits(torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError):
        F_.binary_cross_entropy(torch.zeros(3), torch.zeros(2, 3))
    with pytest.raises(RuntimeError), pytest.warns(UserWarning):
        F_.mse_loss(torch.zeros(2, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError):
        torch.nn.BCELoss(reduction="avg")(torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("name, what", [("BCELoss", "weight"), ("BCEWithLogitsLoss", "weight"),
                                        ("BCEWithLogitsLoss", "pos_weight")])
@pytest.mark.parametrize("weight_shape", [(3,), (2, 3)])  # broadcast (a copy is kept) or not (a view is)
def test_a_weight_modified_in_place_after_forward_is_caught_at_backward(name, what, weight_shape):
    """torch keeps the weights for its backward and refuses one written in place; so does scratch."""
    weight = np.full(weight_shape, 0.5)
    loss = getattr(nn, name)(**{what: weight})
    loss(np.full((2, 3), 0.5), np.ones((2, 3)))
    loss.backward()  # untouched: fine
    weight[0] = 2.0
    with pytest.raises(InplaceModificationError, match=rf"^{name}\.backward: its {what} was modified in place"):
        loss.backward()
    tweight = torch.full(weight_shape, 0.5)
    tx = torch.full((2, 3), 0.5, requires_grad=True)
    tloss = getattr(torch.nn, name)(**{what: tweight})(tx, torch.ones(2, 3))
    tweight[0] = 2.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tloss.backward()


@given(rows=st.integers(1, 6), dtype=S.dtypes, seed=S.seeds, reduction=st.sampled_from(["mean", "sum"]))
def test_weighted_bce_through_sigmoid_takes_the_two_backward_passes(rows, dtype, seed, reduction):
    rng = np.random.default_rng(seed)
    logits = (10 * rng.standard_normal((rows, 5))).astype(dtype)
    target = (rng.random((rows, 5)) < 0.5).astype(dtype)
    sigmoid, loss = nn.Sigmoid(), nn.BCELoss(rng.uniform(0.5, 2.0, 5).astype(dtype), reduction=reduction)
    loss(sigmoid(logits), target)
    np.testing.assert_array_equal(loss.backward_through_sigmoid(sigmoid, 0.7), sigmoid.backward(loss.backward(0.7)))


# -- oracle 2: central differences, float64 (a random cotangent for "none", a random upstream scalar otherwise) --


@given(case=S.loss_cases(), reduction=S.reductions, seed=S.seeds, soft=st.booleans())
def test_weighted_bce(case, reduction, seed, soft):
    rng = np.random.default_rng(seed)
    p, y = np.asarray(S.probabilities(rng, case["shape"])), np.asarray(S.binary_targets(rng, case["shape"], soft))
    weight, _ = _weights(rng, case, np.float64)
    gradcheck((F.bce_forward, F.bce_backward), p, y, reduction, None, weight, rng=rng, **GRADCHECK)
    gradcheck(nn.BCELoss(weight, reduction=reduction), p, y, rng=rng, **GRADCHECK)


@given(case=S.loss_cases(), reduction=S.reductions, seed=S.seeds, soft=st.booleans(), scale=st.sampled_from([1.0, 20.0]))
def test_weighted_bce_with_logits(case, reduction, seed, soft, scale):
    rng = np.random.default_rng(seed)
    x = np.asarray(scale * rng.standard_normal(case["shape"]))
    y = np.asarray(S.binary_targets(rng, case["shape"], soft))
    weight, pos_weight = _weights(rng, case, np.float64)
    gradcheck((F.bce_with_logits_forward, F.bce_with_logits_backward), x, y, reduction, weight, pos_weight,
              rng=rng, **GRADCHECK)
    gradcheck(nn.BCEWithLogitsLoss(weight, reduction=reduction, pos_weight=pos_weight), x, y, rng=rng, **GRADCHECK)


@given(shapes=S.mse_broadcast_cases(), reduction=S.reductions, seed=S.seeds)
def test_mse_broadcasting(shapes, reduction, seed):
    rng = np.random.default_rng(seed)
    x, y = np.asarray(rng.standard_normal(shapes[0])), np.asarray(rng.standard_normal(shapes[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broadcast's warning, tested above
        gradcheck((F.mse_forward, F.mse_backward), x, y, reduction, rng=rng, **GRADCHECK)
        gradcheck(nn.MSELoss(reduction=reduction), x, y, rng=rng, **GRADCHECK)


# -- oracle 3: the weighted kernels against their references ----------------------------------------


def _per_element_or_one(rng, n, per_element, low, high, dtype):
    return rng.uniform(low, high, n if per_element else 1).astype(dtype)


@given(n=st.integers(0, 300), dtype=S.dtypes, seed=S.seeds, per_element=st.booleans(),
       weight_per_element=st.booleans(), pos_weight_per_element=st.booleans())
def test_weighted_loss_kernels(n, dtype, seed, per_element, weight_per_element, pos_weight_per_element):
    """Weights of one element (the same for every i) or one per element; n = 0 (an empty input) too."""
    rng = np.random.default_rng(seed)
    grad_output = _per_element_or_one(rng, n, per_element, -2.0, 2.0, dtype) if n else rng.standard_normal(1).astype(dtype)
    weight = _per_element_or_one(rng, n, weight_per_element and n, -1.0, 2.0, dtype)
    pos_weight = _per_element_or_one(rng, n, pos_weight_per_element and n, 0.0, 4.0, dtype)
    g_abs = np.abs(np.broadcast_to(grad_output.astype(np.float64), (n,)))

    p, y = _loss_inputs("bce", rng, n, dtype)
    out, grad = np.empty_like(p), np.empty_like(p)
    with np.errstate(divide="ignore"):
        L.bce_weighted_forward(p, y, np.log(p), np.log1p(-p), weight, out)
    terms = loss_forward_terms("bce", p, y) * _broadcast_abs(weight, p.shape)
    assert_close(out, L.bce_weighted_forward_reference(p, y, weight), "kernel", dtype, "bce_weighted_forward", scale=terms)
    L.bce_weighted_backward(grad_output, p, y, weight, grad)
    assert_close(grad, L.bce_weighted_backward_reference(grad_output, p, y, weight), "kernel", dtype,
                 "bce_weighted_backward", scale=_backward_terms("bce", g_abs, p, y) * _broadcast_abs(weight, p.shape))

    x, y = _loss_inputs("bce_with_logits", rng, n, dtype)
    x[rng.random(n) < 0.1] *= 300  # logits up to ~1e4
    L.bce_with_logits_weighted_forward(x, y, np.log1p(np.exp(-np.abs(x))), weight, pos_weight, out)
    assert np.all(np.isfinite(out))
    assert_close(out, L.bce_with_logits_weighted_forward_reference(x, y, weight, pos_weight), "kernel", dtype,
                 "bce_with_logits_weighted_forward", scale=_logits_terms(x, y, weight, pos_weight))
    L.bce_with_logits_weighted_backward(grad_output, x, y, np.exp(-np.abs(x)), weight, pos_weight, grad)
    assert_close(grad, L.bce_with_logits_weighted_backward_reference(grad_output, x, y, weight, pos_weight), "kernel",
                 dtype, "bce_with_logits_weighted_backward", scale=_logits_grad_terms(g_abs, x, y, weight, pos_weight))


@given(n=st.integers(1, 300), dtype=S.dtypes, seed=S.seeds, per_element=st.booleans())
def test_weighted_kernels_with_unit_weights_are_the_unweighted_ones(n, dtype, seed, per_element):
    """w = pw = 1: the weighted kernels compute the unweighted losses (the BCE's bit for bit: the
    same operations, then × 1; the logits' in their symmetric form, to the kernel tolerance)."""
    rng = np.random.default_rng(seed)
    grad_output = _per_element_or_one(rng, n, per_element, -2.0, 2.0, dtype)
    one = np.ones(1, dtype)
    p, y = _loss_inputs("bce", rng, n, dtype)
    plain, weighted = np.empty_like(p), np.empty_like(p)
    with np.errstate(divide="ignore"):
        L.bce_forward(p, y, np.log(p), np.log1p(-p), plain)
        L.bce_weighted_forward(p, y, np.log(p), np.log1p(-p), one, weighted)
    np.testing.assert_array_equal(weighted, plain)
    L.bce_backward(grad_output, p, y, plain)
    L.bce_weighted_backward(grad_output, p, y, one, weighted)
    np.testing.assert_array_equal(weighted, plain)
    x, y = _loss_inputs("bce_with_logits", rng, n, dtype)
    L.bce_with_logits_forward(x, y, np.log1p(np.exp(-np.abs(x))), plain)
    L.bce_with_logits_weighted_forward(x, y, np.log1p(np.exp(-np.abs(x))), one, one, weighted)
    assert_close(weighted, plain, "kernel", dtype, "weighted forward at w = pw = 1",
                 scale=loss_forward_terms("bce_with_logits", x, y))
    L.bce_with_logits_backward(grad_output, x, y, np.exp(-np.abs(x)), plain)
    L.bce_with_logits_weighted_backward(grad_output, x, y, np.exp(-np.abs(x)), one, one, weighted)
    assert_close(weighted, plain, "kernel", dtype, "weighted backward at w = pw = 1",
                 scale=_backward_terms("bce_with_logits", np.broadcast_to(grad_output, x.shape), x, y))
