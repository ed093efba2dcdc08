"""wae-mmd (Tolstikhin et al. 2018) and its MMD against four oracles. Derivations: docs/wae.md.

(1) torch: the loss parts, every parameter gradient and dL/dx of the model against its twin
(``torch_impl/models/wae.py``, autograd), float64 and float32, on small drawn configurations of
both kernels; ``mmd_forward``/``mmd_backward`` alone against the twin's ``mmd`` under autograd,
both sample sets' gradients, with coincident points (distance 0) and n = 2. (2) float64 central
differences with a random cotangent: of the MMD w.r.t. every element of z_q and z_p, of the whole
model loss w.r.t. every parameter, and of dL/dx. (3) no Numba kernel: the MMD is NumPy (an
N x N problem with N the batch). (4) the estimator against a brute-force double loop of the
U-statistic. Then a 30-step Adam run on MNIST against the twin (slow), and the refusals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.mnist import mnist_train_images
from parity_tests.tolerances import GRADCHECK, assert_close, assert_close_in_norm
from scratch import optim
from scratch.functional.mmd import IMQ_SCALES, mmd_backward, mmd_forward
from scratch.gradcheck import gradcheck, gradcheck_model
from scratch.models import model_names
from scratch.models.wae import WAEMMD
from scratch.nn.inplace import InplaceModificationError
from scratch.testing import assert_model_matches_torch
from torch_impl.models import wae as torch_wae

# This file's parity family (test_registry.py holds the families' union equal to the registry)
NAMES = list(model_names(family="wasserstein"))
KEYS = [f"{layer}.{kind}" for layer in ("fc1", "fc2", "fc3", "fc4") for kind in ("weight", "bias")]
DEFAULT_PARAMETERS = 784 * 400 + 400 + 400 * 8 + 8 + 8 * 400 + 400 + 400 * 784 + 784  # 635,192
TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}

kernels = st.sampled_from(["imq", "rbf"])


def build(dtype=np.float32, rng=None, **config) -> WAEMMD:
    """As ``scratch.models.build`` would (flat parameters), without the registry."""
    return WAEMMD(**config, rng=rng, dtype=dtype).flatten_parameters()


def twin_of(model) -> torch.nn.Module:
    """The torch twin built from the model's configuration, holding its weights (strict)."""
    twin = torch_wae.WAEMMD(**model.config).to(TORCH_DTYPES[model.dtype])
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}, strict=True)
    return twin


@st.composite
def wae_cases(draw):
    """A small configuration of either kernel, and a batch shape (flat or image-shaped)."""
    config = dict(input_dim=draw(st.integers(1, 12)), hidden_dim=draw(st.integers(1, 8)),
                  latent_dim=draw(st.integers(1, 4)), reg_weight=draw(st.sampled_from([0.0, 1.0, 10.0])),
                  kernel=draw(kernels))
    batch = draw(st.integers(2, 5))
    shape = (batch, 1, 1, config["input_dim"]) if draw(st.booleans()) else (batch, config["input_dim"])
    return config, shape


# -- brute force: the U-statistic, one pair at a time ------------------------------------------


def brute_force_terms(z_q, z_p, kernel, scales=None, prior_variance=1.0) -> tuple[float, float, float]:
    """(1/(n(n−1)) Σ_{i≠j} k(q_i, q_j), 1/(m(m−1)) Σ_{i≠j} k(p_i, p_j), 2/(nm) Σ_{i,j} k(q_i, p_j)) by
    Python loops over the pairs, in float64; MMD² is the first two minus the third."""
    z_q, z_p = np.asarray(z_q, np.float64), np.asarray(z_p, np.float64)
    n, d = z_q.shape
    m = len(z_p)
    scales = (IMQ_SCALES if kernel == "imq" else (1.0,)) if scales is None else scales

    def k(x, y):
        distance = sum((float(a) - float(b)) ** 2 for a, b in zip(x, y))
        total = 0.0
        for s in scales:
            c = s * 2.0 * d * prior_variance
            total += c / (c + distance) if kernel == "imq" else math.exp(-distance / c)
        return total

    within_q = sum(k(z_q[i], z_q[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    within_p = sum(k(z_p[i], z_p[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = 2.0 * sum(k(z_q[i], z_p[j]) for i in range(n) for j in range(m)) / (n * m)
    return within_q, within_p, cross


def samples(rng, n, m, d, coincident: bool, dtype=np.float64):
    """z_q (n, d), z_p (m, d); ``coincident``: z_q[1] = z_q[0] and z_p[0] = z_q[0] (distance 0
    within a set and across the sets) and z_p[-1] = z_p[-2] when m > 2."""
    z_q = rng.standard_normal((n, d))
    z_p = rng.standard_normal((m, d))
    if coincident:
        z_q[1] = z_q[0]
        z_p[0] = z_q[0]
        if m > 2:
            z_p[-1] = z_p[-2]
    return z_q.astype(dtype), z_p.astype(dtype)


# -- (4) the estimator ---------------------------------------------------------------------------


@given(n=st.integers(2, 6), m=st.integers(2, 6), d=st.integers(1, 4), kernel=kernels, coincident=st.booleans(),
       scales=st.sampled_from([None, (0.5, 3.0)]), seed=S.seeds)
def test_estimator_is_the_u_statistic_of_a_double_loop(n, m, d, kernel, coincident, scales, seed):
    z_q, z_p = samples(np.random.default_rng(seed), n, m, d, coincident)
    value, _ = mmd_forward(z_q, z_p, kernel, scales)
    within_q, within_p, cross = brute_force_terms(z_q, z_p, kernel, scales)
    assert value.shape == () and value.dtype == np.float64
    assert float(value) == pytest.approx(within_q + within_p - cross, rel=1e-12, abs=1e-13 * (within_q + within_p + cross))


def test_estimator_by_hand_for_two_points_each():
    """n = m = 2 in one dimension, IMQ with one bandwidth C = 2·d = 2: every term written out."""
    z_q, z_p = np.array([[0.0], [1.0]]), np.array([[0.0], [3.0]])
    k = lambda a, b: 2.0 / (2.0 + (a - b) ** 2)  # noqa: E731
    expected = (2 * k(0, 1)) / 2 + (2 * k(0, 3)) / 2 - 2 * (k(0, 0) + k(0, 3) + k(1, 0) + k(1, 3)) / 4
    value, _ = mmd_forward(z_q, z_p, "imq", scales=(1.0,))
    assert float(value) == pytest.approx(expected, rel=1e-15)


def test_identical_sample_sets_give_a_small_but_not_zero_estimate():
    """The U-statistic is unbiased, not a distance: MMD²(Q, Q) estimated from one set used twice
    is 2/(n(n−1)) Σ_{i≠j} k − 2/n² (Σ_{i≠j} k + n·k(0)), negative for n > 1 unless all points coincide."""
    z = np.random.default_rng(0).standard_normal((6, 3))
    value, _ = mmd_forward(z, z.copy(), "imq")
    within, _, cross = brute_force_terms(z, z, "imq")
    assert float(value) == pytest.approx(2 * within - cross, rel=1e-12)
    assert float(value) < 0


# -- (1) the functional against torch autograd -------------------------------------------------


def torch_mmd_and_grads(z_q, z_p, kernel, scales, grad_output):
    """The twin's MMD² and its gradients for both sets (autograd, of grad_output·MMD²)."""
    q = torch.from_numpy(z_q.copy()).requires_grad_(True)
    p = torch.from_numpy(z_p.copy()).requires_grad_(True)
    value = torch_wae.mmd(q, p, kernel, scales)
    grad_q, grad_p = torch.autograd.grad(value * grad_output, (q, p))
    return value.detach(), grad_q, grad_p


@given(n=st.integers(2, 6), m=st.integers(2, 6), d=st.integers(1, 4), kernel=kernels, coincident=st.booleans(),
       scales=st.sampled_from([None, (0.5, 3.0)]), dtype=S.dtypes, seed=S.seeds)
def test_mmd_and_both_gradients_match_torch_autograd(n, m, d, kernel, coincident, scales, dtype, seed):
    rng = np.random.default_rng(seed)
    z_q, z_p = samples(rng, n, m, d, coincident, dtype)
    grad_output = float(rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0]))  # a random cotangent
    value, cache = mmd_forward(z_q, z_p, kernel, scales)
    grad_q, grad_p = mmd_backward(grad_output, cache)
    expected, expected_q, expected_p = torch_mmd_and_grads(z_q, z_p, kernel, scales, grad_output)
    assert value.dtype == dtype and grad_q.dtype == dtype and grad_p.dtype == dtype
    assert grad_q.shape == z_q.shape and grad_p.shape == z_p.shape
    # MMD² is a difference of means of size ~1 (IMQ: up to 7 each): rounding is relative to them
    assert_close(value, expected, "torch", dtype, "MMD²", scale=sum(brute_force_terms(z_q, z_p, kernel, scales)))
    assert_close(grad_q, expected_q, "torch", dtype, "dMMD²/dz_q")
    assert_close(grad_p, expected_p, "torch", dtype, "dMMD²/dz_p")


def test_coincident_points_and_two_samples_match_torch_exactly_where_they_should():
    """n = m = 2, every point the same: every distance is 0, so each kernel value is k(0) = Σ_s 1
    and the estimate is 7 + 7 − 2·7 = 0 exactly (IMQ), with zero gradients; the expanded
    ‖x‖² − 2x·y + ‖y‖² would leave rounding residue there for codes far from the origin."""
    point = np.array([[1e4 + 0.1, -3e3, 0.7]])
    z = np.repeat(point, 2, axis=0)
    for kernel in ("imq", "rbf"):
        value, cache = mmd_forward(z, z.copy(), kernel)
        grad_q, grad_p = mmd_backward(1.0, cache)
        assert float(value) == 0.0
        assert not grad_q.any() and not grad_p.any()
        expected, expected_q, expected_p = torch_mmd_and_grads(z, z.copy(), kernel, None, 1.0)
        assert float(expected) == 0.0 and not expected_q.any() and not expected_p.any()


def test_prior_samples_gradient_is_what_makes_the_mmd_translation_invariant():
    """Shifting both sets by one vector leaves MMD² unchanged, so Σ_i dq_i + Σ_j dp_j = 0: the
    prior samples' gradient is the other half of the codes' (docs/wae.md). And the estimator is
    symmetric, MMD²(q, p) = MMD²(p, q), with the gradients swapped."""
    rng = np.random.default_rng(3)
    z_q, z_p = rng.standard_normal((5, 3)) + 0.5, rng.standard_normal((4, 3))
    for kernel in ("imq", "rbf"):
        value, cache = mmd_forward(z_q, z_p, kernel)
        grad_q, grad_p = mmd_backward(1.0, cache)
        total = grad_q.sum(axis=0) + grad_p.sum(axis=0)
        np.testing.assert_allclose(total, 0.0, atol=1e-14 * (np.abs(grad_q).sum() + np.abs(grad_p).sum()))
        assert np.abs(grad_p).max() > 1e-3  # not trivially zero
        swapped, swapped_cache = mmd_forward(z_p, z_q, kernel)
        swapped_p, swapped_q = mmd_backward(1.0, swapped_cache)
        assert float(swapped) == pytest.approx(float(value), rel=1e-13)
        np.testing.assert_allclose(swapped_q, grad_q, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(swapped_p, grad_p, rtol=1e-12, atol=1e-15)


# -- (2) central differences -------------------------------------------------------------------


@given(n=st.integers(2, 5), m=st.integers(2, 5), d=st.integers(1, 4), kernel=kernels, coincident=st.booleans(),
       seed=S.seeds)
def test_mmd_matches_finite_differences_in_both_sample_sets(n, m, d, kernel, coincident, seed):
    """Every element of z_q and of z_p, with gradcheck's random cotangent; d = 0 included
    (the kernels are smooth functions of ‖x − y‖², which is smooth at 0)."""
    rng = np.random.default_rng(seed)
    z_q, z_p = samples(rng, n, m, d, coincident)
    result = gradcheck((mmd_forward, mmd_backward), z_q, z_p, kernel, rng=rng, **GRADCHECK)
    assert result.elements_checked == z_q.size + z_p.size


def _relus_clear_of_zero(model, x, margin=1e-4) -> bool:
    """Whether every ReLU's pre-activation (fc1's, fc3's) is at least ``margin`` from 0 for this
    batch, so that central differences (steps of 1e-6) never straddle a kink."""
    flat = x.reshape(len(x), -1)
    pre1 = flat @ model.fc1.weight.data.T + model.fc1.bias.data
    codes = np.maximum(pre1, 0) @ model.fc2.weight.data.T + model.fc2.bias.data
    pre3 = codes @ model.fc3.weight.data.T + model.fc3.bias.data
    return bool(np.abs(pre1).min() > margin and np.abs(pre3).min() > margin)


@given(case=wae_cases(), seed=S.seeds)
def test_whole_loss_matches_finite_differences(case, seed):
    """Every parameter element, through the reconstruction and the MMD together."""
    config, shape = case
    rng = np.random.default_rng(seed)
    model = build(np.float64, rng, **config)
    x = S.probabilities(rng, shape)
    assume(_relus_clear_of_zero(model, x))
    result = gradcheck_model(model, x, model.draw_noise(x.shape), rng=rng, **GRADCHECK)
    assert result.elements_checked == model.num_parameters()


@given(case=wae_cases(), seed=S.seeds)
def test_input_gradient_matches_finite_differences(case, seed):
    """dL/dx with a random cotangent. ``backward`` returns the gradient through the model with the
    BCE's target held fixed; x is also that target, whose own term −g(log x̂ − log(1 − x̂))/N is
    added here so that the sum is what central differences of ``loss(x)`` see."""
    config, shape = case
    rng = np.random.default_rng(seed)
    model = build(np.float64, rng, **config)
    x = S.probabilities(rng, shape)
    assume(_relus_clear_of_zero(model, x))
    prior = model.draw_noise(x.shape)

    def forward(x):
        return np.asarray(model.loss(x, noise=prior)["loss"]), x

    def backward(grad_output, x):
        model.zero_grad()
        through_model = model.backward(grad_output)
        reconstruction = model.reconstruct(x)
        as_target = -(np.log(reconstruction) - np.log1p(-reconstruction)) / x.shape[0]
        return through_model + float(grad_output) * as_target

    result = gradcheck((forward, backward), x, rng=rng, **GRADCHECK)
    assert result.elements_checked == x.size


# -- (1) the model against its twin ------------------------------------------------------------


def test_parameter_count_keys_and_shapes_match_torch():
    model, twin = build(), torch_wae.WAEMMD()
    assert model.num_parameters() == DEFAULT_PARAMETERS == sum(p.numel() for p in twin.parameters())
    assert list(model.state_dict()) == list(twin.state_dict()) == KEYS
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert model.config == twin.config == dict(input_dim=784, hidden_dim=400, latent_dim=8, reg_weight=10.0,
                                               kernel="imq")
    assert model.name == twin.name == "wae-mmd" and model.loss_reduction == twin.loss_reduction == "mean"


@given(case=wae_cases(), dtype=S.dtypes, seed=S.seeds)
def test_loss_parts_and_every_gradient_match_torch(case, dtype, seed):
    config, shape = case
    rng = np.random.default_rng(seed)
    model = build(dtype, rng, **config)
    twin = twin_of(model)
    x = rng.random(shape).astype(dtype)
    prior = model.draw_noise(x.shape)
    # MMD² is a difference of means of size ~1: its rounding is relative to them, not to the result
    codes = model.encode(x)
    magnitude = sum(brute_force_terms(codes, prior, config["kernel"]))
    recon = model.loss(x, noise=prior)["recon"]
    scale = {"mmd": magnitude, "loss": recon + config["reg_weight"] * magnitude}
    result = assert_model_matches_torch(model, twin, x, prior, input_grad=True, what="wae-mmd", scale=scale)
    assert set(result.max_rel_error) == {"loss", "recon", "mmd", "grad_input"} | {f"grad {key!r}" for key in KEYS}
    parts = model.loss(x, noise=prior)
    assert set(parts) == {"loss", "recon", "mmd"} and all(isinstance(v, float) for v in parts.values())
    assert parts["loss"] == pytest.approx(parts["recon"] + config["reg_weight"] * parts["mmd"], rel=1e-12)
    with torch.no_grad():
        tx, tprior = torch.from_numpy(x), torch.from_numpy(prior)
        assert_close(model.reconstruct(x), twin.reconstruct(tx), "torch", dtype, "reconstruction")
        assert_close(model.encode(x), twin.encode(tx), "torch", dtype, "code")
        assert_close(model.sample(len(prior), prior), twin.sample(len(prior), tprior), "torch", dtype, "samples")
    assert model.reconstruct(x).shape == x.shape and codes.shape == (shape[0], config["latent_dim"])


def test_loss_is_recon_per_image_plus_weighted_mmd_of_the_codes():
    """What the parts are: recon the BCE summed over pixels and averaged over the batch (nats per
    image), mmd the estimator between the codes and the given prior samples."""
    rng = np.random.default_rng(0)
    model = build(np.float64, 0, input_dim=6, hidden_dim=4, latent_dim=2, reg_weight=3.0)
    x = (rng.random((4, 6)) > 0.5).astype(np.float64)
    prior = model.draw_noise(x.shape)
    parts = model.loss(x, noise=prior)
    probabilities = model.reconstruct(x)
    bce = -(x * np.log(probabilities) + (1 - x) * np.log1p(-probabilities)).sum() / 4
    assert parts["recon"] == pytest.approx(bce, rel=1e-12)
    assert parts["mmd"] == pytest.approx(float(mmd_forward(model.encode(x), prior)[0]), rel=1e-14)
    assert parts["loss"] == pytest.approx(bce + 3.0 * parts["mmd"], rel=1e-12)


def test_prior_samples_come_from_the_model_generator_unless_given():
    x = np.random.default_rng(1).random((3, 784)).astype(np.float32)
    assert build(rng=7).loss(x)["mmd"] == build(rng=7).loss(x)["mmd"]
    model = build(rng=7)
    assert model.loss(x)["mmd"] != model.loss(x)["mmd"]  # fresh prior samples on every call
    assert model.draw_noise(x.shape).shape == (3, 8)
    assert WAEMMD.noise_for(model.config, (5, 1, 28, 28), np.random.default_rng(0), np.float64).shape == (5, 8)
    prior = model.draw_noise(x.shape)
    assert model.loss(x, noise=prior)["mmd"] == model.loss(x, noise=prior)["mmd"]
    assert model.sample(4).shape == (4, 784)
    np.testing.assert_array_equal(model.sample(2, prior[:2]), model.decode(prior[:2]))


def test_lambda_zero_is_the_plain_autoencoder_gradient():
    """λ = 0: the MMD is still reported but adds nothing to the loss or the gradients."""
    rng = np.random.default_rng(2)
    x = rng.random((4, 10))
    grads = {}
    for weight in (0.0, 10.0):
        model = build(np.float64, 0, input_dim=10, hidden_dim=5, latent_dim=3, reg_weight=weight)
        parts = model.loss(x, noise=np.random.default_rng(5).standard_normal((4, 3)))  # the same z_p for both
        model.zero_grad()
        model.backward()
        grads[weight] = {k: p.grad.copy() for k, p in model.named_parameters()}
        assert parts["mmd"] != 0 and parts["loss"] == pytest.approx(parts["recon"] + weight * parts["mmd"], rel=1e-14)
    assert grads[0.0]["fc1.weight"].any()
    np.testing.assert_array_equal(grads[0.0]["fc4.weight"], grads[10.0]["fc4.weight"])  # the decoder sees no MMD
    assert not np.allclose(grads[0.0]["fc2.weight"], grads[10.0]["fc2.weight"])  # the encoder does


# -- a training run ----------------------------------------------------------------------------

STEPS, BATCH = 30, 128


@pytest.mark.slow  # 30 Adam steps on real MNIST: `python -m pytest -m slow`
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_adam_training_run_tracks_torch(name, dtype):
    """30 Adam steps (lr 1e-3, weight_decay 1e-5, batch 128) on binarized MNIST from identical
    weights, batches and prior samples: every loss part at every step within the table's
    "training" row; every final weight too in float64, each weight tensor in norm in float32."""
    images = (mnist_train_images(STEPS * BATCH) > 0.5).astype(dtype)
    model = build(dtype, 0)
    assert model.name == name
    twin = twin_of(model)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-5)
    noise_rng = np.random.default_rng(1)
    parts, torch_parts = {k: [] for k in ("loss", "recon", "mmd")}, {k: [] for k in ("loss", "recon", "mmd")}
    for step in range(STEPS):
        x = images[step * BATCH:(step + 1) * BATCH]
        prior = WAEMMD.noise_for(model.config, x.shape, noise_rng, dtype)  # the same z_p for both
        opt.zero_grad()
        for key, value in model.loss(x, noise=prior).items():
            parts[key].append(value)
        model.backward(input_grad=False)
        opt.step()
        topt.zero_grad()
        tout = twin.loss(torch.from_numpy(x), noise=torch.from_numpy(prior))
        tout["loss"].backward()
        topt.step()
        for key, value in tout.items():
            torch_parts[key].append(value.item())
    assert parts["loss"][-1] < 0.95 * parts["loss"][0], "the run should learn something in 30 steps"
    for key in parts:
        assert_close(np.array(parts[key]), np.array(torch_parts[key]), "training", dtype, f"wae-mmd {key} per step")
    torch_parameters = dict(twin.named_parameters())
    for key, parameter in model.named_parameters():
        check = assert_close if dtype == np.float64 else assert_close_in_norm
        check(parameter.data, torch_parameters[key].detach().numpy(), "training", dtype, f"wae-mmd {key} after 30 steps")


# -- (6) refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("config, error, message", [
    ({"kernel": "gaussian"}, ValueError, r"kernel must be one of \('imq', 'rbf'\), got 'gaussian'"),
    ({"kernel": None}, ValueError, "kernel must be one of"),
    ({"reg_weight": -1.0}, ValueError, r"reg_weight \(λ\) must be a finite number >= 0, got -1.0"),
    ({"reg_weight": float("nan")}, ValueError, r"reg_weight \(λ\) must be a finite number"),
    ({"reg_weight": float("inf")}, ValueError, r"reg_weight \(λ\) must be a finite number"),
    ({"reg_weight": "10"}, TypeError, r"reg_weight \(λ\) must be a finite number"),
    ({"reg_weight": True}, TypeError, r"reg_weight \(λ\) must be a finite number"),
    ({"latent_dim": 0}, ValueError, "latent_dim must be a positive int, got 0"),
    ({"latent_dim": 2.5}, TypeError, "latent_dim must be a positive int"),
    ({"latent_dim": True}, TypeError, "latent_dim must be a positive int"),
    ({"hidden_dim": 0}, ValueError, "hidden_dim must be a positive int"),
    ({"input_dim": -3}, ValueError, "input_dim must be a positive int"),
    ({"dtype": np.float16}, TypeError, "dtype must be float32 or float64"),
])
def test_bad_configuration_is_refused_naming_the_model(config, error, message):
    with pytest.raises(error, match=message) as raised:
        WAEMMD(**config)
    assert "WAEMMD(wae-mmd)" in str(raised.value)


def test_bad_input_is_refused_naming_the_model_before_anything_changes():
    model = build(np.float32, 0)
    x = np.zeros((3, 784), dtype=np.float32)
    model.loss(x)
    model.backward()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    grads = {k: p.grad.copy() for k, p in model.named_parameters()}
    cases = [
        (dict(x=np.zeros((1, 784), dtype=np.float32)), ValueError, r"needs a batch of N >= 2 .*got shape \(1, 784\)"),
        (dict(x=np.zeros((0, 784), dtype=np.float32)), ValueError, "N >= 1"),
        (dict(x=np.zeros((2, 1, 27, 28), dtype=np.float32)), ValueError, r"C·H·W = 784.*got shape \(2, 1, 27, 28\)"),
        (dict(x=np.zeros((2, 784))), TypeError, "float64 but the model's parameters are float32"),
        (dict(x=[[0.0] * 784] * 2), TypeError, "NumPy array"),
        (dict(x=x, noise=np.zeros((3, 7), dtype=np.float32)), ValueError,
         r"noise \(z_p, the prior samples\) must have shape \(3, 8\), got \(3, 7\)"),
        (dict(x=x, noise=np.zeros((2, 8), dtype=np.float32)), ValueError, r"must have shape \(3, 8\)"),
        (dict(x=x, noise=np.zeros((3, 8))), TypeError, r"noise \(z_p, the prior samples\) has dtype float64"),
    ]
    for arguments, error, message in cases:
        with pytest.raises(error, match=message) as raised:
            model.loss(**arguments)
        assert "WAEMMD(wae-mmd)" in str(raised.value)
    model.zero_grad()
    model.backward()  # the refusals left the last loss's caches as they were
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    for key, parameter in model.named_parameters():
        np.testing.assert_array_equal(parameter.grad, grads[key])
    with pytest.raises(ValueError, match=r"WAEMMD\(wae-mmd\): n must be a positive int"):
        model.sample(0)
    with pytest.raises(ValueError, match="grad_output is dL/d\\(loss\\), a real number"):
        model.backward(np.ones(3, dtype=np.float32))


def test_backward_refuses_what_it_cannot_differentiate():
    model = build(np.float64, 0, input_dim=5, hidden_dim=3, latent_dim=2)
    x = np.random.default_rng(0).random((3, 5))
    with pytest.raises(RuntimeError, match="backward called before loss"):
        model.backward()
    model.loss(x)
    model.forward(x)
    with pytest.raises(RuntimeError, match="forward ran after it"):
        model.backward()
    model.loss(x)
    model.encode(x[:2])
    with pytest.raises(RuntimeError, match="the layers ran again"):
        model.backward()
    prior = model.draw_noise(x.shape)
    model.loss(x, noise=prior)
    prior[0, 0] += 1.0  # the backward reads z_p: an edit in place is caught, as torch would
    with pytest.raises(InplaceModificationError, match=r"noise \(z_p, the prior samples\) was modified in place"):
        model.backward()


@pytest.mark.parametrize("arguments, error, message", [
    (dict(z_q=np.zeros((1, 3)), z_p=np.zeros((4, 3))), ValueError, r"at least 2 samples .*z_q with shape \(1, 3\)"),
    (dict(z_q=np.zeros((4, 3)), z_p=np.zeros((1, 3))), ValueError, r"at least 2 samples .*z_p with shape \(1, 3\)"),
    (dict(z_q=np.zeros((4, 3)), z_p=np.zeros((4, 2))), ValueError, "the same latent_dim"),
    (dict(z_q=np.zeros((4, 3)), z_p=np.zeros((4, 3), np.float32)), TypeError, "share a dtype"),
    (dict(z_q=np.zeros(4), z_p=np.zeros((4, 1))), ValueError, r"must be \(samples, latent_dim\)"),
    (dict(z_q=np.zeros((4, 3), np.int64), z_p=np.zeros((4, 3))), TypeError, "float32 or float64"),
    (dict(z_q=np.zeros((4, 3)), z_p=np.zeros((4, 3)), kernel="laplace"), ValueError, "kernel must be one of"),
    (dict(z_q=np.zeros((4, 3)), z_p=np.zeros((4, 3)), scales=()), ValueError, "scales must be a non-empty"),
    (dict(z_q=np.zeros((4, 3)), z_p=np.zeros((4, 3)), scales=(1.0, -1.0)), ValueError, "finite numbers > 0"),
    (dict(z_q=np.zeros((4, 3)), z_p=np.zeros((4, 3)), prior_variance=0.0), ValueError, "prior_variance"),
])
def test_mmd_forward_refuses_bad_input(arguments, error, message):
    with pytest.raises(error, match=message):
        mmd_forward(**arguments)
