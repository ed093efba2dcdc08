"""Convolution: torch parity, float64 central differences, Numba kernels against their NumPy
references, and the parallel kernels against their serial twins (docs/conv.md; pooling:
test_pooling.py).

The three oracles of docs/README.md, for ``scratch/functional/conv.py``, ``scratch/kernels/conv.py``
and ``scratch.nn.Conv2d`` / ``ConvTranspose2d``: (1) torch parity against
``torch.nn.Conv2d`` / ``ConvTranspose2d``, and the functional calls' defaults are
torch's; (2) central differences; (3) kernels against their references. The drawn cases
(``scratch.testing.conv2d_cases`` and its siblings) hold every argument of torch's layers:
groups (depthwise too), every padding mode, ``padding="same"``/``"valid"``, unbatched inputs,
empty batches (and an empty batch's empty images), uneven strides, dilation, batch 1 and
channels 1; ``ConvTranspose2d``'s ``output_size`` has cases of its own."""

from __future__ import annotations

import contextlib
import warnings

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
from scratch.functional import conv as FC
from scratch.functional.conv import batch_last, conv2d_output_size, pad_forward, padding_index, padding_sides
from scratch.gradcheck import gradcheck
from scratch.kernels import conv as K
from scratch.testing import assert_matches_torch

# torch warns that padding="same" with an even d·(k - 1) copies the input: a note, not a problem
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

# assert_matches_torch loads each scratch layer's weights into its twin (strict) and compares the
# output, dx and every parameter gradient through a random cotangent.

# Every convolution runs one of two paths (``scratch.functional.conv.conv_path``): the direct
# kernels or im2col + BLAS (GEMM). The drawn cases are narrow, so the rule would pick "direct"
# for all of them: the tests below run each case on each path, forced.
PATHS = pytest.mark.parametrize("path", ["direct", "gemm"])


@contextlib.contextmanager
def forced(path):
    """Every convolution inside the block runs ``path`` ("direct" or "gemm")."""
    before, FC.FORCE_PATH = FC.FORCE_PATH, path
    try:
        yield
    finally:
        FC.FORCE_PATH = before


@given(case=S.conv2d_cases(), dtype=S.dtypes, seed=S.seeds)
@PATHS
def test_conv2d_matches_torch(case, dtype, seed, path):
    with forced(path):
        rng = np.random.default_rng(seed)
        layer = nn.Conv2d(**S.layer_arguments(case), rng=rng, dtype=dtype)
        twin = torch.nn.Conv2d(**S.layer_arguments(case))
        assert_matches_torch(layer, twin, rng.standard_normal(case["x_shape"]).astype(dtype), rng=rng, what=repr(layer))
        assert repr(layer) == repr(twin)
        assert layer.weight.shape == tuple(twin.weight.shape)


# The kernels run four channels at a time (then the remainder) within each group, and the drawn
# cases have 1 to 3 channels per group: these named cases reach the four-at-a-time loops (of the
# input channels in the forward pass and dw, of the output channels in dx), and their remainder.
WIDE_CASES = [
    dict(in_channels=9, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
         x_shape=(3, 9, 9, 8)),
    dict(in_channels=8, out_channels=5, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1),
         x_shape=(1, 8, 7, 10)),
    dict(in_channels=10, out_channels=10, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2,
         x_shape=(3, 10, 9, 8)),
    dict(in_channels=8, out_channels=12, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=2,
         x_shape=(2, 8, 7, 10)),
]


@pytest.mark.parametrize("case", WIDE_CASES, ids=["9-channels", "8-channels-batch-1", "2-groups-of-5",
                                                  "2-groups-of-4-to-6"])
@PATHS
def test_conv_layers_with_many_channels_match_torch(case, path):
    with forced(path):
        rng = np.random.default_rng(11)
        layer = nn.Conv2d(**S.layer_arguments(case), rng=rng, dtype=np.float64)
        x = rng.standard_normal(case["x_shape"])
        assert_matches_torch(layer, torch.nn.Conv2d(**S.layer_arguments(case)), x, rng=rng, what="Conv2d, many channels")
        transpose = {**case, "x_shape": (case["x_shape"][0], case["in_channels"], 4, 5)}
        layer = nn.ConvTranspose2d(**S.layer_arguments(transpose), rng=rng, dtype=np.float64)
        assert_matches_torch(layer, torch.nn.ConvTranspose2d(**S.layer_arguments(transpose)),
                             rng.standard_normal(transpose["x_shape"]), rng=rng, what="ConvTranspose2d, many channels")


@given(case=S.conv_transpose2d_cases(), dtype=S.dtypes, seed=S.seeds)
@PATHS
def test_conv_transpose2d_matches_torch(case, dtype, seed, path):
    with forced(path):
        rng = np.random.default_rng(seed)
        layer = nn.ConvTranspose2d(**S.layer_arguments(case), rng=rng, dtype=dtype)
        twin = torch.nn.ConvTranspose2d(**S.layer_arguments(case))
        x = rng.standard_normal(case["x_shape"]).astype(dtype)
        assert_matches_torch(layer, twin, x, rng=rng, what=repr(layer))
        assert repr(layer) == repr(twin)
        groups = case["groups"]
        assert layer.weight.shape == tuple(twin.weight.shape) == (case["in_channels"], case["out_channels"] // groups,
                                                                  *case["kernel_size"])


@given(case_and_size=S.conv_transpose2d_output_size_cases(), dtype=S.dtypes, seed=S.seeds)
@PATHS
def test_conv_transpose2d_output_size_matches_torch(case_and_size, dtype, seed, path):
    """forward(x, output_size) picks the output_padding that gives that size (torch's
    ``_output_padding``), whatever the layer's own output_padding."""
    with forced(path):
        case, output_size = case_and_size
        rng = np.random.default_rng(seed)
        layer = nn.ConvTranspose2d(**S.layer_arguments(case), rng=rng, dtype=dtype)
        x = rng.standard_normal(case["x_shape"]).astype(dtype)
        assert_matches_torch(layer, torch.nn.ConvTranspose2d(**S.layer_arguments(case)), x, output_size, rng=rng,
                             what=f"{layer!r}, output_size={output_size}")
        assert layer.output_padding == case["output_padding"]  # the layer's own is untouched


# -- oracle 2: central differences --------------------------------------------------------


@given(case=S.conv2d_cases(), seed=S.seeds)
@PATHS
def test_conv2d_finite_differences(case, seed, path):
    with forced(path):
        rng = np.random.default_rng(seed)
        arguments = S.layer_arguments(case)
        x = rng.standard_normal(case["x_shape"])
        weight = rng.standard_normal((case["out_channels"], case["in_channels"] // case["groups"], *case["kernel_size"]))
        bias = rng.standard_normal(case["out_channels"]) if case["bias"] else None
        pair = (lambda x, w, b: F.conv2d_forward(x, w, b, arguments["stride"], arguments["padding"], arguments["dilation"],
                                                 arguments["groups"], arguments["padding_mode"]),
                F.conv2d_backward)
        gradcheck(pair, x, weight, bias, rng=rng, **GRADCHECK)
        gradcheck(nn.Conv2d(**arguments, rng=rng, dtype=np.float64), x, rng=rng, **GRADCHECK)


@given(case=S.conv_transpose2d_cases(), seed=S.seeds)
@PATHS
def test_conv_transpose2d_finite_differences(case, seed, path):
    with forced(path):
        rng = np.random.default_rng(seed)
        arguments = S.layer_arguments(case)
        x = rng.standard_normal(case["x_shape"])
        weight = rng.standard_normal((case["in_channels"], case["out_channels"] // case["groups"], *case["kernel_size"]))
        bias = rng.standard_normal(case["out_channels"]) if case["bias"] else None
        pair = (lambda x, w, b: F.conv_transpose2d_forward(x, w, b, arguments["stride"], arguments["padding"],
                                                            arguments["output_padding"], arguments["groups"],
                                                            arguments["dilation"]),
                F.conv_transpose2d_backward)
        gradcheck(pair, x, weight, bias, rng=rng, **GRADCHECK)
        gradcheck(nn.ConvTranspose2d(**arguments, rng=rng, dtype=np.float64), x, rng=rng, **GRADCHECK)


@given(case_and_size=S.conv_transpose2d_output_size_cases(layouts=("batched", "unbatched")), seed=S.seeds)
@PATHS
def test_conv_transpose2d_output_size_finite_differences(case_and_size, seed, path):
    with forced(path):
        case, output_size = case_and_size
        rng = np.random.default_rng(seed)
        layer = nn.ConvTranspose2d(**S.layer_arguments(case), rng=rng, dtype=np.float64)

        class WithOutputSize(nn.Module):  # gradcheck calls forward(x): the size rides along
            def __init__(self):
                super().__init__()
                self.layer = layer

            def forward(self, x):
                return self.layer(x, output_size=output_size)

            def backward(self, grad_output):
                return self.layer.backward(grad_output)

        gradcheck(WithOutputSize(), rng.standard_normal(case["x_shape"]), rng=rng, **GRADCHECK)


# -- oracle 3: kernels against references, parallel against serial ------------------------


def _kernel_inputs(case, dtype, rng):
    """x (N, C, H, W) as the conv kernels see it (padded by the case's mode, if not zeros; an
    unbatched x given its batch axis), the weight, the bias, the padding the kernels apply as
    ((top, bottom), (left, right)) and the output's shape."""
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    x = x[None] if x.ndim == 3 else x
    sides = padding_sides(case["padding"], case["kernel_size"], case["dilation"])
    if case["padding_mode"] != "zeros":
        x, sides = K.pad_forward_reference(x, sides, case["padding_mode"]), ((0, 0), (0, 0))
    weight = rng.standard_normal((case["out_channels"], x.shape[1] // case["groups"], *case["kernel_size"])).astype(dtype)
    bias = rng.standard_normal(case["out_channels"]).astype(dtype)
    out_shape = (x.shape[0], case["out_channels"],
                 *(conv2d_output_size(size + sum(side), k, s, 0, d) for size, side, k, s, d in
                   zip(x.shape[2:], sides, case["kernel_size"], case["stride"], case["dilation"])))
    return x, weight, bias, sides, out_shape


@given(case=S.conv2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_conv_kernels_match_references_and_serial(case, dtype, seed):
    rng = np.random.default_rng(seed)
    x, weight, bias, sides, out_shape = _kernel_inputs(case, dtype, rng)
    groups = case["groups"]
    # the kernels take the top and left padding; the output's shape fixes the bottom and right
    geometry = (*case["stride"], sides[0][0], sides[1][0], *case["dilation"], groups)
    arguments = (case["stride"], sides, case["dilation"], groups)
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
    zeros = np.zeros(x.shape[1], dtype)
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


@given(case=S.conv2d_cases(), dtype=S.dtypes, seed=S.seeds)
def test_im2col_and_col2im_kernels_match_references_and_serial(case, dtype, seed):
    """The GEMM path's gather (im2col) equals the strided views' stack exactly (a copy); its
    adjoint col2im equals np.add.at's scatter-add (plus the bias it is seeded with), and each
    parallel kernel its serial twin bit for bit."""
    rng = np.random.default_rng(seed)
    x, weight, _, sides, out_shape = _kernel_inputs(case, dtype, rng)
    geometry = (*case["stride"], sides[0][0], sides[1][0], *case["dilation"])
    arguments = (case["stride"], sides, case["dilation"])
    cols_shape = (x.shape[1], *case["kernel_size"], *out_shape[2:], x.shape[0])
    x_t = batch_last(x)
    cols, cols_serial = np.full(cols_shape, np.nan, dtype), np.full(cols_shape, np.nan, dtype)  # every entry written
    K.im2col(x_t, cols, *geometry)
    K.im2col_serial(x_t, cols_serial, *geometry)
    np.testing.assert_array_equal(cols, K.im2col_reference(x, case["kernel_size"], out_shape[2:], *arguments))
    np.testing.assert_array_equal(cols, cols_serial)

    grad_cols = rng.standard_normal(cols_shape).astype(dtype)
    bias = rng.standard_normal(x.shape[1]).astype(dtype)
    dx, dx_serial = np.empty_like(x), np.empty_like(x)
    K.col2im(grad_cols, bias, dx, *geometry)
    K.col2im_serial(grad_cols, bias, dx_serial, *geometry)
    scale = K.col2im_reference(np.abs(grad_cols), np.abs(bias), x.shape, *arguments)
    assert_close(dx, K.col2im_reference(grad_cols, bias, x.shape, *arguments), "kernel", dtype, "col2im", scale=scale)
    np.testing.assert_array_equal(dx, dx_serial)
    # the adjoint identity <im2col(x), g> = <x, col2im(g)>, in float64
    x64, g64 = x_t.astype(np.float64), grad_cols.astype(np.float64)
    cols64, dx64 = np.empty(cols_shape), np.empty(x.shape)
    K.im2col(x64, cols64, *geometry)
    K.col2im(g64, np.zeros(x.shape[1]), dx64, *geometry)
    products = cols64 * g64
    assert np.isclose(products.sum(), np.sum(batch_last(dx64) * x64), rtol=1e-12, atol=1e-12 * np.abs(products).sum())


def _conv_layers(model):
    return [m for _, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("batch", [None, FC.SMALL_BATCH + 1, 128, 1024])
def test_path_rule_keeps_conv_ae_direct_and_takes_gemm_for_conv_vae_wide_layers(batch):
    """The measured rule (docs/speed.md), above SMALL_BATCH examples: every layer of conv-ae (1 to
    16 channels) stays on the direct kernels; conv-vae's 32 -> 64 convolution and its transpose
    take the GEMM path, its 1-channel ends stay direct."""
    from scratch.models import build

    assert FC.FORCE_PATH is None
    paths = {repr(m): FC.conv_path(m.weight.shape, m.groups, batch) for m in _conv_layers(build("conv-ae"))}
    assert len(paths) == 5 and set(paths.values()) == {"direct"}, paths
    layers = _conv_layers(build("conv-vae"))
    paths = [FC.conv_path(m.weight.shape, m.groups, batch) for m in layers]
    assert [(m.in_channels, m.out_channels) for m in layers] == [(1, 32), (32, 64), (64, 32), (32, 1)]
    assert paths == ["direct", "gemm", "gemm", "direct"], paths


@pytest.mark.parametrize("batch", [0, 1, FC.SMALL_BATCH])
def test_path_rule_takes_gemm_for_every_layer_of_a_small_batch(batch):
    """At most SMALL_BATCH examples, the direct kernels' batch loop is too short: GEMM everywhere."""
    from scratch.models import build

    layers = _conv_layers(build("conv-ae")) + _conv_layers(build("conv-vae"))
    assert {FC.conv_path(m.weight.shape, m.groups, batch) for m in layers} == {"gemm"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_vae_at_its_default_widths_matches_torch_with_the_rule(dtype):
    """The default conv-vae (32 and 64 channels), its wide layers on the GEMM path as the rule
    picks: loss, its parts and every gradient equal torch's at the table's tolerance (the model
    parity tests draw narrow conv-vaes, all direct)."""
    from parity_tests.twins import twin_of
    from scratch.models import build
    from scratch.testing import assert_model_matches_torch

    rng = np.random.default_rng(5)
    model = build("conv-vae", dtype=dtype, rng=rng)
    assert [FC.conv_path(m.weight.shape, m.groups) for m in _conv_layers(model)].count("gemm") == 2
    x = rng.random((3, 784)).astype(dtype)
    assert_model_matches_torch(model, twin_of(model, dtype), x, model.draw_noise(x.shape), what="conv-vae, rule")


@given(case=S.conv2d_cases(padding_modes=("reflect", "replicate", "circular"), layouts=("batched", "empty")),
       dtype=S.dtypes, seed=S.seeds)
def test_padding_gather_and_its_scatter_kernel_match_references_and_serial(case, dtype, seed):
    """The padding modes' gather (``pad_forward``) equals np.pad exactly; its backward, the
    ``pad_backward`` scatter-add kernel, equals np.add.at's, and its serial twin bit for bit."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    sides = padding_sides(case["padding"], case["kernel_size"], case["dilation"])
    padded, (rows, cols, shape) = pad_forward(x, sides, case["padding_mode"])
    np.testing.assert_array_equal(padded, K.pad_forward_reference(x, sides, case["padding_mode"]))  # a copy: exact
    grad = rng.standard_normal(padded.shape).astype(dtype)
    dx, dx_serial = np.empty_like(x), np.empty_like(x)
    K.pad_backward(grad, rows, cols, dx)
    K.pad_backward_serial(grad, rows, cols, dx_serial)
    scale = K.pad_backward_reference(np.abs(grad), rows, cols, x.shape)
    assert_close(dx, K.pad_backward_reference(grad, rows, cols, x.shape), "kernel", dtype, "pad_backward", scale=scale)
    np.testing.assert_array_equal(dx, dx_serial)
    # the adjoint identity <pad(x), g> = <x, pad_backward(g)>, in float64
    x64, g64 = x.astype(np.float64), grad.astype(np.float64)
    dx64 = np.empty_like(x64)
    K.pad_backward(g64, rows, cols, dx64)
    assert np.isclose(np.sum(pad_forward(x64, sides, case["padding_mode"])[0] * g64), np.sum(x64 * dx64), rtol=1e-12,
                      atol=1e-12 * np.sum(np.abs(pad_forward(x64, sides, case["padding_mode"])[0] * g64)))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_index_is_numpys_pad_for_every_size_and_padding_torch_allows(mode):
    """Every input size 1..6 and every (before, after) torch accepts for the mode."""
    for size in range(1, 7):
        most = {"reflect": size - 1, "circular": size}.get(mode, 4)
        for before in range(most + 1):
            for after in range(most + 1):
                expected = K.pad_forward_reference(np.arange(size)[None, None, None, :].astype(float),
                                                   ((0, 0), (before, after)), mode)[0, 0, 0]
                np.testing.assert_array_equal(padding_index(size, before, after, mode), expected, f"{size, before, after}")


# -- what the cases above reach, named --------------------------------------------------


@pytest.mark.parametrize("kernel, dilation", [((2, 4), (1, 1)), ((4, 3), (1, 2)), ((2, 2), (3, 1)), ((3, 5), (2, 2))])
def test_same_padding_pads_the_odd_row_at_the_end(kernel, dilation):
    """padding="same" keeps the size; an odd d·(k - 1) puts its extra row (column) at the bottom
    (right), as torch: the layer equals an explicit ((top, bottom), (left, right)) zero padding."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    layer = nn.Conv2d(3, 2, kernel, padding="same", dilation=dilation, rng=rng, dtype=np.float64)
    twin = torch.nn.Conv2d(3, 2, kernel, padding="same", dilation=dilation)
    assert_matches_torch(layer, twin, x, rng=rng, what="same")
    sides = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))
    explicit, _ = F.conv2d_forward(x, layer.weight.data, layer.bias.data, (1, 1), sides, dilation)
    np.testing.assert_array_equal(layer(x), explicit)
    assert layer(x).shape[2:] == x.shape[2:]


@pytest.mark.parametrize("layer, x_shape", [
    (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, rng=0, dtype=np.float64), (0, 4, 5, 5)),
    (lambda: nn.Conv2d(2, 3, 3, padding=2, padding_mode="reflect", rng=0, dtype=np.float64), (0, 2, 3, 4)),
    (lambda: nn.Conv2d(2, 3, 1, padding=1, rng=0, dtype=np.float64), (0, 2, 0, 4)),  # an empty image too
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, rng=0, dtype=np.float64), (0, 4, 3, 3)),
    (lambda: nn.ConvTranspose2d(2, 3, 2, stride=2, rng=0, dtype=np.float64), (0, 2, 0, 3)),
    (lambda: nn.ConvTranspose2d(2, 3, 2, padding=1, rng=0, dtype=np.float64), (0, 2, 1, 3)),  # output height 0
], ids=["conv-groups", "conv-reflect", "conv-empty-image", "transpose-groups", "transpose-empty-image",
        "transpose-empty-output"])
@PATHS
def test_an_empty_batch_passes_through_and_adds_no_gradient(layer, x_shape, path):
    """N = 0: torch's output shape, an empty dx, and parameter gradients exactly as they were."""
    with forced(path):
        layer = layer()
        for parameter in layer.parameters():
            parameter.grad[...] = 0.5
        twin = (torch.nn.ConvTranspose2d if isinstance(layer, nn.ConvTranspose2d) else torch.nn.Conv2d)(
            layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode).double()
        x = np.zeros(x_shape)
        y = layer(x)
        assert y.shape == tuple(twin(torch.from_numpy(x)).shape)
        dx = layer.backward(np.zeros(y.shape))
        assert dx.shape == x.shape and dx.dtype == x.dtype
        assert all(np.array_equal(parameter.grad, np.full(parameter.shape, 0.5)) for parameter in layer.parameters())


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError,
     r"^Conv2d: in_channels must be divisible by groups, got in_channels=3, groups=2$"),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), ValueError,
     r"^Conv2d: out_channels must be divisible by groups, got out_channels=3, groups=2$"),
    (lambda: nn.ConvTranspose2d(2, 3, 3, groups=2), ValueError,
     r"^ConvTranspose2d: out_channels must be divisible by groups, got out_channels=3, groups=2$"),
    (lambda: nn.Conv2d(2, 2, 3, groups=0), ValueError, r"^Conv2d: groups must be a positive int, got 0$"),
    (lambda: nn.Conv2d(2, 2, 3, groups=1.0), TypeError, r"^Conv2d: groups must be a positive int, got 1\.0"),
    (lambda: nn.Conv2d(2, 2, 3, padding="full"), ValueError,
     r"^Conv2d: padding must be 'same', 'valid', an int >= 0 or a pair of them, got 'full'$"),
    (lambda: nn.Conv2d(2, 2, 3, padding="same", stride=(1, 2)), ValueError,
     r"^Conv2d: padding='same' needs stride 1 .*, got stride=\(1, 2\)$"),
    (lambda: nn.Conv2d(2, 2, 3, padding_mode="mirror"), ValueError,
     r"^Conv2d: padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', got 'mirror'$"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect"), ValueError,
     r"^ConvTranspose2d: padding_mode must be 'zeros' \(torch supports no other .*\), got 'reflect'$"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, padding="same"), TypeError,
     r"^ConvTranspose2d: padding must be an int >= 0 or a pair of them, got 'same'"),
    (lambda: nn.Conv2d(1, 3, 0), ValueError, "kernel_size must be an int >= 1"),
    (lambda: nn.Conv2d(1, 3, 3, stride=(1, 2, 3)), ValueError, "stride must be"),
    (lambda: nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2), ValueError, "output_padding"),
], ids=["in-channels-groups", "out-channels-groups", "transpose-out-channels-groups", "groups-0", "groups-float",
        "padding-string", "same-strided", "padding-mode", "transpose-padding-mode", "transpose-same", "kernel-0",
        "stride-3", "output-padding"])
def test_bad_arguments_get_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


def _ready(layer, shape):
    """A float64 layer after one good forward and backward: caches set, gradients non-zero."""
    rng = np.random.default_rng(0)
    y = layer(rng.standard_normal(shape))
    layer.backward(rng.standard_normal(y.shape))
    return layer


OWNER = r"^Conv2d\(2, 3, kernel_size=\(3, 3\), stride=\(1, 1\)"


@pytest.mark.parametrize("layer, x, message", [
    (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), np.zeros((3, 5, 5)),
     OWNER + r"\): expected input \(2, H, W\) \(unbatched\), got shape \(3, 5, 5\)$"),
    (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), np.zeros((2, 5)),
     OWNER + r"\): input must have 3 or 4 dimensions, got shape \(2, 5\)$"),
    (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), np.zeros((1, 2, 2, 5, 5)),
     OWNER + r"\): input must have 3 or 4 dimensions"),
    (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), np.zeros((2, 2, 2, 5)),
     OWNER + r"\): input of spatial size \(2, 5\) is too small for this kernel \(output would be \(0, 3\)\)$"),
    (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), np.zeros((0, 2, 2, 5)),  # an empty batch too
     OWNER + r"\): input of spatial size \(2, 5\) is too small"),
    (lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), np.zeros((1, 2, 0, 5)),
     OWNER + r", padding=\(1, 1\)\): input has an empty image \(shape \(1, 2, 0, 5\)\); expected H, W >= 1"),
    (lambda: nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="reflect", rng=0, dtype=np.float64),
     np.zeros((1, 2, 4, 2)), OWNER + r".*\): padding_mode='reflect' needs each padding < the input's width 2, "
                                     r"got padding \(2, 2\)"),
    (lambda: nn.Conv2d(2, 3, 3, padding=2, padding_mode="circular", rng=0, dtype=np.float64),
     np.zeros((1, 2, 1, 5)), OWNER + r".*\): padding_mode='circular' needs each padding <= the input's height 1"),
    (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate", rng=0, dtype=np.float64),
     np.zeros((0, 2, 0, 5)), OWNER + r".*\): padding_mode='replicate' needs a non-empty image"),
    (lambda: nn.Conv2d(2, 3, (2, 3), padding="same", padding_mode="reflect", rng=0, dtype=np.float64),
     np.zeros((1, 2, 3, 1)), OWNER.replace(r"\(3, 3\)", r"\(2, 3\)") + r".*\): padding_mode='reflect' needs each "
                                                                     r"padding < the input's width 1, got padding \(1, 1\)"),
])
def test_conv2d_refuses_what_torch_refuses_and_changes_nothing(layer, x, message):
    layer = _ready(layer(), (1, 2, 5, 5))
    refused(lambda: layer(x), ValueError, message, layer)


TRANSPOSE = r"^ConvTranspose2d\(2, 3, kernel_size=\(3, 3\), stride=\(2, 2\), padding=\(1, 1\)\): "


@pytest.mark.parametrize("x, output_size, error, message", [
    (np.zeros((1, 2, 4, 4)), [6, 7], ValueError,
     TRANSPOSE + r"requested an output size of \[6, 7\], but valid sizes range from \[7, 7\] to \[8, 8\]"),
    (np.zeros((1, 2, 4, 4)), [7, 9], ValueError, TRANSPOSE + r"requested an output size of \[7, 9\]"),
    (np.zeros((1, 2, 4, 4)), [1, 3, 8], ValueError,
     TRANSPOSE + r"for a 4-d input, output_size must have 2 or 4 elements, got 3"),
    (np.zeros((2, 4, 4)), [1, 3, 8, 8], ValueError,
     TRANSPOSE + r"for a 3-d input, output_size must have 2 or 3 elements, got 4"),
    (np.zeros((1, 2, 4, 4)), [7.0, 7], TypeError, TRANSPOSE + r"output_size\[0\] must be an int, got 7\.0"),
    (np.zeros((1, 2, 4, 4)), 7, TypeError, TRANSPOSE + r"output_size must be a sequence of ints, got 7$"),
    (np.zeros((1, 2, 0, 4)), None, ValueError, TRANSPOSE + r"input has an empty image"),
])
def test_conv_transpose2d_refuses_what_torch_refuses_and_changes_nothing(x, output_size, error, message):
    layer = _ready(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, rng=0, dtype=np.float64), (1, 2, 4, 4))
    refused(lambda: layer(x, output_size=output_size), error, message, layer)


@pytest.mark.parametrize("x_shape", [(1, 2, 1, 4), (0, 2, 0, 4)])
def test_conv_transpose2d_refuses_an_output_smaller_than_torch_allows(x_shape):
    """An output of height 0 only for an empty batch (and never below 0), as in torch."""
    layer = _ready(nn.ConvTranspose2d(2, 3, 2, padding=1, rng=0, dtype=np.float64), (1, 2, 4, 4))
    refused(lambda: layer(np.zeros(x_shape)), ValueError,
            r"gives an output of size \((0|-1), 3\); expected each size >= (1|0 \(an empty batch\))", layer)


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


def test_positional_arguments_are_torchs():
    """torch's positional order, which differs between the two layers (ConvTranspose2d:
    ..., output_padding, groups, bias, dilation, padding_mode)."""
    conv = nn.Conv2d(4, 6, 3, 2, 1, 2, 2, False, "circular", dtype=np.float64)
    assert repr(conv) == repr(torch.nn.Conv2d(4, 6, 3, 2, 1, 2, 2, False, "circular"))
    transposed = nn.ConvTranspose2d(4, 6, 3, 2, 1, 1, 2, False, 2, "zeros", dtype=np.float64)
    assert repr(transposed) == repr(torch.nn.ConvTranspose2d(4, 6, 3, 2, 1, 1, 2, False, 2, "zeros"))


@pytest.mark.parametrize("name, weight_shape, x_shape", [
    ("conv2d", (4, 3, 3, 2), (2, 3, 6, 5)),            # stride, padding, dilation, groups left out
    ("conv_transpose2d", (3, 4, 3, 2), (2, 3, 4, 5)),  # and output_padding
    ("conv2d", (4, 3, 3, 2), (3, 6, 5)),               # unbatched
    ("conv_transpose2d", (3, 4, 3, 2), (3, 4, 5)),
])
def test_conv_forward_defaults_are_torchs(name, weight_shape, x_shape):
    """With its optional arguments left out, each public functional call equals torch's with its
    own left out (the layers always pass them, so no other test reaches these defaults)."""
    rng = np.random.default_rng(2)
    # float64, both signs: a padding shows
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(weight_shape)
    bias = rng.standard_normal(weight_shape[1] if name == "conv_transpose2d" else weight_shape[0])
    out, _ = getattr(F, f"{name}_forward")(x, weight, bias)
    with warnings.catch_warnings():
        expected = getattr(torch.nn.functional, name)(*map(torch.from_numpy, (x, weight, bias)))
    assert_close(out, expected, "torch", np.float64, f"{name} defaults")


@pytest.mark.parametrize("padding", ["same", "valid", (1, 2)])
@pytest.mark.parametrize("groups", [1, 3])
def test_functional_conv2d_takes_torchs_padding_and_groups(padding, groups):
    """F.conv2d_forward(x, w, b, stride, padding, dilation, groups) is torch's F.conv2d."""
    rng = np.random.default_rng(4)
    x, weight, bias = rng.standard_normal((2, 6, 7, 6)), rng.standard_normal((9, 6 // groups, 2, 3)), rng.standard_normal(9)
    out, _ = F.conv2d_forward(x, weight, bias, (1, 1), padding, (2, 1), groups)
    expected = torch.nn.functional.conv2d(*map(torch.from_numpy, (x, weight, bias)), 1, padding, (2, 1), groups)
    assert_close(out, expected, "torch", np.float64, f"F.conv2d padding={padding!r} groups={groups}")
