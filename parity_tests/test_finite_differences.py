"""Oracle 2: every op's backward against float64 central differences of its own forward.

Each op is checked twice: the functional pair (the math) and the Module (the plumbing that
accumulates parameter gradients). Every element is perturbed; the cotangent is random.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK
from scratch import functional as F
from scratch import nn
from scratch.gradcheck import gradcheck


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


@given(case=S.flatten_cases(), seed=S.seeds)
def test_flatten(case, seed):
    shape, start, end = case
    rng = np.random.default_rng(seed)
    gradcheck(nn.Flatten(start, end), rng.standard_normal(shape), rng=rng, **GRADCHECK)


@given(case=S.unflatten_cases(), seed=S.seeds)
def test_unflatten(case, seed):
    shape, dim, sizes = case
    rng = np.random.default_rng(seed)
    gradcheck(nn.Unflatten(dim, sizes), rng.standard_normal(shape), rng=rng, **GRADCHECK)


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


@given(batch=S.batch_sizes, widths=st.lists(S.features, min_size=2, max_size=4), seed=S.seeds)
def test_sequential(batch, widths, seed):
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out, rng=rng, dtype=np.float64), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Sigmoid())
    gradcheck(model, rng.standard_normal((batch, widths[0])), rng=rng, **GRADCHECK)


@given(batch=S.batch_sizes, latent=S.features, seed=S.seeds)
def test_reparameterize(batch, latent, seed):
    """z = μ + exp(½ lv)·ε: gradients for μ and lv (ε is an input held fixed, as in training)."""
    rng = np.random.default_rng(seed)
    mean, logvar, eps = (rng.standard_normal((batch, latent)) for _ in range(3))
    result = gradcheck((F.reparameterize_forward, F.reparameterize_backward), mean, logvar, eps, wrt=[0, 1],
                       rng=rng, **GRADCHECK)
    assert result.elements_checked == 2 * mean.size


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
