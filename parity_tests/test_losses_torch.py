"""Oracle 1 for the losses: torch parity of value and gradient, every reduction, extreme inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import assert_close, loss_forward_terms, reduce_terms
from scratch import nn
from torch_impl.functional import gaussian_kl


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


@given(batch=S.batch_sizes, latent=S.features, dtype=S.dtypes, seed=S.seeds,
       logvar_scale=st.sampled_from([1.0, 10.0, 80.0]))
def test_reparameterize_matches_torch(batch, latent, dtype, seed, logvar_scale):
    from scratch import functional as F

    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((batch, latent)).astype(dtype)
    logvar = np.clip(logvar_scale * rng.standard_normal((batch, latent)), -80, 80).astype(dtype)
    eps = rng.standard_normal((batch, latent)).astype(dtype)
    z, cache = F.reparameterize_forward(mean, logvar, eps)
    grad_z = rng.standard_normal(z.shape).astype(dtype)
    grad_mean, grad_logvar = F.reparameterize_backward(grad_z, cache)
    tmean, tlogvar = torch.tensor(mean, requires_grad=True), torch.tensor(logvar, requires_grad=True)
    tz = tmean + torch.exp(0.5 * tlogvar) * torch.from_numpy(eps)
    tz.backward(torch.from_numpy(grad_z))
    assert np.all(np.isfinite(z))
    assert_close(z, tz, "torch", dtype, "z", scale=np.abs(mean) + np.abs(np.exp(0.5 * logvar.astype(np.float64)) * eps))
    assert_close(grad_mean, tmean.grad, "torch", dtype, "dmean")
    assert_close(grad_logvar, tlogvar.grad, "torch", dtype, "dlogvar", scale=np.abs(tlogvar.grad.numpy()))
