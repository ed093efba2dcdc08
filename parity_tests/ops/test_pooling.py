"""Pooling: torch parity, float64 central differences, Numba kernels against their NumPy
references, and the parallel kernels against their serial twins (docs/pooling.md).

The three oracles of docs/README.md, for ``scratch/functional/pooling.py``,
``scratch/kernels/pooling.py`` and ``scratch.nn.MaxPool2d``: (1) torch parity against
``torch.nn.MaxPool2d``; (2) central differences; (3) kernels against their references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import nn
from scratch.functional.conv import conv2d_output_size
from scratch.gradcheck import gradcheck
from scratch.kernels import pooling as K
from scratch.testing import assert_matches_torch

# -- oracle 1: torch parity ---------------------------------------------------------------


@given(case=S.max_pool2d_cases(), dtype=S.dtypes, seed=S.seeds, ties=st.booleans())
def test_max_pool2d_matches_torch(case, dtype, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"])
    if ties:  # few distinct values: tied maxima everywhere, so the tie rule is what is tested
        x = np.round(x)
    x = x.astype(dtype)
    layer = nn.MaxPool2d(**S.layer_arguments(case))
    twin = torch.nn.MaxPool2d(**S.layer_arguments(case))
    assert_matches_torch(layer, twin, x, rng=rng, what="MaxPool2d")  # output and dx, random cotangent
    # and beyond the tolerance: the same maxima exactly, taken from the same arg-max, ties included
    y = layer(x)
    ty, indices = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True, **S.layer_arguments(case))
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(layer._cache[0], indices.numpy())
    # the twin module, built from the same constructor arguments, computes the same forward
    np.testing.assert_array_equal(twin(torch.from_numpy(x)).numpy(), y)


def test_max_pool2d_nan_and_empty_windows_like_torch():
    x = np.array([[[[1.0, np.nan, 3.0, 2.0]]]])
    layer = nn.MaxPool2d((1, 2))
    np.testing.assert_array_equal(layer(x), torch.nn.functional.max_pool2d(torch.tensor(x), (1, 2)).numpy())
    lone = np.ones((1, 1, 1, 1))  # kernel 2, dilation 2, padding 1: the one window misses the pixel
    layer = nn.MaxPool2d(2, stride=1, padding=1, dilation=2)
    y = layer(lone)
    assert y[0, 0, 0, 0] == -np.inf == torch.nn.functional.max_pool2d(torch.tensor(lone), 2, 1, 1, 2).item()
    np.testing.assert_array_equal(layer.backward(np.ones_like(y)), np.zeros_like(lone))


# -- oracle 2: central differences --------------------------------------------------------


@given(case=S.max_pool2d_cases(), seed=S.seeds)
def test_max_pool2d_finite_differences(case, seed):
    """Distinct values, at least 0.05 apart: no tie or near-tie, so max is smooth under ±eps."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(case["x_shape"]))
    x = (rng.permutation(size) * 0.05 + rng.uniform(0, 0.01, size)).reshape(case["x_shape"])
    gradcheck(nn.MaxPool2d(**S.layer_arguments(case)), x, rng=rng, **GRADCHECK)


# -- oracle 3: kernels against references, parallel against serial ------------------------


def _geometry(case):
    return (*case["stride"], *case["padding"], *case["dilation"])


@given(case=S.max_pool2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_pool_kernels_match_references_and_serial(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(case["x_shape"]) * 2).astype(dtype)  # ties included
    n, c, h, w = case["x_shape"]
    out_shape = (n, c, *(conv2d_output_size(s, k, st_, p, d) for s, k, st_, p, d in
                         zip((h, w), case["kernel_size"], case["stride"], case["padding"], case["dilation"])))
    geometry = (*case["kernel_size"], *_geometry(case))
    y, index = np.empty(out_shape, dtype), np.empty(out_shape, np.int64)
    y_serial, index_serial = np.empty(out_shape, dtype), np.empty(out_shape, np.int64)
    K.max_pool2d_forward(x, y, index, *geometry)
    K.max_pool2d_forward_serial(x, y_serial, index_serial, *geometry)
    expected, expected_index = K.max_pool2d_forward_reference(
        x, out_shape, case["kernel_size"], case["stride"], case["padding"], case["dilation"])
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(index, expected_index)
    np.testing.assert_array_equal(y_serial, y)
    np.testing.assert_array_equal(index_serial, index)
    dy = rng.standard_normal(out_shape).astype(dtype)
    dx, dx_serial = np.empty_like(x), np.empty_like(x)
    K.max_pool2d_backward(dy, index, dx)
    K.max_pool2d_backward_serial(dy, index, dx_serial)
    reference = K.max_pool2d_backward_reference(dy, index, x.shape)
    assert_close(dx, reference, "kernel", dtype, "max_pool2d_backward", scale=np.abs(dy).max() * 8)
    np.testing.assert_array_equal(dx, dx_serial)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.MaxPool2d(2, padding=2), "at most half the kernel size"),
    (lambda: nn.MaxPool2d(3)(np.zeros((1, 1, 2, 2))), "too small for this window"),
])
def test_bad_geometry_gets_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()
