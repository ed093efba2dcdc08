"""The defaults of the public functional calls are torch's: each call with its optional arguments
left out equals torch's functional call with its own left out (the layers always pass them, so
no other test reaches these defaults)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity_tests.tolerances import assert_close
from scratch import functional as F


def _x(rng, *shape):
    return rng.standard_normal(shape)  # float64, both signs: a slope or a padding shows


def test_leaky_relu_forward_default_slope_is_torchs():
    rng = np.random.default_rng(0)
    x = _x(rng, 4, 5)
    out, _ = F.leaky_relu_forward(x)
    assert_close(out, torch.nn.functional.leaky_relu(torch.from_numpy(x)), "torch", np.float64, "leaky_relu default")


def test_linear_activation_forward_default_slope_is_torchs():
    rng = np.random.default_rng(1)
    x, weight, bias = _x(rng, 4, 3), _x(rng, 5, 3), _x(rng, 5)
    out = F.linear_activation_forward(x, weight, bias, "leaky_relu")[0]
    expected = torch.nn.functional.leaky_relu(torch.nn.functional.linear(*map(torch.from_numpy, (x, weight, bias))))
    assert_close(out, expected, "torch", np.float64, "linear + leaky_relu default")


@pytest.mark.parametrize("name, weight_shape, x_shape", [
    ("conv2d", (4, 3, 3, 2), (2, 3, 6, 5)),            # stride, padding, dilation left out
    ("conv_transpose2d", (3, 4, 3, 2), (2, 3, 4, 5)),  # and output_padding
])
def test_conv_forward_defaults_are_torchs(name, weight_shape, x_shape):
    rng = np.random.default_rng(2)
    x, weight = _x(rng, *x_shape), _x(rng, *weight_shape)
    bias = _x(rng, weight_shape[1] if name == "conv_transpose2d" else weight_shape[0])
    out, _ = getattr(F, f"{name}_forward")(x, weight, bias)
    expected = getattr(torch.nn.functional, name)(*map(torch.from_numpy, (x, weight, bias)))
    assert_close(out, expected, "torch", np.float64, f"{name} defaults")
