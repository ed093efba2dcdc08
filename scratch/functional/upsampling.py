"""``interpolate`` (the math of Upsample) as a pure forward/backward pair, with torch's semantics.

Derivation: docs/upsampling.md. Input (N, C, W), (N, C, H, W) or (N, C, D, H, W): a 3-D input
is always a batch of 1-D signals (torch's ``interpolate`` has no unbatched form); N may be 0.
Modes: ``nearest`` and ``nearest-exact`` (1-D, 2-D, 3-D), ``linear`` (1-D), ``bilinear`` and
``bicubic`` (2-D), ``trilinear`` (3-D), ``area`` (1-D, 2-D, 3-D: torch's adaptive average pool).
``antialias=True`` and ``lanczos`` (which needs it) raise NotImplementedError.

Everything is separable: per spatial axis a table of source indices and weights (``axis_tables``),
computed with torch's own arithmetic, bit for bit: the scale in the input's dtype (float32 or
float64; nearest's backward always in float32), torch's clamps, the ``floorf`` that rounds a
float64 source position to float32 before flooring, and the fused multiply-adds torch's compiled
kernels use for ``scale·(i + 0.5) - 0.5`` and for the cubic polynomials (emulated exactly here,
with rational arithmetic). One Numba kernel then blends (``scratch.kernels.upsampling``).

Where torch's backward reads other tables than its forward, scratch follows torch (docs/upsampling.md,
"Where torch's backward is not the forward's adjoint"): nearest's and nearest-exact's forward
may take torch's generic path (1-D and 3-D always; 2-D when H_out + W_out > 128), whose indices
come from the dtype's scale, while their backward always uses float32 ``nearest_idx``; and
bicubic's backward copies the gradient when the output has the input's size, even where a given
scale factor made the forward move the samples.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from scratch.kernels import upsampling as kernels
from scratch.validate import check_array, is_integer, is_real_number

#: the modes torch's ``interpolate`` takes, with the spatial dimensions each accepts
MODES = {"nearest": (1, 2, 3), "nearest-exact": (1, 2, 3), "linear": (1,), "bilinear": (2,), "bicubic": (2,),
         "trilinear": (3,), "area": (1, 2, 3), "lanczos": (2,)}
#: the modes that take ``align_corners`` (the others refuse it, as torch does)
ALIGNING_MODES = ("linear", "bilinear", "bicubic", "trilinear", "lanczos")
#: 2-D outputs with H_out + W_out up to this many take torch's channels-last nearest path
#: (``_use_vectorized_kernel_cond_2d`` in UpSampleKernel.cpp), whose indices are float32 ``nearest_idx``
SMALL_OUTPUT = 128
#: a forward (backward) whose output (dy) has fewer elements than this runs the kernel's serial twin,
#: a larger one the parallel kernel: below it a ``prange`` region's wake-up of the OpenMP pool costs
#: more than the second thread saves; at the bench's 0.8 M outputs the two measured alike on a busy
#: machine and the parallel one up to 2x faster on an idle one (docs/speed.md, "New layers
#: (issue 17)"). The bits are the same either way.
PARALLEL_FROM = 1 << 18

_F32 = np.float32
_F64 = np.float64


# ---------------------------------------------------------------------------- torch's arithmetic
# Each function mirrors one of ATen's (aten/src/ATen/native/UpSample.h, cpu/UpSampleKernel.cpp)
# operation for operation, in the C++ types: T is np.float32 or np.float64 (``opmath_t``, which is
# the dtype itself for both), a Python float is a C++ double.


def _round_to(kind, exact: Fraction):
    """The ``kind`` (np.float32 or np.float64) nearest the rational ``exact``, ties to even."""
    if kind is _F64:
        return _F64(exact.numerator / exact.denominator)  # int / int is correctly rounded
    guess = _F32(exact.numerator / exact.denominator)  # rounded twice: check the neighbours
    best = None
    for candidate in (np.nextafter(guess, _F32(-np.inf)), guess, np.nextafter(guess, _F32(np.inf))):
        distance = abs(Fraction(float(candidate)) - exact)
        key = (distance, int(candidate.view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, candidate)
    return best[1]


def fused_multiply_add(a, b, c):
    """a·b + c rounded once, in a's type: what the FMA instruction torch's x86-64 kernels are
    compiled to (GCC contracts ``a * b + c``) computes. Exact rational arithmetic, then one rounding."""
    return _round_to(type(a), Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def scales_value(kind, size_in: int, size_out: int, scale):
    """``compute_scales_value<T>``: 1/scale (divided in double, then cast) when a scale factor is
    given (and > 0), else size_in / size_out divided in T."""
    if scale is not None and scale > 0:
        return kind(1.0 / scale)
    return kind(size_in) / kind(size_out)


def area_pixel_scale(kind, size_in: int, size_out: int, align_corners: bool, scale):
    """``area_pixel_compute_scale<T>``: (size_in - 1) / (size_out - 1) with ``align_corners``
    (0 for a 1-wide output), else ``scales_value``."""
    if align_corners:
        return kind(size_in - 1) / kind(size_out - 1) if size_out > 1 else kind(0)
    return scales_value(kind, size_in, size_out, scale)


def source_index(scale, i: int, align_corners: bool, cubic: bool, fused: bool = True):
    """``area_pixel_compute_source_index<T>``: scale·i with ``align_corners``, else
    scale·(i + 0.5) - 0.5, clamped at 0 unless ``cubic``. ``fused``: the multiply-add is one FMA,
    as in torch's CPU-capability kernels (the forward of every mode, the linear backward); the
    bicubic backward (UpSampleBicubic2d.cpp, built without FMA) rounds twice."""
    kind = type(scale)
    if align_corners:
        return scale * kind(i)
    if fused:
        real = fused_multiply_add(scale, kind(i) + kind(0.5), kind(-0.5))
    else:
        real = scale * (kind(i) + kind(0.5)) - kind(0.5)
    return kind(0) if (not cubic and real < 0) else real


def floorf(value) -> int:
    """C's ``floorf``: the argument is rounded to float32 first (a float64 position too)."""
    return int(np.floor(_F32(value)))


def guard_index_and_lambda(real, size_in: int):
    """``guard_index_and_lambda``: index = min(floorf(real), size_in - 1) and the fraction
    real - index clamped to [0, 1]."""
    kind = type(real)
    index = min(floorf(real), size_in - 1)
    return index, min(max(real - kind(index), kind(0)), kind(1))


def nearest_idx(i: int, size_in: int, size_out: int, scale) -> int:
    """``nearest_idx``: the identity for equal sizes, i >> 1 for a doubled one, else
    min(floorf(i · s), size_in - 1) with the scale s in float32."""
    if size_out == size_in:
        return i
    if size_out == 2 * size_in:
        return i >> 1
    return min(floorf(_F32(i) * scales_value(_F32, size_in, size_out, scale)), size_in - 1)


def nearest_exact_idx(i: int, size_in: int, size_out: int, scale) -> int:
    """``nearest_exact_idx``: min(floorf((i + 0.5) · s), size_in - 1), s in float32, the
    product in double."""
    return min(floorf((i + 0.5) * float(scales_value(_F32, size_in, size_out, scale))), size_in - 1)


def nearest_generic_idx(kind, i: int, size_in: int, size_out: int, scale) -> int:
    """``HelperInterpNearest``: min(floorf(s · i), size_in - 1) with s in the dtype ``kind``."""
    s = area_pixel_scale(kind, size_in, size_out, False, scale)
    return min(floorf(source_index(s, i, True, False)), size_in - 1)


def nearest_exact_generic_idx(kind, i: int, size_in: int, size_out: int, scale) -> int:
    """``HelperInterpNearestExact``: min(floorf(max(s·(i + 0.5) - 0.5, 0) + 0.5), size_in - 1),
    s in ``kind``, the last addition in double."""
    s = area_pixel_scale(kind, size_in, size_out, False, scale)
    return min(floorf(float(source_index(s, i, False, False)) + 0.5), size_in - 1)


def linear_source(kind, i: int, size_in: int, size_out: int, align_corners: bool, scale):
    """``compute_source_index_and_lambda``: (i0, i1, λ0, λ1) with y_i = λ0·x[i0] + λ1·x[i1];
    (i, i, 1, 0) for equal sizes; i1 = i0 + 1 except at the last input."""
    if size_out == size_in:
        return i, i, kind(1), kind(0)
    s = area_pixel_scale(kind, size_in, size_out, align_corners, scale)
    i0, lambda1 = guard_index_and_lambda(source_index(s, i, align_corners, False), size_in)
    return i0, i0 + (1 if i0 < size_in - 1 else 0), kind(1) - lambda1, lambda1


def cubic_coefficients(t, fused: bool = True):
    """``get_cubic_upsample_coefficients`` (A = -0.75) at the fraction t: the weights of the
    inputs at index - 1, index, index + 1, index + 2. ``fused``: as torch's forward kernel is
    compiled (GCC fuses ``(A + 2)·x - (A + 3)`` and the two inner steps of the second
    polynomial); the bicubic backward, built without FMA, rounds every operation."""
    kind = type(t)
    a = kind(-0.75)

    def near(x):  # cubic_convolution1: ((A + 2)·x - (A + 3))·x·x + 1, for |x| <= 1
        inner = fused_multiply_add(a + kind(2), x, -(a + kind(3))) if fused else (a + kind(2)) * x - (a + kind(3))
        return inner * x * x + kind(1)

    def far(x):  # cubic_convolution2: ((A·x - 5A)·x + 8A)·x - 4A, for 1 <= |x| <= 2
        if fused:
            inner = fused_multiply_add(fused_multiply_add(a, x, -(kind(5) * a)), x, kind(8) * a)
        else:
            inner = (a * x - kind(5) * a) * x + kind(8) * a
        return inner * x - kind(4) * a

    x2 = kind(1) - t
    return far(t + kind(1)), near(t), near(x2), far(x2 + kind(1))


def cubic_source(kind, i: int, size_in: int, size_out: int, align_corners: bool, scale, fused: bool = True):
    """``HelperInterpCubic`` (forward) / ``upsample_bicubic2d_backward_out_frame`` (``fused=False``):
    the four clamped indices index - 1 .. index + 2 and their cubic weights."""
    s = area_pixel_scale(kind, size_in, size_out, align_corners, scale)
    index, t = guard_index_and_lambda(source_index(s, i, align_corners, True, fused), size_in)
    return [min(max(index + tap - 1, 0), size_in - 1) for tap in range(4)], cubic_coefficients(t, fused)


def area_window(i: int, size_in: int, size_out: int) -> tuple[int, int]:
    """The adaptive average pool's window [floor(i·in/out), ceil((i + 1)·in/out)) (AdaptivePooling.h)."""
    return (i * size_in) // size_out, ((i + 1) * size_in + size_out - 1) // size_out


# ---------------------------------------------------------------------------- one axis's tables

def _identity_table(dtype):
    """The table of an axis that does not resample (a dimension the input lacks): one tap, weight 1."""
    return _readonly(np.zeros((1, 1), np.int64), np.ones((1, 1), dtype), np.ones(1, np.int64))


def _readonly(*arrays):
    for array in arrays:
        array.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=512)
def axis_tables(table: str, dtype_name: str, size_in: int, size_out: int, align_corners: bool, scale):
    """(index, weight, count) for one spatial axis: index int64 (size_out, taps), weight
    (size_out, taps) in the dtype, count int64 (size_out,); output i reads index[i, :count[i]].

    ``table`` names torch's computation: "nearest" (float32 ``nearest_idx``), "nearest-generic"
    (the dtype's scale), "nearest-exact", "nearest-exact-generic", "linear", "cubic" (the forward's,
    fused), "cubic-backward" (unfused), "area". ``scale`` is the axis's scale factor when one was
    given and not recomputed, else None. Cached (the arrays are read-only): a layer's tables are
    computed once per geometry.
    """
    kind = _F32 if dtype_name == "float32" else _F64
    taps = {"linear": 2, "cubic": 4, "cubic-backward": 4}.get(table, 1)
    if table == "area":
        taps = max(end - start for start, end in (area_window(i, size_in, size_out) for i in range(size_out)))
    index = np.zeros((size_out, taps), np.int64)
    weight = np.zeros((size_out, taps), kind)
    count = np.full(size_out, taps, np.int64)
    for i in range(size_out):
        if table == "nearest":
            index[i, 0], weight[i, 0] = nearest_idx(i, size_in, size_out, scale), 1
        elif table == "nearest-generic":
            index[i, 0], weight[i, 0] = nearest_generic_idx(kind, i, size_in, size_out, scale), 1
        elif table == "nearest-exact":
            index[i, 0], weight[i, 0] = nearest_exact_idx(i, size_in, size_out, scale), 1
        elif table == "nearest-exact-generic":
            index[i, 0], weight[i, 0] = nearest_exact_generic_idx(kind, i, size_in, size_out, scale), 1
        elif table == "linear":
            i0, i1, lambda0, lambda1 = linear_source(kind, i, size_in, size_out, align_corners, scale)
            index[i], weight[i] = (i0, i1), (lambda0, lambda1)
        elif table in ("cubic", "cubic-backward"):
            indices, weights = cubic_source(kind, i, size_in, size_out, align_corners, scale, table == "cubic")
            index[i], weight[i] = indices, weights
        elif table == "area":
            start, end = area_window(i, size_in, size_out)
            count[i] = end - start
            index[i, :end - start] = np.arange(start, end)
            weight[i, :end - start] = kind(1) / kind(end - start)
        else:
            raise ValueError(f"axis_tables: unknown table {table!r}")
    return _readonly(index, weight, count)


def _table_names(mode: str, spatial_out: tuple[int, ...]) -> tuple[str, str]:
    """(forward table, backward table) torch uses for ``mode`` on a contiguous input.

    nearest / nearest-exact: the backward is always float32 ``nearest_idx`` (``nearest_exact_idx``);
    the forward too for a 2-D output with H_out + W_out <= 128 (torch's channels-last kernel), else
    the generic kernel's indices from the dtype's scale. (torch takes the channels-last kernel also
    for a channels-last input with C > 3, which a C-contiguous array with H·W > 1 never is; with
    H = W = 1 every index is 0 on both paths.)
    """
    if mode in ("nearest", "nearest-exact"):
        small = len(spatial_out) == 2 and sum(spatial_out) <= SMALL_OUTPUT
        return (mode if small else f"{mode}-generic"), mode
    if mode in ("linear", "bilinear", "trilinear"):
        return "linear", "linear"
    if mode == "bicubic":
        return "cubic", "cubic-backward"
    return "area", "area"


# ---------------------------------------------------------------------------- arguments


def _spatial_text(dims: int) -> str:
    return {1: "1-D (N, C, W)", 2: "2-D (N, C, H, W)", 3: "3-D (N, C, D, H, W)"}[dims]


def check_interpolate_settings(owner: str, size, scale_factor, mode, align_corners, recompute_scale_factor,
                               antialias=False) -> None:
    """Refuse, as torch's ``interpolate`` does (ValueError, or TypeError for a value of the wrong
    kind), every setting that no input can make valid; NotImplementedError for ``antialias=True``.
    Nothing about the input is known here (``interpolate_geometry`` checks the rest)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{owner}: mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    if align_corners is not None and not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"{owner}: align_corners must be None or a bool, got {align_corners!r} "
                        f"({type(align_corners).__name__})")
    if mode not in ALIGNING_MODES and align_corners is not None:
        raise ValueError(f"{owner}: align_corners option can only be set with the interpolating modes: linear | "
                         f"bilinear | bicubic | trilinear (mode={mode!r} takes align_corners=None, got {align_corners!r})")
    if recompute_scale_factor is not None and not isinstance(recompute_scale_factor, (bool, np.bool_)):
        raise TypeError(f"{owner}: recompute_scale_factor must be None or a bool, got {recompute_scale_factor!r} "
                        f"({type(recompute_scale_factor).__name__})")
    if not isinstance(antialias, (bool, np.bool_)):
        raise TypeError(f"{owner}: antialias must be a bool, got {antialias!r} ({type(antialias).__name__})")
    if size is not None and scale_factor is not None:
        raise ValueError(f"{owner}: only one of size or scale_factor should be defined, got size={size!r} and "
                         f"scale_factor={scale_factor!r}")
    if size is None and scale_factor is None:
        raise ValueError(f"{owner}: either size or scale_factor should be defined")
    if recompute_scale_factor and size is not None:
        raise ValueError(f"{owner}: recompute_scale_factor is not meaningful with an explicit size (size={size!r})")
    for value in _as_list(size):
        if not is_integer(value):
            raise TypeError(f"{owner}: size must be an int or a tuple of ints (one per spatial dimension), got "
                            f"{size!r} with {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{owner}: output sizes should be greater than 0, got size={size!r}")
    for value in _as_list(scale_factor):
        if not is_real_number(value):
            raise TypeError(f"{owner}: scale_factor must be a number or a tuple of numbers (one per spatial "
                            f"dimension), got {scale_factor!r} with {type(value).__name__}")
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{owner}: scale_factor must be positive and finite, got {scale_factor!r}")
    if antialias and mode not in ("bilinear", "bicubic", "lanczos"):
        raise ValueError(f"{owner}: Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and "
                         f"requires a 4-D tensor as input (mode={mode!r})")
    if mode == "lanczos" and align_corners:
        raise ValueError(f"{owner}: Lanczos mode does not support align_corners=True")
    if mode == "lanczos" and not antialias:
        raise ValueError(f"{owner}: Lanczos mode requires antialias=True")
    if antialias:
        raise NotImplementedError(f"{owner}: antialias=True is not implemented in scratch (mode={mode!r}); "
                                  f"antialias=False is")


def _is_sequence(value) -> bool:
    return not isinstance(value, (str, bytes)) and hasattr(value, "__iter__")


def _as_list(value) -> list:
    """The entries of a size or scale factor: a sequence's items, one value as a list of one, None as []."""
    if value is None:
        return []
    return list(value) if _is_sequence(value) else [value]


def _per_axis(owner: str, value, name: str, dims: int, spatial_in) -> list:
    """One entry per spatial axis: a sequence's (which must have ``dims`` of them), or one value repeated."""
    if not _is_sequence(value):
        return [value] * dims
    values = list(value)
    if len(values) != dims:
        raise ValueError(f"{owner}: input and {name} must have the same number of spatial dimensions, but got input "
                         f"with spatial dimensions of {list(spatial_in)} and {name} {value!r} (one entry per "
                         f"spatial dimension of (N, C, d1, ..., dK), or one for all)")
    return values


def interpolate_geometry(owner: str, input_shape, size, scale_factor, mode, align_corners, recompute_scale_factor):
    """(output spatial size, per-axis scale or None, align_corners as a bool) for an input of
    ``input_shape``, by torch's rules (the settings already passed ``check_interpolate_settings``).

    ``size``: the output size, one int for every axis or one per axis. ``scale_factor``: one
    number or one per axis; the output size is int(size_in · scale_factor) (the product in
    double, truncated). Unless ``recompute_scale_factor`` (or mode area, which always
    recomputes), the factor itself sets the scale, 1/scale_factor; otherwise the scale comes from
    the sizes, size_in / size_out.
    """
    dims = len(input_shape) - 2
    if len(input_shape) not in (3, 4, 5):
        raise ValueError(f"{owner}: input must be 3-D (N, C, W), 4-D (N, C, H, W) or 5-D (N, C, D, H, W), got "
                         f"shape {tuple(input_shape)}")
    if dims not in MODES[mode]:
        needed = " or ".join(_spatial_text(d) for d in MODES[mode])
        raise ValueError(f"{owner}: mode {mode!r} needs {needed} input, got shape {tuple(input_shape)}")
    spatial_in = tuple(int(s) for s in input_shape[2:])
    if size is not None:
        spatial_out = tuple(int(s) for s in _per_axis(owner, size, "size", dims, spatial_in))
        scales = (None,) * dims
    else:
        factors = [float(f) for f in _per_axis(owner, scale_factor, "scale_factor", dims, spatial_in)]
        spatial_out = tuple(int(s * f) for s, f in zip(spatial_in, factors))
        recompute = bool(recompute_scale_factor) or mode == "area"
        scales = (None,) * dims if recompute else tuple(factors)
    if min(spatial_in) < 1 or min(spatial_out) < 1:
        raise ValueError(f"{owner}: input and output sizes should be greater than 0, but got input {spatial_in} and "
                         f"output {spatial_out} (input shape {tuple(input_shape)})")
    # torch: "Non-empty 3D/4D/5D data tensor expected"; its adaptive pools (area) let C = 0 pass in 1-D and 2-D
    if input_shape[1] == 0 and not (mode == "area" and dims in (1, 2)):
        raise ValueError(f"{owner}: input has no channels (shape {tuple(input_shape)}); expected C >= 1 in "
                         f"{_spatial_text(dims)} (only the batch N may be 0, as in torch)")
    return spatial_out, scales, bool(align_corners)


# ---------------------------------------------------------------------------- forward and backward


def _padded(tables: list, dtype) -> tuple:
    """Tables for (D, H, W): identity tables for the axes a 1-D or 2-D input lacks."""
    return tuple([_identity_table(dtype)] * (3 - len(tables)) + tables)


def _as_3d(shape) -> tuple[int, int, int, int]:
    """(N·C, D, H, W) of an (N, C, *spatial) shape."""
    spatial = tuple(shape[2:])
    return (shape[0] * shape[1], *((1,) * (3 - len(spatial))), *spatial)


def interpolate_forward(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                        recompute_scale_factor=None, antialias=False, *, owner="interpolate"):
    """y = torch.nn.functional.interpolate(x, ...), separably: per axis, output i blends the
    input at the table's indices with its weights (docs/upsampling.md).

    x : (N, C, W), (N, C, H, W) or (N, C, D, H, W), float32 or float64 -> y : (N, C, *size_out) in
    x's dtype. size_out = ``size``, or int(size_in · ``scale_factor``) per axis. Arguments as
    torch's; refusals name ``owner`` (the nn layers pass their repr). Returns (y, cache).
    """
    check_interpolate_settings(owner, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)
    check_array(x, owner, ndim=(3, 4, 5))
    spatial_out, scales, align = interpolate_geometry(owner, x.shape, size, scale_factor, mode, align_corners,
                                                      recompute_scale_factor)
    forward_name, backward_name = _table_names(mode, spatial_out)
    dtype = x.dtype.name
    spatial_in = x.shape[2:]
    forward = [axis_tables(forward_name, dtype, s_in, s_out, align, scale)
               for s_in, s_out, scale in zip(spatial_in, spatial_out, scales)]
    backward = [axis_tables(backward_name, dtype, s_in, s_out, align, scale)
                for s_in, s_out, scale in zip(spatial_in, spatial_out, scales)]
    out_shape = (*x.shape[:2], *spatial_out)
    y = np.empty(out_shape, dtype=x.dtype)
    if y.size:
        x3 = np.ascontiguousarray(x).reshape(_as_3d(x.shape))
        kernel = kernels.interpolate_forward if y.size >= PARALLEL_FROM else kernels.interpolate_forward_serial
        kernel(x3, y.reshape(_as_3d(out_shape)), *_flat(_padded(forward, x.dtype)))
    # torch's bicubic backward copies the gradient when the sizes agree (UpSampleBicubic2d.cpp)
    copies = mode == "bicubic" and tuple(spatial_in) == spatial_out
    return y, (_padded(backward, x.dtype), x.shape, x.dtype, copies)


def _flat(tables) -> tuple:
    return tuple(array for table in tables for array in table)


def interpolate_backward(grad_output, cache):
    """dx[n, c, s] = Σ over the outputs o that read input element s, and their taps landing on s,
    of (product of the taps' weights) · dy[n, c, o]: the forward's adjoint, a scatter-add
    (docs/upsampling.md). grad_output (N, C, *size_out) -> dx (N, C, *size_in)."""
    tables, input_shape, dtype, copies = cache
    if copies:
        return np.array(grad_output, dtype=dtype, copy=True)
    grad_input = np.empty(input_shape, dtype=dtype)
    if grad_input.size:
        grad3 = np.ascontiguousarray(grad_output).reshape(_as_3d(grad_output.shape))
        parallel = grad3.size >= PARALLEL_FROM
        kernel = kernels.interpolate_backward if parallel else kernels.interpolate_backward_serial
        kernel(grad3, grad_input.reshape(_as_3d(input_shape)), *_flat(tables))
    return grad_input

