"""The benchmark's jax twins (autoencoders.bench.jax_twins) against the torch twins.

float64 (jax's x64 mode, scoped): every twin's loss and gradients equal torch's to the table's
1e-10, and its compiled Adam step leaves the weights torch.optim.Adam leaves, after one step and
after three. float32: the compiled step's loss and gradients equal torch's float32 ones. Skipped
where jax is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

jax = pytest.importorskip("jax")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from autoencoders.bench import jax_twins  # noqa: E402
from parity_tests.tolerances import assert_close, assert_close_in_norm  # noqa: E402
from scratch import models as scratch_models  # noqa: E402
from torch_impl import models as torch_models  # noqa: E402

REQUIRED = ("mlp-ae", "denoising-ae", "vae", "seed-vae", "beta-vae", "conv-ae", "conv-vae")
LR, WEIGHT_DECAY = 1e-3, 1e-5
# Every twin at its defaults, and the options that change its formulas (smaller, to stay quick).
SMALL_MLP = dict(hidden_dims=[24], latent_dim=6)
CASES = [(name, {}) for name in jax_twins.TWINS] + [
    ("mlp-ae", dict(hidden_dims=[32, 16], latent_dim=8, activation="leaky_relu", loss="mse")),
    ("mlp-ae", dict(SMALL_MLP, activation="tanh")),
    ("mlp-ae", dict(SMALL_MLP, activation="sigmoid")),
    ("denoising-ae", dict(SMALL_MLP, noise="masking")),
    ("denoising-ae", dict(SMALL_MLP, noise="salt-and-pepper", noise_level=0.3)),
    ("denoising-ae", dict(SMALL_MLP, noise="gaussian", clip=False)),
    ("mlp-ae", dict(input_dim=50, hidden_dims=[12], latent_dim=4)),  # flat (N, D) input
    ("vae", dict(input_dim=50, hidden_dim=32, latent_dim=5, beta=2.0)),
    ("beta-vae", dict(hidden_dim=32, latent_dim=5, beta=0.5)),
    ("seed-vae", dict(hidden_dim=32, latent_dim=5)),
    ("conv-ae", dict(in_channels=2, channels=[4, 3])),
    ("conv-vae", dict(in_channels=2, channels=[3, 5], latent_dim=4)),
    ("sparse-ae", dict(hidden_dim=32, penalty="l1")),
    ("sparse-ae", dict(hidden_dim=32, sparsity_target=0.2, sparsity_weight=0.7)),
    ("contractive-ae", dict(hidden_dim=16, contraction_weight=0.5)),
    ("tied-ae", dict(hidden_dim=32, activation="relu")),
    ("tied-ae", dict(hidden_dim=32, activation="leaky_relu")),
    ("tied-ae", dict(hidden_dim=32, activation="tanh")),
]


def _label(case):
    name, config = case
    return name + "".join(f"-{key}={value}" for key, value in config.items())


def _case(name, config, dtype, batch=3, seed=0):
    """(full config, initial state_dict, binary batch x, noise) as the benchmark builds them."""
    rng = np.random.default_rng(seed)
    model = scratch_models.build(name, dtype=dtype, rng=seed, **config)
    if "in_channels" in model.config:
        shape = (batch, model.config["in_channels"], 28, 28)
    else:  # MNIST-shaped images where the model takes 784 features, as the benchmark's batch
        shape = (batch, 1, 28, 28) if model.config["input_dim"] == 784 else (batch, model.config["input_dim"])
    x = (rng.random(shape) < 0.13).astype(dtype)
    noise = scratch_models.draw_noise(name, model.config, x.shape, rng, dtype)
    return model.config, model.state_dict(), x, noise


def _torch_run(name, config, state_dict, x, noise, dtype, steps):
    """torch's losses, first gradients and weights after each of ``steps`` Adam steps."""
    twin = torch_models.build(name, dtype=dtype, **config)
    twin.load_state_dict({key: torch.from_numpy(value.copy()) for key, value in state_dict.items()}, strict=True)
    optimizer = torch.optim.Adam(twin.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    tx, tnoise = torch.from_numpy(x.copy()), None if noise is None else torch.from_numpy(noise.copy())
    losses, grads, weights = [], None, []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = twin.loss(tx, noise=tnoise)["loss"]
        loss.backward()
        if grads is None:
            grads = {key: p.grad.detach().numpy().copy() for key, p in twin.named_parameters()}
        optimizer.step()
        losses.append(loss.detach().numpy().copy())
        weights.append({key: p.detach().numpy().copy() for key, p in twin.named_parameters()})
    return losses, grads, weights


@pytest.mark.parametrize("case", CASES, ids=_label)
def test_loss_and_gradients_equal_torch_in_float64(case):
    name, options = case
    config, state_dict, x, noise = _case(name, options, np.float64)
    losses, grads, _ = _torch_run(name, config, state_dict, x, noise, torch.float64, steps=1)
    with jax_twins.enable_x64():
        loss = jax_twins.loss_function(name, config)
        params = {key: jax.numpy.asarray(value) for key, value in state_dict.items()}
        value, jax_grads = jax.jit(jax.value_and_grad(loss))(
            params, jax.numpy.asarray(x), None if noise is None else jax.numpy.asarray(noise))
        assert value.dtype == np.float64 and all(g.dtype == np.float64 for g in jax_grads.values())
    assert_close(np.asarray(value), losses[0], "torch", np.float64, f"{_label(case)} loss")
    assert set(jax_grads) == set(grads)
    for key, grad in grads.items():
        assert np.any(grad != 0), f"{key}: torch's gradient is all zeros, the comparison would prove little"
        assert_close(np.asarray(jax_grads[key]), grad, "torch", np.float64, f"{_label(case)} grad {key}")


@pytest.mark.parametrize("name", jax_twins.TWINS)
def test_compiled_adam_steps_equal_torch_adam_in_float64(name):
    config, state_dict, x, noise = _case(name, {}, np.float64, seed=1)
    losses, _, weights = _torch_run(name, config, state_dict, x, noise, torch.float64, steps=3)
    with jax_twins.enable_x64():
        step = jax_twins.JaxTrainingStep(name, config, state_dict, x, noise, lr=LR, weight_decay=WEIGHT_DECAY)
        for index in range(3):
            loss = step()
            assert_close(np.asarray(loss), losses[index], "torch", np.float64, f"{name} loss at step {index + 1}")
            for key, value in step.params_numpy().items():
                assert value.dtype == np.float64
                assert_close(value, weights[index][key], "optim", np.float64, f"{name} {key} after {index + 1} step(s)")
        # reset: the initial weights again, and the first step again equal to torch's first
        step.reset()
        assert step.steps == 0
        for key, value in step.params_numpy().items():
            np.testing.assert_array_equal(value, state_dict[key])
        assert_close(np.asarray(step()), losses[0], "torch", np.float64, f"{name} loss after reset")
        for key, value in step.params_numpy().items():
            assert_close(value, weights[0][key], "optim", np.float64, f"{name} {key} after reset and a step")


@pytest.mark.parametrize("name", jax_twins.TWINS)
def test_float32_step_equals_torch_float32(name):
    # The benchmark's case: float32 weights and batch (batch 8 here, to stay quick). Both sides
    # round every op to float32 (u = 6e-8) in different orders (XLA's vs torch's reductions and
    # GEMM blocking), over sums of at most 784·8 positive BCE terms and 3136-term dot products;
    # their difference is ~1e-6 relative, within the table's float32 torch entry (2e-4), while
    # any formula error (a wrong reduction, padding or clamp) moves the loss by far more.
    config, state_dict, x, noise = _case(name, {}, np.float32, batch=8, seed=2)
    losses, grads, _ = _torch_run(name, config, state_dict, x, noise, torch.float32, steps=1)
    step = jax_twins.JaxTrainingStep(name, config, state_dict, x, noise, lr=LR, weight_decay=WEIGHT_DECAY)
    assert step.dtype == np.float32
    assert_close(np.float32(step.first_loss()), losses[0], "torch", np.float32, f"{name} first loss")
    outputs = step.first_step_outputs()
    assert outputs["loss"].dtype == np.float32
    assert_close(outputs["loss"], losses[0], "torch", np.float32, f"{name} compiled step's loss")
    for key, grad in grads.items():
        # in norm: one gradient element near 0 can differ relatively by more (a ReLU within
        # rounding of 0); the norm of the difference stays at the rounding level
        assert_close_in_norm(outputs[f"grad {key}"], grad, "torch", np.float32, f"{name} grad {key}")
    # The compiled Adam update against torch.optim.Adam applied to the same (jax) gradients, as
    # the benchmark checks it; the table's float32 optimizer entry.
    parameters = {key: torch.nn.Parameter(torch.from_numpy(value.copy())) for key, value in state_dict.items()}
    for key, parameter in parameters.items():
        parameter.grad = torch.from_numpy(outputs[f"grad {key}"].copy())
    torch.optim.Adam(parameters.values(), lr=LR, weight_decay=WEIGHT_DECAY).step()
    for key, parameter in parameters.items():
        assert_close(outputs[f"updated {key}"], parameter.detach().numpy(), "optim", np.float32, f"{name} updated {key}")
    assert step.steps == 0  # first_step_outputs leaves the step reset


def test_the_compiled_step_donates_without_warnings():
    config, state_dict, x, noise = _case("vae", dict(hidden_dim=16, latent_dim=3), np.float32)
    step = jax_twins.JaxTrainingStep("vae", config, state_dict, x, noise)
    before = step.params["fc1.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Some donated buffers were not usable" would raise
        step()
        step()
    assert before.is_deleted(), "the parameters were not donated to the compiled step"
    assert step.steps == 2


def test_binary_cross_entropy_is_torchs_at_the_clamps():
    # torch clamps both logs at -100 and divides its gradient by max(p (1 - p), EPSILON); plain
    # autodiff of the clamped formula differs at p = 0 and p = 1. EPSILON is a C++ float 1e-12:
    # taking the double 1e-12 instead is off by 4e-9 relative where it binds (p near 0 or 1).
    p = np.array([0.0, 1e-300, 1e-20, 1e-3, 0.5, 1 - 1e-12, 1.0])
    y = np.array([0.0, 0.3, 1.0])
    pp, yy = (a.ravel() for a in np.meshgrid(p, y))
    cotangent = np.random.default_rng(3).standard_normal(pp.shape)
    tp = torch.from_numpy(pp.copy()).requires_grad_(True)
    expected = F.binary_cross_entropy(tp, torch.from_numpy(yy), reduction="none")
    expected.backward(torch.from_numpy(cotangent))
    with jax_twins.enable_x64():
        value, vjp = jax.vjp(lambda q: jax_twins.binary_cross_entropy(q, jax.numpy.asarray(yy), "none"),
                             jax.numpy.asarray(pp))
        (grad,) = vjp(jax.numpy.asarray(cotangent))
    assert_close(np.asarray(value), expected.detach().numpy(), "torch", np.float64, "BCE at the clamps")
    assert_close(np.asarray(grad), tp.grad.numpy(), "torch", np.float64, "BCE gradient at the clamps")


@pytest.mark.parametrize("geometry", [  # (C_in, C_out, k, stride, padding, output_padding, H, W)
    (2, 3, 3, 2, 0, 0, 4, 5), (3, 2, 5, 3, 1, 0, 5, 4), (2, 1, 2, 2, 1, 0, 6, 6),
    (2, 2, 4, 2, 1, 1, 3, 4), (1, 2, 3, 3, 2, 2, 4, 3), (2, 2, 3, 1, 1, 0, 5, 5)])
def test_conv_transpose_formulation_equals_torch(geometry):
    c_in, c_out, k, stride, padding, output_padding, h, w = geometry
    rng = np.random.default_rng(4)
    x, weight, bias = rng.standard_normal((2, c_in, h, w)), rng.standard_normal((c_in, c_out, k, k)), rng.standard_normal(c_out)
    tensors = [torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, weight, bias)]
    out = F.conv_transpose2d(*tensors, stride=stride, padding=padding, output_padding=output_padding)
    cotangent = rng.standard_normal(tuple(out.shape))
    out.backward(torch.from_numpy(cotangent))
    with jax_twins.enable_x64():
        def layer(x, weight, bias):
            return jax_twins._conv_transpose2d(x, {"t.weight": weight, "t.bias": bias}, "t", stride, padding, output_padding)
        value, vjp = jax.vjp(layer, *(jax.numpy.asarray(a) for a in (x, weight, bias)))
        grads = vjp(jax.numpy.asarray(cotangent))
    assert_close(np.asarray(value), out.detach().numpy(), "torch", np.float64, f"ConvTranspose2d {geometry}")
    for what, grad, tensor in zip(("dx", "dweight", "dbias"), grads, tensors):
        assert_close(np.asarray(grad), tensor.grad.numpy(), "torch", np.float64, f"ConvTranspose2d {geometry} {what}")


def test_api_names_and_errors():
    assert jax_twins.available() and jax_twins.unavailable_reason() is None
    assert set(REQUIRED) <= set(jax_twins.TWINS) <= set(scratch_models.REGISTRY)
    for call in (lambda: jax_twins.loss_function("no-such-model", {}), lambda: jax_twins.resolve_config("no-such-model"),
                 lambda: jax_twins.JaxTrainingStep("no-such-model", {}, {}, np.zeros((1, 784), np.float32))):
        with pytest.raises(ValueError, match="no jax twin of model 'no-such-model'"):
            call()
    with pytest.raises(ValueError, match=r"unknown configuration key\(s\) \['hiden_dim'\]"):
        jax_twins.loss_function("vae", {"hiden_dim": 3})
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        jax_twins.loss_function("mlp-ae", {"activation": "gelu"})
    with pytest.raises(NotImplementedError, match="capacity_max"):
        jax_twins.loss_function("beta-vae", {"capacity_max": 5.0})
    assert jax_twins.resolve_config("denoising-ae", {"noise": "masking"})["noise_level"] == 0.25
    config, state_dict, x, noise = _case("vae", dict(hidden_dim=16, latent_dim=3), np.float32)
    assert {k: v.shape for k, v in state_dict.items()} == jax_twins.parameter_shapes("vae", config)
    with pytest.raises(ValueError, match=r"missing \['fc4.bias'\]"):
        jax_twins.JaxTrainingStep("vae", config, {k: v for k, v in state_dict.items() if k != "fc4.bias"}, x, noise)
    with pytest.raises(ValueError, match="fc1.weight has shape"):
        jax_twins.JaxTrainingStep("vae", config, {**state_dict, "fc1.weight": state_dict["fc1.weight"].T}, x, noise)
    with pytest.raises(ValueError, match="needs its noise"):
        jax_twins.JaxTrainingStep("vae", config, state_dict, x, None)
    with pytest.raises(ValueError, match=r"noise \(ε\) must be an array of shape \(3, 3\)"):
        jax_twins.JaxTrainingStep("vae", config, state_dict, x, noise[:, :2])
    with pytest.raises(RuntimeError, match="x64"):  # float64 outside enable_x64() would silently be float32
        jax_twins.JaxTrainingStep("vae", config, state_dict, x.astype(np.float64), noise.astype(np.float64))


def test_x64_is_scoped():
    assert jax.numpy.asarray(np.float64(1)).dtype == np.float32
    with jax_twins.enable_x64():
        assert jax.numpy.asarray(np.float64(1)).dtype == np.float64
    assert jax.numpy.asarray(np.float64(1)).dtype == np.float32


def test_the_module_imports_without_jax():
    script = (
        "import sys; sys.modules['jax'] = None\n"  # `import jax` now raises ImportError
        "from autoencoders.bench import jax_twins as J\n"
        "assert not J.available(), 'available() with jax blocked'\n"
        "assert \"pip install 'autoencoders[jax]'\" in J.unavailable_reason()\n"
        "assert '\\n' not in J.unavailable_reason()\n"
        "assert set(J.TWINS) >= {'vae', 'conv-ae'}\n"
        "try:\n    J.loss_function('vae', {})\nexcept ImportError as error:\n    print('refused:', error)\n"
        "else:\n    raise AssertionError('loss_function ran without jax')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "refused: jax is not installed" in result.stdout
    plain = subprocess.run([sys.executable, "-c", "import sys; import autoencoders.bench.jax_twins; "
                            "print('jax' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and plain.stdout.strip() == "False", plain.stderr
