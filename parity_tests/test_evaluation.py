"""scratch.evaluation against torch and against its own definitions: the log densities, the
per-image −ELBO, the importance-sampled log-likelihood (a direct torch computation for the same
samples, chunking invariance, the K = 1 case, the bound property, extreme log-weights), the KL per
dimension and the active units."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Normal
from torch.nn import functional as TF

from parity_tests import strategies as S
from parity_tests.tolerances import assert_close
from scratch import evaluation as E
from scratch import functional as F
from scratch.models import build
from torch_impl.models import build as torch_build

VAE_NAMES = ["vae", "seed-vae"]
SMALL = dict(input_dim=12, hidden_dim=6, latent_dim=3)
# the key prefix of each family's last decoder layer and of the encoder layer that outputs μ
DECODER_OUTPUT = {"vae": "fc4", "seed-vae": "decoder.2"}
ENCODER_MEAN = {"vae": "fc21", "seed-vae": "encoder.2"}  # seed-vae: rows [:latent] of encoder.2 are μ


def _model(name, seed, dtype=np.float64, **config):
    return build(name, dtype=dtype, rng=seed, **{**SMALL, **config})


def _twin_of(model):
    twin = torch_build(model.name, **model.config).to(dtype=getattr(torch, model.dtype.name))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    return twin


def _images(rng, n, input_dim, soft, dtype=np.float64):
    return S.binary_targets(rng, (n, input_dim), soft).astype(dtype)


def _torch_log_likelihood(twin, x, eps):
    """Direct log p̂_K(x) = logsumexp_k(log w_k) − log K for all K samples at once, with
    torch.distributions for the Gaussians and torch's own clamped BCE for the Bernoulli.

    Returns (estimate (N,), scale (N,), log_weights (K, N)): scale is the largest Σ|term| of the
    log-weights, the magnitude the estimate's rounding errors are relative to (the terms cancel).
    """
    with torch.no_grad():
        x, eps = torch.from_numpy(x), torch.from_numpy(eps)  # (N, D), (K, N, L)
        mean, logvar = twin.encode(x)
        std = torch.exp(0.5 * logvar)
        z = mean + std * eps  # (K, N, L)
        probabilities = twin.decode(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:2], -1)
        log_px = -TF.binary_cross_entropy(probabilities, x.expand_as(probabilities), reduction="none").sum(-1)
        zero, one = torch.zeros((), dtype=z.dtype), torch.ones((), dtype=z.dtype)
        log_pz = Normal(zero, one).log_prob(z).sum(-1)
        log_qz = Normal(mean, std).log_prob(z).sum(-1)
        log_weights = log_px + log_pz - log_qz
        estimate = torch.logsumexp(log_weights, dim=0) - math.log(eps.shape[0])
        scale = (log_px.abs() + log_pz.abs() + log_qz.abs()).max(dim=0).values
    return estimate.numpy(), scale.numpy(), log_weights.numpy()


# ---------------------------------------------------------------------------- densities and −ELBO


@given(name=st.sampled_from(VAE_NAMES), n=S.batch_sizes, soft=st.booleans(), seed=S.seeds)
def test_negative_elbo_is_the_loss_image_by_image(name, n, soft, seed):
    rng = np.random.default_rng(seed)
    model = _model(name, rng)
    x = _images(rng, n, 12, soft)
    eps = model.draw_noise(x.shape)
    per_image = E.negative_elbo(model, x, eps)
    assert per_image.shape == (n,) and per_image.dtype == np.float64
    parts = model.loss(x, noise=eps)
    # the same kernels in a different summation order (per row, then over rows)
    assert_close(np.asarray(per_image.sum()), np.asarray(parts["recon"] + parts["kl"]), "kernel", np.float64,
                 "Σ −ELBO vs recon + kl")
    np.testing.assert_array_equal(E.negative_elbo(model, x.reshape(n, 1, 3, 4), eps), per_image)  # image-shaped
    with torch.no_grad():  # and image by image against the torch twin's BCE + KL
        flat, probabilities, mean, logvar = _twin_of(model)._posterior_forward(torch.from_numpy(x), torch.from_numpy(eps))
        expected = (TF.binary_cross_entropy(probabilities, flat, reduction="none").sum(1)
                    + 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(1))
    assert_close(per_image, expected, "torch", np.float64, "−ELBO per image")


@given(shape=st.tuples(S.batch_sizes, S.features), soft=st.booleans(), seed=S.seeds)
def test_log_bernoulli_matches_torch_bce_with_its_clamp(shape, soft, seed):
    rng = np.random.default_rng(seed)
    x = S.binary_targets(rng, shape, soft)
    # probabilities anywhere in [0, 1], with exact 0s and 1s and values whose log is below −100,
    # where the clamp decides the result
    p = rng.random(shape) ** rng.choice([1.0, 60.0], size=shape)
    p = np.where(rng.random(shape) < 0.15, np.round(p), p)
    p = np.where(rng.random(shape) < 0.1, 1e-60, p)
    actual = E.log_bernoulli(x, p)
    expected = -TF.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(x), reduction="none").sum(1)
    assert actual.shape == (shape[0],) and np.all(np.isfinite(actual))
    assert_close(actual, expected, "torch", np.float64, "log_bernoulli")
    assert_close(np.asarray(-actual.sum()), F.bce_forward(p, x, "sum")[0], "kernel", np.float64, "−Σ log_bernoulli vs BCE")


@given(shape=st.tuples(S.batch_sizes, S.features), samples=st.integers(1, 3), seed=S.seeds)
def test_log_normal_and_log_standard_normal_match_torch_distributions(shape, samples, seed):
    rng = np.random.default_rng(seed)
    mean, logvar = 2 * rng.standard_normal(shape), 3 * rng.standard_normal(shape)
    z = 3 * rng.standard_normal((samples, *shape))  # (K, N, L) broadcast against (N, L)
    tz, tmean, tstd = torch.from_numpy(z), torch.from_numpy(mean), torch.from_numpy(np.exp(0.5 * logvar))
    # the terms cancel (lv and log 2π against the square): errors are relative to their size
    scale = 0.5 * ((z - mean) ** 2 * np.exp(-logvar) + np.abs(logvar) + math.log(2 * math.pi)).sum(-1)
    assert_close(E.log_normal(z, mean, logvar), Normal(tmean, tstd).log_prob(tz).sum(-1), "torch", np.float64,
                 "log_normal", scale=scale)
    assert_close(E.log_normal(z[0], mean, logvar), Normal(tmean, tstd).log_prob(tz[0]).sum(-1), "torch", np.float64,
                 "log_normal (N, L)", scale=scale[0])
    standard = Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    assert_close(E.log_standard_normal(z), standard.log_prob(tz).sum(-1), "torch", np.float64, "log_standard_normal")


def test_log_normal_with_extreme_logvar_stays_finite():
    """e^{−lv} is the only exponential: lv = ±600 (e^{±600} is near float64's limit) is fine."""
    z, mean, logvar = np.array([[1e-130, 1e130]]), np.zeros((1, 2)), np.array([[-600.0, 600.0]])
    expected = -0.5 * ((1e-130 ** 2) * math.exp(600) - 600 + (1e130 ** 2) * math.exp(-600) + 600 + 2 * math.log(2 * math.pi))
    assert_close(E.log_normal(z, mean, logvar), np.array([expected]), "kernel", np.float64, "log_normal")


# ---------------------------------------------------------------------------- importance sampling


@st.composite
def sampling_cases(draw):
    """(name, N, K, batch_size, chunk): batch sizes and chunks that divide N and K or do not,
    larger than N or K, and 1."""
    n, samples = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    return (draw(st.sampled_from(VAE_NAMES)), n, samples, draw(st.integers(1, n + 2)), draw(st.integers(1, samples + 2)))


FIXED_CASES = [("vae", 7, 10, 3, 4), ("seed-vae", 7, 10, 3, 4), ("vae", 5, 1, 5, 1), ("seed-vae", 8, 16, 8, 16),
               ("vae", 1, 5, 2, 7), ("seed-vae", 11, 13, 4, 5)]


def _check_against_torch(case, dtype, soft, seed):
    name, n, samples, batch_size, chunk = case
    rng = np.random.default_rng(seed)
    model = _model(name, rng, dtype=dtype)
    x = _images(rng, n, 12, soft, dtype)
    eps = rng.standard_normal((samples, n, 3)).astype(dtype)
    actual = E.importance_sampled_log_likelihood(model, x, rng=None, batch_size=batch_size, chunk=chunk, eps=eps)
    assert actual.shape == (n,) and actual.dtype == np.float64
    expected, scale, _ = _torch_log_likelihood(_twin_of(model), x, eps)
    assert_close(actual, expected, "torch", dtype, f"log p̂_{samples}(x), batches of {batch_size}, chunks of {chunk}",
                 scale=scale)


@given(case=sampling_cases(), dtype=S.dtypes, soft=st.booleans(), seed=S.seeds)
def test_importance_sampled_log_likelihood_matches_a_direct_torch_computation(case, dtype, soft, seed):
    _check_against_torch(case, dtype, soft, seed)


@pytest.mark.parametrize("case", FIXED_CASES)
def test_importance_sampled_log_likelihood_matches_torch_on_fixed_chunkings(case):
    _check_against_torch(case, np.float64, soft=False, seed=sum(case[1:]))


@given(case=sampling_cases(), soft=st.booleans(), seed=S.seeds)
def test_importance_sampled_log_likelihood_does_not_depend_on_chunking(case, soft, seed):
    name, n, samples, batch_size, chunk = case
    rng = np.random.default_rng(seed)
    model = _model(name, rng)
    x = _images(rng, n, 12, soft)
    eps = rng.standard_normal((samples, n, 3))
    whole = E.importance_sampled_log_likelihood(model, x, batch_size=n, chunk=samples, eps=eps)
    chunked = E.importance_sampled_log_likelihood(model, x, batch_size=batch_size, chunk=chunk, eps=eps)
    # the same terms; only the running log-sum-exp's merge order and BLAS's row blocking differ
    assert_close(chunked, whole, "kernel", np.float64, f"batches of {batch_size}, chunks of {chunk} vs one block")
    image_shaped = E.importance_sampled_log_likelihood(model, x.reshape(n, 1, 3, 4), batch_size=batch_size,
                                                       chunk=chunk, eps=eps)
    np.testing.assert_array_equal(image_shaped, chunked)


def test_drawn_noise_is_reproducible_and_is_the_eps_it_stands_for():
    model = _model("vae", 0)
    x = _images(np.random.default_rng(1), 6, 12, soft=True)
    drawn = E.importance_sampled_log_likelihood(model, x, 20, rng=5, batch_size=6, chunk=20)
    np.testing.assert_array_equal(drawn, E.importance_sampled_log_likelihood(model, x, 20, rng=5, batch_size=6, chunk=20))
    # one batch and one chunk: ε is the generator's first (K, N, L) block
    eps = np.random.default_rng(5).standard_normal((20, 6, 3))
    np.testing.assert_array_equal(drawn, E.importance_sampled_log_likelihood(model, x, eps=eps, batch_size=6, chunk=20))
    nll, error = E.importance_sampled_nll(model, x, eps=eps)
    assert nll == pytest.approx(-drawn.mean(), rel=1e-15)
    assert error == pytest.approx(np.std(drawn, ddof=1) / math.sqrt(6), rel=1e-12)


@pytest.mark.parametrize("name", VAE_NAMES)
def test_one_sample_is_the_single_sample_elbo(name):
    """log p̂_1(x) = log p(x|z) + log p(z) − log q(z|x) for the same ε: the ELBO with a one-sample
    (Monte Carlo) KL. ``negative_elbo`` uses the analytic KL instead, like the loss, so the two
    differ, image by image, by exactly KL − (log q(z|x) − log p(z)), whose mean over ε is 0."""
    rng = np.random.default_rng(3)
    model = _model(name, rng)
    x = _images(rng, 40, 12, soft=False)
    eps = rng.standard_normal((1, 40, 3))
    one = E.importance_sampled_log_likelihood(model, x, eps=eps)
    mean, logvar = model.encode(x)
    z = mean + np.exp(0.5 * logvar) * eps[0]
    log_px, log_pz, log_qz = E.log_bernoulli(x, model.decode(z)), E.log_standard_normal(z), E.log_normal(z, mean, logvar)
    scale = np.abs(log_px) + np.abs(log_pz) + np.abs(log_qz)
    assert_close(one, log_px + log_pz - log_qz, "kernel", np.float64, "log p̂_1 vs one-sample ELBO", scale=scale)
    kl = F.gaussian_kl_forward(mean, logvar, "none")[0].sum(1)
    assert_close(one + E.negative_elbo(model, x, eps[0]), kl - (log_qz - log_pz), "kernel", np.float64,
                 "log p̂_1 + (−ELBO) vs KL − one-sample KL", scale=scale + kl)

    # Over many ε the two agree in expectation: 500 draws for each of the 40 images (repeated as
    # 20,000 rows). The mean difference is within 5 standard errors; with this fixed seed the
    # test is deterministic, and a wrong log q or log p(z) (a missing ½, log 2π or lv) shifts the
    # mean by ≥ 0.9 nats, hundreds of standard errors.
    repeated = np.tile(x, (500, 1))
    eps = rng.standard_normal((1, len(repeated), 3))
    difference = E.importance_sampled_log_likelihood(model, repeated, eps=eps, batch_size=5000) \
        + E.negative_elbo(model, repeated, eps[0])
    assert abs(difference.mean()) < 5 * difference.std(ddof=1) / math.sqrt(difference.size)


@pytest.mark.parametrize("name", VAE_NAMES)
def test_more_samples_tighten_the_bound_on_average(name):
    """Burda et al.'s ELBO = E[log p̂_1] ≤ E[log p̂_8] ≤ E[log p̂_64] ≤ log p(x), in expectation.

    Only the expectation is ordered (one image's log p̂_64 can fall below its ELBO), so the
    test compares averages over images, with independent draws for each K. The seed is fixed, so
    the test is deterministic; and it is not a lucky seed: with these small models the mean gaps
    are many standard errors (of the mean over images) wide, so a re-seeded run would fail with
    negligible probability. Measured with seed 0: log p̂_64 − ELBO over 200 images, 0.37–0.43 nats
    with standard error 0.025–0.028 (13+ SE); log p̂_8 − log p̂_1 and log p̂_64 − log p̂_8 over
    2000 images, 0.29–0.37 (13+ SE) and 0.06–0.08 nats (6+ SE).
    """
    rng = np.random.default_rng(0)
    model = _model(name, rng)
    x = _images(rng, 2000, 12, soft=False)

    few = x[:200]
    elbo = -E.negative_elbo(model, few, rng.standard_normal((200, 3)))
    estimate = E.importance_sampled_log_likelihood(model, few, 64, rng=rng, chunk=16)
    assert np.all(np.isfinite(estimate))
    gap = estimate - elbo
    assert gap.mean() >= 5 * gap.std(ddof=1) / math.sqrt(200) > 0  # the mean over images: E[log p̂_64] ≥ ELBO

    estimates = [E.importance_sampled_log_likelihood(model, x, k, rng=rng, chunk=16) for k in (1, 8, 64)]
    for fewer, more in zip(estimates, estimates[1:]):
        gap = more - fewer
        assert gap.mean() >= 4 * gap.std(ddof=1) / math.sqrt(len(x)) > 0


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("name", VAE_NAMES)
def test_extreme_log_weights_are_summed_stably(name, sign):
    """The decoder's last layer ×50 with its bias shifted by ±50: sigmoids saturate, most pixels
    are confidently wrong, and log p(x|z) is −10³ to −10⁴ nats (with +50 many p round to exactly 1
    and hit the −100 clamp). exp(log w) underflows to 0 for every sample, so a naive log-mean-exp
    is −inf; the running log-sum-exp must still match torch's logsumexp."""
    rng = np.random.default_rng(7)
    model = _model(name, rng, input_dim=240)
    state = model.state_dict()
    key = DECODER_OUTPUT[name]
    state[f"{key}.weight"] *= 50
    state[f"{key}.bias"] = 50 * state[f"{key}.bias"] + sign * 50
    model.load_state_dict(state)
    x = _images(rng, 9, 240, soft=False)
    eps = rng.standard_normal((16, 9, 3))
    actual = E.importance_sampled_log_likelihood(model, x, batch_size=4, chunk=5, eps=eps)
    expected, scale, log_weights = _torch_log_likelihood(_twin_of(model), x, eps)
    assert np.all(np.isfinite(actual)) and np.all(actual < -1000)
    with np.errstate(divide="ignore"):
        naive = np.log(np.mean(np.exp(log_weights), axis=0))  # exp(−10³) = 0 in float64
    assert np.all(naive == -np.inf)
    assert_close(actual, expected, "torch", np.float64, f"log p̂ with bias {sign:+d}·50", scale=scale)


# ---------------------------------------------------------------------------- KL and active units


@pytest.mark.parametrize("name", VAE_NAMES)
def test_zeroed_mean_units_are_inactive_and_the_kl_per_dimension_sums_to_the_kl(name):
    rng = np.random.default_rng(11)
    model = _model(name, rng, latent_dim=4)
    state, key = model.state_dict(), ENCODER_MEAN[name]
    dead, live = [1, 3], [0, 2]
    state[f"{key}.weight"][dead] = 0  # μ_u(x) = 0 for every x: the unit encodes nothing
    state[f"{key}.bias"][dead] = 0
    state[f"{key}.weight"][live] *= 20  # μ_u(x) moves with x by far more than the 0.01 threshold
    model.load_state_dict(state)
    x = _images(rng, 301, 12, soft=True)

    count, variances = E.active_units(model, x, batch_size=37)
    assert count == len(live) and variances.shape == (4,) and variances.dtype == np.float64
    assert np.all(variances[dead] == 0) and np.all(variances[live] > 0.01)
    assert_close(variances, np.var(model.encode(x)[0], axis=0), "kernel", np.float64, "Var_x μ(x)")
    assert E.active_units(model, x, threshold=float(variances.max()))[0] == 0  # strictly greater than
    np.testing.assert_allclose(E.active_units(model, x, batch_size=1000)[1], variances, rtol=1e-13, atol=0)

    per_dimension = E.kl_per_dimension(model, x, batch_size=37)
    assert per_dimension.shape == (4,)
    kl = model.loss(x, noise=model.draw_noise(x.shape))["kl"] / len(x)
    assert_close(np.asarray(per_dimension.sum()), np.asarray(kl), "kernel", np.float64, "Σ_u KL_u vs KL per image")
    assert_close(per_dimension, model.kl_per_dimension(x), "kernel", np.float64, "vs the model's own")
    assert_close(per_dimension, E.kl_per_dimension(model, x, batch_size=1000), "kernel", np.float64, "batching")


# ---------------------------------------------------------------------------- boundaries


def test_bad_arguments_are_refused_with_a_clear_error():
    model = _model("vae", 0)
    x = _images(np.random.default_rng(0), 4, 12, soft=True)
    with pytest.raises(ValueError, match=r"eps must have shape \(5, 4, 3\)"):
        E.importance_sampled_log_likelihood(model, x, 5, eps=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"eps must have shape \(4, 3\)"):
        E.negative_elbo(model, x, np.zeros((4, 2)))
    with pytest.raises(TypeError, match="dtype float32 but the model is float64"):
        E.importance_sampled_log_likelihood(model, x, eps=np.zeros((2, 4, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="images have dtype float32"):
        E.kl_per_dimension(model, x.astype(np.float32))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        E.active_units(model, x, batch_size=0)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        E.importance_sampled_log_likelihood(model, x, 3, chunk=0)
    with pytest.raises(ValueError, match=r"eps must be a \(K, N, latent_dim\) NumPy array"):
        E.importance_sampled_log_likelihood(model, x, eps=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="N >= 1"):
        E.importance_sampled_nll(model, x[:0], 3)


def test_scratch_evaluation_does_not_import_torch():
    code = "import sys, scratch.evaluation; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
