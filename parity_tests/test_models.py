"""The models against their torch twins: parameter counts, keys, loss and every gradient with
identical noise, float64 finite differences, and a 30-step Adam training run on real MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.mnist import mnist_train_images
from parity_tests.tolerances import GRADCHECK, assert_close, assert_close_in_norm, tolerance
from parity_tests.twins import twin_of
from scratch import optim
from scratch.gradcheck import gradcheck_model
from scratch.models import REGISTRY, build, draw_noise, model_names
from scratch.nn import ConvTranspose2d, ReLU, Sequential
from scratch.testing import assert_model_matches_torch
from torch_impl.models import build as torch_build

# This file's parity family: every registered model but the regularized ones, whose penalties
# test_regularized.py checks term by term, wae-mmd (test_wae.py: the MMD through both sample sets)
# and vq-vae (test_vq_vae.py: the straight-through estimator and the codebook); test_registry.py
# holds the families' union equal to the registry.
OWN_FILES = ("regularized", "wasserstein", "quantized", "conditional")  # cvae: test_cvae.py (labels)
MODEL_NAMES = [name for name in REGISTRY if REGISTRY[name].family not in OWN_FILES]
VAE_NAMES = list(model_names(family="variational"))
# the MLPs take hidden_dims too, but as the widths of fully-connected layers: deep-conv-vae's are conv widths
MLP_NAMES = [name for name in model_names(option="hidden_dims") if name not in VAE_NAMES]
TABLE_PARAMETERS = {"mlp-ae": 435_536, "denoising-ae": 435_536, "conv-ae": 5_729,  # DESIGN.md's table
                    "vae": 652_824, "seed-vae": 652_824, "beta-vae": 652_824,
                    "conv-vae": 258_025,  # not in the table: this library's own design
                    "deep-conv-vae": 319_785,  # PyTorch-VAE's vanilla VAE on 28x28, no bias before a BatchNorm
                    "iwae": 425_284}  # Burda et al.'s one-stochastic-layer MNIST net: 784-200-200-50 and back
VAE_KEYS = [f"{layer}.{kind}" for layer in ("fc1", "fc21", "fc22", "fc3", "fc4") for kind in ("weight", "bias")]
MLP_KEYS = ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
            "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"]
KEYS = {"mlp-ae": MLP_KEYS, "denoising-ae": MLP_KEYS, "conv-ae": [
    "encoder.0.weight", "encoder.0.bias", "encoder.3.weight", "encoder.3.bias", "decoder.0.weight",
    "decoder.0.bias", "decoder.2.weight", "decoder.2.bias", "decoder.4.weight", "decoder.4.bias"],
    "vae": VAE_KEYS, "beta-vae": VAE_KEYS, "seed-vae": MLP_KEYS,
    "conv-vae": ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias", "fc21.weight",
                 "fc21.bias", "fc22.weight", "fc22.bias", "decoder.0.weight", "decoder.0.bias", "decoder.3.weight",
                 "decoder.3.bias", "decoder.5.weight", "decoder.5.bias"]}
KEYS["iwae"] = ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias", "fc21.weight", "fc21.bias",
                "fc22.weight", "fc22.bias", "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias",
                "decoder.4.weight", "decoder.4.bias"]
BATCH_NORM_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
KEYS["deep-conv-vae"] = (  # parameters and BatchNorm's buffers, in torch's order
    [key for block in (0, 3, 6) for key in [f"encoder.{block}.weight"] + [f"encoder.{block + 1}.{b}" for b in BATCH_NORM_KEYS]]
    + ["fc21.weight", "fc21.bias", "fc22.weight", "fc22.bias", "decoder.0.weight", "decoder.0.bias"]
    + [key for block in (2, 5, 8) for key in [f"decoder.{block}.weight"] + [f"decoder.{block + 1}.{b}" for b in BATCH_NORM_KEYS]]
    + ["decoder.11.weight", "decoder.11.bias"])


def _noise(model, x):
    return model.draw_noise(x.shape) if hasattr(model, "draw_noise") else None


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_and_keys_match_the_table_and_torch(name):
    model, twin = build(name), torch_build(name)
    assert model.num_parameters() == TABLE_PARAMETERS[name]
    assert sum(p.numel() for p in twin.parameters()) == TABLE_PARAMETERS[name]
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert list(model.state_dict()) == list(twin.state_dict()) == KEYS[name]


@st.composite
def model_cases(draw):
    """A small model of either family with any of its options, and an input batch shape."""
    name = draw(st.sampled_from(MODEL_NAMES))
    batch = draw(S.batch_sizes)
    if name == "deep-conv-vae":  # one to three conv blocks: 28 -> 14 (-> 7 -> 4) and back, BatchNorm in each
        channels = draw(st.integers(1, 2))
        config = dict(in_channels=channels, hidden_dims=draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)),
                      latent_dim=draw(st.integers(1, 3)))
        return name, config, (batch, channels, 28, 28) if draw(st.booleans()) else (batch, channels * 784)
    if name == "conv-vae":
        channels = draw(st.integers(1, 2))
        config = dict(in_channels=channels, channels=[draw(st.integers(1, 3)), draw(st.integers(1, 3))],
                      latent_dim=draw(st.integers(1, 3)))
        return name, config, (batch, channels, 28, 28) if draw(st.booleans()) else (batch, channels * 784)
    if name == "iwae":  # one to three Tanh layers each way, K = 1 (the MC ELBO) to 4 samples
        config = dict(input_dim=draw(st.integers(1, 12)), hidden_dims=draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)),
                      latent_dim=draw(st.integers(1, 4)), num_samples=draw(st.integers(1, 4)))
        return name, config, (batch, config["input_dim"])
    if name in VAE_NAMES:
        config = dict(input_dim=draw(st.integers(1, 12)), hidden_dim=draw(st.integers(1, 8)),
                      latent_dim=draw(st.integers(1, 4)))
        if name == "beta-vae":
            config["beta"] = draw(st.sampled_from([0.0, 0.5, 4.0]))
            if draw(st.booleans()):  # the capacity-controlled objective, C part-way up its ramp
                config.update(capacity_max=draw(st.sampled_from([0.5, 5.0])), capacity_steps=3,
                              gamma=draw(st.sampled_from([1.0, 100.0])))
        return name, config, (batch, config["input_dim"])
    if name == "conv-ae":  # the seed's geometry fixes 28x28; channels are configuration
        channels = draw(st.integers(1, 2))
        config = dict(in_channels=channels, channels=[draw(st.integers(1, 4)), draw(st.integers(1, 4))])
        return name, config, (batch, channels, 28, 28)
    side = draw(st.integers(1, 4))
    channels = draw(st.integers(1, 2))
    config = dict(
        input_dim=channels * side * side,
        hidden_dims=draw(st.lists(st.integers(1, 6), min_size=0, max_size=2)),
        latent_dim=draw(st.integers(1, 4)),
        activation=draw(st.sampled_from(["relu", "leaky_relu", "tanh", "sigmoid"])),
        loss=draw(st.sampled_from(["bce", "mse"])),
    )
    if name == "denoising-ae":
        config["noise"] = draw(st.sampled_from(["gaussian", "masking", "salt-and-pepper"]))
        config["noise_level"] = draw(st.sampled_from([None, 0.0, 0.3, 0.9]))
        config["clip"] = draw(st.booleans())
    image_shaped = draw(st.booleans())
    shape = (batch, channels, side, side) if image_shaped else (batch, config["input_dim"])
    return name, config, shape


@given(case=model_cases(), dtype=S.dtypes, seed=S.seeds)
def test_loss_and_every_gradient_match_torch(case, dtype, seed):
    name, config, shape = case
    rng = np.random.default_rng(seed)
    model = build(name, dtype=dtype, rng=rng, **config)
    twin = twin_of(model, dtype)
    x = rng.random(shape).astype(dtype)
    noise = _noise(model, x)
    scale = _batch_norm_term_scales(twin, x, noise)
    result = assert_model_matches_torch(model, twin, x, noise, what=name, scale=scale)
    buffered = next(model.named_buffers(), None) is not None
    if buffered:  # BatchNorm's running statistics, updated alike by the training-mode loss
        _assert_same_buffers(model, twin, "torch", dtype, f"{name} after a training-mode loss")
    expected_parts = {"loss", "recon"} | ({"kl"} if name in VAE_NAMES else set())
    assert {quantity for quantity in result.max_rel_error if not quantity.startswith("grad")} == expected_parts
    assert {quantity for quantity in result.max_rel_error if quantity.startswith("grad")} == {
        f"grad {key!r}" for key, _ in model.named_parameters()}
    assert all(isinstance(value, float) for value in model.loss(x, noise=noise).values())
    reconstruction = model.reconstruct(x, noise)
    assert reconstruction.shape == x.shape
    with torch.no_grad():
        expected = twin.reconstruct(torch.from_numpy(x), None if noise is None else torch.from_numpy(noise))
    assert_close(reconstruction, expected, "torch", dtype, f"{name} reconstruction")
    if buffered:
        # BatchNorm in evaluation mode normalises with the running statistics (those the passes
        # above left, loaded into the twin), its backward a per-channel affine map; nothing updates
        model.eval()
        twin.eval()
        scale = _batch_norm_term_scales(twin, x, noise, model.state_dict())
        assert_model_matches_torch(model, twin, x, noise, what=f"{name} in evaluation mode", scale=scale)
        _assert_same_buffers(model, twin, "torch", dtype, f"{name} after an evaluation-mode loss")


def _batch_norm_term_scales(twin, x, noise, state=None) -> dict:
    """{"grad '<bn>.weight'": Σ|dy·x̂|, "grad '<bn>.bias'": Σ|dy|} per channel of each BatchNorm2d,
    from a copy of the twin (with ``state`` loaded) run on the same batch, in the twin's mode.

    dγ = Σ dy·x̂ and dβ = Σ dy over N·H·W cancel: a BatchNorm followed (through the positively
    homogeneous LeakyReLU and a convolution) by another one is invariant to scaling its γ and β
    together, so Σ_c γ_c·dγ_c + β_c·dβ_c = 0, and with one channel at its initial β = 0 the exact
    dγ is 0 and both libraries return rounding noise (seen: 5e-7 out of terms summing to 9).
    Rounding is relative to the terms, so they are the magnitude assert_close's atol scales with."""
    import copy

    twin = copy.deepcopy(twin)
    if state is not None:
        twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    modules = {name: module for name, module in twin.named_modules() if isinstance(module, torch.nn.BatchNorm2d)}
    if not modules:
        return {}
    seen, scales = {}, {}
    for name, module in modules.items():
        module.register_forward_hook(lambda m, inputs, output, name=name: seen.__setitem__(name, [inputs[0].detach()]))
        module.register_full_backward_hook(lambda m, grad_in, grad_out, name=name: seen[name].append(grad_out[0]))
    twin.zero_grad(set_to_none=True)
    twin.loss(torch.from_numpy(np.array(x)), noise=None if noise is None else torch.from_numpy(np.array(noise)))["loss"].backward()
    for name, (inputs, grad_output) in seen.items():
        module = modules[name]
        if module.training:
            mean, var = inputs.mean((0, 2, 3)), inputs.var((0, 2, 3), unbiased=False)
        else:
            mean, var = module.running_mean, module.running_var
        normalized = (inputs - mean[:, None, None]) / torch.sqrt(var[:, None, None] + module.eps)
        scales[f"grad {name + '.weight'!r}"] = (grad_output * normalized).abs().sum((0, 2, 3)).detach().numpy()
        scales[f"grad {name + '.bias'!r}"] = grad_output.abs().sum((0, 2, 3)).detach().numpy()
    return scales


#: how much further from the float64 referee scratch's float32 run may be than torch's
REFEREE_FACTOR = 2.0
#: besides the models with buffers (BatchNorm, below), the models whose float32 runs are held
#: against a float64 referee rather than each other: the IWAE, whose softmax over K log weights of −100 to −500 nats
#: turns float32's rounding of each (u·500 ≈ 3e-5) into relative errors of the weights, and so of
#: every gradient, that Adam's normalised steps carry into the weights (measured: encoder.0.weight
#: of the two float32 runs 2.1e-3 apart in norm after 30 steps, while the float64 runs agree)
SOFTMAX_WEIGHTED = {"iwae"}


def _assert_as_close_to_the_referee_as_torch(model, twin, referee, what):
    """float32 with BatchNorm: each tensor of scratch's run at most ``REFEREE_FACTOR`` times as far
    from the float64 referee as torch's float32 run is (in norm), or within the table's float32
    training tolerance of it. Over 30 Adam steps a BatchNorm + LeakyReLU model's float32 runs
    leave the exact trajectory by about 1e-3 in norm, in torch as in scratch (measured for
    deep-conv-vae: encoder.0.weight 7.4e-4 apart, each about 1e-3 from float64, while the two
    float64 runs agree to 1e-15), so scratch against torch measures float32's rounding twice; a
    wrong formula moves scratch away from the referee, which this catches."""
    rtol, _ = tolerance("training", np.float32)
    exact = {**{k: p.detach().numpy() for k, p in referee.named_parameters()},
             **{k: b.numpy() for k, b in referee.named_buffers()}}
    theirs = {**{k: p.detach().numpy() for k, p in twin.named_parameters()},
              **{k: b.numpy() for k, b in twin.named_buffers()}}
    ours = {**{k: p.data for k, p in model.named_parameters()}, **dict(model.named_buffers())}
    assert list(ours) == list(exact), f"{what}: tensors {list(ours)} vs the referee's {list(exact)}"
    for key, reference in exact.items():
        if reference.dtype.kind != "f":
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{what}: {key}")
            continue
        size = float(np.linalg.norm(reference))
        ours_off = float(np.linalg.norm(ours[key].astype(np.float64) - reference))
        torch_off = float(np.linalg.norm(theirs[key].astype(np.float64) - reference))
        assert ours_off <= max(REFEREE_FACTOR * torch_off, rtol * size), (
            f"{what}: {key} is {ours_off:.3e} from the float64 referee (‖ref‖ {size:.3e}); torch's float32 run "
            f"{torch_off:.3e}")


def _assert_same_buffers(model, twin, check, dtype, what, in_norm=False):
    """Every buffer (BatchNorm's running_mean, running_var: within the table's ``check`` row, or in
    norm; num_batches_tracked: exactly) equal to the twin's, under the same keys."""
    buffers, torch_buffers = dict(model.named_buffers()), dict(twin.named_buffers())
    assert list(buffers) == list(torch_buffers), f"{what}: buffers {list(buffers)} vs torch's {list(torch_buffers)}"
    for key, value in buffers.items():
        expected = torch_buffers[key].detach().numpy()
        assert value.dtype == expected.dtype, f"{what}: {key} is {value.dtype}, torch's {expected.dtype}"
        if value.dtype.kind != "f":
            np.testing.assert_array_equal(value, expected, err_msg=f"{what}: {key}")
        elif in_norm:
            assert_close_in_norm(value, expected, check, dtype, f"{what}: {key}")
        else:
            assert_close(value, expected, check, dtype, f"{what}: {key}")


@given(case=model_cases(), seed=S.seeds)
def test_model_gradients_match_finite_differences(case, seed):
    name, config, shape = case
    rng = np.random.default_rng(seed)
    if config.get("activation") in ("relu", "leaky_relu"):
        config["activation"] = "tanh"  # kinks make central differences ambiguous; covered per layer
    model = build(name, dtype=np.float64, rng=rng, **config)
    model.eval()  # the β-VAE's capacity ramp advances per training-mode loss call; fixed here
    # BatchNorm in evaluation mode is a per-channel affine map of its running statistics; in
    # training mode every example's output depends on the whole batch: both backward passes are
    # checked (the running statistics a training-mode loss updates do not enter its output)
    modes = (False, True) if next(model.named_buffers(), None) is not None else (False,)
    x = S.probabilities(rng, shape)
    noise = _noise(model, x)
    if noise is not None and config.get("noise") != "gaussian":
        # keep uniform draws away from the thresholds so the corruption is fixed under ±eps
        noise = np.round(noise * 20) / 20 + 0.025
    # The conv models' ReLUs are fixed by their geometry; with thousands of pre-activations a
    # perturbation of a shared bias moves one of them across 0 often enough to matter. This test
    # checks how the model composes its layers' backward passes (each layer's own ReLU is covered
    # by parity_tests/ops/test_linear.py and test_activations.py), so the ReLUs are swapped for Tanh here.
    _smooth_relus(model)
    for training in modes:
        model.train(training)
        gradcheck_model(model, x, noise, rng=rng, max_elements=60 if "conv" in name else None, **GRADCHECK)


def _smooth_relus(model):
    """Replace every ReLU and LeakyReLU sub-module by a Tanh, in place (a smooth stand-in at the
    same position; LeakyReLU's kink at 0 is ReLU's, with slopes 0.01 and 1)."""
    from scratch.nn import LeakyReLU, ReLU, Tanh

    for _, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if isinstance(child, (ReLU, LeakyReLU)):
                setattr(parent, child_name, Tanh())


def test_denoising_noise_semantics():
    rng = np.random.default_rng(0)
    x = rng.random((2, 16))
    uniform = np.linspace(0, 1, 32, endpoint=False).reshape(2, 16)
    masking = build("denoising-ae", dtype=np.float64, input_dim=16, noise="masking", noise_level=0.25)
    np.testing.assert_array_equal(masking.corrupt(x, uniform), np.where(uniform < 0.25, 0.0, x))
    salt = build("denoising-ae", dtype=np.float64, input_dim=16, noise="salt-and-pepper", noise_level=0.5)
    expected = np.where(uniform < 0.25, 0.0, np.where(uniform > 0.75, 1.0, x))
    np.testing.assert_array_equal(salt.corrupt(x, uniform), expected)
    gaussian = build("denoising-ae", dtype=np.float64, input_dim=16)
    eps = rng.standard_normal((2, 16))
    assert gaussian.config["noise_level"] == 0.4  # the seed's default
    np.testing.assert_array_equal(gaussian.corrupt(x, eps), np.clip(x + 0.4 * eps, 0, 1))


def test_noise_drawn_from_the_model_generator_is_reproducible():
    x = np.random.default_rng(1).random((3, 784)).astype(np.float32)
    losses = [build("denoising-ae", rng=7).loss(x)["loss"] for _ in range(2)]
    assert losses[0] == losses[1]
    model = build("denoising-ae", rng=7)
    assert model.loss(x)["loss"] != model.loss(x)["loss"]  # fresh noise on every call


@pytest.mark.parametrize("name", MLP_NAMES)
def test_bad_input_is_refused_with_a_clear_error(name):
    model = build(name, dtype=np.float32)
    with pytest.raises(TypeError, match="float64 but the layer's parameters are float32|dtype float64"):
        model.loss(np.zeros((2, 784)))
    with pytest.raises(ValueError, match=r"C·H·W = 784.*got shape \(2, 1, 27, 28\)"):
        model.loss(np.zeros((2, 1, 27, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="N >= 1"):
        model.loss(np.zeros((0, 784), dtype=np.float32))
    with pytest.raises(TypeError, match="NumPy array"):
        model.loss([[0.0] * 784])
    with pytest.raises(ValueError, match="unknown model"):
        build("no-such-model")
    with pytest.raises(TypeError, match="unexpected keyword"):
        build(name, latent=3)


def test_conv_ae_refuses_other_geometries():
    model = build("conv-ae")
    with pytest.raises(ValueError, match=r"must be \(N, 1, 28, 28\)"):
        model.loss(np.zeros((2, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="28x28 images to 28x28 only"):
        build("conv-ae", image_size=8)
    with pytest.raises(ValueError, match="channels must be two positive ints"):
        build("conv-ae", channels=[4])


STEPS, BATCH = 30, 128
TRAINING_CONFIG = {"conv-vae": {"channels": [8, 16]},  # narrower than the default, to keep the suite fast
                   "deep-conv-vae": {"hidden_dims": [8, 16, 32]}}


def _relu_feeders(model) -> dict:
    """{name of a layer whose output feeds a ReLU: that ReLU module}, for the scratch model."""
    feeders = {}
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if isinstance(module, Sequential):
            children = list(module._modules.items())
            for (first, layer), (_, following) in zip(children, children[1:]):
                if isinstance(following, ReLU) and layer.parameters():
                    feeders[f"{name}.{first}" if name else first] = following
    for layer, relu in (("fc1", "relu1"), ("fc3", "relu3")):  # the pytorch/examples VAE's named pairs
        if layer in modules and relu in modules:
            feeders[layer] = modules[relu]
    return feeders


MAX_FLIPPED_UNITS = 3  # a wrong formula changes many units' masks at once; rounding flips one or two


@pytest.mark.slow  # 30 Adam steps per model and dtype on real MNIST: `python -m pytest -m slow`
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_adam_training_run_tracks_torch(name, dtype):
    """30 Adam steps (lr 1e-3, weight_decay 1e-5, batch 128: the seed's settings) on binarized
    MNIST from identical weights, batches and noise: every loss, and the final weights, agree.

    float64: every weight, element by element. float32: each weight tensor in norm, leaving out
    the units whose ReLU *flipped*: a pre-activation within float32 rounding of 0 in one example
    is positive in one backend and not in the other (both correct to rounding). The flipped unit's
    gradient row then differs by one example's share, Adam's second moment remembers it for ~1000
    steps, and that one row drifts apart by percents (measured: fc1 row 115 of beta-vae at step 4,
    2.6e-2 relative after 30 steps, every other row of the model within 1.1e-4). Flips are found
    by comparing the two backends' ReLU masks at every step, not guessed from the weights; more
    than MAX_FLIPPED_UNITS of them fail the test.
    """
    images = (mnist_train_images(STEPS * BATCH) > 0.5).astype(dtype)
    model = build(name, dtype=dtype, rng=0, **TRAINING_CONFIG.get(name, {}))
    twin = twin_of(model, dtype)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-5)
    # float32 with BatchNorm: a float64 run of the twin from the same start is the referee
    refereed = name in SOFTMAX_WEIGHTED or any(True for _ in model.named_buffers())
    referee = twin_of(model, torch.float64) if dtype == np.float32 and refereed else None
    ropt = None if referee is None else torch.optim.Adam(referee.parameters(), lr=1e-3, weight_decay=1e-5)
    feeders = _relu_feeders(model)
    torch_modules = dict(twin.named_modules())
    torch_masks = {}
    for layer in feeders:
        torch_modules[layer].register_forward_hook(
            lambda module, inputs, output, layer=layer: torch_masks.__setitem__(layer, (output > 0).numpy()))
    flipped: set[tuple[str, int]] = set()
    noise_rng = np.random.default_rng(1)
    losses, torch_losses = [], []
    for step in range(STEPS):
        x = images[step * BATCH:(step + 1) * BATCH]
        noise = draw_noise(name, model.config, x.shape, noise_rng, dtype)  # the same ε or corruption for both
        opt.zero_grad()
        losses.append(model.loss(x, noise=noise)["loss"])
        model.backward()
        opt.step()
        topt.zero_grad()
        tloss = twin.loss(torch.from_numpy(x), noise=None if noise is None else torch.from_numpy(noise))["loss"]
        tloss.backward()
        topt.step()
        torch_losses.append(tloss.item())
        if referee is not None:
            ropt.zero_grad()
            referee.loss(torch.from_numpy(x.astype(np.float64)),
                         noise=None if noise is None else torch.from_numpy(noise.astype(np.float64)))["loss"].backward()
            ropt.step()
        for layer, relu in feeders.items():
            differs = (relu._cache > 0) != torch_masks[layer]  # (N, units) or (N, channels, H, W)
            units = np.nonzero(differs.any(axis=tuple(a for a in range(differs.ndim) if a != 1)))[0]
            flipped.update((layer, int(unit)) for unit in units)
    assert losses[-1] < 0.95 * losses[0], "the run should learn something in 30 steps"
    assert_close(np.array(losses), np.array(torch_losses), "training", dtype, f"{name} losses")
    torch_parameters = dict(twin.named_parameters())
    if dtype == np.float64:
        assert not flipped, f"{name}: ReLU masks differ from torch's in float64: {sorted(flipped)}"
        for key, parameter in model.named_parameters():
            assert_close(parameter.data, torch_parameters[key], "training", dtype, f"{name} {key} after 30 steps")
        # BatchNorm's running statistics, updated by every training-mode loss: element by element
        _assert_same_buffers(model, twin, "training", dtype, f"{name} after 30 steps")
        return
    if referee is not None:
        _assert_as_close_to_the_referee_as_torch(model, twin, referee, f"{name} after 30 steps")
        return
    assert len(flipped) <= MAX_FLIPPED_UNITS, f"{name}: {len(flipped)} ReLU units flipped: {sorted(flipped)}"
    modules = dict(model.named_modules())
    for key, parameter in model.named_parameters():
        layer = key.rsplit(".", 1)[0]
        # A flipped unit's own weights: its slice of the layer feeding the ReLU, along the axis
        # of that layer's output units (axis 1 of a ConvTranspose2d weight, else axis 0).
        axis = 1 if isinstance(modules[layer], ConvTranspose2d) and key.endswith("weight") else 0
        keep = np.ones(parameter.shape[axis], dtype=bool)
        keep[[unit for flipped_layer, unit in flipped if flipped_layer == layer]] = False
        actual = np.compress(keep, parameter.data, axis=axis)
        expected = np.compress(keep, torch_parameters[key].detach().numpy(), axis=axis)
        assert_close_in_norm(actual, expected, "training", dtype,
                             f"{name} {key} after 30 steps (flipped units left out: {int((~keep).sum())})")
    _assert_same_buffers(model, twin, "training", dtype, f"{name} after 30 steps", in_norm=True)


def test_the_capacity_ramp_follows_its_formula_step_by_step_and_tracks_the_twin():
    """C = capacity_max · min(1, step / capacity_steps), with step the training-mode loss calls so
    far: checked against the formula and the torch twin at every step up and past the ramp's top
    (every other torch comparison runs one loss on a fresh model, where C is still 0)."""
    config = dict(input_dim=12, hidden_dim=6, latent_dim=3, capacity_max=5.0, capacity_steps=4, gamma=10.0)
    model = build("beta-vae", dtype=np.float64, rng=0, **config)
    twin = torch_build("beta-vae", **config).double()
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(0)
    for step in range(7):
        x = (rng.random((5, 12)) > 0.5).astype(np.float64)
        eps = rng.standard_normal((5, 3))
        expected_c = 5.0 * min(1.0, step / 4)
        assert model.capacity() == expected_c and twin.capacity() == expected_c, step
        parts = model.loss(x, noise=eps)
        tparts = twin.loss(torch.from_numpy(x), noise=torch.from_numpy(eps))
        # recon and KL are summed over the batch of 5; C is in nats per image
        assert parts["loss"] == pytest.approx(parts["recon"] + 10.0 * abs(parts["kl"] - 5 * expected_c), rel=1e-12)
        assert_close(parts["loss"], tparts["loss"], "torch", np.float64, f"β-VAE loss at step {step}")
    assert model.step == twin.step == 7
