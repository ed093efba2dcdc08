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
from scratch.models import MODELS, REGISTRY, build, draw_noise
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
    labels = REGISTRY[name].label_arguments(np.array([1, 4, 7]))  # a conditional model's classes
    model.loss(x, noise=noise, **labels)
    other.loss(x, noise=noise, **labels)
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


# ---------------------------------------------------------------------------- empty, 0-d and inferred sizes (issue 15)


@given(case=S.flatten_cases(empty=True), dtype=S.dtypes, seed=S.seeds)
def test_flatten_of_empty_and_0d_inputs_matches_torch(case, dtype, seed):
    """(0, 3, 4) -> (0, 12), (2, 0, 4) -> (2, 0), a 0-d input -> (1,): torch's flatten."""
    shape, start, end = case
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape)).astype(dtype)
    assert_matches_torch(nn.Flatten(start, end), torch.nn.Flatten(start, end), x, rng=rng, what="Flatten")


@given(case=S.unflatten_cases(empty=True, infer=True), dtype=S.dtypes, seed=S.seeds)
def test_unflatten_with_empty_sizes_and_an_inferred_size_matches_torch(case, dtype, seed):
    shape, dim, sizes = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    assert_matches_torch(nn.Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes), x, rng=rng, what="Unflatten")


@given(case=S.flatten_cases(empty=True), seed=S.seeds)
def test_flatten_of_empty_and_0d_inputs_by_central_differences(case, seed):
    shape, start, end = case
    rng = np.random.default_rng(seed)
    gradcheck(nn.Flatten(start, end), np.asarray(rng.standard_normal(shape)), rng=rng, **GRADCHECK)


@given(case=S.unflatten_cases(empty=True, infer=True), seed=S.seeds)
def test_unflatten_with_an_inferred_size_by_central_differences(case, seed):
    shape, dim, sizes = case
    rng = np.random.default_rng(seed)
    gradcheck(nn.Unflatten(dim, sizes), rng.standard_normal(shape), rng=rng, **GRADCHECK)


@pytest.mark.parametrize("make, shape, message", [
    (lambda m: m.Unflatten(1, (-1, 0)), (2, 0), r"the -1 is ambiguous when the other sizes multiply to 0"),
    (lambda m: m.Unflatten(1, (0, -1)), (2, 0), r"the -1 is ambiguous"),
    (lambda m: m.Unflatten(1, (5, -1)), (2, 12), r"cannot be split into \(5, -1\)$"),
    (lambda m: m.Unflatten(0, (2,)), (), r"a 0-d input has no dimension to split"),
    (lambda m: m.Flatten(), (), r"start_dim 1 out of range for an input of shape \(\)"),
    (lambda m: m.Flatten(0, 1), (), r"end_dim 1 out of range for an input of shape \(\)"),
    (lambda m: m.Flatten(2, 1), (2, 3, 4), r"start_dim 2 comes after end_dim 1"),
])
def test_what_torch_refuses_is_refused(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make(nn)(np.zeros(shape))
    with pytest.raises((RuntimeError, IndexError)):
        make(torch.nn)(torch.zeros(shape))


@pytest.mark.parametrize("sizes, error, message", [
    ((-1, -1), ValueError, r"unflattened_size must be sizes >= 0, with at most one -1 \(inferred\), got \(-1, -1\)$"),
    ((-2, 3), ValueError, r"unflattened_size must be sizes >= 0, with at most one -1 \(inferred\), got \(-2, 3\)$"),
    ((), ValueError, r"unflattened_size must be non-empty"), ((2.0, 3), TypeError, r"unflattened_size\[0\] must be an int"),
])
def test_unflatten_refuses_sizes_torch_cannot_use(sizes, error, message):
    """torch finds these at forward (or construction, for a float); scratch at construction."""
    with pytest.raises(error, match=r"^Unflatten: " + message):
        nn.Unflatten(1, sizes)


@pytest.mark.parametrize("leading", [(0,), (0, 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_sequential_of_every_layer_kind_on_an_empty_batch_matches_torch(leading, dtype):
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Unflatten(-1, (2, 3)), nn.Flatten(-2), nn.Linear(6, 4, rng=rng, dtype=dtype), nn.ReLU(),
                          nn.Linear(4, 4, rng=rng, dtype=dtype), nn.LeakyReLU(0.1, inplace=True),
                          nn.Linear(4, 3, rng=rng, dtype=dtype), nn.Tanh(), nn.Linear(3, 2, rng=rng, dtype=dtype),
                          nn.Sigmoid())
    twin = torch.nn.Sequential(torch.nn.Unflatten(-1, (2, 3)), torch.nn.Flatten(-2), torch.nn.Linear(6, 4),
                               torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.LeakyReLU(0.1, inplace=True),
                               torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2), torch.nn.Sigmoid())
    x = np.zeros((*leading, 6), dtype)
    assert_matches_torch(model, twin, x, rng=rng, what="empty Sequential")
    assert not any(p.grad.any() for p in model.parameters())


def test_a_sequential_of_an_ordered_dict_is_keyed_by_its_names_like_torch():
    from collections import OrderedDict

    rng = np.random.default_rng(6)
    model = nn.Sequential(OrderedDict([("encoder", nn.Linear(3, 4, rng=rng, dtype=np.float64)), ("act", nn.Tanh()),
                                       ("decoder", nn.Linear(4, 2, rng=rng, dtype=np.float64))]))
    twin = torch.nn.Sequential(OrderedDict([("encoder", torch.nn.Linear(3, 4)), ("act", torch.nn.Tanh()),
                                            ("decoder", torch.nn.Linear(4, 2))]))
    assert list(model.state_dict()) == list(twin.state_dict()) == ["encoder.weight", "encoder.bias",
                                                                   "decoder.weight", "decoder.bias"]
    assert model[2] is model.decoder and len(model) == 3
    assert_matches_torch(model, twin, rng.standard_normal((5, 3)), rng=rng, what="named Sequential")
    assert repr(nn.Sequential(OrderedDict(act=nn.ReLU()))) == repr(torch.nn.Sequential(OrderedDict(act=torch.nn.ReLU())))
