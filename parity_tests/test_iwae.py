"""The IWAE's own identities (Burda et al. 2016), beside the parity families every model is in
(test_models.py: loss parts and every gradient against the torch twin, central differences, the
30-step run): K = 1 is the one-sample Monte Carlo ELBO, the gradient is the softmax-weighted sum of
the single samples' gradients, the bound is at least the ELBO estimate of the same samples and
equals the evaluation code's importance-sampled estimate, and the log-sum-exp step on its own
against torch and central differences. Derivation: docs/iwae.md."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Normal

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import evaluation
from scratch import functional as F
from scratch.gradcheck import gradcheck
from scratch.models import build

TF = torch.nn.functional


@st.composite
def iwae_cases(draw, num_samples=st.integers(1, 4)):
    """(config, batch) of a small IWAE."""
    config = dict(input_dim=draw(st.integers(1, 10)), hidden_dims=draw(st.lists(st.integers(1, 5), min_size=1, max_size=2)),
                  latent_dim=draw(st.integers(1, 3)), num_samples=draw(num_samples))
    return config, draw(st.integers(1, 4))


def _model_and_batch(config, batch, seed):
    rng = np.random.default_rng(seed)
    model = build("iwae", dtype=np.float64, rng=rng, **config)
    x = (rng.random((batch, config["input_dim"])) < 0.5).astype(np.float64)
    return model, x, model.draw_noise(x.shape)


def _grads(model) -> dict:
    return {key: parameter.grad.copy() for key, parameter in model.named_parameters()}


@given(case=iwae_cases(num_samples=st.just(1)), seed=S.seeds)
def test_one_sample_iwae_is_the_monte_carlo_elbo_in_value_and_gradients(case, seed):
    """K = 1: −L_1 = BCE + log q(z|x) − log p(z) with z = μ + σε, its KL estimated from that same
    sample (not the closed form), written here in torch with autograd from the model's weights."""
    config, batch = case
    model, x, eps = _model_and_batch(config, batch, seed)
    parts = model.loss(x, noise=eps)
    model.zero_grad()
    model.backward()
    assert math.isclose(parts["loss"], parts["recon"] + parts["kl"], rel_tol=1e-12, abs_tol=1e-12)
    weights = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in model.state_dict().items()}

    def linear(h, name, activation):
        return activation(h @ weights[f"{name}.weight"].T + weights[f"{name}.bias"])

    depth = len(config["hidden_dims"])
    h = torch.from_numpy(x)
    for layer in range(depth):
        h = linear(h, f"encoder.{2 * layer}", torch.tanh)
    mean, logvar = linear(h, "fc21", lambda a: a), linear(h, "fc22", lambda a: a)
    std = torch.exp(0.5 * logvar)
    z = mean + std * torch.from_numpy(eps[:, 0])
    h = z
    for layer in range(depth):
        h = linear(h, f"decoder.{2 * layer}", torch.tanh)
    probabilities = linear(h, f"decoder.{2 * depth}", torch.sigmoid)
    recon = TF.binary_cross_entropy(probabilities, torch.from_numpy(x), reduction="sum")
    kl = (Normal(mean, std).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum()
    (recon + kl).backward()
    assert_close(parts["loss"], recon + kl, "torch", np.float64, "L_1 against the MC ELBO")
    assert_close(parts["kl"], kl, "torch", np.float64, "the sampled KL")
    for key, grad in _grads(model).items():
        assert_close(grad, weights[key].grad, "torch", np.float64, f"d{key}")


@given(case=iwae_cases(num_samples=st.integers(2, 5)), seed=S.seeds)
def test_the_gradient_is_the_softmax_weighted_sum_of_the_single_sample_gradients(case, seed):
    """∇L_K = Σ_k w̃_k ∇log w_k, w̃ = softmax_k(log w_k): each log w_k and its gradient taken from a
    K = 1 copy of the model on ε_k alone (its loss is −log w_k), one image at a time."""
    config, _ = case
    model, x, eps = _model_and_batch(config, 1, seed)
    model.loss(x, noise=eps)
    model.zero_grad()
    model.backward()
    single = build("iwae", dtype=np.float64, **{**config, "num_samples": 1})
    single.load_state_dict(model.state_dict())
    log_weights, gradients = [], []
    for k in range(config["num_samples"]):
        log_weights.append(-single.loss(x, noise=np.ascontiguousarray(eps[:, k:k + 1]))["loss"])
        single.zero_grad()
        single.backward()
        gradients.append(_grads(single))  # of −log w_k
    normalized = np.exp(np.array(log_weights) - max(log_weights))
    normalized /= normalized.sum()
    for key, grad in _grads(model).items():
        expected = sum(w * g[key] for w, g in zip(normalized, gradients))
        scale = sum(w * np.abs(g[key]) for w, g in zip(normalized, gradients))
        assert_close(grad, expected, "torch", np.float64, f"d{key} as Σ w̃_k ∇", scale=scale)


@given(case=iwae_cases(), seed=S.seeds)
def test_the_bound_is_at_least_the_elbo_estimate_and_equals_the_evaluation_estimator(case, seed):
    """log (1/K) Σ w_k ≥ (1/K) Σ log w_k (Jensen), so loss ≤ recon + kl; and −loss is the sum over
    images of scratch.evaluation's importance-sampled log p̂_K(x) for the same ε (a separate
    implementation: chunked running log-sum-exp in float64 over (K, N, latent) noise)."""
    config, batch = case
    model, x, eps = _model_and_batch(config, batch, seed)
    parts = model.loss(x, noise=eps)
    assert parts["loss"] <= (parts["recon"] + parts["kl"]) * (1 + 1e-12) + 1e-12
    estimate = evaluation.importance_sampled_log_likelihood(model, x, eps=np.ascontiguousarray(eps.transpose(1, 0, 2)))
    assert_close(-parts["loss"], estimate.sum(), "torch", np.float64, "−loss against Σ log p̂_K(x)",
                 scale=np.abs(estimate).sum())


@given(n=st.integers(0, 4), k=st.integers(1, 6), dtype=S.dtypes, seed=S.seeds,
       magnitude=st.sampled_from([1.0, 1e2, 1e4]))
def test_the_log_sum_exp_step_matches_torch_and_is_finite_where_weights_underflow(n, k, dtype, seed, magnitude):
    """importance_weighted_bound_forward/backward against torch.logsumexp − log K and its autograd,
    with log weights down to −1e4 nats (every weight e^{log w} is 0 in both dtypes)."""
    rng = np.random.default_rng(seed)
    log_weights = (-magnitude * rng.random((n, k))).astype(dtype)
    cotangent = rng.uniform(0.5, 2.0, n).astype(dtype)
    bound, cache = F.importance_weighted_bound_forward(log_weights)
    grad = F.importance_weighted_bound_backward(cotangent, cache)
    tensor = torch.from_numpy(log_weights).requires_grad_()
    expected = torch.logsumexp(tensor, dim=1) - math.log(k)
    expected.backward(torch.from_numpy(cotangent))
    assert bound.dtype == grad.dtype == dtype and bound.shape == (n,) and grad.shape == (n, k)
    assert np.all(np.isfinite(bound)) and np.all(np.isfinite(grad))
    assert_close(bound, expected, "torch", dtype, "L_K", scale=np.abs(log_weights).max(axis=1, initial=0.0) + 1)
    assert_close(grad, tensor.grad, "torch", dtype, "dL_K/dlog w", scale=cotangent[:, None] if n else None)
    np.testing.assert_allclose(cache.sum(axis=1), 1.0, rtol=10 * np.finfo(dtype).eps * k)


@given(n=st.integers(1, 3), k=st.integers(1, 5), seed=S.seeds)
def test_the_log_sum_exp_step_matches_central_differences(n, k, seed):
    """Every element, float64, a random cotangent (scratch.gradcheck)."""
    rng = np.random.default_rng(seed)
    log_weights = rng.normal(0.0, 3.0, (n, k))
    result = gradcheck((F.importance_weighted_bound_forward, F.importance_weighted_bound_backward), log_weights, rng=rng,
                       **GRADCHECK)
    assert result.passed and result.elements_checked == n * k
