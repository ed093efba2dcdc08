"""Oracle 1 for the layers: torch parity of output, input gradient and every parameter gradient,
through ``scratch.testing.assert_matches_torch`` (random cotangent, the one tolerance table)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import activation_backward_terms, assert_close
from scratch import nn
from scratch.testing import assert_matches_torch


@given(case=S.linear_cases(), dtype=S.dtypes, seed=S.seeds)
def test_linear_matches_torch(case, dtype, seed):
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=rng, dtype=dtype)
    twin = torch.nn.Linear(fan_in, fan_out, bias=bias)
    x = rng.standard_normal((*leading, fan_in)).astype(dtype)
    # output, dx, dweight and (with a bias) dbias, through a random cotangent
    assert_matches_torch(layer, twin, x, rng=rng, what="Linear")
    assert list(layer.state_dict()) == list(twin.state_dict())


@given(case=S.linear_cases(), seed=S.seeds)
def test_linear_backward_accumulates_like_torch(case, seed):
    """Two backward passes add their gradients into .grad, as torch's autograd does."""
    leading, fan_in, fan_out, bias = case
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=rng, dtype=np.float64)
    twin = torch.nn.Linear(fan_in, fan_out, bias=bias).double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    for _ in range(2):
        x = rng.standard_normal((*leading, fan_in))
        grad_output = rng.standard_normal((*leading, fan_out))
        layer(x)
        layer.backward(grad_output)
        twin(torch.tensor(x)).backward(torch.tensor(grad_output))
    assert_close(layer.weight.grad, twin.weight.grad, "torch", np.float64, "accumulated dweight")


ACTIVATIONS = {
    "ReLU": (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    "Tanh": (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
}


@given(name=st.sampled_from(sorted(ACTIVATIONS)), shape=S.shapes(), dtype=S.dtypes, seed=S.seeds,
       scale=st.sampled_from([1.0, 10.0]))
def test_activation_matches_torch(name, shape, dtype, seed, scale):
    rng = np.random.default_rng(seed)
    make_scratch, make_torch = ACTIVATIONS[name]
    # exact zeros included: the gradient convention at the kink must match torch's too
    x = (scale * rng.standard_normal(shape) * (rng.random(shape) > 0.1)).astype(dtype)
    # dx against the magnitude of the terms its formula combines (it cancels where |y| -> 1)
    terms = {"grad_input[0]": lambda cotangent, output: activation_backward_terms(name, cotangent, output)}
    assert_matches_torch(make_scratch(), make_torch(), x, rng=rng, what=name, scale=terms)


@given(slope=S.negative_slopes, shape=S.shapes(), dtype=S.dtypes, seed=S.seeds)
def test_leaky_relu_matches_torch(slope, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * (rng.random(shape) > 0.1)).astype(dtype)
    assert_matches_torch(nn.LeakyReLU(slope), torch.nn.LeakyReLU(slope), x, rng=rng, what="LeakyReLU")


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


@given(batch=S.batch_sizes, widths=st.lists(S.features, min_size=2, max_size=4), dtype=S.dtypes, seed=S.seeds,
       slopes=st.lists(st.one_of(st.none(), S.non_negative_slopes), min_size=3, max_size=3))
def test_fused_linear_activation_pairs_match_torch(batch, widths, dtype, seed, slopes):
    """Sequential runs each Linear + ReLU / LeakyReLU(slope >= 0) as one fused pass (None: ReLU);
    output, dx and every gradient against torch's unfused layers."""
    rng = np.random.default_rng(seed)
    scratch_layers, torch_layers = [], []
    for (fan_in, fan_out), slope in zip(zip(widths[:-1], widths[1:]), slopes):
        scratch_layers.append(nn.Linear(fan_in, fan_out, rng=rng, dtype=dtype))
        torch_layers.append(torch.nn.Linear(fan_in, fan_out))
        scratch_layers.append(nn.ReLU() if slope is None else nn.LeakyReLU(slope))
        torch_layers.append(torch.nn.ReLU() if slope is None else torch.nn.LeakyReLU(slope))
    model = nn.Sequential(*scratch_layers)
    assert all(model[i].fuses_with(model[i + 1]) for i in range(0, len(model), 2)), "the fused path runs"
    x = rng.standard_normal((batch, widths[0])).astype(dtype)
    assert_matches_torch(model, torch.nn.Sequential(*torch_layers), x, rng=rng, what="fused Sequential")
