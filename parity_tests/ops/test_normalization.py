"""Normalization: torch parity, float64 central differences, Numba kernels against their NumPy
references, and the parallel kernels against their serial twins (docs/normalization.md).

The three oracles of docs/README.md, for ``scratch/functional/normalization.py``,
``scratch/kernels/normalization.py`` and ``scratch.nn.BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``
and ``GroupNorm``: (1) torch parity against torch's own modules: outputs, dx, weight and bias
gradients, and BatchNorm's buffers over several consecutive training steps and then in evaluation
mode, for every constructor argument (momentum a float or None, ``track_running_stats`` off,
``affine`` off, ``bias`` off), and ``load_state_dict`` both ways, strict; (2) central differences
with a random cotangent, every element, for BatchNorm's training-mode backward through the batch
statistics and its evaluation-mode backward separately, LayerNorm and GroupNorm, layers and pairs;
(3) each kernel against its NumPy reference, and parallel against serial bit for bit. The fourth
oracle, torch's own samples, is ``parity_tests/ops/test_torch_database.py -k "norm or Norm"``.

Shapes are drawn valid by construction, never filtered: batch 1 where torch allows it (evaluation
mode, (1, C, L > 1), LayerNorm and GroupNorm), one channel, one group or a group per channel,
groups of two values.

Where dx cancels: dx = (1/σ)·(g - mean(g) - x̂·mean(g·x̂)) subtracts terms of size |g|/σ, and for
a group of two values the result is eps/(σ² + eps) of them (docs/normalization.md, "Groups of one
or two values"): float32 rounding in either library is then a large *relative* error in dx. So
dx (and dγ, dβ) are compared with the absolute part of the tolerance scaled by the magnitude of
those terms (``assert_close``'s ``scale``), the table's tolerance unchanged; a missing or wrong
term is off by the terms themselves and fails by orders of magnitude.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.test_reliability_inputs import refused
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import functional as F
from scratch import nn
from scratch.gradcheck import gradcheck
from scratch.kernels import normalization as K
from scratch.testing import assert_matches_torch

# -- cases (valid by construction) ----------------------------------------------------------

# within [0, 1] the running variance stays a convex mix of positive numbers; torch takes any number
# (a negative momentum extrapolates, and can drive the running variance negative: NaN in evaluation
# mode, for both): test_a_momentum_outside_0_1_extrapolates_like_torch
MOMENTA = st.sampled_from([0.1, 0.5, None, 1.0, 0.0])
EPSILONS = st.sampled_from([1e-5, 1e-3, 0.5])


@st.composite
def batch_norm_cases(draw, training=True):
    """A BatchNorm layer's arguments and an input shape. In training (batch statistics) every
    channel holds at least two values (N·L >= 2, torch's rule): batch 1 only with L > 1."""
    layout = draw(st.sampled_from(["NC", "NCL", "NCHW"]))
    channels = draw(st.integers(1, 4))
    least = 2 if training else 1
    if layout == "NC":
        shape = (draw(st.integers(least, 6)), channels)
    elif layout == "NCL":
        batch = draw(st.integers(1, 4))
        shape = (batch, channels, draw(st.integers(least if batch == 1 else 1, 5)))
    else:
        batch, height = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        shape = (batch, channels, height, draw(st.integers(least if batch * height == 1 else 1, 4)))
    options = draw(st.fixed_dictionaries({"eps": EPSILONS, "momentum": MOMENTA, "affine": st.booleans(),
                                          "track_running_stats": st.booleans(), "bias": st.booleans()}))
    return {"layer": "BatchNorm2d" if layout == "NCHW" else "BatchNorm1d", "num_features": channels, "x_shape": shape,
            **options}


@st.composite
def layer_norm_cases(draw):
    """normalized_shape of 1 to 3 axes (at least two values), behind 0 to 2 leading axes."""
    normalized = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    if math.prod(normalized) == 1:
        normalized = (*normalized[:-1], draw(st.integers(2, 4)))
    leading = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    options = draw(st.fixed_dictionaries({"eps": EPSILONS, "elementwise_affine": st.booleans(), "bias": st.booleans()}))
    return {"normalized_shape": normalized, "x_shape": leading + normalized, **options}


@st.composite
def group_norm_cases(draw):
    """num_groups, channels per group, a batch (1 allowed) and 0 to 2 spatial axes; every group
    holds at least two values: (C/G)·L >= 2 (one group per channel, if L >= 2)."""
    groups, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    if per_group * math.prod(spatial) == 1:
        spatial = (*spatial[:-1], 2) if spatial else (2,)
    options = draw(st.fixed_dictionaries({"eps": EPSILONS, "affine": st.booleans(), "bias": st.booleans()}))
    channels = groups * per_group
    return {"num_groups": groups, "num_channels": channels,
            "x_shape": (draw(st.integers(1, 4)), channels, *spatial), **options}


def _input(rng, shape, dtype):
    """Normal values with a random scale and offset per draw: the mean term matters."""
    return (rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + rng.uniform(-5.0, 5.0)).astype(dtype)


def _torch_dtype(dtype):
    return getattr(torch, np.dtype(dtype).name)


def _batch_norm_pair(case, dtype):
    arguments = {key: case[key] for key in ("num_features", "eps", "momentum", "affine", "track_running_stats")}
    layer = getattr(nn, case["layer"])(**arguments, bias=case["bias"], dtype=dtype)
    twin = getattr(torch.nn, case["layer"])(**arguments, bias=case["bias"], dtype=_torch_dtype(dtype))
    return layer, twin


def _randomize_affine(layer, rng):
    """weight away from 1 and bias away from 0, so that both paths of the affine map are exercised."""
    if layer.weight is not None:
        layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.weight.shape) * rng.choice([-1, 1], layer.weight.shape)
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(layer.bias.shape)


def _load_into_torch(layer, twin):
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in layer.state_dict().items()}, strict=True)


def _assert_same_state(layer, twin, dtype, what):
    """Keys in torch's order, shapes and dtypes; the running statistics under the table's tolerance,
    num_batches_tracked exactly."""
    ours, theirs = layer.state_dict(), twin.state_dict()
    assert list(ours) == list(theirs), f"{what}: state_dict keys {list(ours)}, torch's {list(theirs)}"
    for key, value in theirs.items():
        expected = value.numpy()
        assert ours[key].dtype == expected.dtype and ours[key].shape == expected.shape, (what, key)
        if key == "num_batches_tracked":
            assert int(ours[key]) == int(expected), f"{what}: {key} {int(ours[key])}, torch's {int(expected)}"
        else:
            assert_close(ours[key], expected, "torch", dtype, f"{what}: state_dict[{key!r}]")


# -- the terms each gradient combines (the scale its rounding is relative to) ---------------


def _group_terms(x_groups, g_groups, inverse_sigma):
    """For (P, K) rows, one normalised group each: the element-wise magnitude of the terms of
    dx = (1/σ)(g - mean g - x̂·mean(g·x̂)), with |x̂| bounded by a = (|x| + |μ|)/σ, the size of the
    two terms x/σ and μ/σ whose difference x̂ is (torch's a·x + b form rounds those):
    (1/σ)(|g| + mean|g| + a·mean(|g|·a))."""
    mean = x_groups.mean(axis=1, keepdims=True)
    a = (np.abs(x_groups) + np.abs(mean)) * inverse_sigma[:, None]
    magnitude = np.abs(g_groups)
    return inverse_sigma[:, None] * (magnitude + magnitude.mean(axis=1, keepdims=True)
                                     + a * (magnitude * a).mean(axis=1, keepdims=True))


def _scales(layer, x, groups_of, gamma_of, parameter_sums, dx=True):
    """``assert_matches_torch``'s ``scale``: for "grad_input[0]" the dx terms above (if ``dx``);
    for the parameters Σ|dy|·a (dγ) and Σ|dy| (dβ) over the axes ``parameter_sums`` reduces.

    groups_of(array) -> (P, K) and back(array) via the returned inverse; gamma_of(dy) -> g = γ·dy.
    """
    wide = x.astype(np.float64)
    x_groups, back = groups_of(wide)
    variance = x_groups.var(axis=1)
    inverse_sigma = 1.0 / np.sqrt(variance + float(layer.eps))

    def a_of():
        mean = x_groups.mean(axis=1, keepdims=True)
        return back((np.abs(x_groups) + np.abs(mean)) * inverse_sigma[:, None])

    scale = {}
    if dx:
        scale["grad_input[0]"] = lambda cotangent, _: back(
            _group_terms(x_groups, groups_of(gamma_of(np.asarray(cotangent, np.float64)))[0], inverse_sigma))
    if layer.weight is not None:
        scale["grad 'weight'"] = lambda cotangent, _: parameter_sums(np.abs(cotangent) * a_of())
    if layer.bias is not None:
        scale["grad 'bias'"] = lambda cotangent, _: parameter_sums(np.abs(np.asarray(cotangent, np.float64)))
    return scale


def _batch_norm_scales(layer, x, batch_statistics=True):
    n, c = x.shape[:2]
    length = math.prod(x.shape[2:])

    def groups_of(a):  # (N, C, *) -> (C, N·L)
        return a.reshape(n, c, length).transpose(1, 0, 2).reshape(c, n * length), \
            lambda rows: rows.reshape(c, n, length).transpose(1, 0, 2).reshape(x.shape)

    weight = 1.0 if layer.weight is None else layer.weight.data.astype(np.float64).reshape(1, c, *([1] * (x.ndim - 2)))
    if not batch_statistics:  # a per-channel affine map of dy: nothing cancels in dx; μ, σ the running ones
        return {}
    return _scales(layer, x, groups_of, lambda dy: dy * weight,
                   lambda terms: terms.reshape(n, c, length).sum(axis=(0, 2)))


def _layer_norm_scales(layer, x):
    width = math.prod(layer.normalized_shape)
    rows = x.size // width

    def groups_of(a):
        return a.reshape(rows, width), lambda groups: groups.reshape(x.shape)

    weight = 1.0 if layer.weight is None else layer.weight.data.astype(np.float64)
    return _scales(layer, x, groups_of, lambda dy: dy * weight,
                   lambda terms: terms.reshape(rows, *layer.normalized_shape).sum(axis=0))


def _group_norm_scales(layer, x):
    n, c = x.shape[:2]
    length, groups = math.prod(x.shape[2:]), layer.num_groups

    def groups_of(a):
        return a.reshape(n * groups, a.size // (n * groups)), lambda rows: rows.reshape(x.shape)

    weight = 1.0 if layer.weight is None else layer.weight.data.astype(np.float64).reshape(1, c, *([1] * (x.ndim - 2)))
    return _scales(layer, x, groups_of, lambda dy: dy * weight,
                   lambda terms: terms.reshape(n, c, length).sum(axis=(0, 2)))


# -- oracle 1: torch parity ------------------------------------------------------------------


@given(case=batch_norm_cases(), dtype=S.dtypes, seed=S.seeds, steps=st.integers(1, 3))
def test_batch_norm_matches_torch_over_training_steps_then_in_eval(case, dtype, seed, steps):
    """Several consecutive training steps (the running statistics compound, num_batches_tracked
    counts them, momentum=None averages them), each compared in output, dx, dγ, dβ and buffers;
    then evaluation mode with what training left, compared the same way, buffers unchanged."""
    rng = np.random.default_rng(seed)
    layer, twin = _batch_norm_pair(case, dtype)
    _randomize_affine(layer, rng)
    _load_into_torch(layer, twin)
    for step in range(steps):
        what = f"{layer!r} training step {step + 1} on {case['x_shape']}"
        x = _input(rng, case["x_shape"], dtype)
        assert_matches_torch(layer, twin, x, rng=rng, load_weights=False, what=what,
                             scale=_batch_norm_scales(layer, x))
        _assert_same_state(layer, twin, dtype, what)
    layer.eval()
    twin.eval()
    what = f"{layer!r} in eval after {steps} steps"
    x = _input(rng, case["x_shape"], dtype)
    assert_matches_torch(layer, twin, x, rng=rng, load_weights=False, what=what,
                         scale=_batch_norm_scales(layer, x, batch_statistics=not case["track_running_stats"]))
    _assert_same_state(layer, twin, dtype, what)
    assert repr(layer) == repr(twin)


@given(case=batch_norm_cases(training=False), dtype=S.dtypes, seed=S.seeds)
def test_batch_norm_in_eval_takes_batch_one_and_loaded_statistics_like_torch(case, dtype, seed):
    """Evaluation mode with running statistics loaded from torch (any positive variance): batch 1
    and single values per channel are allowed there, as in torch."""
    rng = np.random.default_rng(seed)
    case = {**case, "track_running_stats": True}
    layer, twin = _batch_norm_pair(case, dtype)
    with torch.no_grad():
        twin.running_mean.copy_(torch.from_numpy(rng.standard_normal(case["num_features"])))
        twin.running_var.copy_(torch.from_numpy(rng.uniform(0.2, 3.0, case["num_features"])))
        twin.num_batches_tracked.fill_(7)
        if twin.weight is not None:
            twin.weight.copy_(torch.from_numpy(rng.uniform(-2, 2, case["num_features"])))
    layer.load_state_dict(twin.state_dict(), strict=True)
    layer.eval()
    twin.eval()
    assert_matches_torch(layer, twin, _input(rng, case["x_shape"], dtype), rng=rng, load_weights=False, what=repr(layer))
    _assert_same_state(layer, twin, dtype, f"{layer!r} in eval")


@given(case=layer_norm_cases(), dtype=S.dtypes, seed=S.seeds)
def test_layer_norm_matches_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    arguments = {key: case[key] for key in ("normalized_shape", "eps", "elementwise_affine", "bias")}
    layer, twin = nn.LayerNorm(**arguments, dtype=dtype), torch.nn.LayerNorm(**arguments)
    _randomize_affine(layer, rng)
    x = _input(rng, case["x_shape"], dtype)
    assert_matches_torch(layer, twin, x, rng=rng, what=repr(layer), scale=_layer_norm_scales(layer, x))
    assert repr(layer) == repr(twin)
    in_training = layer(x)
    np.testing.assert_array_equal(layer.eval()(x), in_training)  # the same in both modes


@given(case=group_norm_cases(), dtype=S.dtypes, seed=S.seeds)
def test_group_norm_matches_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    arguments = {key: case[key] for key in ("num_groups", "num_channels", "eps", "affine")}
    layer = nn.GroupNorm(**arguments, bias=case["bias"], dtype=dtype)
    twin = torch.nn.GroupNorm(**arguments, bias=case["bias"])
    _randomize_affine(layer, rng)
    x = _input(rng, case["x_shape"], dtype)
    assert_matches_torch(layer, twin, x, rng=rng, what=repr(layer), scale=_group_norm_scales(layer, x))
    assert repr(layer) == repr(twin)


def test_functional_batch_norm_matches_torchs_and_updates_the_running_statistics_in_place():
    """The pair itself against torch.nn.functional.batch_norm: the same output, and the same
    running statistics written into the arrays it was given (training), or read (evaluation)."""
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((5, 3, 4)) + 2, rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    for training in (True, False):
        mean, var = running_mean.copy(), running_var.copy()
        tmean, tvar = torch.from_numpy(running_mean.copy()), torch.from_numpy(running_var.copy())
        y, _ = F.batch_norm_forward(x, weight, bias, mean, var, training, 0.3, 1e-3)
        expected = torch.nn.functional.batch_norm(torch.from_numpy(x), tmean, tvar, torch.from_numpy(weight),
                                                  torch.from_numpy(bias), training, 0.3, 1e-3)
        assert_close(y, expected, "torch", np.float64, f"batch_norm_forward(training={training})")
        assert_close(mean, tmean, "torch", np.float64, "running_mean")
        assert_close(var, tvar, "torch", np.float64, "running_var")
        assert np.array_equal(mean, running_mean) != training  # updated in training only


def test_momentum_none_is_the_cumulative_average_of_the_unbiased_statistics():
    """momentum=None: after k steps the running mean is the plain average of the k batch means and
    the running variance that of the k unbiased batch variances (torch's 1/num_batches_tracked);
    the normalisation itself uses the biased one."""
    rng = np.random.default_rng(1)
    layer = nn.BatchNorm1d(2, momentum=None, affine=False, dtype=np.float64)
    batches = [rng.standard_normal((4, 2)) * (k + 1) + k for k in range(3)]
    for x in batches:
        y = layer(x)
        np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + layer.eps), rtol=1e-12)
    # the first step replaces the initial (0, 1) entirely (factor 1/1)
    np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(0) for x in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, np.mean([x.var(0, ddof=1) for x in batches], axis=0), rtol=1e-12)
    assert layer.num_batches_tracked.dtype == np.int64 and layer.num_batches_tracked.shape == ()
    assert int(layer.num_batches_tracked) == 3


def test_a_float_momentum_moves_the_running_statistics_by_that_factor():
    rng = np.random.default_rng(2)
    layer = nn.BatchNorm2d(3, momentum=0.25, dtype=np.float64)
    x = rng.standard_normal((2, 3, 2, 3))
    layer(x)
    per_channel = x.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(layer.running_mean, 0.25 * per_channel.mean(1), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.75 + 0.25 * per_channel.var(1, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("momentum", [-1.0, -0.3, 1.5])
def test_a_momentum_outside_0_1_extrapolates_like_torch(momentum):
    """torch takes any momentum: the same update, extrapolating; a negative running variance it
    may produce gives NaN in evaluation mode on both sides."""
    rng = np.random.default_rng(10)
    layer = nn.BatchNorm1d(3, momentum=momentum, dtype=np.float64)
    twin = torch.nn.BatchNorm1d(3, momentum=momentum, dtype=torch.float64)
    for step in range(3):
        x = _input(rng, (4, 3, 2), np.float64)
        assert_matches_torch(layer, twin, x, rng=rng, load_weights=False, scale=_batch_norm_scales(layer, x))
        _assert_same_state(layer, twin, np.float64, f"momentum={momentum}, step {step + 1}")
    layer.eval()
    twin.eval()
    x = _input(rng, (2, 3, 2), np.float64)
    np.testing.assert_array_equal(np.isnan(layer(x)), np.isnan(twin(torch.from_numpy(x)).detach().numpy()))


def test_without_running_statistics_the_batch_statistics_are_used_in_eval_too():
    layer, twin = nn.BatchNorm1d(3, track_running_stats=False, dtype=np.float64), torch.nn.BatchNorm1d(
        3, track_running_stats=False, dtype=torch.float64)
    assert layer.running_mean is None and layer.running_var is None and layer.num_batches_tracked is None
    assert list(layer.state_dict()) == list(twin.state_dict()) == ["weight", "bias"]
    assert [name for name, _ in layer.named_buffers()] == []
    layer.eval()
    twin.eval()
    x = np.random.default_rng(3).standard_normal((4, 3, 2))
    assert_matches_torch(layer, twin, x, rng=3, what="eval without running statistics")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        layer(x[:1, :, :1])  # batch statistics of one value: refused in eval too, as torch


def test_training_dx_goes_through_the_batch_statistics_and_eval_dx_does_not():
    """A gradient on example 1 alone reaches example 0's dx in training (through μ and σ²), and
    not in evaluation mode, where BatchNorm is the per-channel affine map dx = γ/√(r_σ² + eps)·dy."""
    rng = np.random.default_rng(4)
    layer = nn.BatchNorm1d(2, dtype=np.float64)
    layer.weight.data[...] = [2.0, -0.5]
    x = rng.standard_normal((3, 2))
    dy = np.zeros_like(x)
    dy[1] = rng.standard_normal(2)
    layer(x)
    assert np.all(np.abs(layer.backward(dy)[0]) > 1e-3)
    layer.eval()
    layer.running_var[...] = [4.0, 0.25]
    layer(x)
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx[0], 0.0)
    np.testing.assert_allclose(dx[1], layer.weight.data / np.sqrt(layer.running_var + layer.eps) * dy[1], rtol=1e-15)


def test_backward_adds_into_the_parameter_gradients():
    rng = np.random.default_rng(5)
    for layer, shape in ((nn.BatchNorm2d(2, dtype=np.float64), (2, 2, 3, 3)), (nn.LayerNorm((3, 4), dtype=np.float64),
                         (2, 3, 4)), (nn.GroupNorm(2, 4, dtype=np.float64), (3, 4, 5))):
        x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
        layer(x)
        layer.backward(dy)
        once = {name: p.grad.copy() for name, p in layer.named_parameters()}
        layer(x)
        layer.backward(dy)
        for name, parameter in layer.named_parameters():
            np.testing.assert_allclose(parameter.grad, 2 * once[name], rtol=1e-14, err_msg=f"{layer!r} {name}")


@pytest.mark.parametrize("options", [
    dict(), dict(momentum=None), dict(affine=False), dict(bias=False), dict(track_running_stats=False),
    dict(affine=False, track_running_stats=False),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_state_dict_moves_both_ways_strictly(options, dtype):
    """torch's keys in torch's order, shapes and dtypes (running statistics in the layer's dtype,
    num_batches_tracked int64 0-d); torch's trained buffers into scratch and scratch's into torch,
    strict, in place; then both compute the same in evaluation mode."""
    rng = np.random.default_rng(6)
    layer, twin = nn.BatchNorm2d(3, **options, dtype=dtype), torch.nn.BatchNorm2d(3, **options,
                                                                                   dtype=_torch_dtype(dtype))
    _assert_same_state(layer, twin, dtype, "fresh")  # initial values: weight 1, bias 0, (0, 1, 0)
    for _ in range(2):
        twin(torch.from_numpy(_input(rng, (2, 3, 3, 2), dtype)))
    held = {name: array for name, array in layer.named_buffers()}
    layer.load_state_dict(twin.state_dict(), strict=True)
    assert all(array is getattr(layer, name) for name, array in held.items())  # in place
    _assert_same_state(layer, twin, dtype, "torch -> scratch")
    for _ in range(2):
        layer(_input(rng, (2, 3, 3, 2), dtype))
    back = torch.nn.BatchNorm2d(3, **options, dtype=_torch_dtype(dtype))
    _load_into_torch(layer, back)
    _assert_same_state(layer, back, dtype, "scratch -> torch")
    layer.eval()
    back.eval()
    assert_matches_torch(layer, back, _input(rng, (1, 3, 2, 2), dtype), rng=rng, load_weights=False,
                         what=f"eval after loading both ways {options}")


@pytest.mark.parametrize("make", [
    lambda torch_side: (torch.nn if torch_side else nn).LayerNorm((2, 3), elementwise_affine=True, bias=False),
    lambda torch_side: (torch.nn if torch_side else nn).GroupNorm(2, 4, affine=True),
    lambda torch_side: (torch.nn if torch_side else nn).GroupNorm(2, 4, affine=False),
])
def test_layer_and_group_norm_state_dict_moves_both_ways_strictly(make):
    ours, theirs = make(False), make(True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == tuple(value.shape) and ours.state_dict()[key].dtype == np.float32
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy())  # torch's init: ones and zeros
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.uniform_()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    again = make(True)
    _load_into_torch(ours, again)
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key].numpy(), value.numpy())


@pytest.mark.parametrize("arguments", [
    ("BatchNorm1d", (3,), {}), ("BatchNorm1d", (4, 1e-3, None, False), {}), ("BatchNorm2d", (2,), dict(bias=False)),
    ("BatchNorm2d", (2, 0.5, 0.3, True, False), {}), ("LayerNorm", (4,), {}), ("LayerNorm", ([2, 3], 1e-3, False), {}),
    ("LayerNorm", ((2, 3),), dict(bias=False)), ("GroupNorm", (2, 4), {}), ("GroupNorm", (3, 6, 1e-3, False), {}),
    ("GroupNorm", (1, 5), dict(bias=False)),
])
def test_repr_and_parameters_like_torch(arguments):
    name, args, kwargs = arguments
    layer, twin = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert repr(layer) == repr(twin)
    assert [(key, p.shape) for key, p in layer.named_parameters()] == [
        (key, tuple(p.shape)) for key, p in twin.named_parameters()]


def test_empty_inputs_like_torch():
    """An empty batch (or channel, row, spatial axis; or no channels or features at all): an empty
    output and dx, zero parameter gradients; BatchNorm in training counts the call
    (num_batches_tracked + 1) and leaves the running statistics, as torch."""
    for layer, twin, shape in (
            (nn.BatchNorm1d(5, 1e-3, 0.3, dtype=np.float64), torch.nn.BatchNorm1d(5, 1e-3, 0.3, dtype=torch.float64),
             (0, 5, 9)),
            (nn.BatchNorm2d(2, momentum=None, dtype=np.float64), torch.nn.BatchNorm2d(2, momentum=None,
                                                                                      dtype=torch.float64), (0, 2, 2, 2)),
            (nn.BatchNorm1d(3, dtype=np.float64), torch.nn.BatchNorm1d(3, dtype=torch.float64), (2, 3, 0)),
            (nn.LayerNorm(5, dtype=np.float64), torch.nn.LayerNorm(5, dtype=torch.float64), (0, 5)),
            (nn.GroupNorm(2, 4, dtype=np.float64), torch.nn.GroupNorm(2, 4, dtype=torch.float64), (0, 4, 3)),
            (nn.LayerNorm((2, 3), dtype=np.float64), torch.nn.LayerNorm((2, 3), dtype=torch.float64), (0, 4, 2, 3)),
            (nn.LayerNorm(0, dtype=np.float64), torch.nn.LayerNorm(0, dtype=torch.float64), (2, 0)),
            (nn.GroupNorm(1, 0, dtype=np.float64), torch.nn.GroupNorm(1, 0, dtype=torch.float64), (2, 0, 3))):
        x = np.zeros(shape)
        assert_matches_torch(layer, twin, x, rng=0, what=f"{layer!r} on {shape}")
        if hasattr(twin, "running_mean"):
            _assert_same_state(layer, twin, np.float64, f"{layer!r} on {shape}")
            assert int(layer.num_batches_tracked) == 1


def test_sequential_with_batch_norm_matches_torch():
    """Linear (no bias) -> BatchNorm1d -> ReLU as one Sequential, two training steps and one in eval.
    A bias in front of a training-mode BatchNorm is subtracted again with the mean: its exact
    gradient is 0 and both libraries return rounding noise, compared separately below."""
    rng = np.random.default_rng(7)
    model = nn.Sequential(nn.Linear(4, 3, bias=False, rng=rng, dtype=np.float64), nn.BatchNorm1d(3, dtype=np.float64),
                          nn.ReLU())
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.BatchNorm1d(3), torch.nn.ReLU()).double()
    _randomize_affine(model[1], rng)
    _load_into_torch(model, twin)
    for training in (True, True, False):
        model.train(training)
        twin.train(training)
        assert_matches_torch(model, twin, rng.standard_normal((6, 4)), rng=rng, load_weights=False)
        _assert_same_state(model, twin, np.float64, f"Sequential, training={training}")
    biased = nn.Sequential(nn.Linear(4, 3, rng=rng, dtype=np.float64), nn.BatchNorm1d(3, dtype=np.float64))
    biased.backward(rng.standard_normal(biased(rng.standard_normal((6, 4))).shape))
    assert np.all(np.abs(biased[0].bias.grad) < 1e-14)


# -- refusals ------------------------------------------------------------------------------


def _bn(*args, **kwargs):
    return nn.BatchNorm1d(*args, **kwargs, dtype=np.float64)


@pytest.mark.parametrize("make, call, twin, error, message", [
    (lambda: _bn(3), lambda layer: layer(np.zeros(3)), lambda: torch.nn.BatchNorm1d(3)(torch.zeros(3)),
     ValueError, r"^BatchNorm1d\(3, eps=1e-05, .*\): expected 2D or 3D input, got 1D input of shape \(3,\)"),
    (lambda: nn.BatchNorm2d(3, dtype=np.float64), lambda layer: layer(np.zeros((2, 3, 4))),
     lambda: torch.nn.BatchNorm2d(3)(torch.zeros(2, 3, 4)), ValueError, r"^BatchNorm2d\(3, .*expected 4D input, got 3D"),
    (lambda: _bn(3), lambda layer: layer(np.zeros((2, 4))), lambda: torch.nn.BatchNorm1d(3)(torch.zeros(2, 4)),
     ValueError, r"^BatchNorm1d\(3, .*expected input with 3 channels .*got 4 in input of shape \(2, 4\)"),
    (lambda: _bn(3, affine=False), lambda layer: layer.eval()(np.zeros((2, 4))),
     lambda: torch.nn.BatchNorm1d(3, affine=False).eval()(torch.zeros(2, 4)), ValueError, r"expected input with 3 channels"),
    (lambda: _bn(3), lambda layer: layer(np.zeros((1, 3))), lambda: torch.nn.BatchNorm1d(3)(torch.zeros(1, 3)),
     ValueError, r"^BatchNorm1d\(3, .*: Expected more than 1 value per channel when training, got input of shape \(1, 3\)"),
    (lambda: _bn(3), lambda layer: layer(np.zeros((1, 3, 1))), lambda: torch.nn.BatchNorm1d(3)(torch.zeros(1, 3, 1)),
     ValueError, r"Expected more than 1 value per channel when training"),
    (lambda: _bn(10, eps=0.0), lambda layer: layer(np.zeros((2, 10))),
     lambda: torch.nn.BatchNorm1d(10, eps=0.0)(torch.zeros(2, 10)), ValueError, r"eps must be positive"),
    (lambda: _bn(10, eps=-1.0), lambda layer: layer.eval()(np.zeros((2, 10))),
     lambda: torch.nn.BatchNorm1d(10, eps=-1.0).eval()(torch.zeros(2, 10)), ValueError, r"eps must be non-negative"),
    (lambda: _bn(3), lambda layer: layer(np.zeros((2, 3), np.float32)), None, TypeError,
     r"^BatchNorm1d\(3, .*: input has dtype float32 but the layer is float64"),
    (lambda: _bn(3, momentum="0.1"), None, None, TypeError, r"^BatchNorm1d: momentum must be a number, got '0.1'"),
    (lambda: _bn(3, affine=2), None, None, TypeError, r"^BatchNorm1d: affine must be True or False, got 2"),
    (lambda: _bn(-1), None, lambda: torch.nn.BatchNorm1d(-1), ValueError,
     r"^BatchNorm1d: num_features must be an int >= 0, got -1"),
    (lambda: nn.GroupNorm(2, 7), None, lambda: torch.nn.GroupNorm(2, 7), ValueError,
     r"^GroupNorm: num_channels \(7\) must be divisible by num_groups \(2\)"),
    (lambda: nn.GroupNorm(0, 4), None, lambda: torch.nn.GroupNorm(0, 4), ValueError,
     r"^GroupNorm: num_groups must be a positive int, got 0"),
    (lambda: nn.GroupNorm(2, 4), lambda layer: layer(np.zeros(4, np.float32)),
     lambda: torch.nn.GroupNorm(2, 4)(torch.zeros(4)), ValueError, r"^GroupNorm\(2, 4, .*at least 2 dimensions"),
    (lambda: nn.GroupNorm(2, 4), lambda layer: layer(np.zeros((2, 6), np.float32)),
     lambda: torch.nn.GroupNorm(2, 4)(torch.zeros(2, 6)), ValueError, r"expected input with 4 channels .*got 6"),
    (lambda: nn.GroupNorm(2, 4, affine=False), lambda layer: layer(np.zeros((2, 5), np.float32)),
     lambda: torch.nn.GroupNorm(2, 4, affine=False)(torch.zeros(2, 5)), ValueError,
     r"a number of channels divisible by num_groups=2, got input of shape \(2, 5\)"),
    (lambda: nn.GroupNorm(2, 2), lambda layer: layer(np.zeros((1, 2), np.float32)),
     lambda: torch.nn.GroupNorm(2, 2)(torch.zeros(1, 2)), ValueError, r"Expected more than 1 value per channel"),
    (lambda: nn.LayerNorm((2, 4)), lambda layer: layer(np.zeros((2, 4, 2), np.float32)),
     lambda: torch.nn.LayerNorm((2, 4))(torch.zeros(2, 4, 2)), ValueError,
     r"^LayerNorm\(\(2, 4\), .*expected input of shape \(\*, 2, 4\) .*got shape \(2, 4, 2\)"),
    (lambda: nn.LayerNorm((2, 4)), lambda layer: layer(np.zeros(4, np.float32)),
     lambda: torch.nn.LayerNorm((2, 4))(torch.zeros(4)), ValueError, r"expected input of shape \(\*, 2, 4\)"),
    (lambda: nn.LayerNorm(()), None, lambda: torch.nn.LayerNorm(())(torch.zeros(2)), ValueError,
     r"^LayerNorm: normalized_shape must hold at least one axis"),
    (lambda: nn.LayerNorm("3"), None, lambda: torch.nn.LayerNorm("3"), TypeError,
     r"^LayerNorm: normalized_shape must be an int or a sequence of ints"),
])
def test_refusals_are_clear_changeless_and_where_torch_refuses(make, call, twin, error, message):
    """Each refusal names the layer (its repr, once built), what was expected and what was given,
    and leaves everything as it was: a refused training call does not count in num_batches_tracked
    (torch's module counts it before F.batch_norm refuses). torch refuses the same (None: a
    scratch-only check, the dtype, or a value torch takes and fails on later)."""
    if call is None:
        with pytest.raises(error, match=message):
            make()
    else:
        layer = make()
        before = layer.state_dict()
        refused(lambda: call(layer), error, message, layer)
        after = layer.state_dict()
        assert all(np.array_equal(before[key], after[key]) for key in before)
    if twin is not None:
        with pytest.raises((RuntimeError, ValueError, TypeError, ZeroDivisionError)):
            twin()


def test_backward_before_forward_and_wrong_gradients_are_refused():
    layer = nn.BatchNorm1d(3, dtype=np.float64)
    with pytest.raises(RuntimeError, match=r"^BatchNorm1d\.backward called before forward"):
        layer.backward(np.zeros((2, 3)))
    layer(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"grad_output must have the forward output's shape \(2, 3\)"):
        layer.backward(np.zeros((3, 3)))


# -- groups of one or two values (left out of torch's samples: test_torch_database) ----------


@pytest.mark.parametrize("make, shape", [
    (lambda dtype: nn.LayerNorm(1, dtype=dtype), (3, 1)),
    (lambda dtype: nn.LayerNorm(2, dtype=dtype), (3, 2)),
    (lambda dtype: nn.GroupNorm(1, 2, dtype=dtype), (1, 2)),
    (lambda dtype: nn.GroupNorm(2, 2, dtype=dtype), (2, 2)),
    (lambda dtype: nn.BatchNorm1d(2, dtype=dtype), (2, 2)),
])
def test_groups_of_one_or_two_values_are_exact_to_the_size_of_their_terms(make, shape):
    """One value per group: x̂ = 0 exactly, so y = β and dγ = 0 exactly. Two values: dx cancels to
    eps/(σ² + eps) of its terms; float32 results are checked against the float64 ones (the exact
    answer to float32's resolution) with the terms as scale, float64 against torch."""
    rng = np.random.default_rng(8)
    x, dy = _input(rng, shape, np.float64), rng.standard_normal(shape)
    exact = make(np.float64)
    _randomize_affine(exact, rng)
    y64 = exact(x)
    dx64 = exact.backward(dy)
    grads64 = {name: p.grad.copy() for name, p in exact.named_parameters()}
    scales = {"LayerNorm": _layer_norm_scales, "GroupNorm": _group_norm_scales}.get(type(exact).__name__,
                                                                                    _batch_norm_scales)(exact, x)
    layer = make(np.float32)
    layer.load_state_dict(exact.state_dict())
    y32 = layer(x.astype(np.float32))
    dx32 = layer.backward(dy.astype(np.float32))
    assert_close(y32, y64, "torch", np.float32, "y")
    assert_close(dx32, dx64, "torch", np.float32, "dx", scale=scales["grad_input[0]"](dy, None))
    for name, parameter in layer.named_parameters():
        assert_close(parameter.grad, grads64[name], "torch", np.float32, name,
                     scale=scales[f"grad {name!r}"](dy, None))
    if x.size // (shape[0] * getattr(exact, "num_groups", 1)) == 1 or getattr(exact, "normalized_shape", None) == (1,):
        np.testing.assert_array_equal(exact.weight.grad, 0.0)
        np.testing.assert_array_equal(y64, np.broadcast_to(exact.bias.data, y64.shape))


# -- oracle 2: central differences -------------------------------------------------------------


@given(case=batch_norm_cases(), seed=S.seeds, steps=st.integers(0, 2))
def test_batch_norm_training_finite_differences(case, seed, steps):
    """Training mode: dx through the batch statistics (every element), dγ, dβ. gradcheck runs the
    forward pass again for every perturbed element; each call updates the running statistics
    (harmless: training mode's output does not read them) and counts in num_batches_tracked."""
    rng = np.random.default_rng(seed)
    layer = getattr(nn, case["layer"])(case["num_features"], case["eps"], case["momentum"], case["affine"],
                                       case["track_running_stats"], bias=case["bias"], dtype=np.float64)
    _randomize_affine(layer, rng)
    for _ in range(steps):
        layer(rng.standard_normal(case["x_shape"]))
    x = _input(rng, case["x_shape"], np.float64)
    result = gradcheck(layer, x, rng=rng, **GRADCHECK)
    assert result.elements_checked == x.size + sum(p.size for p in layer.parameters())
    if layer.track_running_stats:
        calls = steps + 1 + 2 * result.elements_checked  # the analytic pass, then two per element
        assert int(layer.num_batches_tracked) == calls
        assert np.all(np.isfinite(layer.running_mean)) and np.all(np.isfinite(layer.running_var))


@given(case=batch_norm_cases(training=False), seed=S.seeds)
def test_batch_norm_eval_finite_differences(case, seed):
    """Evaluation mode, separately: after training steps (running statistics not the initial 0 and
    1), the per-channel affine map's dx, dγ, dβ; the running statistics stay fixed throughout."""
    rng = np.random.default_rng(seed)
    case = {**case, "track_running_stats": True}
    layer = getattr(nn, case["layer"])(case["num_features"], case["eps"], case["momentum"], case["affine"],
                                       bias=case["bias"], dtype=np.float64)
    _randomize_affine(layer, rng)
    for _ in range(2):
        layer(_input(rng, (3, *case["x_shape"][1:]), np.float64))
    layer.eval()
    before = layer.state_dict()
    gradcheck(layer, _input(rng, case["x_shape"], np.float64), rng=rng, **GRADCHECK)
    after = layer.state_dict()
    assert all(np.array_equal(before[key], after[key]) for key in before)


@given(case=layer_norm_cases(), seed=S.seeds)
def test_layer_norm_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    layer = nn.LayerNorm(case["normalized_shape"], case["eps"], case["elementwise_affine"], case["bias"],
                         dtype=np.float64)
    _randomize_affine(layer, rng)
    gradcheck(layer, _input(rng, case["x_shape"], np.float64), rng=rng, **GRADCHECK)


@given(case=group_norm_cases(), seed=S.seeds)
def test_group_norm_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    layer = nn.GroupNorm(case["num_groups"], case["num_channels"], case["eps"], case["affine"], bias=case["bias"],
                         dtype=np.float64)
    _randomize_affine(layer, rng)
    gradcheck(layer, _input(rng, case["x_shape"], np.float64), rng=rng, **GRADCHECK)


@pytest.mark.parametrize("training", [True, False])
def test_functional_pairs_finite_differences(training):
    """The pairs themselves, every input that has a gradient (x, weight, bias): batch norm in
    both modes (the running statistics passed only to evaluation, which reads them), layer norm
    and group norm."""
    rng = np.random.default_rng(9)
    x = _input(rng, (3, 2, 4), np.float64)
    weight, bias = rng.uniform(0.5, 2, 2), rng.standard_normal(2)
    running = (rng.standard_normal(2), rng.uniform(0.5, 2, 2)) if not training else (None, None)
    gradcheck((lambda x, w, b: F.batch_norm_forward(x, w, b, *running, training, 0.1, 1e-3), F.batch_norm_backward),
              x, weight, bias, rng=rng, **GRADCHECK)
    gradcheck((lambda x, w, b: F.layer_norm_forward(x, (2, 4), w, b, 1e-3), F.layer_norm_backward),
              x, rng.uniform(0.5, 2, (2, 4)), rng.standard_normal((2, 4)), rng=rng, **GRADCHECK)
    gradcheck((lambda x, w, b: F.group_norm_forward(x, 1, w, b, 1e-3), F.group_norm_backward),
              x, weight, bias, rng=rng, **GRADCHECK)


# -- oracle 3: kernels against references, parallel against serial ----------------------------


@st.composite
def per_channel_layouts(draw):
    """(N, C, L), N·L >= 1, some L long enough that a channel is more than a few values."""
    return (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.sampled_from([1, 2, 3, 7, 40])))


@st.composite
def group_layouts(draw):
    """(N, G, channels per group, inner L); J = G·(C/G)·L up to 1,800, past COLUMN_BLOCK; N = 11
    splits into ROW_CHUNKS uneven chunks."""
    return (draw(st.sampled_from([1, 2, 3, 4, 11])), draw(st.integers(1, 3)), draw(st.integers(1, 3)),
            draw(st.sampled_from([1, 2, 5, 200])))


def _assert_serial_twin(kernel, serial, outputs, *arguments):
    """Run ``kernel`` and its serial twin on copies of ``outputs``; identical bits; return the kernel's."""
    parallel_out, serial_out = [np.empty_like(o) for o in outputs], [np.empty_like(o) for o in outputs]
    kernel(*arguments, *parallel_out)
    serial(*arguments, *serial_out)
    for a, b in zip(parallel_out, serial_out):
        np.testing.assert_array_equal(a, b)
    return parallel_out


@given(layout=per_channel_layouts(), dtype=S.dtypes, seed=S.seeds)
def test_batch_norm_kernels_match_references_and_serial(layout, dtype, seed):
    rng = np.random.default_rng(seed)
    n, c, length = layout
    x = _input(rng, layout, dtype)
    dy = rng.standard_normal(layout).astype(dtype)
    mean64, var64 = _assert_serial_twin(K.moments, K.moments_serial, [np.zeros(c), np.zeros(c)], x)
    reference_mean, reference_var = K.moments_reference(x)
    assert_close(mean64, reference_mean, "kernel", np.float64, "moments: mean", scale=np.abs(x).max())
    assert_close(var64, reference_var, "kernel", np.float64, "moments: var", scale=reference_var + reference_mean ** 2)
    mean, invstd = mean64.astype(dtype), (1 / np.sqrt(var64 + 1e-3)).astype(dtype)
    weight, bias = rng.uniform(-2, 2, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    (out,) = _assert_serial_twin(K.batch_norm_forward, K.batch_norm_forward_serial, [x], x, mean, invstd, weight, bias)
    expected = K.batch_norm_forward_reference(x, mean, invstd, weight, bias)
    terms = (np.abs(x) + np.abs(mean)[:, None]) * invstd[:, None] * np.abs(weight)[:, None] + np.abs(bias)[:, None]
    assert_close(out, expected, "kernel", dtype, "batch_norm_forward", scale=terms)
    sums = _assert_serial_twin(K.batch_norm_backward_reduce, K.batch_norm_backward_reduce_serial,
                               [np.zeros(c), np.zeros(c)], dy, x, mean, invstd)
    reference = K.batch_norm_backward_reduce_reference(dy, x, mean, invstd)
    xhat_terms = np.abs(dy.astype(np.float64)) * (np.abs(x) + np.abs(mean)[:, None]) * invstd[:, None]
    assert_close(sums[0], reference[0], "kernel", dtype, "Σ dy", scale=np.abs(dy).astype(np.float64).sum(axis=(0, 2)))
    assert_close(sums[1], reference[1], "kernel", dtype, "Σ dy·x̂", scale=xhat_terms.sum(axis=(0, 2)))
    means = [(total / (n * length)).astype(dtype) for total in sums]
    a = (np.abs(x) + np.abs(mean)[:, None]) * invstd[:, None]  # |x|/σ + |μ|/σ: the size of x̂'s two terms
    for through in (True, False):
        (dx,) = _assert_serial_twin(K.batch_norm_backward_input, K.batch_norm_backward_input_serial, [x],
                                    dy, x, mean, invstd, weight, *means, through)
        expected = K.batch_norm_backward_input_reference(dy, x, mean, invstd, weight, *means, through)
        terms = (np.abs(weight) * invstd)[:, None] * (np.abs(dy) + np.abs(means[0])[:, None] + a * np.abs(means[1])[:, None])
        assert_close(dx, expected, "kernel", dtype, f"batch_norm_backward_input(through={through})", scale=terms)


@given(layout=group_layouts(), dtype=S.dtypes, seed=S.seeds)
def test_group_norm_kernels_match_references_and_serial(layout, dtype, seed):
    rng = np.random.default_rng(seed)
    n, groups, per_group, inner = layout
    channels, width = groups * per_group, groups * per_group * inner
    x = _input(rng, (n, width), dtype)
    dy = rng.standard_normal((n, width)).astype(dtype)
    rows = x.reshape(1, n * groups, width // groups)
    mean64, var64 = _assert_serial_twin(K.moments, K.moments_serial, [np.zeros(n * groups)] * 2, rows)
    reference_mean, reference_var = K.moments_reference(rows)
    assert_close(mean64, reference_mean, "kernel", np.float64, "moments: mean", scale=np.abs(x).max())
    assert_close(var64, reference_var, "kernel", np.float64, "moments: var", scale=reference_var + reference_mean ** 2)
    mean = mean64.astype(dtype).reshape(n, groups)
    rstd = (1 / np.sqrt(var64 + 1e-3)).astype(dtype).reshape(n, groups)
    weight, bias = rng.uniform(-2, 2, channels).astype(dtype), rng.standard_normal(channels).astype(dtype)
    (out,) = _assert_serial_twin(K.group_norm_forward, K.group_norm_forward_serial, [x], x, mean, rstd, weight, bias,
                                 inner)
    expected = K.group_norm_forward_reference(x, mean, rstd, weight, bias, inner)
    spread = np.repeat(rstd, width // groups, axis=1)  # (N, J): each column's 1/σ
    a = (np.abs(x) + np.repeat(np.abs(mean), width // groups, axis=1)) * spread  # |x|/σ + |μ|/σ
    assert_close(out, expected, "kernel", dtype, "group_norm_forward",
                 scale=a * np.repeat(np.abs(weight), inner) + np.repeat(np.abs(bias), inner))
    sums = _assert_serial_twin(K.group_norm_backward_reduce, K.group_norm_backward_reduce_serial,
                               [np.zeros((n, groups))] * 2, dy, x, mean, rstd, weight, inner)
    reference = K.group_norm_backward_reduce_reference(dy, x, mean, rstd, weight, inner)
    gdy = np.abs(dy.astype(np.float64) * np.repeat(weight, inner))
    by_group = (n, groups, width // groups)
    assert_close(sums[0], reference[0], "kernel", dtype, "Σ γ·dy", scale=gdy.reshape(by_group).sum(axis=2))
    assert_close(sums[1], reference[1], "kernel", dtype, "Σ γ·dy·x̂", scale=(gdy * a).reshape(by_group).sum(axis=2))
    chunks = min(n, K.ROW_CHUNKS)
    columns = _assert_serial_twin(K.group_norm_backward_params, K.group_norm_backward_params_serial,
                                  [np.zeros((chunks, width))] * 2, dy, x, mean, rstd)
    columns = [partial.sum(axis=0) for partial in columns]
    reference = K.group_norm_backward_params_reference(dy, x, mean, rstd)
    assert_close(columns[0], reference[0], "kernel", dtype, "Σ_n dy", scale=np.abs(dy.astype(np.float64)).sum(axis=0))
    assert_close(columns[1], reference[1], "kernel", dtype, "Σ_n dy·x̂",
                 scale=(np.abs(dy.astype(np.float64)) * a).sum(axis=0))
    means = [(s / (width // groups)).astype(dtype) for s in sums]
    (dx,) = _assert_serial_twin(K.group_norm_backward_input, K.group_norm_backward_input_serial, [x],
                                dy, x, mean, rstd, weight, inner, *means)
    expected = K.group_norm_backward_input_reference(dy, x, mean, rstd, weight, inner, *means)
    terms = spread * (gdy + np.repeat(np.abs(means[0]), width // groups, axis=1)
                      + a * np.repeat(np.abs(means[1]), width // groups, axis=1))
    assert_close(dx, expected, "kernel", dtype, "group_norm_backward_input", scale=terms)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_give_each_lane_the_bits_it_gets_alone(dtype):
    """``moments`` and the ``*_backward_reduce`` kernels run ``LANES`` channels (or rows) side by
    side, each in its own accumulators: every channel's and every group row's sums must be the
    bits it gets computed alone, for counts that leave the last block of lanes part-filled."""
    rng = np.random.default_rng(3)
    for n, c, length in ((9, 2 * K.LANES + 3, 1), (3, K.LANES + 1, 7), (2, 1, 5)):
        x = (rng.standard_normal((n, c, length)) * 3 + 50).astype(dtype)
        dy = rng.standard_normal((n, c, length)).astype(dtype)
        for moments in (K.moments, K.moments_serial):
            together = np.zeros(c), np.zeros(c)
            moments(x, *together)
            for channel in range(c):
                alone = np.zeros(1), np.zeros(1)
                moments(np.ascontiguousarray(x[:, channel:channel + 1]), *alone)
                assert (together[0][channel], together[1][channel]) == (alone[0][0], alone[1][0])
        mean, invstd = x.mean(axis=(0, 2)).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
        for reduce in (K.batch_norm_backward_reduce, K.batch_norm_backward_reduce_serial):
            together = np.zeros(c), np.zeros(c)
            reduce(dy, x, mean, invstd, *together)
            for channel in range(c):
                alone = np.zeros(1), np.zeros(1)
                part = slice(channel, channel + 1)
                reduce(np.ascontiguousarray(dy[:, part]), np.ascontiguousarray(x[:, part]), mean[part], invstd[part],
                       *alone)
                assert (together[0][channel], together[1][channel]) == (alone[0][0], alone[1][0])
    for n, groups, per_group, inner in ((2 * K.LANES + 3, 3, 2, 5), (K.LANES + 1, 1, 6, 1), (2, 2, 1, 3)):
        width = groups * per_group * inner
        x = (rng.standard_normal((n, width)) * 3 + 50).astype(dtype)
        dy = rng.standard_normal((n, width)).astype(dtype)
        mean = x.reshape(n, groups, -1).mean(axis=2).astype(dtype)
        rstd = rng.uniform(0.5, 2, (n, groups)).astype(dtype)
        weight = rng.uniform(-2, 2, groups * per_group).astype(dtype)
        for reduce in (K.group_norm_backward_reduce, K.group_norm_backward_reduce_serial):
            together = np.zeros((n, groups)), np.zeros((n, groups))
            reduce(dy, x, mean, rstd, weight, inner, *together)
            for row in range(n):
                alone = np.zeros((1, groups)), np.zeros((1, groups))
                part = slice(row, row + 1)
                reduce(dy[part], x[part], mean[part], rstd[part], weight, inner, *alone)
                np.testing.assert_array_equal(together[0][row], alone[0][0])
                np.testing.assert_array_equal(together[1][row], alone[1][0])


def test_serial_and_parallel_kernels_give_the_functional_layer_the_same_bits(monkeypatch):
    """``PARALLEL_FROM`` picks serial twins for small inputs, parallel kernels for large: the same
    numbers either way, forward and backward, for each of the three normalizations."""
    from scratch.functional import normalization as FN
    rng = np.random.default_rng(5)
    x4 = rng.standard_normal((6, 8, 3, 5)).astype(np.float32)
    x2 = rng.standard_normal((9, 13)).astype(np.float32)
    weight8, bias8 = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    weight13, bias13 = rng.standard_normal(13).astype(np.float32), rng.standard_normal(13).astype(np.float32)

    def run():
        results = []
        for forward, backward, x, arguments in (
                (FN.batch_norm_forward, FN.batch_norm_backward, x4,
                 (weight8, bias8, np.zeros(8, np.float32), np.ones(8, np.float32), True)),
                (FN.batch_norm_forward, FN.batch_norm_backward, x2,
                 (weight13, bias13, np.zeros(13, np.float32), np.ones(13, np.float32), True)),
                (FN.group_norm_forward, FN.group_norm_backward, x4, (4, weight8, bias8)),
                (FN.layer_norm_forward, FN.layer_norm_backward, x2, ((13,), weight13, bias13))):
            y, cache = forward(x, *arguments)
            results += [y, *backward(np.cos(x), cache)]
        return results

    serial = run()
    monkeypatch.setattr(FN, "PARALLEL_FROM", 0)
    for a, b in zip(serial, run()):
        np.testing.assert_array_equal(a, b)

