"""scratch.testing.assert_matches_torch itself: it passes correct layers and catches wrong ones.

The wrong layers are planted bugs of the kinds that survive a glance: a 1% error in dx, a wrong
weight gradient, weights that were never loaded, and a backward that ignores its cotangent
(which an all-ones cotangent would not reveal).
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from scratch import functional as F
from scratch import nn
from scratch.testing import TOLERANCES, TorchMatch, assert_matches_torch, tolerance


class _LinearWithWrongDx(nn.Linear):
    """dx off by 1%."""

    def backward(self, grad_output):
        return 1.01 * super().backward(grad_output)


class _LinearWithWrongWeightGrad(nn.Linear):
    """dW off by 1% (dx and db right)."""

    def backward(self, grad_output):
        before = self.weight.grad.copy()
        grad_input = super().backward(grad_output)
        self.weight.grad += 0.01 * (self.weight.grad - before)
        return grad_input


class _LinearIgnoringCotangent(nn.Linear):
    """dx = 1 @ W whatever the cotangent: right only for an all-ones cotangent."""

    def backward(self, grad_output):
        super().backward(grad_output)
        return np.ones_like(grad_output) @ self.weight.data


class _GroupedConv2d(nn.Module):
    """A user's layer: Conv2d with ``groups``, built group by group on the functional pair (scratch's
    own Conv2d takes ``groups=`` in its kernels; this one shows the kit checking a layer of one's own).

    x (N, C_in, H, W) -> (N, C_out, H', W'); weight (C_out, C_in / groups, kH, kW), torch's layout.
    """

    def __init__(self, in_channels, out_channels, kernel_size, groups, rng):
        super().__init__()
        self.groups = groups
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        self.weight = nn.Parameter(rng.standard_normal(shape))
        self.bias = nn.Parameter(rng.standard_normal(out_channels))

    def _slices(self, x_channels):
        step_in, step_out = x_channels // self.groups, self.weight.shape[0] // self.groups
        return [(slice(g * step_in, (g + 1) * step_in), slice(g * step_out, (g + 1) * step_out))
                for g in range(self.groups)]

    def forward(self, x):
        outputs, self._caches = [], []
        for inputs, outputs_of_group in self._slices(x.shape[1]):
            y, cache = F.conv2d_forward(np.ascontiguousarray(x[:, inputs]), self.weight.data[outputs_of_group],
                                        self.bias.data[outputs_of_group])
            outputs.append(y)
            self._caches.append(cache)
        self._channels = x.shape[1]
        return np.concatenate(outputs, axis=1)

    def backward(self, grad_output):
        grads = []
        for (inputs, outputs), cache in zip(self._slices(self._channels), self._caches):
            dx, dw, db = F.conv2d_backward(np.ascontiguousarray(grad_output[:, outputs]), cache)
            self.weight.grad[outputs] += dw
            self.bias.grad[outputs] += db
            grads.append(dx)
        return np.concatenate(grads, axis=1)


class _Scale(nn.Module):
    """y = a · x for two inputs (a broadcast over x's last axis): one gradient per input."""

    def forward(self, a, x):
        self._a, self._x = a, x
        return a * x

    def backward(self, grad_output):
        return (grad_output * self._x).sum(axis=tuple(range(grad_output.ndim - 1))), grad_output * self._a


class _TorchScale(torch.nn.Module):
    def forward(self, a, x):
        return a * x


def _linear_pair(layer_class=nn.Linear, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return layer_class(5, 3, rng=rng, dtype=dtype), torch.nn.Linear(5, 3), rng.standard_normal((4, 5)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_passes_a_correct_linear_in_both_precisions(dtype):
    layer, twin, x = _linear_pair(dtype=dtype)
    result = assert_matches_torch(layer, twin, x, rng=1)
    assert isinstance(result, TorchMatch)
    assert set(result.max_rel_error) == {"output", "grad_input[0]", "grad 'weight'", "grad 'bias'"}
    assert all(type(value) is float for value in result.max_rel_error.values())
    assert all(ratio <= 1 for ratio in result.worst_ratio.values())
    assert (result.rtol, result.atol) == TOLERANCES[("torch", np.dtype(dtype).name)] == tolerance("torch", dtype)
    assert result.dtype == np.dtype(dtype).name
    assert twin.weight.dtype == getattr(torch, np.dtype(dtype).name)  # moved to the compared dtype
    np.testing.assert_array_equal(twin.weight.detach().numpy(), layer.weight.data)  # weights loaded


def test_passes_a_users_grouped_convolution():
    rng = np.random.default_rng(2)
    layer = _GroupedConv2d(4, 6, 3, groups=2, rng=rng)
    twin = torch.nn.Conv2d(4, 6, 3, groups=2)
    result = assert_matches_torch(layer, twin, rng.standard_normal((2, 4, 6, 5)), rng=rng, what="grouped")
    assert set(result.max_rel_error) == {"output", "grad_input[0]", "grad 'weight'", "grad 'bias'"}


def test_compares_every_input_gradient_of_a_layer_with_two_inputs():
    rng = np.random.default_rng(3)
    result = assert_matches_torch(_Scale(), _TorchScale(), rng.standard_normal(4), rng.standard_normal((3, 4)), rng=rng)
    assert {"grad_input[0]", "grad_input[1]"} <= set(result.max_rel_error)


def test_catches_a_one_percent_error_in_dx():
    layer, twin, x = _linear_pair(_LinearWithWrongDx)
    with pytest.raises(AssertionError, match=re.escape("grad_input[0]")) as failure:
        assert_matches_torch(layer, twin, x, rng=1, what="planted")
    message = str(failure.value)
    assert message.startswith("planted: grad_input[0]")
    for part in ("worst at (", "scratch ", "torch ", "|error|", "relative", "rtol=1e-10"):
        assert part in message


def test_catches_a_one_percent_error_in_dx_in_float32():
    layer, twin, x = _linear_pair(_LinearWithWrongDx, dtype=np.float32)
    with pytest.raises(AssertionError, match=re.escape("grad_input[0] [torch, float32: rtol=0.0002")):
        assert_matches_torch(layer, twin, x, rng=1)


def test_catches_a_wrong_weight_gradient_and_names_it():
    layer, twin, x = _linear_pair(_LinearWithWrongWeightGrad)
    with pytest.raises(AssertionError, match="grad 'weight'"):
        assert_matches_torch(layer, twin, x, rng=1)


def test_catches_weights_that_differ_when_not_loaded():
    layer, twin, x = _linear_pair()
    with pytest.raises(AssertionError, match=r"^output \["):
        assert_matches_torch(layer, twin, x, rng=1, load_weights=False)


def test_the_cotangent_is_random_so_a_backward_ignoring_it_fails():
    layer, twin, x = _linear_pair(_LinearIgnoringCotangent)
    # with an all-ones cotangent this backward is right: the kit would miss the bug
    twin.double().load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    tx = torch.tensor(x, requires_grad=True)
    twin(tx).sum().backward()
    layer(x)
    np.testing.assert_allclose(layer.backward(np.ones((4, 3))), tx.grad.numpy(), rtol=1e-12)
    with pytest.raises(AssertionError, match=re.escape("grad_input[0]")):
        assert_matches_torch(layer, twin, x, rng=1)


def test_grads_are_zeroed_first_on_both_sides():
    layer, twin, x = _linear_pair()
    for _ in range(2):  # a second call does not see the first call's gradients
        assert_matches_torch(layer, twin, x, rng=1)
    layer.weight.grad[...] = 1e3
    assert_matches_torch(layer, twin, x, rng=1)


def test_a_tuple_output_is_refused_clearly():
    class _Pair(nn.Module):
        def forward(self, x):
            return x, 2 * x

        def backward(self, grad_output):
            raise AssertionError("not reached")

    with pytest.raises(TypeError, match="only a single array output is supported"):
        assert_matches_torch(_Pair(), lambda x: (x, 2 * x), np.zeros(3))


def test_a_scale_for_a_quantity_that_is_not_compared_is_refused():
    layer, twin, x = _linear_pair()
    with pytest.raises(ValueError, match="grad 'wieght'"):
        assert_matches_torch(layer, twin, x, rng=1, scale={"grad 'wieght'": 1.0})


def test_importing_the_kit_imports_neither_torch_nor_needs_hypothesis():
    code = ("import sys; sys.modules['hypothesis'] = None; import scratch.testing as T; "
            "assert 'torch' not in sys.modules; T.tolerance('torch', 'float32')\n"
            "try:\n    T.conv2d_cases()\nexcept ImportError as error:\n    assert 'hypothesis' in str(error)\n"
            "else:\n    raise SystemExit('no ImportError')")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_model_matches_its_twin_and_a_wrong_gradient_is_named():
    """assert_model_matches_torch: loss parts and every gradient of a model against its twin;
    a planted error in one parameter's gradient fails naming that parameter."""
    from scratch.models import build
    from scratch.testing import assert_model_matches_torch
    from torch_impl.models import build as torch_build

    model = build("vae", dtype=np.float64, rng=0, input_dim=12, hidden_dim=5, latent_dim=3)
    x = np.random.default_rng(1).random((4, 12))
    noise = model.draw_noise(x.shape)
    result = assert_model_matches_torch(model, torch_build("vae", **model.config), x, noise)
    assert set(result.max_rel_error) == {"loss", "recon", "kl"} | {f"grad {k!r}" for k, _ in model.named_parameters()}
    sparse = build("sparse-ae", dtype=np.float64, rng=0, input_dim=12, hidden_dim=5)
    result = assert_model_matches_torch(sparse, torch_build("sparse-ae", **sparse.config), x, input_grad=True)
    assert {"loss", "recon", "penalty", "grad_input"} <= set(result.max_rel_error)
    backward = model.backward

    def wrong_backward(**options):
        grad = backward(**options)
        model.fc21.bias.grad *= 1.01
        return grad

    model.backward = wrong_backward
    with pytest.raises(AssertionError, match="grad 'fc21.bias'"):
        assert_model_matches_torch(model, torch_build("vae", **model.config), x, noise)
