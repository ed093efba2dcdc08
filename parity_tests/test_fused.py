"""The fast paths give the numbers of the plain ones: fused layer pairs, the BCE through the
Sigmoid, skipping the first layer's input gradient, and Adam over a flat parameter buffer.

Each fast path is held to the slow path it replaces *bit for bit* (same ops, same order, same
dtype) or, where the summation order legitimately differs, to the kernel tolerance; the slow
paths themselves are what the torch, finite-difference and kernel oracles check elsewhere.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import assert_close
from scratch import nn, optim
from scratch.models import MODELS, build, draw_noise
from scratch.nn.module import flat_layout


def _unfused_forward(sequential, x):
    for module in sequential:
        x = module(x)
    return x


def _unfused_backward(sequential, grad):
    for module in reversed(list(sequential)):
        grad = module.backward(grad)
    return grad


@given(rows=S.rows, sizes=st.lists(S.features, min_size=2, max_size=4), dtype=S.dtypes, seed=S.seeds,
       activation=st.sampled_from(["relu", "leaky_relu"]), slope=S.non_negative_slopes)
def test_fused_linear_activation_equals_the_two_layers(rows, sizes, dtype, seed, activation, slope):
    """Sequential's fused Linear+ReLU (or LeakyReLU) pass: the same output, input gradient and
    parameter gradients, bit for bit, as running each layer on its own (the bias gradient of a
    one-unit layer to rounding: see scratch.kernels.linear)."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(fan_in, fan_out, rng=rng, dtype=dtype))
        layers.append(nn.ReLU() if activation == "relu" else nn.LeakyReLU(slope))
    fused, plain = nn.Sequential(*layers), copy.deepcopy(nn.Sequential(*layers))
    assert fused[0].fuses_with(fused[1])
    x = rng.standard_normal((rows, sizes[0])).astype(dtype)
    x[rng.random(x.shape) < 0.2] = 0
    np.testing.assert_array_equal(fused(x), _unfused_forward(plain, x))
    grad = rng.standard_normal((rows, sizes[-1])).astype(dtype)
    np.testing.assert_array_equal(fused.backward(grad), _unfused_backward(plain, grad))
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        if name.endswith("bias") and a.shape == (1,):
            # NumPy sums a single column pairwise, the kernel (and NumPy, for wider layers) in order
            scale = np.sum(np.abs(grad)) + np.abs(b.grad)
            assert_close(a.grad, b.grad, "kernel", dtype, name, scale=scale)
        else:
            np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)
    # the activation keeps the cache its own forward would leave, so it can run alone afterwards
    np.testing.assert_array_equal(fused[-1].backward(grad), plain[-1].backward(grad))


def test_linear_does_not_fuse_where_the_kernel_would_be_wrong():
    linear = nn.Linear(3, 2, rng=0)
    assert not linear.fuses_with(nn.LeakyReLU(-0.5)), "a negative slope flips the output's sign"
    assert not nn.Linear(3, 2, bias=False, rng=0).fuses_with(nn.ReLU())
    assert not linear.fuses_with(nn.Sigmoid())


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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_backward_without_input_gradient(name):
    """``input_grad=False`` returns None and leaves every parameter gradient as the full pass does."""
    config = {"channels": [4, 8]} if name == "conv-vae" else {}
    model = build(name, dtype=np.float64, rng=0, **config)
    other = build(name, dtype=np.float64, rng=0, **config)
    rng = np.random.default_rng(1)
    x = (rng.random((3, 1, 28, 28)) < 0.3).astype(np.float64)
    noise = draw_noise(name, model.config, x.shape, np.random.default_rng(2), np.float64)
    model.loss(x, noise=noise)
    other.loss(x, noise=noise)
    assert model.backward(input_grad=False) is None
    grad_input = other.backward()
    assert grad_input.shape == x.shape
    for (key, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=f"{name} {key}")


def test_sequential_backward_skips_what_input_grad_false_does_not_need():
    """Layers before the first one with parameters get no backward call, and that one computes no dx."""
    calls = []

    class Spy(nn.ReLU):
        def backward(self, grad_output):
            calls.append("spy")
            return super().backward(grad_output)

    rng = np.random.default_rng(0)
    net = nn.Sequential(Spy(), nn.Linear(4, 3, rng=rng, dtype=np.float64), nn.ReLU(),
                        nn.Linear(3, 2, rng=rng, dtype=np.float64))
    net(rng.standard_normal((5, 4)))
    assert net.backward(rng.standard_normal((5, 2)), input_grad=False) is None
    assert calls == []
    assert np.any(net[1].weight.grad != 0)


# -- Adam over a flat parameter buffer ---------------------------------------------------------


def test_flatten_parameters_keeps_values_and_makes_views():
    model = build("mlp-ae", dtype=np.float64, rng=0)  # build() flattens
    plain = MODELS["mlp-ae"](rng=0, dtype=np.float64)
    for (key, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=key)
    data, grad = flat_layout(model.parameters())
    assert data.size == grad.size == model.num_parameters()
    assert flat_layout(plain.parameters()) is None
    model.parameters()[0].data[0, 0] = 123.0
    assert data[0] == 123.0, "a parameter is a view of the flat buffer"
    with pytest.raises(ValueError, match="several dtypes"):
        nn.Sequential(nn.Linear(2, 2, dtype=np.float32), nn.Linear(2, 2, dtype=np.float64)).flatten_parameters()


def _train(model, optimizer, steps, seed, break_at=None, make_optimizer=None):
    rng = np.random.default_rng(seed)
    for step in range(steps):
        if step == break_at:
            saved = optimizer.state_dict()
            optimizer = make_optimizer(model)
            optimizer.load_state_dict(saved)
        for parameter in model.parameters():
            parameter.grad[...] = rng.standard_normal(parameter.shape).astype(parameter.dtype)
        optimizer.step()
    return optimizer


@given(dtype=S.dtypes, seed=S.seeds, name=st.sampled_from(["Adam", "AdamW"]), amsgrad=st.booleans(),
       weight_decay=st.sampled_from([0.0, 1e-2]))
def test_flat_adam_equals_adam_per_parameter(dtype, seed, name, amsgrad, weight_decay):
    """One kernel call over the flat buffer, bit for bit the per-parameter calls; same state_dict."""
    flat = build("mlp-ae", dtype=dtype, rng=0, hidden_dims=(6,), latent_dim=3, input_dim=5)
    plain = MODELS["mlp-ae"](rng=0, dtype=dtype, hidden_dims=(6,), latent_dim=3, input_dim=5)
    settings = dict(lr=1e-2, amsgrad=amsgrad, weight_decay=weight_decay)
    flat_optimizer = getattr(optim, name)(flat.parameters(), **settings)
    plain_optimizer = getattr(optim, name)(plain.parameters(), **settings)
    _train(flat, flat_optimizer, 5, seed)
    _train(plain, plain_optimizer, 5, seed)
    assert flat_optimizer._flat_cache[0][1] is not None, "the flat path ran"
    assert plain_optimizer._flat_cache[0][1] is None
    for (key, a), (_, b) in zip(flat.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=key)
    flat_state, plain_state = flat_optimizer.state_dict(), plain_optimizer.state_dict()
    assert flat_state["param_groups"] == plain_state["param_groups"]
    for index, entries in plain_state["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(flat_state["state"][index][key], value, err_msg=f"{index} {key}")


@given(seed=S.seeds, break_at=st.integers(1, 5))
def test_flat_adam_resumes_exactly_from_a_state_dict(seed, break_at):
    def make(model):
        return optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)

    straight, resumed = (build("mlp-ae", dtype=np.float64, rng=0, hidden_dims=(6,), latent_dim=3, input_dim=5)
                         for _ in range(2))
    _train(straight, make(straight), 6, seed)
    optimizer = _train(resumed, make(resumed), 6, seed, break_at=break_at, make_optimizer=make)
    assert optimizer._flat_cache[0][1] is not None, "the loaded state moved into flat buffers"
    for (key, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=key)


def test_flat_adam_falls_back_when_a_parameter_is_rebound():
    """Rebinding ``.data`` breaks the flat layout: the optimizer notices and updates the new array."""
    model = build("mlp-ae", dtype=np.float64, rng=0, hidden_dims=(6,), latent_dim=3, input_dim=5)
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    _train(model, optimizer, 2, 0)
    parameter = model.parameters()[0]
    parameter.data = parameter.data.copy()  # no longer a view of the flat buffer
    before = parameter.data.copy()
    _train(model, optimizer, 1, 1)
    assert optimizer._flat_cache[0][1] is None
    assert not np.array_equal(parameter.data, before), "the rebound parameter was updated"
    assert optimizer.state[id(parameter)]["step"] == 3.0


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
