"""Upsampling (``interpolate``): torch parity, float64 central differences, the Numba kernels
against their NumPy references and the parallel kernels against their serial twins (docs/upsampling.md).

The three oracles of docs/README.md, for ``scratch/functional/upsampling.py``,
``scratch/kernels/upsampling.py`` and ``scratch.nn.Upsample``, ``UpsamplingNearest2d`` and
``UpsamplingBilinear2d``: (1) torch parity against ``torch.nn.Upsample`` and
``torch.nn.functional.interpolate`` (float64 to 1e-10, float32 to the table's 2e-4; nearest
modes exactly), and the index arithmetic torch's bit for bit: the interpolation matrices (each
output's source indices and weights, read off by sending the identity through both) equal
torch's exactly, forward and backward; (2) central differences, every element, functional and
module; (3) kernels against their references, parallel against serial. Every geometry is drawn
valid by construction: every mode and dimension, uneven and fractional scale factors (1.7, 2.5,
0.6, 1/3 ...), sizes, both ``align_corners``, ``recompute_scale_factor``, batch and channels 1,
empty batches, 1-wide outputs. The fourth oracle (torch's OpInfo samples for
``nn.functional.interpolate``, ``upsample_nearest`` and ``upsample_bilinear``) runs in
test_torch_database.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import nn
from scratch.functional import upsampling as FU
from scratch.gradcheck import gradcheck
from scratch.kernels import upsampling as K
from scratch.testing import assert_matches_torch

MODES = [(mode, dims) for mode, allowed in FU.MODES.items() if mode != "lanczos" for dims in allowed]
INTERPOLATING = ("linear", "bilinear", "bicubic", "trilinear")
#: uneven, fractional, down- and upscaling factors, and the exact ones (1, 2, 4, 0.5)
FACTORS = (1.7, 2.5, 0.6, 2.0, 1.0, 3.0, 0.5, 1.05, 2.1, 1 / 3, 0.75, 4.0)
#: torch's x86-64 kernels are compiled with fused multiply-adds on these CPU capabilities (the
#: bit-exact tests follow them; a torch running its DEFAULT kernels rounds the same formulas twice)
FUSED = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


# ---------------------------------------------------------------------------- cases
# A case is {"x_shape", "arguments"}: the input's shape and torch.nn.Upsample's keyword arguments.


@st.composite
def _scale_factors(draw, spatial_in):
    """One factor per axis, each drawn from those that leave that axis at least 1 wide."""
    return tuple(draw(st.sampled_from([f for f in FACTORS if int(size * f) >= 1])) for size in spatial_in)


@st.composite
def interpolate_cases(draw, modes=None, empty=True, max_side=6, consistent=False):
    """Any mode and dimension; ``size`` (one int or one per axis) or ``scale_factor`` (one or one
    per axis) with ``recompute_scale_factor`` None, False or True; ``align_corners`` None, False or
    True where the mode takes it. ``empty``: the batch may be 0.

    ``consistent``: only geometries where torch's backward is the adjoint of its forward
    (docs/upsampling.md), for central differences: nearest and nearest-exact outside the 2-D
    channels-last path take exact ratios (size = size_in·2^j, size_in = size·k, or the factors
    0.5, 2, 4), whose generic and float32 indices agree; bicubic's scale comes from the sizes (a
    given factor that keeps the size would make its backward a copy)."""
    mode, dims = draw(st.sampled_from([(m, d) for m, d in MODES if modes is None or m in modes]))
    side = max_side if dims < 3 else 4
    batch = draw(st.integers(0 if empty else 1, 3))
    channels = draw(st.integers(1, 3))
    arguments = {"mode": mode}
    if mode in INTERPOLATING:
        arguments["align_corners"] = draw(st.sampled_from([None, False, True]))
    exact = consistent and mode in ("nearest", "nearest-exact") and dims != 2
    how = draw(st.sampled_from(["size", "one size", "scale", "one scale"]))
    if exact:
        out = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        ratio = draw(st.sampled_from(["down", "up", "scale"]))
        if ratio == "down":
            spatial_in = tuple(o * draw(st.integers(1, 3)) for o in out)
            arguments["size"] = out
        elif ratio == "up":
            spatial_in = out
            arguments["size"] = tuple(o * draw(st.sampled_from([1, 2, 4])) for o in out)
        else:
            spatial_in = tuple(draw(st.integers(2, side)) for _ in range(dims))
            arguments["scale_factor"] = tuple(draw(st.sampled_from([0.5, 2.0, 4.0])) for _ in range(dims))
            arguments["recompute_scale_factor"] = draw(st.sampled_from([None, False, True]))
        return {"x_shape": (batch, channels, *spatial_in), "arguments": arguments}
    spatial_in = tuple(draw(st.integers(1, side)) for _ in range(dims))
    if how == "size":
        arguments["size"] = tuple(draw(st.integers(1, side + 3)) for _ in range(dims))
    elif how == "one size":
        arguments["size"] = draw(st.integers(1, side + 3))
    else:
        factors = draw(_scale_factors(spatial_in))
        if how == "one scale":  # one factor for every axis: the smallest axis decides which are allowed
            factors = draw(st.sampled_from([f for f in FACTORS if int(min(spatial_in) * f) >= 1]))
        arguments["scale_factor"] = factors
        recompute = draw(st.sampled_from([None, False, True]))
        if consistent and mode == "bicubic":
            recompute = True
        arguments["recompute_scale_factor"] = recompute
    return {"x_shape": (batch, channels, *spatial_in), "arguments": arguments}


def _describe(case) -> str:
    return f"Upsample({case['arguments']}) on {case['x_shape']}"


# ---------------------------------------------------------------------------- oracle 1: torch parity


@given(case=interpolate_cases(), dtype=S.dtypes, seed=S.seeds)
def test_upsample_matches_torch(case, dtype, seed):
    """Output and dx against torch.nn.Upsample's through a random cotangent; nearest modes
    exactly (a copy, and sums in torch's order); the functional pair computes the same."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    arguments = case["arguments"]
    layer, twin = nn.Upsample(**arguments), torch.nn.Upsample(**arguments)
    assert_matches_torch(layer, twin, x, rng=rng, what=_describe(case))
    y = layer(x)
    ty = twin(torch.from_numpy(x)).numpy()
    assert y.shape == ty.shape and y.dtype == x.dtype
    if arguments["mode"] in ("nearest", "nearest-exact"):
        np.testing.assert_array_equal(y, ty)
        dy = rng.standard_normal(y.shape).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        twin(tx).backward(torch.from_numpy(dy))
        np.testing.assert_array_equal(layer.backward(dy), tx.grad.numpy())
    functional, cache = FU.interpolate_forward(x, **arguments)
    np.testing.assert_array_equal(functional, y)
    dy = rng.standard_normal(y.shape).astype(dtype)
    layer(x)
    np.testing.assert_array_equal(FU.interpolate_backward(dy, cache), layer.backward(dy))


@given(case=interpolate_cases(modes=("nearest", "bilinear")), dtype=S.dtypes, seed=S.seeds)
def test_upsampling_nearest2d_and_bilinear2d_match_torch(case, dtype, seed):
    """UpsamplingNearest2d (any dimension, as torch's) and UpsamplingBilinear2d (align_corners=True)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    arguments = {k: v for k, v in case["arguments"].items() if k in ("size", "scale_factor")}
    pair = ((nn.UpsamplingNearest2d, torch.nn.UpsamplingNearest2d) if case["arguments"]["mode"] == "nearest"
            else (nn.UpsamplingBilinear2d, torch.nn.UpsamplingBilinear2d))
    layer, twin = pair[0](**arguments), pair[1](**arguments)
    assert repr(layer) == repr(twin)
    assert_matches_torch(layer, twin, x, rng=rng, what=f"{pair[0].__name__}({arguments}) on {x.shape}")


def _eye_input(dims: int, channels: int, size_in: int, dtype) -> np.ndarray:
    """(1, channels, [1, [1,]] size_in): channel c one-hot at position c along the last axis."""
    return np.eye(channels, size_in, dtype=dtype).reshape(1, channels, *((1,) * (dims - 1)), size_in)


def _matrices(forward, backward, dims, size_in, size_out, dtype):
    """The interpolation matrices of a resampling along the last axis, (size_out, size_in): the
    forward's (y_i = Σ_s M[i, s] x_s, read off the identity sent through it) and the backward's
    (dx_s = Σ_i B[i, s] dy_i, read off the identity sent back: output i's gradient in channel i)."""
    y = forward(_eye_input(dims, size_in, size_in, dtype))
    flat = y.reshape(size_in, -1, y.shape[-1])[:, 0, :]  # the first row of the leading axes
    grad_output = np.zeros((1, size_out, *y.shape[2:]), dtype)
    grad_output.reshape(size_out, -1, y.shape[-1])[np.arange(size_out), 0, np.arange(size_out)] = 1
    dx = backward(np.zeros((1, size_out, *((1,) * (dims - 1)), size_in), dtype), grad_output)
    return flat.T, dx.reshape(size_out, -1, size_in)[:, 0, :]


def _arguments_along_last_axis(mode, dims, size_in, how, value, align_corners, rows):
    """interpolate's arguments resampling the last axis as ``how`` says; the leading spatial axes
    (1 wide) go to ``rows`` (1, or 130 for a 2-D output past torch's 128 of the channels-last path)."""
    lead = (rows,) + (1,) * (dims - 2) if dims > 1 else ()
    arguments = {"mode": mode}
    if mode in INTERPOLATING:
        arguments["align_corners"] = align_corners
    if how == "size":
        arguments["size"] = (*lead, value)
    else:
        arguments["scale_factor"] = (*(float(r) for r in lead), value)
        arguments["recompute_scale_factor"] = how == "recompute"
    return arguments


def _torch_pair(arguments):
    def forward(x):
        return torch.nn.functional.interpolate(torch.from_numpy(x), **arguments).numpy()

    def backward(x, dy):
        tx = torch.tensor(x, requires_grad=True)
        torch.nn.functional.interpolate(tx, **arguments).backward(torch.from_numpy(dy))
        return tx.grad.numpy()
    return forward, backward


def _scratch_pair(arguments):
    def forward(x):
        return FU.interpolate_forward(x, **arguments)[0]

    def backward(x, dy):
        return FU.interpolate_backward(dy, FU.interpolate_forward(x, **arguments)[1])
    return forward, backward


def _assert_same_matrices(mode, dims, size_in, how, value, align_corners, rows, dtype):
    arguments = _arguments_along_last_axis(mode, dims, size_in, how, value, align_corners, rows)
    size_out = value if how == "size" else int(size_in * value)
    expected = _matrices(*_torch_pair(arguments), dims, size_in, size_out, dtype)
    actual = _matrices(*_scratch_pair(arguments), dims, size_in, size_out, dtype)
    for name, a, e in zip(("forward", "backward"), actual, expected):
        np.testing.assert_array_equal(a, e, err_msg=f"{name} matrix of interpolate({arguments}), {size_in} wide, "
                                                    f"{np.dtype(dtype).name}")


@st.composite
def _axis_cases(draw):
    mode, dims = draw(st.sampled_from(MODES))
    size_in = draw(st.integers(1, 12))
    how = draw(st.sampled_from(["size", "scale", "recompute"]))
    value = draw(st.integers(1, 40)) if how == "size" else draw(st.sampled_from([f for f in FACTORS
                                                                                 if int(size_in * f) >= 1]))
    align = draw(st.sampled_from([False, True])) if mode in INTERPOLATING else None
    # 130 rows take a 2-D output past the 128 of torch's channels-last path: nearest's other index map
    rows = draw(st.sampled_from([1, 130])) if dims == 2 and mode in ("nearest", "nearest-exact", "bilinear") else 1
    return mode, dims, size_in, how, value, align, rows


@pytest.mark.skipif(not FUSED, reason="torch runs its DEFAULT kernels here, compiled without fused multiply-adds")
@given(case=_axis_cases(), dtype=S.dtypes)
def test_index_arithmetic_is_torchs_bit_for_bit(case, dtype):
    """Which input each output reads and with what weight, forward and backward, exactly as torch
    (docs/upsampling.md, "The index maps"): the scale in the dtype (float32 for nearest's
    backward), floorf, the clamps, torch's fused multiply-adds; both of torch's 2-D nearest paths."""
    _assert_same_matrices(*case, dtype)


@pytest.mark.skipif(not FUSED, reason="torch runs its DEFAULT kernels here, compiled without fused multiply-adds")
@pytest.mark.parametrize("mode, dims, size_in, how, value, align, rows, dtype", [
    # torch's float64 nearest forward (generic: double scale 2/82, 41·scale = 1) and its backward
    # (float32 nearest_idx: 41·float(2/82) < 1) read different inputs at output 41
    ("nearest", 1, 2, "size", 82, None, 1, np.float64),
    ("nearest", 2, 2, "size", 82, None, 130, np.float64),
    ("nearest", 2, 2, "size", 82, None, 1, np.float64),  # H_out + W_out <= 128: nearest_idx both ways
    # a given factor 2.1 doubles 4 to 8: nearest_idx shifts (i >> 1), the generic path scales by 1/2.1
    ("nearest", 2, 4, "scale", 2.1, None, 130, np.float32),
    ("nearest", 2, 4, "scale", 2.1, None, 1, np.float32),
    ("nearest", 3, 4, "scale", 1.05, None, 1, np.float64),  # 1.05 keeps 4: identity backward, 1/1.05 forward
    # float32 nearest-exact at output 20 of 82: 4/82·20.5 - 0.5 fused is 0.49999997, whose + 0.5 floorf rounds
    # to 1; rounded twice it is 0.49999994, which reads x[0]
    ("nearest-exact", 1, 4, "size", 82, None, 1, np.float32),
    # linear 2 -> 3: the fused (2/3)·1.5 - 0.5 is 0.49999999999999994, unfused 0.5
    ("linear", 1, 2, "size", 3, False, 1, np.float64),
    ("bicubic", 2, 12, "scale", 1.05, False, 1, np.float64),  # same size: the forward moves, the backward copies
    ("bicubic", 2, 5, "size", 7, True, 1, np.float32),
    ("bilinear", 2, 5, "size", 1, True, 1, np.float64),  # align_corners with a 1-wide output: scale 0, x[0]
    ("bilinear", 2, 5, "size", 1, False, 1, np.float64),  # without: the centre, (5 - 1)/2
    ("trilinear", 3, 7, "scale", 1 / 3, False, 1, np.float32),
    ("area", 2, 7, "size", 3, None, 1, np.float64),
])
def test_index_arithmetic_on_torchs_corner_cases(mode, dims, size_in, how, value, align, rows, dtype):
    _assert_same_matrices(mode, dims, size_in, how, value, align, rows, dtype)


def test_torchs_nearest_backward_is_not_its_forwards_adjoint_and_scratch_follows():
    """docs/upsampling.md: 2 -> 82 in float64 (1-D) reads x[1] at output 41 forward, but sends
    output 41's gradient to x[0]: dx of an all-ones dy is (42, 40), not (41, 41). scratch gives
    torch's output and torch's gradient."""
    x = np.array([[[0.0, 1.0]]])
    y, cache = FU.interpolate_forward(x, size=82)
    assert y[0, 0, 41] == 1 and (y == 0).sum() == 41
    np.testing.assert_array_equal(FU.interpolate_backward(np.ones_like(y), cache), [[[42.0, 40.0]]])
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, size=82)
    ty.backward(torch.ones_like(ty))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(tx.grad.numpy(), [[[42.0, 40.0]]])


def test_align_corners_and_one_wide_outputs_worked_example():
    """docs/upsampling.md's example: x = (0, 1, 2, 3, 4) to 3 and to 1, bilinear, both ways.
    Without align_corners the sources are s·(i + ½) - ½ with s = 5/3 (to 3) or 5 (to 1); with it,
    s·i with s = (5 - 1)/(3 - 1) = 2, or 0 for a 1-wide output."""
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    expected = {(3, False): [1 / 3, 2.0, 11 / 3], (3, True): [0.0, 2.0, 4.0], (1, False): [2.0], (1, True): [0.0]}
    for (width, align), values in expected.items():
        layer = nn.Upsample(size=(1, width), mode="bilinear", align_corners=align)
        ty = torch.nn.functional.interpolate(torch.from_numpy(x), size=(1, width), mode="bilinear", align_corners=align)
        np.testing.assert_allclose(layer(x)[0, 0, 0], ty.numpy()[0, 0, 0], rtol=1e-15)
        np.testing.assert_allclose(layer(x)[0, 0, 0], values, rtol=1e-15)


@pytest.mark.parametrize("arguments", [
    dict(scale_factor=2), dict(size=(3, 4), mode="bilinear"), dict(size=[3, 4], mode="bicubic", align_corners=True),
    dict(scale_factor=(2, 1.5), mode="nearest-exact"), dict(size=5, mode="area"), dict(scale_factor=0, size=3),
])
def test_upsample_repr_and_arguments_like_torch(arguments):
    """torch's repr, and torch's way of keeping the scale factor (a float, a tuple of floats, a
    falsy one dropped)."""
    layer, twin = nn.Upsample(**arguments), torch.nn.Upsample(**arguments)
    assert repr(layer) == repr(twin)
    assert layer.scale_factor == twin.scale_factor and layer.size == twin.size
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6))
    np.testing.assert_allclose(layer(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-14, atol=1e-14)
    for cls in ("UpsamplingNearest2d", "UpsamplingBilinear2d"):
        assert repr(getattr(nn, cls)(scale_factor=(2, 3))) == repr(getattr(torch.nn, cls)(scale_factor=(2, 3)))
        assert repr(getattr(nn, cls)(size=3)) == repr(getattr(torch.nn, cls)(size=3))


def test_empty_batch_and_1x1_output_like_torch():
    for mode in ("nearest", "nearest-exact", "bilinear", "bicubic", "area"):
        x = np.zeros((0, 2, 5, 4))
        layer = nn.Upsample(scale_factor=1.7, mode=mode)
        y = layer(x)
        assert y.shape == tuple(torch.nn.Upsample(scale_factor=1.7, mode=mode)(torch.from_numpy(x)).shape) == (0, 2, 8, 6)
        dx = layer.backward(np.zeros_like(y))
        assert dx.shape == x.shape and dx.dtype == x.dtype
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 5))
    for mode, align in (("nearest", None), ("bilinear", True), ("bilinear", False), ("bicubic", True), ("area", None)):
        assert_matches_torch(nn.Upsample(size=1, mode=mode, align_corners=align),
                             torch.nn.Upsample(size=1, mode=mode, align_corners=align), x, rng=0, what=f"{mode} to 1x1")


def test_upsample_runs_inside_sequential():
    model = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.ReLU(), nn.UpsamplingNearest2d(size=(5, 7)))
    twin = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.ReLU(),
                               torch.nn.UpsamplingNearest2d(size=(5, 7)))
    x = np.random.default_rng(2).standard_normal((2, 3, 3, 4))
    assert_matches_torch(model, twin, x, rng=3, what="Sequential")


# ---------------------------------------------------------------------------- oracle 2: central differences


@given(case=interpolate_cases(empty=False, max_side=5, consistent=True), seed=S.seeds)
def test_upsample_finite_differences(case, seed):
    """Every element, random cotangent; the module and the functional pair."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"])
    arguments = case["arguments"]
    result = gradcheck(nn.Upsample(**arguments), x, rng=rng, **GRADCHECK)
    assert result.elements_checked == x.size
    gradcheck((lambda v: FU.interpolate_forward(v, **arguments), FU.interpolate_backward), x, rng=rng, **GRADCHECK)


@given(size=st.integers(1, 7), width=st.integers(1, 7), seed=S.seeds, bilinear=st.booleans())
def test_upsampling_2d_layers_finite_differences(size, width, seed, bilinear):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 3, width))
    layer = nn.UpsamplingBilinear2d(size=(size, width + 2)) if bilinear else nn.UpsamplingNearest2d(scale_factor=1.7)
    gradcheck(layer, x, rng=rng, **GRADCHECK)


# ---------------------------------------------------------------------------- oracle 3: kernels


def _kernel_tables(case, dtype):
    """The axis tables the functional layer builds for ``case`` (forward and backward), padded to 3-D."""
    shape, arguments = case["x_shape"], case["arguments"]
    spatial_out, scales, align = FU.interpolate_geometry(
        "test", shape, arguments.get("size"), arguments.get("scale_factor"), arguments["mode"],
        arguments.get("align_corners"), arguments.get("recompute_scale_factor"))
    names = FU._table_names(arguments["mode"], spatial_out)
    tables = [FU._padded([FU.axis_tables(name, np.dtype(dtype).name, s_in, s_out, align, scale)
                          for s_in, s_out, scale in zip(shape[2:], spatial_out, scales)], np.dtype(dtype))
              for name in names]
    return tables, spatial_out


@given(case=interpolate_cases(), dtype=S.dtypes, seed=S.seeds)
def test_kernels_match_references_and_serial(case, dtype, seed):
    rng = np.random.default_rng(seed)
    (forward, backward), spatial_out = _kernel_tables(case, dtype)
    x = rng.standard_normal(FU._as_3d(case["x_shape"])).astype(dtype)
    out_shape = FU._as_3d((*case["x_shape"][:2], *spatial_out))
    y, y_serial = np.empty(out_shape, dtype), np.empty(out_shape, dtype)
    K.interpolate_forward(x, y, *FU._flat(forward))
    K.interpolate_forward_serial(x, y_serial, *FU._flat(forward))
    taps = np.prod([table[0].shape[1] for table in forward])  # at most this many terms per output
    assert_close(y, K.interpolate_forward_reference(x, forward), "kernel", dtype, "interpolate_forward",
                 scale=taps * np.abs(x).max(initial=0) * 2)
    np.testing.assert_array_equal(y_serial, y)
    dy = rng.standard_normal(out_shape).astype(dtype)
    dx, dx_serial = np.empty_like(x), np.empty_like(x)
    K.interpolate_backward(dy, dx, *FU._flat(backward))
    K.interpolate_backward_serial(dy, dx_serial, *FU._flat(backward))
    reference = K.interpolate_backward_reference(dy, backward, x.shape)
    terms = np.abs(dy).sum(axis=(1, 2, 3), keepdims=True).max(initial=0) * 2  # a gradient sums at most every dy
    assert_close(dx, reference, "kernel", dtype, "interpolate_backward", scale=terms)
    np.testing.assert_array_equal(dx_serial, dx)


def test_kernels_run_arbitrary_tables():
    """The kernels hold no policy: any tables (counts from 1 to the width, repeated indices) give
    the reference's numbers."""
    rng = np.random.default_rng(4)
    tables = []
    for size_in, size_out in ((3, 2), (4, 5), (6, 3)):
        index = rng.integers(0, size_in, (size_out, 3))
        weight = rng.standard_normal((size_out, 3))
        count = rng.integers(1, 4, size_out)
        tables.append((index, weight, count))
    x = rng.standard_normal((4, 3, 4, 6))
    y = np.empty((4, 2, 5, 3))
    K.interpolate_forward(x, y, *FU._flat(tables))
    assert_close(y, K.interpolate_forward_reference(x, tables), "kernel", np.float64, "forward",
                 scale=27 * np.abs(x).max() * np.abs(tables[0][1]).max() ** 3 * 30)
    dy = rng.standard_normal(y.shape)
    dx = np.empty_like(x)
    K.interpolate_backward(dy, dx, *FU._flat(tables))
    assert_close(dx, K.interpolate_backward_reference(dy, tables, x.shape), "kernel", np.float64, "backward",
                 scale=np.abs(dy).sum() * 30)


def _forward_in_nested_order(x, tables):
    """The forward one output at a time, as the nested formula reads: Σ_a (Σ_b (Σ_e x·ww)·wh)·wd,
    each sum started from its first term, every operation on scalars of the dtype."""
    (index_d, weight_d, count_d), (index_h, weight_h, count_h), (index_w, weight_w, count_w) = tables
    out = np.empty((x.shape[0], index_d.shape[0], index_h.shape[0], index_w.shape[0]), x.dtype)
    for p, i, j, k in np.ndindex(out.shape):
        depth_total = None
        for a in range(count_d[i]):
            height_total = None
            for b in range(count_h[j]):
                width_total = None
                for e in range(count_w[k]):
                    term = x[p, index_d[i, a], index_h[j, b], index_w[k, e]] * weight_w[k, e]
                    width_total = term if width_total is None else width_total + term
                term = width_total * weight_h[j, b]
                height_total = term if height_total is None else height_total + term
            term = height_total * weight_d[i, a]
            depth_total = term if depth_total is None else depth_total + term
        out[p, i, j, k] = depth_total
    return out


def _backward_in_output_order(dy, tables, input_shape):
    """The scatter-add one term at a time: outputs (i, j, k) in row-major order, then the taps
    (a, b, e), dx[...] += ((wd·wh)·ww)·dy on scalars of the dtype: the order each input element
    must get its terms in (torch's)."""
    (index_d, weight_d, count_d), (index_h, weight_h, count_h), (index_w, weight_w, count_w) = tables
    dx = np.zeros(input_shape, dy.dtype)
    for p, i, j, k in np.ndindex(dy.shape):
        for a in range(count_d[i]):
            for b in range(count_h[j]):
                for e in range(count_w[k]):
                    target = (p, index_d[i, a], index_h[j, b], index_w[k, e])
                    dx[target] = dx[target] + weight_d[i, a] * weight_h[j, b] * weight_w[k, e] * dy[p, i, j, k]
    return dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode, spatial_in, size", [
    ("bilinear", (3, 4), (7, 9)),  # the last row's and column's two taps clamped onto one pixel
    ("bicubic", (4, 3), (6, 7)),  # four taps, clamped onto one pixel at both borders
    ("nearest", (3, 2, 4), (5, 4, 7)),
    ("trilinear", (2, 3, 3), (3, 5, 4)),
    ("area", (5, 7), (3, 4)),
    ("linear", (5,), (11,)),
])
def test_kernels_give_the_nested_sums_bits_in_torchs_order(mode, spatial_in, size, dtype):
    """The forward blends one axis at a time and the backward loops over the taps outside the
    columns where they read distinct rows: both must still give every value the bits of the
    one-output-at-a-time nested sum, in torch's order of terms, serial and parallel alike; and
    more planes than one ``PLANE_CHUNK``, not a multiple of it."""
    rng = np.random.default_rng(7)
    shape = (3, K.PLANE_CHUNK // 3 + 2, *spatial_in)  # 3·7 = 21 planes: a chunk and a part of one
    x = rng.standard_normal(shape).astype(dtype)
    case = {"x_shape": shape, "arguments": {"size": size, "mode": mode}}
    (forward, backward), spatial_out = _kernel_tables(case, dtype)
    x3 = x.reshape(FU._as_3d(shape))
    out_shape = FU._as_3d((*shape[:2], *spatial_out))
    for kernel in (K.interpolate_forward, K.interpolate_forward_serial):
        y = np.empty(out_shape, dtype)
        kernel(x3, y, *FU._flat(forward))
        np.testing.assert_array_equal(y, _forward_in_nested_order(x3, forward))
    dy = rng.standard_normal(out_shape).astype(dtype)
    expected = _backward_in_output_order(dy, backward, x3.shape)
    for kernel in (K.interpolate_backward, K.interpolate_backward_serial):
        dx = np.empty_like(x3)
        kernel(dy, dx, *FU._flat(backward))
        np.testing.assert_array_equal(dx, expected)


def test_distinct_taps_flags_the_outputs_whose_taps_share_a_position():
    index = np.array([[0, 1], [2, 2], [3, 0], [1, 1]])
    count = np.array([2, 2, 1, 1])
    np.testing.assert_array_equal(K._distinct_taps_jit(index, count), [True, False, True, True])


def test_serial_and_parallel_kernels_give_the_functional_layer_the_same_bits(monkeypatch):
    """``PARALLEL_FROM`` picks the serial twins for small outputs, the parallel kernels for large:
    the same numbers either way."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5, 4, 6)).astype(np.float32)

    def run():
        results = []
        for mode in ("nearest", "bilinear", "bicubic", "area"):
            y, cache = FU.interpolate_forward(x, size=(7, 5), mode=mode)
            results += [y, FU.interpolate_backward(np.cos(y), cache)]
        return results

    serial = run()
    monkeypatch.setattr(FU, "PARALLEL_FROM", 0)
    for a, b in zip(serial, run()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- refusals

X = np.zeros((1, 1, 3, 4))


def _torch_upsample(x=X, **arguments):
    return lambda: torch.nn.Upsample(**arguments)(torch.from_numpy(x))


@pytest.mark.parametrize("make, twin, error, message", [
    (lambda: nn.Upsample(size=2, scale_factor=2), _torch_upsample(size=2, scale_factor=2), ValueError,
     r"^Upsample: only one of size or scale_factor should be defined"),
    (lambda: nn.Upsample(), _torch_upsample(), ValueError, r"^Upsample: either size or scale_factor should be defined"),
    (lambda: nn.Upsample(size=2, align_corners=False), _torch_upsample(size=2, align_corners=False), ValueError,
     r"^Upsample: align_corners option can only be set with the interpolating modes"),
    (lambda: nn.Upsample(size=2, mode="cubic"), _torch_upsample(size=2, mode="cubic"), ValueError,
     r"^Upsample: mode must be one of 'nearest', .*got 'cubic'"),
    (lambda: nn.Upsample(size=2, recompute_scale_factor=True), _torch_upsample(size=2, recompute_scale_factor=True),
     ValueError, r"recompute_scale_factor is not meaningful with an explicit size"),
    (lambda: nn.Upsample(size=0), _torch_upsample(size=0), ValueError, r"^Upsample: output sizes should be greater than 0"),
    (lambda: nn.Upsample(size=(2, -1)), _torch_upsample(size=(2, -1)), ValueError, r"greater than 0, got size=\(2, -1\)"),
    (lambda: nn.Upsample(size=2.0), _torch_upsample(size=2.0), TypeError, r"^Upsample: size must be an int or a tuple"),
    (lambda: nn.Upsample(scale_factor=-2), _torch_upsample(scale_factor=-2), ValueError,
     r"^Upsample: scale_factor must be positive and finite, got -2.0"),
    (lambda: nn.Upsample(scale_factor=float("inf")), _torch_upsample(scale_factor=float("inf")), ValueError,
     r"positive and finite"),
    (lambda: nn.Upsample(scale_factor=[2, 2]), lambda: torch.nn.Upsample(scale_factor=[2, 2]), TypeError,
     r"^Upsample: scale_factor must be a number or a tuple of numbers"),
    (lambda: nn.Upsample(size=2, mode="bilinear", align_corners=1),
     _torch_upsample(size=2, mode="bilinear", align_corners=1), TypeError, r"align_corners must be None or a bool"),
    (lambda: nn.Upsample(size=2, mode="lanczos"), _torch_upsample(size=2, mode="lanczos"), ValueError,
     r"Lanczos mode requires antialias=True"),
    (lambda: nn.Upsample(scale_factor=0.1)(X), _torch_upsample(scale_factor=0.1), ValueError,
     r"^Upsample\(scale_factor=0.1, mode='nearest'\): input and output sizes should be greater than 0, but got "
     r"input \(3, 4\) and output \(0, 0\)"),
    (lambda: nn.Upsample(size=(2, 3, 4))(X), _torch_upsample(size=(2, 3, 4)), ValueError,
     r"^Upsample\(size=\(2, 3, 4\), mode='nearest'\): input and size must have the same number of spatial dimensions"),
    (lambda: nn.Upsample(scale_factor=(2, 3, 4))(X), _torch_upsample(scale_factor=(2, 3, 4)), ValueError,
     r"input and scale_factor must have the same number of spatial dimensions"),
    (lambda: nn.Upsample(size=2, mode="bilinear")(X[0]), _torch_upsample(X[0], size=2, mode="bilinear"), ValueError,
     r"^Upsample\(size=2, mode='bilinear'\): mode 'bilinear' needs 2-D \(N, C, H, W\) input, got shape \(1, 3, 4\)"),
    (lambda: nn.UpsamplingBilinear2d(scale_factor=2)(X[0]), _torch_upsample(X[0], scale_factor=2, mode="bilinear",
                                                                            align_corners=True), ValueError,
     r"^UpsamplingBilinear2d\(scale_factor=2.0, mode='bilinear'\): mode 'bilinear' needs 2-D"),
    (lambda: nn.Upsample(size=2, mode="trilinear")(X), _torch_upsample(size=2, mode="trilinear"), ValueError,
     r"mode 'trilinear' needs 3-D \(N, C, D, H, W\) input"),
    (lambda: nn.Upsample(size=2)(X[0, 0]), _torch_upsample(X[0, 0], size=2), ValueError,
     r"^Upsample\(size=2, mode='nearest'\): input must have 3 or 4 or 5 dimensions, got shape \(3, 4\)"),
    (lambda: nn.Upsample(size=2)(X[:, :0]), _torch_upsample(X[:, :0], size=2), ValueError,
     r"input has no channels \(shape \(1, 0, 3, 4\)\)"),
    (lambda: nn.Upsample(size=2)(X[..., :0]), _torch_upsample(X[..., :0], size=2), ValueError,
     r"input and output sizes should be greater than 0, but got input \(3, 0\)"),
    (lambda: nn.Upsample(size=2)(X.astype(np.int64)), _torch_upsample(X.astype(np.int64), size=2), TypeError,
     r"input must be float32 or float64, got int64"),
    (lambda: nn.Upsample(size=2, mode="area")(X[:, :0]), _torch_upsample(X[:, :0], size=2, mode="area"), None, None),
])
def test_refusals_are_clear_and_where_torch_refuses(make, twin, error, message):
    """Each refusal names the layer (its repr, once built), what was expected and what was given;
    torch refuses the same thing (or, for the row marked so, accepts it as scratch does: area's
    adaptive pool takes C = 0)."""
    if error is None:
        make(), twin()
        return
    with pytest.raises(error, match=message):
        make()
    with pytest.raises((RuntimeError, ValueError, TypeError, NotImplementedError)):
        twin()


def test_unimplemented_arguments_name_themselves():
    x = np.zeros((1, 1, 4, 4))
    for mode in ("bilinear", "bicubic", "lanczos"):
        with pytest.raises(NotImplementedError, match=r"^interpolate: antialias=True is not implemented"):
            FU.interpolate_forward(x, size=2, mode=mode, antialias=True)
    with pytest.raises(ValueError, match=r"Anti-alias option is restricted to bilinear, bicubic, and lanczos"):
        FU.interpolate_forward(x, size=2, antialias=True)


def test_a_refused_call_changes_nothing():
    layer = nn.Upsample(scale_factor=2)
    x = np.random.default_rng(5).standard_normal((1, 2, 3, 3))
    y = layer(x)
    with pytest.raises(ValueError):
        layer(np.zeros((1, 2, 3)).reshape(1, 2, 3, 1)[..., :0])
    np.testing.assert_array_equal(layer.backward(np.ones_like(y)), np.full(x.shape, 4.0))
    with pytest.raises(ValueError, match=r"^Upsample\.backward: grad_output must have the forward output's shape"):
        layer.backward(np.ones((1, 2, 5, 6)))
