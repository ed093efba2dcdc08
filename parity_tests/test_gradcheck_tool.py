"""scratch.gradcheck itself: it passes correct backward passes, and it catches wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK
from scratch import functional as F
from scratch import nn
from scratch.gradcheck import GradcheckError, GradcheckResult, gradcheck, gradcheck_model
from scratch.models import build


class _LinearForgettingBias(nn.Linear):
    """A deliberately wrong Linear: backward drops the bias gradient's batch sum (uses row 0)."""

    def backward(self, grad_output):
        grad_input = super().backward(grad_output)
        dy = grad_output.reshape(-1, self.out_features)
        self.bias.grad -= dy.sum(axis=0) - dy[0]
        return grad_input


def _sigmoid_backward_slightly_wrong(grad_output, cache):
    """σ'(x) with 1% error: the kind of bug that survives eyeballing."""
    return 1.01 * F.sigmoid_backward(grad_output, cache)


def _linear_backward_transposed(grad_output, cache):
    """dW computed as xᵀ·dy transposed wrongly when square: a classic mix-up."""
    grad_input, grad_weight, grad_bias = F.linear_backward(grad_output, cache)
    return grad_input, grad_weight.T.copy(), grad_bias


@given(batch=S.batch_sizes, seed=S.seeds)
def test_catches_wrong_bias_gradient(batch, seed):
    rng = np.random.default_rng(seed)
    layer = _LinearForgettingBias(4, 3, rng=rng, dtype=np.float64)
    x = rng.standard_normal((batch + 1, 4))  # at least two rows, so the bug shows
    with pytest.raises(GradcheckError) as failure:
        gradcheck(layer, x, rng=rng, **GRADCHECK)
    assert failure.value.result.worst_where.startswith("bias[")
    assert not failure.value.result.passed


@given(shape=S.shapes(), seed=S.seeds)
def test_catches_one_percent_error(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    with pytest.raises(GradcheckError, match="FAILED"):
        gradcheck((F.sigmoid_forward, _sigmoid_backward_slightly_wrong), x, rng=rng, **GRADCHECK)


def test_catches_transposed_weight_gradient():
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((5, 3)), rng.standard_normal((3, 3)), rng.standard_normal(3)
    result = gradcheck((F.linear_forward, _linear_backward_transposed), x, weight, bias,
                       rng=rng, raise_on_failure=False, **GRADCHECK)
    assert not result.passed and result.worst_where.startswith("input1[")
    assert result.max_abs_error > 1e-2
    assert not result, "a failed result must be falsy: `assert gradcheck(...)` is how torch's users check"


def test_a_result_is_truthy_exactly_when_it_passed_and_reads_as_plain_python():
    rng = np.random.default_rng(4)
    layer = nn.Linear(3, 2, rng=rng, dtype=np.float64)
    result = gradcheck(layer, rng.standard_normal((4, 3)), rng=rng)
    assert result and result.passed is True
    for value in (result.max_abs_error, result.max_rel_error, result.worst_ratio, result.rounding_floor):
        assert type(value) is float
    assert type(result.elements_checked) is int
    assert "np." not in repr(result) and "array(" not in repr(result), repr(result)


def test_reports_worst_errors_with_their_index():
    rng = np.random.default_rng(1)
    layer = nn.Linear(3, 2, rng=rng, dtype=np.float64)
    result = gradcheck(layer, rng.standard_normal((4, 3)), rng=rng, **GRADCHECK)
    assert isinstance(result, GradcheckResult) and result.passed
    assert result.elements_checked == 12 + 6 + 2
    assert [name for name, _, _ in result.arrays] == ["input0", "weight", "bias"]
    assert result.max_abs_error < 1e-8 and result.max_rel_error < 1e-5
    assert "[" in result.max_abs_where and "[" in result.max_rel_where
    assert "passed" in str(result)


def test_random_cotangent_catches_what_all_ones_hides():
    """A backward that returns the mean gradient for every element passes an all-ones cotangent
    on a layer whose outputs all share one gradient, but fails under a random one."""
    def wrong_backward(grad_output, cache):
        dx = F.tanh_backward(grad_output, cache)
        return np.full_like(dx, dx.mean())

    rng = np.random.default_rng(2)
    x = np.zeros((3, 4))  # tanh'(0) = 1 everywhere: with c = 1, dx = 1 = its mean
    ones = gradcheck((F.tanh_forward, wrong_backward), x, cotangent=np.ones((3, 4)), raise_on_failure=False)
    assert ones.passed
    with pytest.raises(GradcheckError):
        gradcheck((F.tanh_forward, wrong_backward), x, rng=rng)


def test_restores_inputs_parameters_and_grads():
    rng = np.random.default_rng(3)
    layer = nn.Linear(3, 2, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 3))
    layer.weight.grad[...] = 7.0
    before = (x.copy(), layer.weight.data.copy(), layer.bias.data.copy(), layer.weight.grad.copy())
    gradcheck(layer, x, rng=rng)
    after = (x, layer.weight.data, layer.bias.data, layer.weight.grad)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_max_elements_checks_a_subset():
    rng = np.random.default_rng(4)
    layer = nn.Linear(10, 10, rng=rng, dtype=np.float64)
    result = gradcheck(layer, rng.standard_normal((3, 10)), max_elements=5, rng=rng)
    assert result.elements_checked == 15


def test_refuses_float32():
    layer = nn.Linear(2, 2, dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(layer, np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="target must be"):
        gradcheck(object(), np.zeros(2))


def test_model_check_catches_a_wrong_layer():
    rng = np.random.default_rng(5)
    model = build("mlp-ae", dtype=np.float64, rng=rng, input_dim=6, hidden_dims=[4], latent_dim=2)
    x = rng.random((3, 6))
    assert gradcheck_model(model, x, rng=rng, **GRADCHECK).passed
    broken = _LinearForgettingBias(4, 6, rng=rng, dtype=np.float64)
    model.decoder = nn.Sequential(nn.Linear(2, 4, rng=rng, dtype=np.float64), nn.ReLU(), broken, nn.Sigmoid())
    with pytest.raises(GradcheckError, match="decoder.2.bias"):
        gradcheck_model(model, x, rng=rng, **GRADCHECK)
