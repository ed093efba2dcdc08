"""Upsample, UpsamplingNearest2d and UpsamplingBilinear2d: torch's ``interpolate`` as layers.

Each takes (N, C, W), (N, C, H, W) or (N, C, D, H, W) as the mode allows (torch's ``interpolate``
has no unbatched form: a 3-D input is a batch of 1-D signals), and an empty batch (N = 0);
every other axis must be at least 1, as torch requires. The arguments are torch's:
exactly one of ``size`` (an int, or one per spatial axis) and ``scale_factor`` (a number, or a
tuple of one per axis; a falsy scale factor counts as none, as in torch), ``mode``,
``align_corners`` (the interpolating modes only), ``recompute_scale_factor``. The math and the
index arithmetic, torch's bit for bit, are ``scratch.functional.upsampling``'s (docs/upsampling.md).

Settings no input could make valid are refused when the layer is built (torch refuses them at
its first forward); the rest at forward, naming the layer's repr, before anything changes. The
layers keep only the index tables, so no edit of their input or output can change their gradient.
"""

from __future__ import annotations

from scratch.functional.upsampling import check_interpolate_settings, interpolate_backward, interpolate_forward
from scratch.nn.layers import _CachingModule
from scratch.validate import is_real_number


def _stored_scale_factor(owner: str, scale_factor):
    """torch's ``Upsample`` keeps a tuple as a tuple of floats and any other scale factor as a
    float, or None when it is falsy (0 means "not given"); a list is refused (torch's ``float``
    of it raises), and so is a bool (scratch refuses flags passed as numbers)."""
    if isinstance(scale_factor, tuple):
        for factor in scale_factor:
            if not is_real_number(factor):
                raise TypeError(f"{owner}: scale_factor must be a number or a tuple of numbers, got {scale_factor!r}")
        return tuple(float(factor) for factor in scale_factor)
    if scale_factor is None:
        return None
    if not is_real_number(scale_factor):
        raise TypeError(f"{owner}: scale_factor must be a number or a tuple of numbers (one per spatial axis), got "
                        f"{scale_factor!r} ({type(scale_factor).__name__})")
    return float(scale_factor) if scale_factor else None


class Upsample(_CachingModule):
    """y = interpolate(x, size, scale_factor, mode, align_corners, recompute_scale_factor).

    x (N, C, *spatial_in) -> y (N, C, *spatial_out): spatial_out = ``size``, or
    int(spatial_in · scale_factor) per axis. Modes: "nearest", "nearest-exact" (1-D, 2-D, 3-D),
    "linear" (1-D), "bilinear", "bicubic" (2-D), "trilinear" (3-D), "area" (1-D, 2-D, 3-D).
    With a scale factor and ``recompute_scale_factor`` not True, the factor sets the sampling
    scale (1/scale_factor); otherwise the sizes do (spatial_in / spatial_out). ``align_corners``
    (interpolating modes; None means False) maps the corner pixels' centres onto each other.
    Backward scatters dy back through the same taps and weights (torch's, also where torch's
    nearest backward reads other indices than its forward: docs/upsampling.md).
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None):
        super().__init__()
        owner = type(self).__name__
        scale_factor = _stored_scale_factor(owner, scale_factor)
        check_interpolate_settings(owner, size, scale_factor, mode, align_corners, recompute_scale_factor)
        self.name = owner
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input):
        x = input  # torch's name for the argument (forward(input=...)); x below
        y, cache = interpolate_forward(x, self.size, self.scale_factor, self.mode, self.align_corners,
                                       self.recompute_scale_factor, owner=repr(self))
        self._save(cache, y, x)
        return y

    def backward(self, grad_output):
        cache = self._take(grad_output)
        return interpolate_backward(grad_output, cache)

    def extra_repr(self) -> str:
        """torch's: the scale factor if there is one, else the size; then the mode."""
        info = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{info}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """``Upsample(size, scale_factor, mode="nearest")``, as torch's (which, being that, also takes
    3-D and 5-D inputs)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``Upsample(size, scale_factor, mode="bilinear", align_corners=True)``, as torch's: 4-D input."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
