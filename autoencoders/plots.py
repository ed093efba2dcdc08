"""PNG artifacts for training runs: image rows and grids, first-layer filters, curves, histograms.

Seven functions, each writing one PNG and returning its ``pathlib.Path``:

- ``save_image_rows(path, rows, labels=None, title=None, max_columns=16)``: one labelled row per
  batch, e.g. original / noisy input / reconstruction.
- ``save_image_grid(path, images, columns=8, title=None)``: a batch tiled row-major (64 samples
  as 8 x 8).
- ``save_filters(path, weight, image_shape, max_filters=64, title=None)``: the first layer's
  filters, each on its own symmetric colour scale.
- ``save_curves(path, curves, xlabel="epoch", ylabel="loss", title=None, logy=False,
  styles=None)``: named (x, y) lines, optionally styled one by one (``REFERENCE_STYLE`` and
  ``OVERLAY_STYLE`` keep two coinciding curves both visible).
- ``save_histogram(path, values, bins=50, title=None, xlabel="value")``: a histogram of a flat
  array.
- ``save_code_usage(path, counts, title=None)``: how often each codebook entry was chosen.
- ``save_scatter(path, points, labels=None, title=None, xlabel="z[0]", ylabel="z[1]")``: 2-D
  points coloured by an integer label.

Each ``save_X`` draws the Figure that ``X_figure`` (same arguments, less ``path``) returns, so a
test can inspect the figure itself; then writes it.

Arrays may be NumPy arrays, torch tensors (detached and copied to the CPU without importing
torch here), scratch ``Parameter``s, or nested sequences of numbers. Bad input raises
``ValueError`` naming the function, what it expected and what it got, before anything is drawn
or any directory is created.

Design notes:

- matplotlib is imported inside the functions, so ``import autoencoders.plots`` stays as cheap as the
  rest of ``scratch``; and only ``matplotlib.figure.Figure`` with an explicit ``FigureCanvasAgg``
  is used, never pyplot, so no backend is switched, no global figure registry is touched, and a
  figure is garbage once its function returns (nothing to ``close``). Safe to call from a
  training loop, a notebook with another backend, or a thread.
- Images are drawn as one mosaic per figure (a single ``imshow``; the gaps between cells and
  the blank cells hold values the colormap draws in colours of their own) rather than one Axes
  per cell: 64 Axes cost a few hundred milliseconds each time, one Axes costs almost nothing. A
  small image is enlarged by a whole number of screen pixels per image pixel with nearest
  neighbour interpolation, so each cell is about ``CELL_PIXELS`` wide and every image pixel is
  an equal, sharp square; a large image is shrunk to that size with antialiasing.
- Axes that count or index (epochs, steps, counts, code indices) get integer ticks only, and
  legends and summaries sit outside the Axes (the plots use a constrained layout, which makes
  room for them), so they never cover data.
- Every write is atomic: the PNG is rendered into a temporary file beside the target and moved
  onto it with ``os.replace`` (``autoencoders._files.atomic_write``). A reader (a browser tab auto-refreshing the run directory, the
  next epoch's write) sees the old file or the new one, never half of one; on any error the
  temporary file is removed and the old target is left as it was.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from autoencoders._files import atomic_write
from scratch.validate import is_torch_tensor

__all__ = [
    "OVERLAY_STYLE", "REFERENCE_STYLE",
    "code_usage_figure", "curves_figure", "filters_figure", "histogram_figure", "image_grid_figure",
    "image_rows_figure", "save_code_usage", "save_curves", "save_filters", "save_histogram", "save_image_grid",
    "save_image_rows", "save_scatter", "scatter_figure",
]  # fmt: skip

DPI = 100
CELL_PIXELS = 60  # target width of one image cell on screen (0.6 inch at DPI)
LABEL_FONTSIZE = 9
TITLE_FONTSIZE = 10
PLOT_FIGSIZE = (6.0, 4.0)  # inches, for curves and histograms: 600 x 400 px at DPI
MARKER_LIMIT = 30  # curves with fewer points than this get a marker on every point


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------


def _to_numpy(value, owner: str, name: str) -> np.ndarray:
    """A real-valued ndarray from an ndarray, torch tensor, scratch Parameter or nested sequence."""
    if is_torch_tensor(value):
        # .float(): plotting needs no float64, and bfloat16 has no NumPy dtype
        value = value.detach().cpu().float().numpy()
    elif not isinstance(value, np.ndarray) and isinstance(getattr(value, "data", None), np.ndarray):
        value = value.data  # a scratch nn.Parameter
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged nested lists, for one
        raise ValueError(
            f"{owner}: {name} must be an array of numbers, got {type(value).__name__}"
        ) from error
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{owner}: {name} must hold real numbers, got dtype {array.dtype}")
    return array


def _check_finite(array: np.ndarray, owner: str, name: str) -> None:
    if not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{owner}: {name} has {bad} non-finite values (NaN or inf) of {array.size}")


def _as_image_stack(value, owner: str, name: str) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) -> float64 (N, H, W), clipped to [0, 1].

    Values outside [0, 1] are clipped rather than refused: a linear decoder's output or a
    noisy input overshoots a little, and the picture is still the one wanted. NaN or inf is
    refused: grey cannot show it, and it means the run has diverged.
    """
    images = _to_numpy(value, owner, name)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(
                f"{owner}: {name} must have one channel (N, 1, H, W), got C={images.shape[1]} "
                f"in shape {images.shape}"
            )
        images = images[:, 0]
    elif images.ndim != 3:
        hint = "; reshape flattened images to (N, 1, H, W)" if images.ndim == 2 else ""
        raise ValueError(
            f"{owner}: {name} must have shape (N, 1, H, W) or (N, H, W), got shape {images.shape}{hint}"
        )
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"{owner}: {name} has empty images, shape {images.shape}")
    images = images.astype(np.float64)
    _check_finite(images, owner, name)
    return np.clip(images, 0.0, 1.0)


def _positive_int(value, owner: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _optional_text(value, owner: str, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{owner}: {name} must be a string or None, got {type(value).__name__}")
    return value


def _png_target(path, owner: str) -> Path:
    try:
        target = Path(os.fspath(path))
    except TypeError as error:
        raise ValueError(
            f"{owner}: path must be a str or os.PathLike, got {type(path).__name__}"
        ) from error
    if target.suffix.lower() != ".png":
        raise ValueError(f"{owner}: path must end in .png, got {str(target)!r}")
    if target.is_dir():
        raise ValueError(f"{owner}: path {str(target)!r} is a directory")
    return target


# ------------------------------------------------------------------------------------------------
# figure plumbing
# ------------------------------------------------------------------------------------------------


def _new_figure(figsize, layout=None):
    """A Figure with its own Agg canvas: no pyplot, no backend switch, nothing global.

    The plots (curves, histograms, scatters, code usage) use ``layout="constrained"``, which
    makes room for what sits outside the Axes (legends, the histogram's summary line) inside
    the figure instead of letting it cover the data.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=DPI, facecolor="white", layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _write_png(figure, target: Path) -> Path:
    """Render ``figure`` to ``target`` atomically (``autoencoders._files.atomic_write``): on any error,
    KeyboardInterrupt included, ``target`` is untouched and no temporary is left."""
    return atomic_write(target, lambda stream: figure.savefig(
        stream, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05, facecolor="white"))


def _is_integral(values: np.ndarray) -> bool:
    """Every value a whole number (epochs, steps, counts, code indices)."""
    return bool(np.all(values == np.round(values)))


def _integer_ticks(axis, nbins="auto") -> None:
    """Major ticks on whole numbers only, labelled "3" rather than "3.0"; no minor ticks.

    ``MaxNLocator(integer=True)`` alone is not enough: with fewer than ``min_n_ticks`` (2)
    integers in view it falls back to fractional steps, which is how a one-epoch loss plot got
    ticks at 0.96, 0.98, ..., 1.04. Here one integer in view is enough, and any non-integral
    location that would still come through is dropped.
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    class IntegerLocator(MaxNLocator):
        def tick_values(self, vmin, vmax):
            ticks = np.asarray(super().tick_values(vmin, vmax), dtype=np.float64)
            whole = np.round(ticks)
            return whole[np.abs(ticks - whole) <= 1e-9 * np.maximum(1.0, np.abs(ticks))]

    axis.set_major_locator(IntegerLocator(nbins=nbins, integer=True, min_n_ticks=1, steps=[1, 2, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda value, pos=None: f"{round(value):d}"))
    axis.set_minor_locator(NullLocator())


def _mosaic(rows: list[np.ndarray], columns: int, gap_value: float) -> tuple[np.ndarray, int]:
    """Tile rows of (n_r, H, W) images into one (R H + (R-1) gap, C W + (C-1) gap) array.

    The gaps between cells hold ``gap_value``, above the colour range so that it is drawn in
    the colormap's "over" colour (not inf: imshow masks inf like NaN), and everything right of
    a row's last image holds NaN, drawn in its "bad" colour; so the two can be coloured apart.
    The gap is about 1/16 of the image, at least one image pixel. Returns (mosaic, gap).
    """
    height, width = rows[0].shape[1:]
    gap = max(1, round(max(height, width) / 16))
    mosaic = np.full(
        (len(rows) * (height + gap) - gap, columns * (width + gap) - gap), gap_value, dtype=np.float64
    )
    for r, images in enumerate(rows):
        top = r * (height + gap)
        shown = images[:columns]
        for c, image in enumerate(shown):
            left = c * (width + gap)
            mosaic[top : top + height, left : left + width] = image
        # a short row ends at its last image: its blank cells and the gaps between them are blank
        mosaic[top : top + height, max(0, len(shown) * (width + gap) - gap) :] = np.nan
    return mosaic, gap


def _mosaic_figure(
    rows: list[np.ndarray],
    columns: int,
    *,
    labels: Sequence[str] | None,
    title: str | None,
    cmap: str,
    vmin: float,
    vmax: float,
    gap_colour: str,
):
    """A Figure of a tiled mosaic with optional row labels at the left and a title."""
    mosaic, gap = _mosaic(rows, columns, gap_value=vmax + (vmax - vmin))
    height, width = rows[0].shape[1:]
    size = max(height, width)
    if size <= CELL_PIXELS:
        # a whole number of screen pixels per image pixel: sharp, equal squares
        scale, interpolation = float(max(1, round(CELL_PIXELS / size))), "nearest"
    else:
        scale, interpolation = CELL_PIXELS / size, "antialiased"
    figure = _new_figure((mosaic.shape[1] * scale / DPI, mosaic.shape[0] * scale / DPI))
    # The Axes fill the figure exactly; labels and title fall outside it and bbox_inches="tight"
    # grows the saved canvas to take them in, without rescaling the images.
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))

    from matplotlib import colormaps

    # blank cells take the background colour; gaps take gap_colour
    colours = colormaps[cmap].with_extremes(bad="white", over=gap_colour)
    axes.imshow(mosaic, cmap=colours, vmin=vmin, vmax=vmax, interpolation=interpolation, aspect="equal")
    axes.set_xticks([])
    if labels is not None:
        centres = [r * (height + gap) + (height - 1) / 2 for r in range(len(rows))]
        axes.set_yticks(centres, labels=list(labels), fontsize=LABEL_FONTSIZE)
        axes.tick_params(axis="y", length=0, pad=4)
    else:
        axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    if title is not None:
        axes.set_title(title, fontsize=TITLE_FONTSIZE, pad=4)
    return figure


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------


def image_rows_figure(rows, labels=None, title=None, max_columns=16, *, owner="image_rows_figure"):
    """The Figure ``save_image_rows`` writes; the arguments are its own (``owner`` names the
    function in error messages)."""
    if is_torch_tensor(rows) or isinstance(rows, np.ndarray) or not isinstance(rows, Sequence):
        raise ValueError(
            f"{owner}: rows must be a list of image arrays, got {type(rows).__name__}; "
            f"wrap a single batch as [images]"
        )
    if len(rows) == 0:
        raise ValueError(f"{owner}: rows is empty; expected at least one array of images")
    stacks = [_as_image_stack(row, owner, f"rows[{r}]") for r, row in enumerate(rows)]
    for r, stack in enumerate(stacks[1:], start=1):
        if stack.shape[1:] != stacks[0].shape[1:]:
            raise ValueError(
                f"{owner}: every row must have the same image size; rows[0] has "
                f"{stacks[0].shape[1:]} but rows[{r}] has {stack.shape[1:]}"
            )
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise ValueError(f"{owner}: labels must be a list of strings, got {type(labels).__name__}")
        if len(labels) != len(stacks):
            raise ValueError(f"{owner}: got {len(labels)} labels for {len(stacks)} rows")
        labels = [str(label) for label in labels]
    title = _optional_text(title, owner, "title")
    max_columns = _positive_int(max_columns, owner, "max_columns")
    widest = max(len(stack) for stack in stacks)
    if widest == 0:
        raise ValueError(f"{owner}: every row is empty; nothing to draw")
    return _mosaic_figure(
        stacks, min(max_columns, widest), labels=labels, title=title,
        cmap="gray", vmin=0.0, vmax=1.0, gap_colour="white",
    )  # fmt: skip


def save_image_rows(path, rows, labels=None, title=None, max_columns=16) -> Path:
    """Write a grid with one row per batch of images, each row optionally labelled at its left.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in ``.png``; missing parent directories are created.
    rows : sequence of arrays
        Each entry (N_r, 1, H, W) or (N_r, H, W), values in [0, 1] (values outside are
        clipped). Row r shows the first ``max_columns`` images of ``rows[r]``. Every row has
        the same H, W; the N_r may differ (a short row leaves its last cells blank), and a row
        may be empty, but not all of them.
    labels : sequence of str, optional
        One per row, e.g. ``["original", "noisy input", "reconstruction"]``.
    title : str, optional
        Drawn above the grid.
    max_columns : int
        Most images per row. The grid is min(max_columns, max N_r) cells wide.

    Returns
    -------
    pathlib.Path
        ``path``, written atomically.

    Raises
    ------
    ValueError
        Naming ``save_image_rows`` and the offending argument.
    """
    owner = "save_image_rows"
    target = _png_target(path, owner)
    return _write_png(image_rows_figure(rows, labels, title, max_columns, owner=owner), target)


def image_grid_figure(images, columns=8, title=None, *, owner="image_grid_figure"):
    """The Figure ``save_image_grid`` writes."""
    stack = _as_image_stack(images, owner, "images")
    if len(stack) == 0:
        raise ValueError(f"{owner}: images is empty, shape {stack.shape}; expected N >= 1")
    columns = _positive_int(columns, owner, "columns")
    title = _optional_text(title, owner, "title")
    columns = min(columns, len(stack))
    rows = [stack[start : start + columns] for start in range(0, len(stack), columns)]
    return _mosaic_figure(
        rows, columns, labels=None, title=title,
        cmap="gray", vmin=0.0, vmax=1.0, gap_colour="white",
    )  # fmt: skip


def save_image_grid(path, images, columns=8, title=None) -> Path:
    """Write a batch of images tiled row-major, ``columns`` to a row.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in ``.png``; missing parent directories are created.
    images : array (N, 1, H, W) or (N, H, W)
        Values in [0, 1] (values outside are clipped); N >= 1.
    columns : int
        Cells per row; the grid has ceil(N / columns) rows (64 images, 8 columns: 8 x 8). With
        fewer than ``columns`` images the grid is N wide.
    title : str, optional
        Drawn above the grid.

    Returns
    -------
    pathlib.Path
        ``path``, written atomically.
    """
    owner = "save_image_grid"
    target = _png_target(path, owner)
    return _write_png(image_grid_figure(images, columns, title, owner=owner), target)


def filters_figure(weight, image_shape, max_filters=64, title=None, *, owner="filters_figure"):
    """The Figure ``save_filters`` writes."""
    w = _to_numpy(weight, owner, "weight").astype(np.float64)
    if w.ndim == 2:
        if image_shape is None or isinstance(image_shape, str) or not isinstance(image_shape, Sequence):
            raise ValueError(
                f"{owner}: image_shape must be (C, H, W) or (H, W) for a Linear weight, "
                f"got {image_shape!r}"
            )
        shape = tuple(image_shape)
        if len(shape) not in (2, 3) or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in shape
        ):
            raise ValueError(
                f"{owner}: image_shape must be (C, H, W) or (H, W) of positive integers, "
                f"got {image_shape!r}"
            )
        if len(shape) == 2:
            shape = (1, *shape)
        if math.prod(shape) != w.shape[1]:
            raise ValueError(
                f"{owner}: image_shape {tuple(image_shape)} holds {math.prod(shape)} values but the "
                f"weight {w.shape} has in_features={w.shape[1]}"
            )
        filters = w.reshape(w.shape[0], *shape)[:, 0]
    elif w.ndim == 4:
        filters = w[:, 0]
    else:
        raise ValueError(
            f"{owner}: weight must be a Linear weight (out_features, in_features) or a conv "
            f"weight (out, in, kH, kW), got shape {w.shape}"
        )
    if filters.shape[0] == 0 or filters.size == 0:
        raise ValueError(f"{owner}: weight has no filters to draw, shape {w.shape}")
    max_filters = _positive_int(max_filters, owner, "max_filters")
    title = _optional_text(title, owner, "title")
    filters = filters[:max_filters]
    _check_finite(filters, owner, "weight")
    peak = np.abs(filters).max(axis=(1, 2), keepdims=True)
    filters = np.divide(filters, peak, out=np.zeros_like(filters), where=peak > 0)
    columns = math.ceil(math.sqrt(len(filters)))
    rows = [filters[start : start + columns] for start in range(0, len(filters), columns)]
    # white gaps would merge with the white of zero weights; light grey separates every filter
    return _mosaic_figure(
        rows, columns, labels=None, title=title,
        cmap="RdBu_r", vmin=-1.0, vmax=1.0, gap_colour="0.75",
    )  # fmt: skip


def save_filters(path, weight, image_shape, max_filters=64, title=None) -> Path:
    """Write the first ``max_filters`` first-layer filters as images, in a near-square grid.

    Each filter is divided by its own largest magnitude and drawn with the diverging colormap
    ``RdBu_r`` on [-1, 1]: zero is white, positive weights red, negative blue. This keeps the
    sign, which a min-max grey scale loses (there, the grey of a zero weight differs from
    filter to filter); and per-filter scaling shows the shape of a filter whose weights are
    small next to its neighbours'. An all-zero filter is all white.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in ``.png``; missing parent directories are created.
    weight : array
        Either a Linear layer's weight (out_features, in_features), whose input is a flattened
        image of ``image_shape``; or a conv weight (out, in, kH, kW), of which in-channel 0 is
        shown and ``image_shape`` is not used (pass None). A torch tensor or scratch
        ``Parameter`` is accepted as is.
    image_shape : tuple of int
        (C, H, W) or (H, W) with C H W == in_features. For C > 1, channel 0 is shown, as for
        a conv weight.
    max_filters : int
        The first min(max_filters, out) filters are drawn, ceil(sqrt(n)) to a row.
    title : str, optional
        Drawn above the grid.

    Returns
    -------
    pathlib.Path
        ``path``, written atomically.
    """
    owner = "save_filters"
    target = _png_target(path, owner)
    return _write_png(filters_figure(weight, image_shape, max_filters, title, owner=owner), target)


# ------------------------------------------------------------------------------------------------
# curves
# ------------------------------------------------------------------------------------------------


def _plain_log_labels(axis) -> None:
    """Label a log axis "0.3", "0.01" rather than "3 x 10^-1", "10^-2": a loss is read as decimals.

    matplotlib's own formatters still decide *which* ticks get a label (all majors; minors only
    when the axis spans few decades); only the text is rewritten, through the public Formatter
    interface.
    """
    from matplotlib.ticker import Formatter

    class PlainText(Formatter):
        def __init__(self, decider):
            self.decider = decider

        def set_axis(self, axis):
            super().set_axis(axis)
            self.decider.set_axis(axis)

        def set_locs(self, locs):
            self.decider.set_locs(locs)

        def __call__(self, x, pos=None):
            return f"{x:g}" if self.decider(x, pos) else ""

    axis.set_major_formatter(PlainText(axis.get_major_formatter()))
    axis.set_minor_formatter(PlainText(axis.get_minor_formatter()))


def _legend_columns(labels: Sequence[str], budget: int = 90) -> int:
    """As many legend columns as fit in about ``budget`` characters of the figure's width."""
    widest = max(len(label) for label in labels) + 6  # the handle and the gap after the text
    return max(1, min(len(labels), budget // widest))


def _legend_outside(figure, axes, where: str, ncols: int, **options):
    """A figure legend beside the Axes (``where`` is e.g. "lower center", "right upper"), for
    every labelled artist of ``axes``. With the figure's constrained layout the Axes shrink
    to make room for it: a legend never covers the data, however the data fill the Axes."""
    handles, labels = axes.get_legend_handles_labels()
    return figure.legend(
        handles, labels, loc=f"outside {where}", ncols=ncols, fontsize=LABEL_FONTSIZE, frameon=False, **options
    )


# Per-curve styles for ``save_curves(styles=...)``: a reference curve drawn wide and translucent
# underneath, and a curve that should agree with it drawn thin and dashed on top, in another
# colour. Where the two coincide both stay visible: the dashes over a pale band.
REFERENCE_STYLE = MappingProxyType({"color": "C1", "linewidth": 5.0, "alpha": 0.4, "zorder": 2})
OVERLAY_STYLE = MappingProxyType({"color": "C0", "linewidth": 1.3, "linestyle": "--", "zorder": 3})
CURVE_STYLE_KEYS = frozenset({"color", "linewidth", "linestyle", "alpha", "zorder", "marker", "markersize"})


def _check_styles(styles, names: list[str], owner: str) -> dict[str, dict]:
    if styles is None:
        return {}
    if not isinstance(styles, Mapping):
        raise ValueError(f"{owner}: styles must be a dict name -> dict of line properties, got {type(styles).__name__}")
    checked = {}
    for name, style in styles.items():
        if str(name) not in names:
            raise ValueError(f"{owner}: styles names {name!r}, which is not one of the curves {names}")
        if not isinstance(style, Mapping):
            raise ValueError(f"{owner}: styles[{name!r}] must be a dict of line properties, got {type(style).__name__}")
        unknown = sorted(set(style) - CURVE_STYLE_KEYS)
        if unknown:
            raise ValueError(
                f"{owner}: styles[{name!r}] has unknown properties {unknown}; allowed: {sorted(CURVE_STYLE_KEYS)}"
            )
        checked[str(name)] = dict(style)
    return checked


def curves_figure(curves, xlabel="epoch", ylabel="loss", title=None, logy=False, styles=None, *, owner="curves_figure"):
    """The Figure ``save_curves`` writes; the arguments are its own (``owner`` names the function
    in error messages)."""
    if not isinstance(curves, Mapping):
        raise ValueError(f"{owner}: curves must be a dict name -> (x, y), got {type(curves).__name__}")
    if len(curves) == 0:
        raise ValueError(f"{owner}: curves is empty; expected at least one name -> (x, y)")
    checked = []
    for name, pair in curves.items():
        is_pair = isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2
        if not is_pair or isinstance(pair, np.ndarray) or is_torch_tensor(pair):
            raise ValueError(f"{owner}: curves[{name!r}] must be a pair (x, y) of sequences")
        x = _to_numpy(pair[0], owner, f"x of curves[{name!r}]").astype(np.float64)
        y = _to_numpy(pair[1], owner, f"y of curves[{name!r}]").astype(np.float64)
        if x.ndim != 1 or y.ndim != 1:
            raise ValueError(
                f"{owner}: curves[{name!r}] needs 1-D x and y, got shapes {x.shape} and {y.shape}"
            )
        if len(x) != len(y):
            raise ValueError(f"{owner}: curves[{name!r}] has {len(x)} x values but {len(y)} y values")
        if len(x) == 0:
            raise ValueError(f"{owner}: curves[{name!r}] is empty")
        _check_finite(x, owner, f"x of curves[{name!r}]")
        checked.append((str(name), x, y))
    for text, label in ((xlabel, "xlabel"), (ylabel, "ylabel")):
        _optional_text(text, owner, label)
    title = _optional_text(title, owner, "title")
    if logy and not any(np.any(np.isfinite(y) & (y > 0)) for _, _, y in checked):
        raise ValueError(f"{owner}: logy=True needs at least one positive, finite y value")
    styles = _check_styles(styles, [name for name, _, _ in checked], owner)

    figure = _new_figure(PLOT_FIGSIZE, layout="constrained")
    axes = figure.add_subplot()
    for name, x, y in checked:
        style = {"linewidth": 1.5, **styles.get(name, {})}
        if len(x) < MARKER_LIMIT:  # a marker on every point: a lone point (one epoch) is visible
            style.setdefault("marker", "o")
            # larger when there are very few; scaled with the line, so a wide curve's markers
            # show around a thin one's where two curves coincide
            style.setdefault("markersize", min(12.0, (3.5 if len(x) < 5 else 2.0) * style["linewidth"]))
        try:
            axes.plot(x, y, label=name, **style)
        except (TypeError, ValueError) as error:  # a bad colour or line style
            if name not in styles:
                raise
            raise ValueError(f"{owner}: styles[{name!r}]: {error}") from error
    if logy:
        axes.set_yscale("log")  # nonpositive values are masked, not an error
        _plain_log_labels(axes.yaxis)
    every_x = np.concatenate([x for _, x, _ in checked])
    if _is_integral(every_x):  # epochs, steps: no "2.5", no "0.96 ... 1.04" around a lone epoch
        _integer_ticks(axes.xaxis, nbins=10)  # up to 10 epochs: one tick each
        if every_x.min() == every_x.max():
            axes.set_xlim(every_x[0] - 0.5, every_x[0] + 0.5)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, which="major", alpha=0.3)
    names = [name for name, _, _ in checked]
    _legend_outside(figure, axes, "lower center", _legend_columns(names))
    if title is not None:
        axes.set_title(title, fontsize=TITLE_FONTSIZE)
    return figure


def save_curves(path, curves, xlabel="epoch", ylabel="loss", title=None, logy=False, styles=None) -> Path:
    """Write a line plot of named curves, with a legend below it and a grid.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in ``.png``; missing parent directories are created.
    curves : mapping of name -> (x, y)
        x and y are 1-D sequences of numbers of the same, non-zero length, e.g.
        ``{"train loss": (epochs, train), "test loss": (epochs, test)}``. A NaN or inf in y
        leaves a gap in that line (a diverged run is worth seeing, not refusing); x must be
        finite. A curve with fewer than 30 points gets a marker on every point (larger with
        fewer than 5). When every x is a whole number (epochs, steps) the x axis has integer
        ticks only.
    xlabel, ylabel : str
        Axis labels.
    title : str, optional
        Drawn above the plot.
    logy : bool
        Logarithmic y axis; points with y <= 0 are left out of it, and at least one y > 0 is
        required.
    styles : mapping of name -> mapping, optional
        Line properties for some of the curves, from ``color``, ``linewidth``, ``linestyle``,
        ``alpha``, ``zorder``, ``marker``, ``markersize``. For two curves that may coincide,
        ``{reference: REFERENCE_STYLE, other: OVERLAY_STYLE}`` draws the reference wide and
        translucent underneath and the other thin and dashed on top, so both show.

    Returns
    -------
    pathlib.Path
        ``path``, written atomically.
    """
    owner = "save_curves"
    target = _png_target(path, owner)
    return _write_png(curves_figure(curves, xlabel, ylabel, title, logy, styles, owner=owner), target)


# ------------------------------------------------------------------------------------------------
# histograms and counts
# ------------------------------------------------------------------------------------------------


def histogram_figure(values, bins=50, title=None, xlabel="value", *, owner="histogram_figure"):
    """The Figure ``save_histogram`` writes."""
    flat = _to_numpy(values, owner, "values").astype(np.float64).ravel()
    if flat.size == 0:
        raise ValueError(f"{owner}: values is empty; expected at least one number")
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        raise ValueError(f"{owner}: all {flat.size} values are NaN or inf; nothing to draw")
    bins = _positive_int(bins, owner, "bins")
    title = _optional_text(title, owner, "title")
    _optional_text(xlabel, owner, "xlabel")

    integral = _is_integral(finite)
    if integral:
        # whole numbers (codes, counts): every bin holds the same number of integers, centred
        # on them, rather than [min, max] cut into equal widths that split or merge neighbours
        low, high = finite.min(), finite.max()
        span = high - low + 1
        width = math.ceil(span / bins)
        edges = low - 0.5 + width * np.arange(math.ceil(span / width) + 1)
    else:
        edges = bins
    figure = _new_figure(PLOT_FIGSIZE, layout="constrained")
    axes = figure.add_subplot()
    axes.hist(finite, bins=edges, color="C0", edgecolor="white", linewidth=0.5)
    _integer_ticks(axes.yaxis)  # a count: no "2.5"
    if integral:
        _integer_ticks(axes.xaxis)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    axes.grid(True, axis="y", alpha=0.3)
    # the summary goes under the x label, outside the Axes: a box inside would cover bars
    summary = f"n = {finite.size},  mean = {finite.mean():.4g},  std = {finite.std():.4g}"
    if finite.size < flat.size:
        summary += f";  {flat.size - finite.size} non-finite left out"
    axes.annotate(
        summary, xy=(0.5, 0.0), xycoords=axes.xaxis.label, xytext=(0, -3), textcoords="offset points",
        ha="center", va="top", fontsize=LABEL_FONTSIZE, color="0.25",
    )  # fmt: skip
    if title is not None:
        axes.set_title(title, fontsize=TITLE_FONTSIZE)
    return figure


def save_histogram(path, values, bins=50, title=None, xlabel="value") -> Path:
    """Write a histogram of ``values`` with their count, mean and standard deviation below it.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in ``.png``; missing parent directories are created.
    values : array of any shape
        Flattened first, so (N, hidden) activations can be passed as they are. NaN and inf are
        left out and counted in the annotation; at least one finite value is required.
    bins : int
        Number of equal-width bins over [min, max] of the finite values. When every value is a
        whole number, at most ``bins`` bins each holding the same number of consecutive
        integers, centred on them (one bar per integer when the range allows), and integer
        ticks on the x axis.
    title : str, optional
        Drawn above the plot.
    xlabel : str
        Label of the x axis; the y axis is the count, with integer ticks.

    For how often each codebook entry is chosen use ``save_code_usage``: the mean and standard
    deviation of code indices mean nothing.

    Returns
    -------
    pathlib.Path
        ``path``, written atomically.
    """
    owner = "save_histogram"
    target = _png_target(path, owner)
    return _write_png(histogram_figure(values, bins, title, xlabel, owner=owner), target)


def code_usage_figure(counts, title=None, *, owner="code_usage_figure"):
    """The Figure ``save_code_usage`` writes."""
    array = _to_numpy(counts, owner, "counts")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{owner}: counts must be 1-D (K,) with K >= 1, got shape {array.shape}")
    array = array.astype(np.float64)
    _check_finite(array, owner, "counts")
    if np.any(array < 0) or not _is_integral(array):
        raise ValueError(f"{owner}: counts must be non-negative whole numbers, got min {array.min():g}")
    title = _optional_text(title, owner, "title")
    counts = array.astype(np.int64)
    size, used, total = len(counts), int(np.count_nonzero(counts)), int(counts.sum())

    figure = _new_figure((6.0, 5.5), layout="constrained")
    by_entry, by_rank = figure.subplots(2, 1)
    width = 0.8 if size <= 64 else 1.0
    entries = np.arange(size)
    by_entry.bar(entries, counts, width=width, color="C0", linewidth=0)
    unused = entries[counts == 0]
    if unused.size:  # a zero-height bar is invisible: mark the never-chosen entries at the base
        by_entry.plot(unused, np.zeros(unused.size), linestyle="none", marker="|", markersize=7,
                      color="C3", clip_on=False)  # fmt: skip
    by_entry.set_xlim(-0.5, size - 0.5)
    by_entry.set_xlabel("codebook entry k")
    by_entry.set_title(
        f"times each entry was chosen, of {total} choices"
        + (f" (never chosen: red marks, {size - used})" if unused.size else ""),
        fontsize=LABEL_FONTSIZE,
    )
    ranked = np.sort(counts)[::-1]
    by_rank.bar(np.arange(1, size + 1), ranked, width=width, color="C2", linewidth=0)
    by_rank.set_xlim(0.5, size + 0.5)
    by_rank.set_xlabel("entries ranked by use (1 = most chosen)")
    by_rank.set_title(f"sorted by use: {used} of {size} entries used, {size - used} never", fontsize=LABEL_FONTSIZE)
    for axes in (by_entry, by_rank):
        axes.set_ylim(0, max(1, int(counts.max())) * 1.05)
        axes.set_ylabel("times chosen")
        _integer_ticks(axes.xaxis)
        _integer_ticks(axes.yaxis)
        axes.grid(True, axis="y", alpha=0.3)
    if title is not None:
        figure.suptitle(title, fontsize=TITLE_FONTSIZE)
    return figure


def save_code_usage(path, counts, title=None) -> Path:
    """Write how often each codebook entry k was chosen: a bar per entry, and the same counts
    sorted by use (how many entries carry the choices; how many are never used).

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in ``.png``; missing parent directories are created.
    counts : array (K,)
        Non-negative whole numbers: ``counts[k]`` is how often entry k was chosen.
    title : str, optional
        Drawn above both panels.

    Returns
    -------
    pathlib.Path
        ``path``, written atomically.
    """
    owner = "save_code_usage"
    target = _png_target(path, owner)
    return _write_png(code_usage_figure(counts, title, owner=owner), target)


# ------------------------------------------------------------------------------------------------
# scatter
# ------------------------------------------------------------------------------------------------


def scatter_figure(points, labels=None, title=None, xlabel="z[0]", ylabel="z[1]", *, owner="scatter_figure"):
    """The Figure ``save_scatter`` writes."""
    xy = _to_numpy(points, owner, "points").astype(np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0:
        raise ValueError(f"{owner}: points must be (N, 2) with N >= 1, got shape {xy.shape}")
    _check_finite(xy, owner, "points")
    if labels is not None:
        labels = _to_numpy(labels, owner, "labels").astype(np.int64).ravel()
        if labels.shape != (len(xy),):
            raise ValueError(f"{owner}: labels must be ({len(xy)},), got shape {labels.shape}")
    title = _optional_text(title, owner, "title")
    figure = _new_figure(PLOT_FIGSIZE, layout="constrained")
    axes = figure.add_subplot()
    if labels is None:
        axes.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.6)
    else:
        values = np.unique(labels)
        for value in values:
            chosen = labels == value
            axes.scatter(xy[chosen, 0], xy[chosen, 1], s=3, alpha=0.6, label=str(value), color=f"C{value % 10}")
        # beside the Axes: the points fill them, and a legend inside would hide some
        _legend_outside(figure, axes, "right upper", 1 if len(values) <= 12 else 2, markerscale=4)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if title is not None:
        axes.set_title(title, fontsize=TITLE_FONTSIZE)
    return figure


def save_scatter(path, points, labels=None, title=None, xlabel="z[0]", ylabel="z[1]") -> Path:
    """Scatter of 2-D points (N, 2), coloured by integer ``labels`` (N,) with a legend beside it.

    Used for a two-dimensional latent space: each test image's posterior mean, coloured by digit.
    """
    owner = "save_scatter"
    target = _png_target(path, owner)
    return _write_png(scatter_figure(points, labels, title, xlabel, ylabel, owner=owner), target)
