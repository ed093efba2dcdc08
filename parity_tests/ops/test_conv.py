"""Convolution: torch parity, float64 central differences, Numba kernels against their NumPy
references, and the parallel kernels against their serial twins (docs/conv.md; pooling:
test_pooling.py).

The three oracles of docs/README.md, for ``scratch/functional/conv.py``, ``scratch/kernels/conv.py``
and ``scratch.nn.Conv2d`` / ``ConvTranspose2d``: (1) torch parity against
``torch.nn.Conv2d`` / ``ConvTranspose2d``, and the functional calls' defaults are
torch's; (2) central differences; (3) kernels against their references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import functional as F
from scratch import nn
from scratch.functional.conv import batch_last, conv2d_output_size
from scratch.gradcheck import gradcheck
from scratch.kernels import conv as K
from scratch.testing import assert_matches_torch

# assert_matches_torch loads each scratch layer's weights into its twin (strict) and compares the
# output, dx and every parameter gradient through a random cotangent.


@given(case=S.conv2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_conv2d_matches_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Conv2d(**S.layer_arguments(case), rng=rng, dtype=dtype)
    assert_matches_torch(layer, torch.nn.Conv2d(**S.layer_arguments(case)),
                         rng.standard_normal(case["x_shape"]).astype(dtype), rng=rng, what="Conv2d")


# The kernels run four input channels at a time (then the remainder), and the drawn cases above
# have 1 to 3 channels: these named cases reach the four-at-a-time loops, and their remainder.
WIDE_CASES = [
    dict(in_channels=9, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
         x_shape=(3, 9, 9, 8)),
    dict(in_channels=8, out_channels=5, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1),
         x_shape=(1, 8, 7, 10)),
]


@pytest.mark.parametrize("case", WIDE_CASES, ids=["9-channels", "8-channels-batch-1"])
def test_conv_layers_with_many_channels_match_torch(case):
    rng = np.random.default_rng(11)
    layer = nn.Conv2d(**S.layer_arguments(case), rng=rng, dtype=np.float64)
    x = rng.standard_normal(case["x_shape"])
    assert_matches_torch(layer, torch.nn.Conv2d(**S.layer_arguments(case)), x, rng=rng, what="Conv2d, many channels")
    transpose = {**case, "x_shape": (case["x_shape"][0], case["in_channels"], 4, 5)}
    layer = nn.ConvTranspose2d(**S.layer_arguments(transpose), rng=rng, dtype=np.float64)
    assert_matches_torch(layer, torch.nn.ConvTranspose2d(**S.layer_arguments(transpose)),
                         rng.standard_normal(transpose["x_shape"]), rng=rng, what="ConvTranspose2d, many channels")


@given(case=S.conv_transpose2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_conv_transpose2d_matches_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    layer = nn.ConvTranspose2d(**S.layer_arguments(case), rng=rng, dtype=dtype)
    twin = torch.nn.ConvTranspose2d(**S.layer_arguments(case))
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    assert_matches_torch(layer, twin, x, rng=rng, what="ConvTranspose2d")
    assert layer.weight.shape == tuple(twin.weight.shape) == (case["in_channels"], case["out_channels"], *case["kernel_size"])


# -- oracle 2: central differences --------------------------------------------------------


@given(case=S.conv2d_cases(), seed=S.seeds)
def test_conv2d_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    arguments = S.layer_arguments(case)
    x = rng.standard_normal(case["x_shape"])
    weight = rng.standard_normal((case["out_channels"], case["in_channels"], *case["kernel_size"]))
    bias = rng.standard_normal(case["out_channels"]) if case["bias"] else None
    pair = (lambda x, w, b: F.conv2d_forward(x, w, b, arguments["stride"], arguments["padding"], arguments["dilation"]),
            F.conv2d_backward)
    gradcheck(pair, x, weight, bias, rng=rng, **GRADCHECK)
    gradcheck(nn.Conv2d(**arguments, rng=rng, dtype=np.float64), x, rng=rng, **GRADCHECK)


@given(case=S.conv_transpose2d_cases(), seed=S.seeds)
def test_conv_transpose2d_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    arguments = S.layer_arguments(case)
    x = rng.standard_normal(case["x_shape"])
    weight = rng.standard_normal((case["in_channels"], case["out_channels"], *case["kernel_size"]))
    bias = rng.standard_normal(case["out_channels"]) if case["bias"] else None
    pair = (lambda x, w, b: F.conv_transpose2d_forward(x, w, b, arguments["stride"], arguments["padding"],
                                                        arguments["output_padding"], arguments["dilation"]),
            F.conv_transpose2d_backward)
    gradcheck(pair, x, weight, bias, rng=rng, **GRADCHECK)
    gradcheck(nn.ConvTranspose2d(**arguments, rng=rng, dtype=np.float64), x, rng=rng, **GRADCHECK)


# -- oracle 3: kernels against references, parallel against serial ------------------------


def _geometry(case):
    return (*case["stride"], *case["padding"], *case["dilation"])


@given(case=S.conv2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_conv_kernels_match_references_and_serial(case, dtype, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = case["x_shape"]
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    weight = rng.standard_normal((case["out_channels"], c, *case["kernel_size"])).astype(dtype)
    bias = rng.standard_normal(case["out_channels"]).astype(dtype)
    out_shape = (n, case["out_channels"],
                 *(conv2d_output_size(s, k, st_, p, d) for s, k, st_, p, d in
                   zip((h, w), case["kernel_size"], case["stride"], case["padding"], case["dilation"])))
    geometry, arguments = _geometry(case), (case["stride"], case["padding"], case["dilation"])
    # terms' magnitude for the error model: Σ |w||x| over each output's taps
    scale = K.conv2d_forward_reference(np.abs(x), np.abs(weight), np.abs(bias), out_shape, *arguments)

    # the kernels read batch-innermost (C, H, W, N) arrays and write NCHW; the references take NCHW
    x_t = batch_last(x)
    y, y_serial = np.empty(out_shape, dtype), np.empty(out_shape, dtype)
    K.conv2d_forward(x_t, weight, bias, y, *geometry)
    K.conv2d_forward_serial(x_t, weight, bias, y_serial, *geometry)
    assert_close(y, K.conv2d_forward_reference(x, weight, bias, out_shape, *arguments), "kernel", dtype,
                 "conv2d_forward", scale=scale)
    np.testing.assert_array_equal(y, y_serial)  # the same loops in the same order: bit-identical

    dy = rng.standard_normal(out_shape).astype(dtype)
    dy_t = batch_last(dy)
    dx, dx_serial = np.empty_like(x), np.empty_like(x)
    zeros = np.zeros(c, dtype)
    K.conv2d_backward_input(dy_t, weight, zeros, dx, *geometry)
    K.conv2d_backward_input_serial(dy_t, weight, zeros, dx_serial, *geometry)
    scale = K.conv2d_backward_input_reference(np.abs(dy), np.abs(weight), x.shape, *arguments)
    assert_close(dx, K.conv2d_backward_input_reference(dy, weight, x.shape, *arguments), "kernel", dtype,
                 "conv2d_backward_input", scale=scale)
    np.testing.assert_array_equal(dx, dx_serial)

    dw, dw_serial = np.empty_like(weight), np.empty_like(weight)
    K.conv2d_backward_weight(x_t, dy_t, dw, *geometry)
    K.conv2d_backward_weight_serial(x_t, dy_t, dw_serial, *geometry)
    scale = K.conv2d_backward_weight_reference(np.abs(x), np.abs(dy), weight.shape, *arguments)
    assert_close(dw, K.conv2d_backward_weight_reference(x, dy, weight.shape, *arguments), "kernel", dtype,
                 "conv2d_backward_weight", scale=scale)
    np.testing.assert_array_equal(dw, dw_serial)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(2, 3, 3)(np.zeros((1, 1, 5, 5), np.float32)), r"expected input \(N, 2, H, W\)"),
    (lambda: nn.Conv2d(1, 3, 3)(np.zeros((1, 1, 2, 2), np.float32)), "too small for this kernel"),
    (lambda: nn.Conv2d(1, 3, 3)(np.zeros((1, 1, 5), np.float32)), "must have 4 dimensions"),
    (lambda: nn.Conv2d(1, 3, 0), "kernel_size must be an int >= 1"),
    (lambda: nn.Conv2d(1, 3, 3, stride=(1, 2, 3)), "stride must be"),
    (lambda: nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2), "output_padding"),
])
def test_bad_geometry_gets_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@given(seed=S.seeds, kernel=st.integers(1, 3), stride=st.integers(1, 3), padding=st.integers(0, 1),
       dilation=st.integers(1, 2))
def test_int_arguments_and_default_pool_stride_match_torch(seed, kernel, stride, padding, dilation):
    """Every geometry argument may be an int (meaning the same on both axes), as in torch, and
    MaxPool2d's stride defaults to its kernel size."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 9, 8))
    conv = nn.Conv2d(2, 3, kernel, stride=stride, padding=padding, dilation=dilation, rng=rng, dtype=np.float64)
    twin = torch.nn.Conv2d(2, 3, kernel, stride=stride, padding=padding, dilation=dilation).double()
    assert conv.stride == (stride, stride) and conv.kernel_size == (kernel, kernel)
    assert_matches_torch(conv, twin, x, rng=rng, what="Conv2d with int arguments")
    transposed = nn.ConvTranspose2d(2, 3, kernel, stride=stride, padding=0, output_padding=stride - 1,
                                    dilation=dilation, rng=rng, dtype=np.float64)
    twin = torch.nn.ConvTranspose2d(2, 3, kernel, stride=stride, output_padding=stride - 1, dilation=dilation).double()
    assert_matches_torch(transposed, twin, x, rng=rng, what="ConvTranspose2d with int arguments")
    pool_kernel = max(kernel, 2 * padding)
    pool = nn.MaxPool2d(pool_kernel, padding=padding)
    assert pool.stride == pool.kernel_size
    expected = torch.nn.MaxPool2d(pool_kernel, padding=padding)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(pool(x), expected)


@pytest.mark.parametrize("name, weight_shape, x_shape", [
    ("conv2d", (4, 3, 3, 2), (2, 3, 6, 5)),            # stride, padding, dilation left out
    ("conv_transpose2d", (3, 4, 3, 2), (2, 3, 4, 5)),  # and output_padding
])
def test_conv_forward_defaults_are_torchs(name, weight_shape, x_shape):
    """With its optional arguments left out, each public functional call equals torch's with its
    own left out (the layers always pass them, so no other test reaches these defaults)."""
    rng = np.random.default_rng(2)
    # float64, both signs: a padding shows
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    bias = rng.standard_normal(weight_shape[1] if name == "conv_transpose2d" else weight_shape[0])
    out, _ = getattr(F, f"{name}_forward")(x, weight, bias)
    expected = getattr(torch.nn.functional, name)(*map(torch.from_numpy, (x, weight, bias)))
    assert_close(out, expected, "torch", np.float64, f"{name} defaults")
