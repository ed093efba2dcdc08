"""sparse-ae, contractive-ae and tied-ae: their penalties and the models against three oracles.

(1) torch: the loss, its parts and every gradient (parameters and input) against the twins, whose
contractive penalty is autograd's Jacobian, not the closed form; (2) float64 central differences
of each penalty alone, of the whole loss and of dL/dx; (3) the kernels against their NumPy
references (parity_tests/ops/test_penalties.py). Then a 30-step Adam run on MNIST against torch.
Derivations: docs/penalties.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given

from parity_tests import strategies as S
from parity_tests.mnist import mnist_train_images
from parity_tests.tolerances import GRADCHECK, assert_close, assert_close_in_norm
from parity_tests.twins import twin_of
from scratch import functional as F
from scratch import nn, optim
from scratch.functional.penalties import clamp_bounds
from scratch.gradcheck import gradcheck, gradcheck_model
from scratch.models import build
from scratch.testing import assert_model_matches_torch
from torch_impl.models import build as torch_build

NAMES = S.REGULARIZED_MODELS
DEFAULT_PARAMETERS = {"sparse-ae": 784 * 256 + 256 + 256 * 784 + 784,  # 402,448
                      "contractive-ae": 784 * 256 + 256 + 256 * 784 + 784,
                      "tied-ae": 784 * 256 + 256 + 784}  # 201,744: W once
UNTIED_KEYS = ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"]
KEYS = {"sparse-ae": UNTIED_KEYS, "contractive-ae": UNTIED_KEYS,
        "tied-ae": ["encoder.weight", "encoder.bias", "decoder.bias"]}
PARTS = {"sparse-ae": {"loss", "recon", "penalty"}, "contractive-ae": {"loss", "recon", "penalty"},
         "tied-ae": {"loss", "recon"}}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_keys_and_shapes_match_torch(name):
    model, twin = build(name), torch_build(name)
    assert model.num_parameters() == DEFAULT_PARAMETERS[name]
    assert sum(p.numel() for p in twin.parameters()) == DEFAULT_PARAMETERS[name]
    assert list(model.state_dict()) == list(twin.state_dict()) == KEYS[name]
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}


@given(case=S.regularized_model_cases(), dtype=S.dtypes, seed=S.seeds)
def test_loss_parts_and_every_gradient_match_torch(case, dtype, seed):
    name, config, shape = case
    rng = np.random.default_rng(seed)
    model = build(name, dtype=dtype, rng=rng, **config)
    twin = twin_of(model, dtype)
    x = rng.random(shape).astype(dtype)
    result = assert_model_matches_torch(model, twin, x, input_grad=True, what=name)
    assert {quantity for quantity in result.max_rel_error if not quantity.startswith("grad")} == PARTS[name]
    assert "grad_input" in result.max_rel_error
    assert all(isinstance(value, float) for value in model.loss(x).values())
    with torch.no_grad():
        expected_reconstruction = twin.reconstruct(torch.from_numpy(x))
        expected_code = twin.encode(torch.from_numpy(x))
    assert_close(model.reconstruct(x), expected_reconstruction, "torch", dtype, f"{name} reconstruction")
    assert_close(model.encode(x), expected_code, "torch", dtype, f"{name} code")


def test_contractive_twin_evaluates_under_no_grad():
    """The twin's Jacobian needs grad mode; evaluation runs it under torch.no_grad() anyway."""
    model = build("contractive-ae", dtype=np.float64, rng=0, input_dim=6, hidden_dim=3)
    twin = twin_of(model, torch.float64)
    x = np.random.default_rng(1).random((4, 6))
    with torch.no_grad():
        parts = twin.loss(torch.from_numpy(x))
    assert not parts["loss"].requires_grad
    assert parts["penalty"].item() == pytest.approx(model.loss(x)["penalty"], rel=1e-12)


# -- (2) central differences -------------------------------------------------------------------


@given(case=S.hidden_codes(), target=S.sparsity_targets, weight=S.penalty_weights, seed=S.seeds)
def test_kl_sparsity_penalty_alone_matches_finite_differences(case, target, weight, seed):
    batch, hidden, _ = case
    rng = np.random.default_rng(seed)
    codes = S.probabilities(rng, (batch, hidden))  # ρ̂ inside [0.02, 0.98]: the clamp is inactive
    result = gradcheck((F.kl_sparsity_forward, F.kl_sparsity_backward), codes, target, weight, rng=rng, **GRADCHECK)
    assert result.elements_checked == codes.size


@given(case=S.hidden_codes(), weight=S.penalty_weights, seed=S.seeds)
def test_l1_activity_penalty_alone_matches_finite_differences(case, weight, seed):
    batch, hidden, _ = case
    rng = np.random.default_rng(seed)
    codes = S.away_from_zero(rng, (batch, hidden))  # both signs, never within eps of the kink
    result = gradcheck((F.l1_activity_forward, F.l1_activity_backward), codes, weight, rng=rng, **GRADCHECK)
    assert result.elements_checked == codes.size


@given(case=S.hidden_codes(), strength=S.penalty_weights, seed=S.seeds)
def test_contractive_penalty_alone_matches_finite_differences(case, strength, seed):
    """Both paths: dP/dh with W fixed, and the direct dP/dW with h fixed."""
    batch, hidden, inputs = case
    rng = np.random.default_rng(seed)
    codes = rng.random((batch, hidden))
    weight = rng.standard_normal((hidden, inputs))
    result = gradcheck((F.contractive_forward, F.contractive_backward), codes, weight, strength, rng=rng, **GRADCHECK)
    assert result.elements_checked == codes.size + weight.size


@given(case=S.regularized_model_cases(smooth=True), seed=S.seeds)
def test_whole_loss_matches_finite_differences(case, seed):
    """Every parameter element, through the penalty and the reconstruction together."""
    name, config, shape = case
    rng = np.random.default_rng(seed)
    model = build(name, dtype=np.float64, rng=rng, **config)
    result = gradcheck_model(model, S.probabilities(rng, shape), rng=rng, **GRADCHECK)
    assert result.elements_checked == model.num_parameters()


@given(case=S.regularized_model_cases(smooth=True), seed=S.seeds)
def test_input_gradient_matches_finite_differences(case, seed):
    """dL/dx, which for the contractive model includes the penalty's path through h.

    ``backward`` returns the gradient through the model with the target held fixed; x is also
    the BCE's target, whose own term ∂BCE/∂y = −(log x̂ − log(1 − x̂))/N is added here so that
    the sum is the derivative central differences of ``loss(x)`` see."""
    name, config, shape = case
    rng = np.random.default_rng(seed)
    model = build(name, dtype=np.float64, rng=rng, **config)

    def forward(x):
        return np.asarray(model.loss(x)["loss"]), x

    def backward(grad_output, x):
        model.zero_grad()
        through_model = model.backward(grad_output)
        reconstruction = model.reconstruct(x)
        as_target = -(np.log(reconstruction) - np.log1p(-reconstruction)) / x.shape[0]
        return through_model + float(grad_output) * as_target

    x = S.probabilities(rng, shape)
    result = gradcheck((forward, backward), x, rng=rng, **GRADCHECK)
    assert result.elements_checked == x.size


@given(case=S.hidden_codes(), seed=S.seeds)
def test_contractive_closed_form_is_the_jacobian_norm(case, seed):
    """Σ_j (h_j(1 - h_j))² Σ_i W_ji² against ‖∂h/∂x‖²_F from central differences of the encoder."""
    batch, hidden, inputs = case
    rng = np.random.default_rng(seed)
    model = build("contractive-ae", dtype=np.float64, rng=rng, input_dim=inputs, hidden_dim=hidden,
                  contraction_weight=1.0)
    x = rng.random((batch, inputs))
    eps = 1e-6
    jacobian = np.empty((batch, hidden, inputs))
    for i in range(inputs):
        step = np.zeros_like(x)
        step[:, i] = eps
        jacobian[:, :, i] = (model.encode(x + step) - model.encode(x - step)) / (2 * eps)
    expected = (jacobian ** 2).sum() / batch
    assert model.loss(x)["penalty"] == pytest.approx(expected, rel=1e-7, abs=1e-12)


# -- what each model is about ------------------------------------------------------------------


def test_tied_gradient_is_the_sum_of_both_uses():
    """A tied model's dL/dW equals an untied copy's encoder dW plus its decoder dW transposed,
    when the copy starts with decoder.weight = encoder.weightᵀ."""
    rng = np.random.default_rng(0)
    tied = build("tied-ae", dtype=np.float64, rng=0, input_dim=12, hidden_dim=5)
    untied = build("sparse-ae", dtype=np.float64, rng=0, input_dim=12, hidden_dim=5, sparsity_weight=0.0)
    weights = tied.state_dict()
    untied.load_state_dict({"encoder.weight": weights["encoder.weight"], "encoder.bias": weights["encoder.bias"],
                            "decoder.weight": weights["encoder.weight"].T, "decoder.bias": weights["decoder.bias"]})
    x = rng.random((4, 12))
    assert tied.loss(x)["recon"] == pytest.approx(untied.loss(x)["recon"], rel=1e-14)
    tied.zero_grad()
    untied.zero_grad()
    tied.backward()
    untied.backward()
    np.testing.assert_allclose(tied.encoder.weight.grad,
                               untied.encoder.weight.grad + untied.decoder.weight.grad.T, rtol=1e-12, atol=1e-15)
    assert not np.allclose(tied.encoder.weight.grad, untied.encoder.weight.grad)  # the decoder's share counts
    np.testing.assert_allclose(tied.decoder.bias.grad, untied.decoder.bias.grad, rtol=1e-12)


def test_tied_state_dict_holds_the_weight_once_and_loads_into_torch():
    model = build("tied-ae", dtype=np.float64, rng=0, input_dim=10, hidden_dim=4)
    state = model.state_dict()
    assert list(state) == KEYS["tied-ae"] and not state["decoder.bias"].any()  # zeros at the start
    twin = torch_build("tied-ae", dtype=torch.float64, input_dim=10, hidden_dim=4)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    assert list(twin.state_dict()) == KEYS["tied-ae"]
    model.encoder.weight.data[0, 0] += 1.0  # one array: the decoder sees the change too
    x = np.random.default_rng(1).random((2, 10))
    z = model.hidden_activation(model.encoder(x))
    np.testing.assert_allclose(model.decoder(z), z @ model.encoder.weight.data + model.decoder.bias.data, rtol=1e-14)


def test_kl_penalty_gradient_reaches_every_example_equally():
    """dP/dh is (β/N)(−ρ/ρ̂ + (1−ρ)/(1−ρ̂)) in every row: each example moves ρ̂ by 1/N."""
    rng = np.random.default_rng(0)
    codes = S.probabilities(rng, (5, 3))
    penalty, cache = F.kl_sparsity_forward(codes, 0.05, 3.0)
    gradient = F.kl_sparsity_backward(1.0, cache)
    rho_hat = codes.mean(axis=0)
    expected_row = 3.0 / 5 * (-0.05 / rho_hat + 0.95 / (1 - rho_hat))
    np.testing.assert_allclose(gradient, np.broadcast_to(expected_row, (5, 3)), rtol=1e-14)
    expected = 3.0 * np.sum(0.05 * np.log(0.05 / rho_hat) + 0.95 * np.log(0.95 / (1 - rho_hat)))
    assert float(penalty) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_penalty_stays_finite_for_saturated_units_and_matches_torch(dtype):
    """A unit at exactly 0 or 1 over the whole batch: ρ̂ is clamped into [√tiny, 1 − ε/2], the
    penalty is large but finite, and that unit gets no gradient (torch's clamp convention); a
    nearly dead unit (ρ̂ = 1e-12) is inside the bounds and keeps its gradient."""
    codes = np.array([[0.0, 1.0, 0.3, 2e-12], [0.0, 1.0, 0.6, 0.0]], dtype=dtype)
    penalty, cache = F.kl_sparsity_forward(codes, 0.05, 3.0)
    gradient = F.kl_sparsity_backward(1.0, cache)
    assert np.isfinite(penalty) and penalty > 10
    assert np.all(np.isfinite(gradient)) and not gradient[:, :2].any() and gradient[:, 2:].all()
    twin = torch_build("sparse-ae", dtype=torch.float64 if dtype == np.float64 else torch.float32, input_dim=2,
                       hidden_dim=3)
    hidden = torch.from_numpy(codes.copy()).requires_grad_(True)
    expected = twin.penalty(hidden)
    expected.backward()
    assert_close(np.asarray(penalty), expected.detach(), "torch", dtype, "saturated KL penalty")
    assert_close(gradient, hidden.grad, "torch", dtype, "saturated KL gradient")
    lower, upper = clamp_bounds(dtype)
    assert np.dtype(dtype).type(upper) == np.nextafter(np.dtype(dtype).type(1), np.dtype(dtype).type(0))
    assert 0 < lower < 1e-18


def test_sparsity_penalty_lowers_the_mean_activation_in_training():
    """What the penalty is for: 20 Adam steps with β = 3 pull the hidden units' mean activation
    down towards ρ (measured: 0.39, still falling), while without it (β = 0) the units saturate
    (0.996). (The BCE summed over 784 pixels outweighs 32 units' KL, so ρ itself is not reached
    this fast.)"""
    images = (mnist_train_images(20 * 64) > 0.5).astype(np.float64)

    def mean_activation(weight):
        model = build("sparse-ae", dtype=np.float64, rng=0, hidden_dim=32, sparsity_weight=weight)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        for step in range(20):
            opt.zero_grad()
            model.loss(images[step * 64:(step + 1) * 64])
            model.backward()
            opt.step()
        return float(model.encode(images[:256]).mean())

    with_penalty, without = mean_activation(3.0), mean_activation(0.0)
    assert with_penalty < 0.45 and without > 0.9, (with_penalty, without)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, config, message", [
    ("sparse-ae", {"penalty": "l2"}, "penalty must be one of"),
    ("sparse-ae", {"sparsity_target": 0.0}, r"sparsity_target \(ρ\) must lie strictly between 0 and 1"),
    ("sparse-ae", {"sparsity_target": 1.0}, "strictly between 0 and 1"),
    ("sparse-ae", {"sparsity_weight": -1.0}, "sparsity_weight must be a finite number >= 0"),
    ("sparse-ae", {"sparsity_weight": float("nan")}, "sparsity_weight must be a finite number"),
    ("contractive-ae", {"contraction_weight": -0.1}, "contraction_weight must be a finite number >= 0"),
    ("tied-ae", {"activation": "softmax"}, "activation must be one of"),
    ("tied-ae", {"hidden_dim": 0}, "hidden_dim must be a positive int"),
    ("contractive-ae", {"input_dim": 0}, "input_dim must be a positive int"),
    ("contractive-ae", {"input_dim": 2.5}, "input_dim must be a positive int"),
])
def test_bad_configuration_is_refused_with_a_clear_error(name, config, message):
    """A value out of range is a ValueError; a value of the wrong type (2.5 for a size) a TypeError."""
    error = TypeError if any(isinstance(value, float) and key.endswith("_dim") for key, value in config.items()) else ValueError
    with pytest.raises(error, match=message):
        build(name, **config)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_refused_before_anything_changes(name):
    model = build(name, dtype=np.float32, rng=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"C·H·W = 784.*got shape \(2, 1, 27, 28\)"):
        model.loss(np.zeros((2, 1, 27, 28), dtype=np.float32))
    with pytest.raises(TypeError, match="dtype float64|float64 but"):
        model.loss(np.zeros((2, 784)))
    with pytest.raises(ValueError, match="N >= 1"):
        model.loss(np.zeros((0, 784), dtype=np.float32))
    with pytest.raises(ValueError, match="deterministic and takes no noise"):
        model.loss(np.zeros((2, 784), dtype=np.float32), noise=np.zeros((2, 784), dtype=np.float32))
    with pytest.raises(RuntimeError, match="backward called before loss"):
        build(name).backward()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_tied_linear_refuses_a_non_linear_source():
    with pytest.raises(TypeError, match="TiedLinear: source must be a scratch nn.Linear"):
        nn.TiedLinear(nn.Sigmoid())


# -- a training run ----------------------------------------------------------------------------

STEPS, BATCH = 30, 128
TRAINING_CONFIG = {"sparse-ae": {}, "contractive-ae": {"hidden_dim": 64}, "tied-ae": {}}  # a narrower
# contractive model: the twin's autograd Jacobian is (H, N, D), 64·128·784 here


@pytest.mark.slow  # 30 Adam steps per model and dtype on real MNIST: `python -m pytest -m slow`
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_adam_training_run_tracks_torch(name, dtype):
    """30 Adam steps (lr 1e-3, weight_decay 1e-5, batch 128) on binarized MNIST from identical
    weights: every loss part at every step, and the final weights, agree with the twin's. Sigmoid
    units have no kink, so no unit can flip between backends: float32 weights are compared per
    tensor in norm, float64 element by element."""
    images = (mnist_train_images(STEPS * BATCH) > 0.5).astype(dtype)
    model = build(name, dtype=dtype, rng=0, **TRAINING_CONFIG[name])
    twin = twin_of(model, dtype)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-5)
    parts, torch_parts = {key: [] for key in PARTS[name]}, {key: [] for key in PARTS[name]}
    for step in range(STEPS):
        x = images[step * BATCH:(step + 1) * BATCH]
        opt.zero_grad()
        for key, value in model.loss(x).items():
            parts[key].append(value)
        model.backward(input_grad=False)
        opt.step()
        topt.zero_grad()
        tout = twin.loss(torch.from_numpy(x))
        tout["loss"].backward()
        topt.step()
        for key, value in tout.items():
            torch_parts[key].append(value.item())
    assert parts["loss"][-1] < 0.95 * parts["loss"][0], "the run should learn something in 30 steps"
    for key in parts:
        assert_close(np.array(parts[key]), np.array(torch_parts[key]), "training", dtype, f"{name} {key} per step")
    torch_parameters = dict(twin.named_parameters())
    for key, parameter in model.named_parameters():
        if dtype == np.float64:
            assert_close(parameter.data, torch_parameters[key], "training", dtype, f"{name} {key} after 30 steps")
        else:
            assert_close_in_norm(parameter.data, torch_parameters[key], "training", dtype, f"{name} {key} after 30 steps")
