"""Pooling: torch parity, float64 central differences, Numba kernels against their NumPy
references, and the parallel kernels against their serial twins (docs/pooling.md).

The three oracles of docs/README.md, for ``scratch/functional/pooling.py``,
``scratch/kernels/pooling.py`` and ``scratch.nn.MaxPool2d``, ``MaxUnpool2d`` and ``AvgPool2d``:
(1) torch parity against ``torch.nn.MaxPool2d``, ``MaxUnpool2d`` and ``AvgPool2d`` (indices
exactly, ties included; MaxUnpool2d fed torch's own indices from ``max_pool2d``); (2) central
differences; (3) kernels against their references, and parallel against serial bit for bit.
Every geometry is drawn valid by construction (``scratch.testing``): ``ceil_mode``'s partial
windows, uneven strides, padding up to half the kernel, dilation, every divisor rule, batch and
channels 1, unbatched inputs and empty batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import nn
from scratch.functional.pooling import pool2d_output_size
from scratch.gradcheck import gradcheck
from scratch.kernels import pooling as K
from scratch.nn import InplaceModificationError
from scratch.testing import assert_matches_torch

# -- helpers -------------------------------------------------------------------------------


def _arguments(case: dict, *names: str) -> dict:
    """The case's values of ``names``: the constructor arguments of one layer."""
    return {name: case[name] for name in names}


POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
AVG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
UNPOOL = ("kernel_size", "stride", "padding")


def _batched(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 4 else x[np.newaxis]


def _out_shape(x4_shape, case, dilation=(1, 1)):
    return (*x4_shape[:2], *(pool2d_output_size(x4_shape[2 + a], case["kernel_size"][a], case["stride"][a],
                                                case["padding"][a], dilation[a], case["ceil_mode"]) for a in (0, 1)))


def _distinct(rng, shape) -> np.ndarray:
    """Distinct values at least 0.05 apart: no tie or near-tie, so a max is smooth under ±eps."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.05 + rng.uniform(0, 0.01, size)).reshape(shape)


def _torch_pool(x, case):
    """torch's max_pool2d with return_indices: (values, indices) as NumPy arrays."""
    y, indices = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True,
                                                **_arguments(case, "kernel_size", "stride", "padding", "ceil_mode"))
    return y.numpy(), indices.numpy()


def _distinct_indices(rng, shape, output_size) -> np.ndarray:
    """int64 indices of ``shape``, distinct within each plane, anywhere in an output_size plane."""
    planes = int(np.prod(shape[:-2]))
    length, plane = shape[-2] * shape[-1], output_size[0] * output_size[1]
    rows = [rng.permutation(plane)[:length] for _ in range(planes)]
    return np.array(rows, dtype=np.int64).reshape(shape)


def _unpool_size(case):
    """The (H_out, W_out) a scatter case's MaxUnpool2d produces."""
    if case["output_size"] is not None:
        return tuple(case["output_size"][-2:])
    return tuple((case["x_shape"][-2 + a] - 1) * case["stride"][a] - 2 * case["padding"][a] + case["kernel_size"][a]
                 for a in (0, 1))


class _Unpool:
    """A MaxUnpool2d called with a fixed output_size, as assert_matches_torch calls a layer."""

    def __init__(self, layer, output_size):
        self.layer, self.output_size = layer, output_size

    def __call__(self, x, indices):
        return self.layer(x, indices, output_size=self.output_size)

    def backward(self, grad_output):
        return self.layer.backward(grad_output)


# -- oracle 1: torch parity ---------------------------------------------------------------


@given(case=S.max_pool2d_cases(), dtype=S.dtypes, seed=S.seeds, ties=st.booleans())
def test_max_pool2d_matches_torch(case, dtype, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"])
    if ties:  # few distinct values: tied maxima everywhere, so the tie rule is what is tested
        x = np.round(x)
    x = x.astype(dtype)
    arguments = _arguments(case, *POOL)
    layer, twin = nn.MaxPool2d(**arguments), torch.nn.MaxPool2d(**arguments)
    assert_matches_torch(layer, twin, x, rng=rng, what="MaxPool2d")  # output and dx, random cotangent
    # and beyond the tolerance: the same maxima exactly, taken from the same arg-max, ties included
    y = layer(x)
    ty, indices = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True, **arguments)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(layer._cache[0].reshape(y.shape), indices.numpy())
    # return_indices: (y, indices) as torch's, and backward takes dy for y
    with_indices = nn.MaxPool2d(**arguments, return_indices=True)
    y2, indices2 = with_indices(x)
    assert indices2.dtype == np.int64 and indices2.shape == y.shape
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(indices2, indices.numpy())
    dy = rng.standard_normal(y.shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, **arguments).backward(torch.from_numpy(dy))
    assert_close(with_indices.backward(dy), tx.grad, "torch", dtype, "MaxPool2d(return_indices=True) dx")
    # the twin module, built from the same constructor arguments, computes the same forward
    np.testing.assert_array_equal(twin(torch.from_numpy(x)).numpy(), y)


def _divisor_rules(case):
    """The case under each of torch's three divisor rules: count_include_pad both ways, and the
    drawn divisor_override when there is one (so every geometry meets every rule)."""
    rules = [dict(count_include_pad=True, divisor_override=None), dict(count_include_pad=False, divisor_override=None)]
    if case["divisor_override"] is not None:
        rules.append(dict(count_include_pad=case["count_include_pad"], divisor_override=case["divisor_override"]))
    return [{**case, **rule} for rule in rules]


@given(case=S.avg_pool2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_avg_pool2d_matches_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    for variant in _divisor_rules(case):
        arguments = _arguments(variant, *AVG)
        assert_matches_torch(nn.AvgPool2d(**arguments), torch.nn.AvgPool2d(**arguments), x, rng=rng,
                             what=f"AvgPool2d({arguments})")


@given(case=S.max_unpool2d_cases(), dtype=S.dtypes, seed=S.seeds, ties=st.booleans())
def test_max_unpool2d_on_torchs_own_pool_indices_matches_torch(case, dtype, seed, ties):
    """SegNet's use: torch's max_pool2d gives values and indices (repeated where overlapping
    windows share a maximum), MaxUnpool2d puts them back; output and dx against torch's."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"])
    x = (np.round(x) if ties else x).astype(dtype)
    values, indices = _torch_pool(x, case)
    arguments = _arguments(case, *UNPOOL)
    twin = torch.nn.MaxUnpool2d(**arguments)
    assert_matches_torch(_Unpool(nn.MaxUnpool2d(**arguments), case["output_size"]),
                         lambda a, b: twin(a, b, output_size=case["output_size"]), values, indices, rng=rng,
                         what="MaxUnpool2d")
    # the values land exactly where torch puts them
    expected = twin(torch.from_numpy(values), torch.from_numpy(indices), output_size=case["output_size"]).numpy()
    np.testing.assert_array_equal(nn.MaxUnpool2d(**arguments)(values, indices, case["output_size"]), expected)


@given(case=S.max_unpool2d_scatter_cases(), dtype=S.dtypes, seed=S.seeds)
def test_max_unpool2d_on_indices_from_anywhere_matches_torch(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    indices = _distinct_indices(rng, x.shape, _unpool_size(case))
    arguments = _arguments(case, *UNPOOL)
    twin = torch.nn.MaxUnpool2d(**arguments)
    assert_matches_torch(_Unpool(nn.MaxUnpool2d(**arguments), case["output_size"]),
                         lambda a, b: twin(a, b, output_size=case["output_size"]), x, indices, rng=rng,
                         what="MaxUnpool2d")


@given(case=S.max_unpool2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_pool_then_unpool_matches_torch_end_to_end(case, dtype, seed):
    """scratch's MaxPool2d(return_indices=True) into its MaxUnpool2d, forward and back to dx,
    against the same two torch modules."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(case["x_shape"])).astype(dtype)
    pool_arguments, unpool_arguments = _arguments(case, "kernel_size", "stride", "padding", "ceil_mode"), _arguments(
        case, *UNPOOL)
    pool, unpool = nn.MaxPool2d(**pool_arguments, return_indices=True), nn.MaxUnpool2d(**unpool_arguments)
    values, indices = pool(x)
    out = unpool(values, indices, output_size=case["output_size"])
    tx = torch.tensor(x, requires_grad=True)
    tvalues, tindices = torch.nn.MaxPool2d(**pool_arguments, return_indices=True)(tx)
    tout = torch.nn.MaxUnpool2d(**unpool_arguments)(tvalues, tindices, output_size=case["output_size"])
    np.testing.assert_array_equal(indices, tindices.numpy())
    np.testing.assert_array_equal(out, tout.detach().numpy())
    dy = rng.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.from_numpy(dy))
    assert_close(pool.backward(unpool.backward(dy)), tx.grad, "torch", dtype, "MaxPool2d -> MaxUnpool2d dx")


def test_ceil_mode_worked_example_of_the_docs():
    """docs/pooling.md's example: one row x = 1..6, window 3, stride 2, padding 1. ceil_mode adds
    a 4th window at 5..7 that sees x[5] = 6 only; its divisor is 2 (x[5] and the right padding)
    with count_include_pad, 1 without; W = 5 with window 2, stride 2, padding 1 would start a
    4th window in the right padding, which the rule drops."""
    x = np.arange(1.0, 7.0).reshape(1, 1, 1, 6)
    geometry = dict(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))
    expected = {
        (nn.MaxPool2d, False, None): [2, 4, 6],
        (nn.MaxPool2d, True, None): [2, 4, 6, 6],
        (nn.AvgPool2d, False, True): [1, 3, 5],
        (nn.AvgPool2d, True, True): [1, 3, 5, 3],
        (nn.AvgPool2d, True, False): [1.5, 3, 5, 6],
    }
    for (layer, ceil_mode, include), values in expected.items():
        extra = {} if include is None else {"count_include_pad": include}
        twin = getattr(torch.nn, layer.__name__)(**geometry, ceil_mode=ceil_mode, **extra)
        np.testing.assert_array_equal(layer(**geometry, ceil_mode=ceil_mode, **extra)(x)[0, 0, 0], values)
        np.testing.assert_array_equal(twin(torch.from_numpy(x)).numpy()[0, 0, 0], values)
    dropped = np.ones((1, 1, 1, 5))
    for ceil_mode in (False, True):
        assert nn.MaxPool2d((1, 2), (1, 2), (0, 1), ceil_mode=ceil_mode)(dropped).shape[-1] == 3
        assert torch.nn.functional.max_pool2d(torch.from_numpy(dropped), (1, 2), (1, 2), (0, 1),
                                              ceil_mode=ceil_mode).shape[-1] == 3
    # AvgPool2d's backward spreads dy / divisor over each window: here the partial window's dy
    # goes half to x[5] with count_include_pad (the other half to the padding, dropped)
    layer = nn.AvgPool2d(**geometry, ceil_mode=True)
    layer(x)
    np.testing.assert_array_equal(layer.backward(np.array([[[[0.0, 0.0, 0.0, 1.0]]]]))[0, 0, 0], [0, 0, 0, 0, 0, 0.5])


def test_max_pool2d_nan_and_empty_windows_like_torch():
    x = np.array([[[[1.0, np.nan, 3.0, 2.0]]]])
    layer = nn.MaxPool2d((1, 2))
    np.testing.assert_array_equal(layer(x), torch.nn.functional.max_pool2d(torch.tensor(x), (1, 2)).numpy())
    lone = np.ones((1, 1, 1, 1))  # kernel 2, dilation 2, padding 1: the one window misses the pixel
    layer = nn.MaxPool2d(2, stride=1, padding=1, dilation=2, return_indices=True)
    y, indices = layer(lone)
    assert y[0, 0, 0, 0] == -np.inf == torch.nn.functional.max_pool2d(torch.tensor(lone), 2, 1, 1, 2).item()
    assert indices[0, 0, 0, 0] == -1  # torch's is 2, outside the 1-element plane (docs/pooling.md)
    np.testing.assert_array_equal(layer.backward(np.ones_like(y)), np.zeros_like(lone))


@pytest.mark.parametrize("arguments", [
    dict(kernel_size=2), dict(kernel_size=(2, 3), stride=1, padding=(1, 0), dilation=2, ceil_mode=True),
    dict(kernel_size=[3, 3], stride=(), padding=(1,)), dict(kernel_size=(3,), stride=[2, 1], return_indices=True),
])
def test_max_pool2d_repr_and_arguments_like_torch(arguments):
    """torch's repr, for torch's every way of writing the arguments (an int, one or two of them,
    an empty stride); and the same output for them."""
    layer, twin = nn.MaxPool2d(**arguments), torch.nn.MaxPool2d(**arguments)
    assert repr(layer) == repr(twin)
    x = np.random.default_rng(0).standard_normal((2, 5, 6))
    y, ty = layer(x), twin(torch.from_numpy(x))
    for got, expected in zip(y if isinstance(y, tuple) else (y,), ty if isinstance(ty, tuple) else (ty,)):
        np.testing.assert_array_equal(got, expected.numpy())


@pytest.mark.parametrize("arguments", [
    dict(kernel_size=2), dict(kernel_size=(2, 3), stride=1, padding=(1, 0), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=[3, 3], stride=(), padding=(1,), divisor_override=-2), dict(kernel_size=(3,), stride=[2, 1]),
])
def test_avg_pool2d_repr_and_arguments_like_torch(arguments):
    layer, twin = nn.AvgPool2d(**arguments), torch.nn.AvgPool2d(**arguments)
    assert repr(layer) == repr(twin)
    x = np.random.default_rng(0).standard_normal((2, 5, 6))
    np.testing.assert_allclose(layer(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-14)


def test_max_unpool2d_repr_and_output_size_forms_like_torch():
    for arguments in (dict(kernel_size=2), dict(kernel_size=(2, 3), stride=1, padding=(1, 0))):
        assert repr(nn.MaxUnpool2d(**arguments)) == repr(torch.nn.MaxUnpool2d(**arguments))
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    values, indices = _torch_pool(x, dict(kernel_size=2, stride=2, padding=0, ceil_mode=False))
    twin = torch.nn.MaxUnpool2d(2)
    for output_size in (None, (5, 5), [4, 5], (7, 7, 5, 4), torch.Size([1, 1, 4, 4])):
        expected = twin(torch.from_numpy(values), torch.from_numpy(indices), output_size=output_size).numpy()
        size = output_size if not isinstance(output_size, torch.Size) else tuple(output_size)
        np.testing.assert_array_equal(nn.MaxUnpool2d(2)(values, indices, output_size=size), expected)
    # unbatched, and a batch of none
    np.testing.assert_array_equal(nn.MaxUnpool2d(2)(values[0], indices[0]),
                                  twin(torch.from_numpy(values[0]), torch.from_numpy(indices[0])).numpy())
    assert nn.MaxUnpool2d(2)(values[:0], indices[:0]).shape == (0, 1, 4, 4)


def test_every_pool_takes_an_empty_batch_and_unbatched_input_like_torch():
    x = np.zeros((0, 2, 5, 4))
    for layer, twin in ((nn.MaxPool2d(2, ceil_mode=True), torch.nn.MaxPool2d(2, ceil_mode=True)),
                        (nn.AvgPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1))):
        y = layer(x)
        assert y.shape == tuple(twin(torch.from_numpy(x)).shape) == (0, 2, 3, 2)
        dx = layer.backward(np.zeros_like(y))
        assert dx.shape == x.shape and dx.dtype == x.dtype


def test_edited_indices_are_refused_at_backward_as_torch_does():
    """The indices MaxPool2d returns are the arg-max its backward reads; MaxUnpool2d's backward
    reads those it was given. Edited in place, both backwards refuse, as torch's do."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
    values, indices = pool(x)
    out = unpool(values, indices)
    indices[...] = 0
    for layer, dy in ((unpool, np.ones_like(out)), (pool, np.ones_like(values))):
        with pytest.raises(InplaceModificationError, match=rf"^{type(layer).__name__}\.backward: its indices array "):
            layer.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    tvalues, tindices = torch.nn.functional.max_pool2d(tx, 2, return_indices=True)
    tout = torch.nn.functional.max_unpool2d(tvalues, tindices, 2)
    tindices.zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tout.sum().backward()


# -- oracle 2: central differences --------------------------------------------------------


@given(case=S.max_pool2d_cases(), seed=S.seeds)
def test_max_pool2d_finite_differences(case, seed):
    """Distinct values, at least 0.05 apart: no tie or near-tie, so max is smooth under ±eps.
    The layer with return_indices is checked through its values (backward takes dy for y)."""
    rng = np.random.default_rng(seed)
    x = _distinct(rng, case["x_shape"])
    layer = nn.MaxPool2d(**_arguments(case, *POOL), return_indices=case["return_indices"])
    if case["return_indices"]:
        gradcheck((lambda v: (layer(v)[0], None), lambda dy, _: layer.backward(dy)), x, rng=rng, **GRADCHECK)
    else:
        gradcheck(layer, x, rng=rng, **GRADCHECK)


@given(case=S.avg_pool2d_cases(), seed=S.seeds)
def test_avg_pool2d_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"])
    for variant in _divisor_rules(case):
        gradcheck(nn.AvgPool2d(**_arguments(variant, *AVG)), x, rng=rng, **GRADCHECK)


@given(case=S.max_unpool2d_scatter_cases(), seed=S.seeds)
def test_max_unpool2d_finite_differences(case, seed):
    """Distinct indices in each plane: the scatter is linear and its adjoint is the gather.
    (With a repeated index the forward keeps one value and the backward gives each its gather,
    torch's convention, not the derivative: docs/pooling.md.)"""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"])
    indices = _distinct_indices(rng, x.shape, _unpool_size(case))
    layer = nn.MaxUnpool2d(**_arguments(case, *UNPOOL))
    gradcheck((lambda v: (layer(v, indices, case["output_size"]), None), lambda dy, _: layer.backward(dy)), x,
              rng=rng, **GRADCHECK)


# -- oracle 3: kernels against references, parallel against serial ------------------------


@given(case=S.max_pool2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_max_pool_kernels_match_references_and_serial(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x = _batched(np.round(rng.standard_normal(case["x_shape"]) * 2).astype(dtype))  # ties included
    out_shape = _out_shape(x.shape, case, case["dilation"])
    geometry = (*case["kernel_size"], *case["stride"], *case["padding"], *case["dilation"])
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
    assert_close(dx, reference, "kernel", dtype, "max_pool2d_backward", scale=np.abs(dy).max(initial=0) * 8)
    np.testing.assert_array_equal(dx, dx_serial)


@given(case=S.avg_pool2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_avg_pool_kernels_match_references_and_serial(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x = _batched(rng.standard_normal(case["x_shape"]).astype(dtype))
    for variant in _divisor_rules(case):
        _check_avg_kernels(variant, x, dtype, rng)


def _check_avg_kernels(case, x, dtype, rng):
    out_shape = _out_shape(x.shape, case)
    divisor = 0 if case["divisor_override"] is None else case["divisor_override"]
    geometry = (*case["kernel_size"], *case["stride"], *case["padding"], case["count_include_pad"], divisor)
    rules = dict(count_include_pad=case["count_include_pad"], divisor_override=case["divisor_override"])
    y, y_serial = np.empty(out_shape, dtype), np.empty(out_shape, dtype)
    K.avg_pool2d_forward(x, y, *geometry)
    K.avg_pool2d_forward_serial(x, y_serial, *geometry)
    expected = K.avg_pool2d_forward_reference(x, out_shape, case["kernel_size"], case["stride"], case["padding"], **rules)
    assert_close(y, expected, "kernel", dtype, "avg_pool2d_forward", scale=np.abs(x).max(initial=0))
    np.testing.assert_array_equal(y_serial, y)
    dy = rng.standard_normal(out_shape).astype(dtype)
    dx, dx_serial = np.empty_like(x), np.empty_like(x)
    K.avg_pool2d_backward(dy, dx, *geometry)
    K.avg_pool2d_backward_serial(dy, dx_serial, *geometry)
    reference = K.avg_pool2d_backward_reference(dy, x.shape, case["kernel_size"], case["stride"], case["padding"],
                                                **rules)
    terms = np.prod(case["kernel_size"]) * np.abs(dy).max(initial=0)  # at most k_h·k_w shares, |dy / divisor| <= |dy|
    assert_close(dx, reference, "kernel", dtype, "avg_pool2d_backward", scale=terms)
    np.testing.assert_array_equal(dx, dx_serial)


@given(case=S.max_unpool2d_scatter_cases(), dtype=S.dtypes, seed=S.seeds, from_pool=st.booleans())
def test_max_unpool_kernels_match_references_and_serial(case, dtype, seed, from_pool):
    """Indices distinct in each plane, or (``from_pool``) repeated as overlapping windows repeat
    them, with equal values there (a 1-wide window of stride 1 repeated in every output)."""
    rng = np.random.default_rng(seed)
    x = _batched(rng.standard_normal(case["x_shape"]).astype(dtype))
    size = _unpool_size(case)
    indices = _batched(_distinct_indices(rng, case["x_shape"], size))
    if from_pool:  # every entry of a plane points at one position and carries one value
        indices[...] = indices[..., :1, :1]
        x[...] = x[..., :1, :1]
    n, c, h, w = x.shape
    flat_x, flat_indices = x.reshape(n, c, h * w), indices.reshape(n, c, h * w)
    out, out_serial = np.empty((n, c, size[0] * size[1]), dtype), np.empty((n, c, size[0] * size[1]), dtype)
    K.max_unpool2d_forward(flat_x, flat_indices, out)
    K.max_unpool2d_forward_serial(flat_x, flat_indices, out_serial)
    np.testing.assert_array_equal(out.reshape(n, c, *size), K.max_unpool2d_forward_reference(x, indices, size))
    np.testing.assert_array_equal(out_serial, out)
    dy = rng.standard_normal((n, c, *size)).astype(dtype)
    dx, dx_serial = np.empty_like(flat_x), np.empty_like(flat_x)
    flat_dy = dy.reshape(n, c, size[0] * size[1])
    K.max_unpool2d_backward(flat_dy, flat_indices, dx)
    K.max_unpool2d_backward_serial(flat_dy, flat_indices, dx_serial)
    np.testing.assert_array_equal(dx.reshape(x.shape), K.max_unpool2d_backward_reference(dy, indices))
    np.testing.assert_array_equal(dx_serial, dx)


# -- refusals ------------------------------------------------------------------------------

X = np.zeros((1, 1, 4, 4))
INDICES = np.zeros((1, 1, 2, 2), np.int64)


@pytest.mark.parametrize("make, twin, error, message", [
    (lambda: nn.MaxPool2d(2, padding=2), lambda: torch.nn.MaxPool2d(2, padding=2)(torch.zeros(1, 1, 4, 4)),
     ValueError, r"^MaxPool2d\(kernel_size=2, .*padding must be at most half the kernel size .*got padding=\(2, 2\)"),
    (lambda: nn.MaxPool2d(3, padding=2, dilation=2), lambda: torch.nn.MaxPool2d(3, padding=2, dilation=2)(
        torch.zeros(1, 1, 9, 9)), ValueError, r"padding must be at most half the kernel size"),
    (lambda: nn.AvgPool2d(3, padding=(0, 2)), lambda: torch.nn.AvgPool2d(3, padding=(0, 2))(torch.zeros(1, 1, 9, 9)),
     ValueError, r"^AvgPool2d\(kernel_size=3, .*padding must be at most half"),
    (lambda: nn.MaxPool2d(3)(np.zeros((1, 1, 2, 2))), lambda: torch.nn.MaxPool2d(3)(torch.zeros(1, 1, 2, 2)),
     ValueError, r"^MaxPool2d\(kernel_size=3.*: input of shape \(1, 1, 2, 2\) is too small for this window"),
    (lambda: nn.AvgPool2d(3, ceil_mode=True)(np.zeros((2, 1, 1))), lambda: torch.nn.AvgPool2d(3, ceil_mode=True)(torch.zeros(2, 1, 1)),
     None, None),  # ceil_mode: a 3-wide window over a 1-wide input still has an output, as in torch
    (lambda: nn.AvgPool2d(2, divisor_override=0), lambda: torch.nn.AvgPool2d(2, divisor_override=0)(
        torch.zeros(1, 1, 4, 4)), ValueError, r"^AvgPool2d: divisor_override must be None or a nonzero int"),
    (lambda: nn.AvgPool2d(2, divisor_override=2.0), lambda: torch.nn.AvgPool2d(2, divisor_override=2.0)(
        torch.zeros(1, 1, 4, 4)), TypeError, r"^AvgPool2d: divisor_override must be .*got 2.0"),
    (lambda: nn.MaxPool2d(2, ceil_mode=1), lambda: torch.nn.functional.max_pool2d(torch.zeros(1, 1, 4, 4), 2, ceil_mode=1),
     TypeError, r"^MaxPool2d: ceil_mode must be a bool, got 1"),
    (lambda: nn.MaxPool2d((2, 2, 2)), lambda: torch.nn.MaxPool2d((2, 2, 2))(torch.zeros(1, 1, 4, 4)), ValueError,
     r"^MaxPool2d: kernel_size must be an int >= 1 or a sequence of one or two of them, got \(2, 2, 2\)"),
    (lambda: nn.MaxPool2d(2, stride=0), lambda: torch.nn.MaxPool2d(2, stride=0)(torch.zeros(1, 1, 4, 4)), ValueError,
     r"^MaxPool2d: stride must be"),
    (lambda: nn.MaxPool2d(2)(np.zeros((1, 0, 4, 4))), lambda: torch.nn.MaxPool2d(2)(torch.zeros(1, 0, 4, 4)),
     ValueError, r"^MaxPool2d\(.*: input has an empty channel, row or column axis \(shape \(1, 0, 4, 4\)\)"),
    (lambda: nn.AvgPool2d(2)(np.zeros((0, 4, 4))), lambda: torch.nn.AvgPool2d(2)(torch.zeros(0, 4, 4)),
     ValueError, r"^AvgPool2d\(.*: input has an empty channel"),
    (lambda: nn.AvgPool2d(2)(np.zeros((4, 4))), lambda: torch.nn.AvgPool2d(2)(torch.zeros(4, 4)),
     ValueError, r"^AvgPool2d\(.*: input must have 3 or 4 dimensions, got shape \(4, 4\)"),
    (lambda: nn.MaxUnpool2d(2)(X[..., :2, :2], INDICES + 100), lambda: torch.nn.MaxUnpool2d(2)(
        torch.zeros(1, 1, 2, 2), torch.from_numpy(INDICES + 100)), ValueError,
     r"^MaxUnpool2d\(kernel_size=\(2, 2\).*: indices must lie in \[0, 16\) .*found an invalid max index 100"),
    (lambda: nn.MaxUnpool2d(2)(X[..., :2, :2], INDICES - 1), lambda: torch.nn.MaxUnpool2d(2)(
        torch.zeros(1, 1, 2, 2), torch.from_numpy(INDICES - 1)), ValueError, r"invalid max index -1"),
    (lambda: nn.MaxUnpool2d(2)(X[..., :2, :2], INDICES.astype(np.int32)), lambda: torch.nn.MaxUnpool2d(2)(
        torch.zeros(1, 1, 2, 2), torch.from_numpy(INDICES).int()), TypeError, r"^MaxUnpool2d\(.*: indices must be int64"),
    (lambda: nn.MaxUnpool2d(2)(X[..., :2, :2], INDICES[..., :1]), lambda: torch.nn.MaxUnpool2d(2)(
        torch.zeros(1, 1, 2, 2), torch.from_numpy(INDICES[..., :1])), ValueError, r"indices must have the input's shape"),
    (lambda: nn.MaxUnpool2d(2)(X[..., :2, :2], INDICES, output_size=(6, 4)), lambda: torch.nn.MaxUnpool2d(2)(
        torch.zeros(1, 1, 2, 2), torch.from_numpy(INDICES), output_size=(6, 4)), ValueError,
     r"^MaxUnpool2d\(.*: invalid output_size \(6, 4\): dim 0 must be between 2 and 6"),
    (lambda: nn.MaxUnpool2d(2)(X[0, :, :2, :2], INDICES[0], output_size=(1, 4, 4)), lambda: torch.nn.MaxUnpool2d(2)(
        torch.zeros(1, 2, 2), torch.from_numpy(INDICES[0]), output_size=(1, 4, 4)), ValueError,
     r"output_size must have 2 elements \(H, W\) or 4 \(N, C, H, W\), got \(1, 4, 4\) with 3"),
    (lambda: nn.MaxUnpool2d(1, padding=2)(X[..., :2, :2], INDICES), lambda: torch.nn.MaxUnpool2d(1, padding=2)(
        torch.zeros(1, 1, 2, 2), torch.from_numpy(INDICES)), ValueError, r"the output size must be non-negative"),
    (lambda: nn.MaxUnpool2d(2)(X[:, :0, :2, :2], INDICES[:, :0]), lambda: torch.nn.MaxUnpool2d(2)(
        torch.zeros(1, 0, 2, 2), torch.from_numpy(INDICES[:, :0])), ValueError, r"input has an empty channel"),
])
def test_refusals_are_clear_and_where_torch_refuses(make, twin, error, message):
    """Each refusal names the layer (its repr, once built), what was expected and what was given;
    torch refuses the same thing (or, for the row marked so, accepts it as scratch does)."""
    if error is None:
        make(), twin()
        return
    with pytest.raises(error, match=message):
        make()
    with pytest.raises((RuntimeError, ValueError, TypeError, IndexError)):
        twin()


def test_max_unpool2d_backward_refuses_an_empty_output_plane_as_torch():
    """An empty output plane takes any index at forward (zeros, as torch gives); the gather back
    has nothing to read, and torch's backward raises too."""
    layer = nn.MaxUnpool2d(1, stride=1, padding=1)  # default size (2 - 1)·1 - 2 + 1 = 0
    y = layer(X[..., :2, :2], INDICES + 3)
    assert y.shape == (1, 1, 0, 0)
    with pytest.raises(ValueError, match=r"^MaxUnpool2d\.backward: the output plane \(0, 0\) is empty"):
        layer.backward(np.zeros_like(y))
    tx = torch.zeros(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    tout = torch.nn.MaxUnpool2d(1, stride=1, padding=1)(tx, torch.from_numpy(INDICES + 3))
    with pytest.raises((RuntimeError, IndexError)):
        tout.backward(torch.zeros_like(tout))
