"""Flatten, Unflatten and the Sequential container (``scratch/nn``).

Of the three oracles of docs/README.md, two apply:

1. torch parity (``torch.nn.Flatten`` / ``Unflatten`` / ``Sequential``): output, dx and, for a
   Sequential of every layer kind, every parameter gradient and the state_dict's keys in torch's order;
2. central differences of Flatten, Unflatten and a Sequential of Linear / Tanh / Sigmoid layers;
3. no kernel: Flatten and Unflatten are reshapes, Sequential calls its layers.

Plus Sequential's ``backward(input_grad=False)``, alone and in every registered model: no dx, the
same parameter gradients as the full pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK
from scratch import nn
from scratch.gradcheck import gradcheck
from scratch.models import MODELS, build, draw_noise
from scratch.testing import assert_matches_torch

# ---------------------------------------------------------------------------- oracle 1: torch


@given(case=S.flatten_cases(), dtype=S.dtypes, seed=S.seeds)
def test_flatten_matches_torch(case, dtype, seed):
    shape, start, end = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    assert_matches_torch(nn.Flatten(start, end), torch.nn.Flatten(start, end), x, rng=rng, what="Flatten")


@given(case=S.unflatten_cases(), dtype=S.dtypes, seed=S.seeds)
def test_unflatten_matches_torch(case, dtype, seed):
    shape, dim, sizes = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    assert_matches_torch(nn.Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes), x, rng=rng, what="Unflatten")


@given(batch=S.batch_sizes, widths=st.lists(S.features, min_size=2, max_size=4), dtype=S.dtypes, seed=S.seeds)
def test_sequential_matches_torch(batch, widths, dtype, seed):
    """A stack of every layer kind: output, dx and every parameter gradient, keys in torch's order."""
    rng = np.random.default_rng(seed)
    scratch_layers, torch_layers = [], []
    activations = [(nn.ReLU, torch.nn.ReLU), (nn.Tanh, torch.nn.Tanh), (nn.Sigmoid, torch.nn.Sigmoid)]
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        scratch_layers.append(nn.Linear(fan_in, fan_out, rng=rng, dtype=dtype))
        torch_layers.append(torch.nn.Linear(fan_in, fan_out))
        make_scratch, make_torch = activations[index % 3]
        scratch_layers.append(make_scratch())
        torch_layers.append(make_torch())
    scratch_layers += [nn.Unflatten(1, (widths[-1], 1)), nn.Flatten()]
    torch_layers += [torch.nn.Unflatten(1, (widths[-1], 1)), torch.nn.Flatten()]
    model = nn.Sequential(*scratch_layers)
    twin = torch.nn.Sequential(*torch_layers)
    assert list(model.state_dict()) == list(twin.state_dict())
    x = rng.standard_normal((batch, widths[0])).astype(dtype)
    assert_matches_torch(model, twin, x, rng=rng, what="Sequential")


# ---------------------------------------------------------------------------- oracle 2: central differences


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


@given(batch=S.batch_sizes, widths=st.lists(S.features, min_size=2, max_size=4), seed=S.seeds)
def test_sequential(batch, widths, seed):
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out, rng=rng, dtype=np.float64), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Sigmoid())
    gradcheck(model, rng.standard_normal((batch, widths[0])), rng=rng, **GRADCHECK)


# ---------------------------------------------------------------------------- backward without dx


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
