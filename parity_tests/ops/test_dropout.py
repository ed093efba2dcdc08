"""Dropout and Dropout2d (docs/dropout.md).

The oracles of docs/README.md, for ``scratch/functional/dropout.py`` and ``scratch.nn.Dropout`` /
``Dropout2d``:

1. torch parity: torch's module draws its mask from torch's generator; the same draw replayed on
   a tensor of ones (torch's CPU dropout returns input · bernoulli(1 - p) / (1 - p)) gives the
   mask scratch is handed, and then the outputs and dx must be *equal* to the bit (both compute
   x · s in the input's dtype with the same s = 1 / (1 - p)); evaluation mode and p = 0 are the
   identity, p = 1 multiplies by zero (NaN for ±inf), as torch's;
2. central differences through the functional pair and the module, with the mask held fixed;
3. no Numba kernel: the pass is one NumPy multiply. Instead, the masks scratch draws itself are
   checked: their keep-rate (a binomial bound), their shape for Dropout2d, and their
   reproducibility from a seed;
4. torch's own samples of ``nn.functional.dropout`` / ``dropout2d``: parity_tests/torch_database.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK
from scratch import functional as F
from scratch import nn
from scratch.functional.dropout import feature_mask_shape
from scratch.gradcheck import gradcheck

PROBABILITIES = st.sampled_from([0.0, 0.021, 0.1, 0.5, 0.9, 1.0, 1 / 3])  # 0.021: see test_dropout_scale_is_torchs_in_float32


def _torch_mask(torch_layer, x: torch.Tensor, seed: int, channelwise: bool) -> np.ndarray:
    """The keep-mask torch's layer draws after manual_seed(seed), replayed on ones."""
    torch.manual_seed(seed)
    noise = torch_layer(torch.ones_like(x)).detach().numpy()
    keep = np.asarray(noise != 0)
    return keep[(slice(None), slice(None)) + (slice(0, 1),) * (keep.ndim - 2)] if channelwise else keep


def _both(channelwise, p, inplace=False):
    if channelwise:
        return nn.Dropout2d(p, inplace), torch.nn.Dropout2d(p, inplace)
    return nn.Dropout(p, inplace), torch.nn.Dropout(p, inplace)


def _shape(draw_shape, channelwise):
    return draw_shape if not channelwise else (draw_shape + (2, 3, 4))[:4]


# ---------------------------------------------------------------------------- oracle 1: torch


@given(shape=S.shapes(min_dims=2, max_dims=4), p=PROBABILITIES, dtype=S.dtypes, seed=S.seeds,
       channelwise=st.booleans(), inplace=st.booleans())
def test_dropout_equals_torch_given_torchs_mask(shape, p, dtype, seed, channelwise, inplace):
    if channelwise and len(shape) == 2:
        shape = shape + (3,)  # Dropout2d: (N, C, L) or (N, C, H, W), torch's supported inputs
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    layer, twin = _both(channelwise, p, inplace)
    tx = torch.from_numpy(x.copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dropout2d's note on 3-D inputs, on both sides
        mask = _torch_mask(twin, tx, seed % 2**31, channelwise)
        torch.manual_seed(seed % 2**31)
        leaf = tx.clone().requires_grad_(True)
        expected = twin(leaf.clone() if inplace else leaf)
        out = layer(x.copy() if not inplace else x, mask=mask)
    np.testing.assert_array_equal(out, expected.detach().numpy())
    if inplace:
        assert out is x, "inplace=True returns its input, with the result written into it"
    cotangent = rng.standard_normal(shape).astype(dtype)
    expected.backward(torch.from_numpy(cotangent.copy()))
    np.testing.assert_array_equal(layer.backward(cotangent), leaf.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_propagates_nan_and_inf_like_torch(p, dtype):
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0]], dtype=dtype)
    twin = torch.nn.Dropout(p)
    mask = _torch_mask(twin, torch.from_numpy(x), 7, channelwise=False)
    torch.manual_seed(7)
    np.testing.assert_array_equal(nn.Dropout(p)(x, mask=mask), twin(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("make", [nn.Dropout, nn.Dropout2d])
def test_eval_mode_and_p_zero_are_the_identity_like_torch(make):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    for layer in (make(0.5).eval(), make(0.0)):
        assert layer(x) is x, "torch returns its input itself"
        cotangent = np.random.default_rng(1).standard_normal(x.shape)
        grad = layer.backward(cotangent)
        np.testing.assert_array_equal(grad, cotangent)
        assert grad is not cotangent
    ignored = make(0.5).eval()(x, mask=np.zeros(x.shape if make is nn.Dropout else (2, 3, 1, 1), bool))
    np.testing.assert_array_equal(ignored, x)  # nothing is dropped in evaluation mode


def test_dropout_scale_is_torchs_in_float32():
    """s = float32(1) / float32(1 - p), as torch divides its 0/1 noise by 1 - p in the tensor's
    dtype; float32(1 / (1 - p)) rounded once from float64 differs from it by an ulp for some p."""
    for p in (0.021, 0.1, 0.3, 1 / 3, 0.7, 0.99):  # 0.021: the two roundings differ
        expected = torch.nn.functional.dropout(torch.ones(4096), p, training=True).max().item()
        assert F.dropout_forward(np.ones(1, np.float32), np.ones(1, bool), p)[0][0] == np.float32(expected)


# ---------------------------------------------------------------------------- oracle 2: central differences


@given(shape=S.shapes(min_dims=1, max_dims=4), p=st.sampled_from([0.1, 0.5, 0.9]), seed=S.seeds)
def test_dropout_pair_and_module_against_central_differences(shape, p, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    mask = (rng.random(shape) < 0.6).astype(np.float64)  # fixed: the function is then linear in x
    gradcheck((F.dropout_forward, F.dropout_backward), x, mask, p, rng=rng, **GRADCHECK)
    gradcheck(nn.Dropout(p), x, mask, rng=rng, **GRADCHECK)


@given(shape=S.shapes(min_dims=3, max_dims=4), p=st.sampled_from([0.2, 0.6]), seed=S.seeds)
def test_dropout2d_module_against_central_differences(shape, p, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    mask = (rng.random(feature_mask_shape(shape)) < 0.5).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gradcheck(nn.Dropout2d(p), x, mask, rng=rng, **GRADCHECK)


# ---------------------------------------------------------------------------- 3: the masks scratch draws


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drawn_masks_keep_each_element_with_probability_one_minus_p(p):
    layer = nn.Dropout(p, rng=0)
    x = np.ones((200, 500))
    kept = np.count_nonzero(layer(x))
    n = x.size
    # binomial(n, 1 - p): within 5 standard deviations (a false alarm about once in 3.5 million)
    assert abs(kept - n * (1 - p)) <= 5 * np.sqrt(n * p * (1 - p)), (kept, n * (1 - p))


def test_dropout2d_draws_one_value_per_example_and_channel():
    out = nn.Dropout2d(0.5, rng=3)(np.ones((8, 16, 5, 6)))
    per_channel = out.reshape(8, 16, -1)
    assert np.all(per_channel == per_channel[:, :, :1]), "a channel is kept or dropped whole"
    assert 0 < np.count_nonzero(per_channel[:, :, 0]) < 8 * 16


def test_masks_follow_the_seed_and_the_generator_advances():
    a, b = nn.Dropout(0.5, rng=11), nn.Dropout(0.5, rng=11)
    x = np.ones((10, 10))
    first, second = a(x), a(x)
    np.testing.assert_array_equal(first, b(x))
    assert not np.array_equal(first, second), "each forward draws a new mask"


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("make, x, mask, error, message", [
    (lambda: nn.Dropout(0.5), np.ones((2, 3)), np.ones((3, 2)), ValueError, r"Dropout: mask must have shape \(2, 3\)"),
    (lambda: nn.Dropout(0.5), np.ones((2, 3)), np.full((2, 3), 0.5), ValueError, "only 0 .dropped. and 1"),
    (lambda: nn.Dropout(0.5), np.ones((2, 3)), [[1, 0, 1]] * 2, TypeError, "mask must be a NumPy array"),
    (lambda: nn.Dropout2d(0.5), np.ones((2, 3, 4, 4)), np.ones((2, 3)), ValueError, r"shape \(2, 3, 1, 1\)"),
    (lambda: nn.Dropout2d(0.5), np.ones(3), None, ValueError, "at least 2 dimensions"),
    (lambda: nn.Dropout(0.5), np.ones(3, np.int64), None, TypeError, "float32 or float64"),
])
def test_bad_input_is_refused_and_changes_nothing(make, x, mask, error, message):
    layer = make()
    before = x.copy()
    state = layer.generator.bit_generator.state
    with pytest.raises(error, match=message):
        layer(x, mask=mask)
    np.testing.assert_array_equal(x, before)
    assert layer.generator.bit_generator.state == state, "a refused call draws nothing"


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_a_probability_outside_0_1_is_refused_like_torch(p):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        torch.nn.Dropout(p)
    for make in (nn.Dropout, nn.Dropout2d):
        with pytest.raises(ValueError, match=f"{make.__name__}: dropout probability has to be between 0 and 1"):
            make(p)


@pytest.mark.parametrize("p, error", [(float("nan"), ValueError), ("0.5", TypeError), (None, TypeError)])
def test_a_probability_that_is_not_a_number_is_refused(p, error):
    """Stricter than torch, which takes NaN (then drops every element, p < 0 and p > 1 being false)."""
    with pytest.raises(error, match="Dropout: p must be"):
        nn.Dropout(p)
