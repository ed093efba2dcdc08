"""autoencoders.plots: every function writes a real, non-blank PNG, atomically, and refuses bad input.

Images are the 8 x 8 handwritten digits that ship with scikit-learn, so a grid of distinct
images is distinct for real. Everything is written under tmp_path.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoencoders import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """(64, 1, 8, 8) float64 in [0, 1]: the first 64 scikit-learn digits."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:64] / 16.0)[:, None]


def _read_png(path: Path, min_size: tuple[int, int]) -> np.ndarray:
    """Check the signature, decode, check the size is at least min_size (h, w) and not blank."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert height >= min_size[0] and width >= min_size[1], pixels.shape
    assert height <= 4000 and width <= 4000, pixels.shape  # "small figures"
    assert pixels[..., :3].var() > 0, "image is blank"
    return pixels


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# ------------------------------------------------------------------------------------------------
# each function writes a valid PNG
# ------------------------------------------------------------------------------------------------


def test_image_rows_with_different_lengths(tmp_path, digits):
    noisy = np.clip(digits + 0.3 * np.random.default_rng(0).standard_normal(digits.shape), 0, 1)
    target = tmp_path / "new" / "dir" / "rows.png"  # parents are created
    written = plots.save_image_rows(
        target, [digits[:20], noisy[:12, 0], digits[:5]],  # (N, 1, H, W) and (N, H, W) mixed
        labels=["original", "noisy input", "reconstruction"], title="epoch 1",
    )  # fmt: skip
    assert written == target and isinstance(written, Path)
    pixels = _read_png(target, (3 * 40, 16 * 40))  # 3 rows, 16 columns, ~60 px a cell
    # more columns than rows: the grid is wide, not tall
    assert pixels.shape[1] > 3 * pixels.shape[0]
    assert _siblings(target) == ["rows.png"]


def test_image_rows_columns_follow_the_longest_row(tmp_path, digits):
    narrow = plots.save_image_rows(tmp_path / "narrow.png", [digits[:3], digits[:2]])
    wide = plots.save_image_rows(tmp_path / "wide.png", [digits[:3], digits[:2]], max_columns=2)
    assert _read_png(narrow, (80, 150)).shape[1] > _read_png(wide, (80, 100)).shape[1]


def test_image_grid_8x8(tmp_path, digits):
    target = plots.save_image_grid(str(tmp_path / "grid.png"), digits, columns=8, title="samples")
    pixels = _read_png(target, (8 * 40, 8 * 40))
    height, width = pixels.shape[:2]
    assert 0.8 < height / width < 1.25  # square grid (a title line on top)
    assert target.stat().st_size < 200_000


def test_filters_linear_and_conv(tmp_path):
    rng = np.random.default_rng(0)
    linear = plots.save_filters(tmp_path / "linear.png", rng.standard_normal((100, 64)), (1, 8, 8))
    _read_png(linear, (8 * 40, 8 * 40))  # max_filters=64 -> 8 x 8
    conv = plots.save_filters(tmp_path / "conv.png", rng.standard_normal((6, 3, 5, 5)), None)
    _read_png(conv, (2 * 30, 3 * 30))  # 6 filters -> 3 columns, 2 rows
    hw = plots.save_filters(tmp_path / "hw.png", rng.standard_normal((4, 64)), (8, 8), max_filters=3)
    _read_png(hw, (2 * 30, 2 * 30))


def test_filters_accept_a_scratch_parameter(tmp_path):
    from scratch import nn

    layer = nn.Linear(64, 9, rng=np.random.default_rng(0), dtype=np.float32)
    _read_png(plots.save_filters(tmp_path / "f.png", layer.weight, (1, 8, 8), title="w"), (150, 150))


def test_curves(tmp_path):
    epochs = np.arange(1, 11)
    target = plots.save_curves(
        tmp_path / "curves.png",
        {"train loss": (epochs, 1.0 / epochs), "test loss": (list(epochs), list(1.2 / epochs))},
        title="loss", logy=True,
    )  # fmt: skip
    _read_png(target, (200, 300))
    long = plots.save_curves(tmp_path / "long.png", {"x": (range(100), np.linspace(1, 0, 100))})
    _read_png(long, (200, 300))


def test_histogram(tmp_path):
    values = np.random.default_rng(0).standard_normal((128, 32))  # any shape; flattened
    values[0, 0] = np.nan  # left out, counted
    target = plots.save_histogram(tmp_path / "hist.png", values, bins=30, title="hidden")
    _read_png(target, (200, 300))
    constant = plots.save_histogram(tmp_path / "constant.png", np.zeros(10))
    _read_png(constant, (200, 300))


def test_code_usage_and_scatter_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    usage = plots.save_code_usage(tmp_path / "usage.png", rng.poisson(5, 64) * (rng.random(64) < 0.7), title="vq")
    _read_png(usage, (300, 300))
    scatter = plots.save_scatter(tmp_path / "scatter.png", rng.standard_normal((200, 2)), rng.integers(0, 10, 200))
    _read_png(scatter, (200, 300))


# ------------------------------------------------------------------------------------------------
# what the figures show: integer ticks, curves that coincide, legends and boxes beside the data
# ------------------------------------------------------------------------------------------------


def _render(figure):
    """Draw ``figure`` on its Agg canvas and return the renderer: positions are final after this."""
    figure.canvas.draw()
    return figure.canvas.get_renderer()


def _pixels(figure) -> np.ndarray:
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba(), dtype=np.float64)[..., :3] / 255.0


def _ticks_in_view(axis) -> list[float]:
    low, high = sorted(axis.get_view_interval())
    span = high - low
    return [float(v) for v in axis.get_majorticklocs() if low - 1e-9 * span <= v <= high + 1e-9 * span]


def _assert_integer_ticks(axis, where: str) -> list[float]:
    ticks = _ticks_in_view(axis)
    assert ticks, f"{where}: no ticks in view"
    assert all(v == round(v) for v in ticks), f"{where}: non-integer ticks {ticks}"
    labels = axis.get_major_formatter().format_ticks(ticks)
    assert all(re.fullmatch(r"[-\u2212]?\d+", label) for label in labels), f"{where}: tick labels {labels}"
    return ticks


def _display_points(axes) -> np.ndarray:
    """Every data point of every line and scatter of ``axes``, in display (pixel) coordinates."""
    points = [line.get_transform().transform(line.get_xydata()) for line in axes.get_lines()]
    points += [collection.get_offset_transform().transform(collection.get_offsets()) for collection in axes.collections]
    return np.concatenate(points)


def _legends(figure) -> list:
    found = list(figure.legends)
    found += [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]
    return found


def _assert_no_point_under(bbox, points: np.ndarray, what: str) -> None:
    inside = (
        (points[:, 0] >= bbox.x0) & (points[:, 0] <= bbox.x1) & (points[:, 1] >= bbox.y0) & (points[:, 1] <= bbox.y1)
    )
    assert not inside.any(), f"{what} covers {int(inside.sum())} data points"


def test_one_epoch_curve_has_integer_ticks_and_a_visible_point():
    """loss.png after one epoch: the x axis showed 0.96, 0.98, 1.00, 1.02, 1.04 (MaxNLocator's
    integer=True gives up with fewer than two integers in view); each lone point is a marker."""
    figure = plots.curves_figure({"train loss": ([1], [0.5]), "test loss": ([1], [0.6])})
    _render(figure)
    axes = figure.axes[0]
    assert _assert_integer_ticks(axes.xaxis, "epoch axis") == [1.0]
    frame = axes.get_window_extent()
    for line in axes.get_lines():
        assert line.get_marker() not in (None, "", " ", "None"), line.get_label()
        assert line.get_markersize() >= 4, line.get_label()
        (x, y), = line.get_transform().transform(line.get_xydata())
        assert frame.x0 + 10 < x < frame.x1 - 10 and frame.y0 < y < frame.y1, line.get_label()
    # steps, and a few epochs: whole numbers too
    for x in ([1, 2], [1, 2, 3], list(range(1, 8)), list(range(0, 3001, 100))):
        figure = plots.curves_figure({"loss": (x, np.linspace(1, 0, len(x)))}, xlabel="step")
        _render(figure)
        _assert_integer_ticks(figure.axes[0].xaxis, f"step axis for {len(x)} steps")


def test_coinciding_curves_both_show_with_overlay_styles():
    """compare.png: scratch's curve, agreeing with torch's to 1e-7, was drawn under it and
    vanished. With REFERENCE_STYLE underneath and OVERLAY_STYLE on top both show: hiding either
    one changes many pixels of the picture."""
    steps = np.arange(1, 61)
    torch_loss = 0.5 + 0.3 * np.exp(-steps / 20) + 0.02 * np.sin(steps)
    scratch_name, torch_name = "scratch (training loss per step)", "torch (training loss per step)"
    figure = plots.curves_figure(
        {scratch_name: (steps, torch_loss + 1e-7), torch_name: (steps, torch_loss)}, xlabel="step",
        styles={scratch_name: plots.OVERLAY_STYLE, torch_name: plots.REFERENCE_STYLE},
    )  # fmt: skip
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    top, bottom = lines[scratch_name], lines[torch_name]
    assert top.get_zorder() > bottom.get_zorder()
    assert top.get_linewidth() < bottom.get_linewidth()
    assert top.get_linestyle() not in ("-", "solid")
    assert top.get_color() != bottom.get_color()
    for legend in _legends(figure):  # the legend shows both styles whatever the data do
        legend.remove()
    everything = _pixels(figure)
    for hidden in (top, bottom):
        hidden.set_visible(False)
        # > 0.3: more than the antialiased rim a line shows around an identical one drawn over it
        changed = np.abs(_pixels(figure) - everything).max(axis=-1) > 0.3
        hidden.set_visible(True)
        assert changed.sum() > 500, f"{hidden.get_label()} is hidden by the other curve ({changed.sum()} pixels)"


def test_compare_draws_scratch_over_torch_with_the_overlay_styles():
    """autoencoders/compare.py passes the styles for compare.png, naming both its curves."""
    source = (Path(__file__).resolve().parents[1] / "autoencoders" / "compare.py").read_text(encoding="utf-8")
    calls = [
        node for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "plots.save_curves"
        and "compare.png" in ast.unparse(node.args[0])
    ]  # fmt: skip
    assert len(calls) == 1
    (call,) = calls
    curves = {ast.literal_eval(key) for key in call.args[1].keys}
    styles = {keyword.arg: keyword.value for keyword in call.keywords}.get("styles")
    assert isinstance(styles, ast.Dict), "compare.png is drawn without styles"
    chosen = {ast.literal_eval(key): ast.unparse(value) for key, value in zip(styles.keys, styles.values)}
    assert set(chosen) == curves
    assert sorted(chosen.values()) == ["plots.OVERLAY_STYLE", "plots.REFERENCE_STYLE"]
    assert chosen[next(name for name in curves if name.startswith("torch"))] == "plots.REFERENCE_STYLE"


def test_curve_legend_never_covers_data():
    """compare-difference.png: a long label over data that fill the Axes, where 'best' has no
    free corner. The legend sits outside the Axes: no data point lies under it."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 1001)
    label = "|scratch - torch| / torch (exact agreement drawn at 6e-08)"
    figure = plots.curves_figure(
        {label: (steps, 10 ** rng.uniform(-8, -6, steps.size))}, xlabel="step", ylabel="relative loss difference",
        logy=True, title="how far the two runs drift apart",
    )  # fmt: skip
    renderer = _render(figure)
    legends = _legends(figure)
    assert len(legends) == 1
    _assert_no_point_under(legends[0].get_window_extent(renderer), _display_points(figure.axes[0]), "the legend")
    # and with several short-named curves as in loss.png
    figure = plots.curves_figure({f"curve {i}": (steps, rng.uniform(0, 1, steps.size)) for i in range(4)})
    renderer = _render(figure)
    for legend in _legends(figure):
        _assert_no_point_under(legend.get_window_extent(renderer), _display_points(figure.axes[0]), "the legend")


def test_scatter_legend_never_covers_points():
    rng = np.random.default_rng(0)
    points = rng.uniform(-3, 3, (5000, 2))  # fill the Axes: no empty corner for the legend
    figure = plots.scatter_figure(points, rng.integers(0, 10, len(points)))
    renderer = _render(figure)
    legends = _legends(figure)
    assert len(legends) == 1
    _assert_no_point_under(legends[0].get_window_extent(renderer), _display_points(figure.axes[0]), "the legend")


def test_histogram_summary_never_covers_bars():
    """The n / mean / std box sat in the top right corner, over the tallest bars of a
    distribution piled up at its right end; it now sits under the x label."""
    values = 1.0 - np.random.default_rng(0).exponential(0.3, 2000)
    figure = plots.histogram_figure(values, bins=30)
    renderer = _render(figure)
    axes = figure.axes[0]
    summaries = [text for text in axes.texts if "mean =" in text.get_text()]
    assert len(summaries) == 1 and "n = 2000" in summaries[0].get_text()
    box = summaries[0].get_window_extent(renderer)
    bars = [patch.get_window_extent(renderer) for patch in axes.patches if patch.get_height() > 0]
    assert bars
    assert not any(box.overlaps(bar) for bar in bars), "the summary covers bars"
    assert box.y1 < axes.get_window_extent(renderer).y0, "the summary is not below the Axes"


def test_histogram_counts_have_integer_ticks():
    """A histogram's y axis is a count: 0, 1, 2, 3, never 2.5."""
    for values in (np.random.default_rng(0).standard_normal(7), [0.1, 0.2, 0.2, 0.9], np.zeros(10)):
        figure = plots.histogram_figure(values, bins=5)
        _render(figure)
        _assert_integer_ticks(figure.axes[0].yaxis, f"count axis for {values}")


def test_histogram_of_integer_codes_gives_each_code_its_own_bar():
    """Integer values (codes): a bar centred on each integer with its exact count, and integer
    ticks on both axes. Equal-width bins over [min, max] put codes 5 and 6 at bin edges and
    misplaced every bar."""
    counts = [3, 0, 1, 2, 0, 1, 1, 0]
    codes = np.repeat(np.arange(len(counts)), counts)
    figure = plots.histogram_figure(codes, bins=len(counts), xlabel="code")
    _render(figure)
    axes = figure.axes[0]
    _assert_integer_ticks(axes.xaxis, "code axis")
    _assert_integer_ticks(axes.yaxis, "count axis")
    drawn = {patch.get_x() + patch.get_width() / 2: patch.get_height() for patch in axes.patches}
    assert all(centre == round(centre) for centre in drawn), sorted(drawn)
    assert {round(c): h for c, h in drawn.items() if h > 0} == {k: n for k, n in enumerate(counts) if n > 0}
    # two codes: matplotlib's own ticks would be -0.5, 0, 0.5, 1, 1.5
    figure = plots.histogram_figure([0, 1, 1], bins=2)
    _render(figure)
    assert _assert_integer_ticks(figure.axes[0].xaxis, "two codes") == [0.0, 1.0]
    # more distinct integers than bins: each bin holds the same number of them
    figure = plots.histogram_figure(np.arange(100), bins=30)
    widths = {patch.get_width() for patch in figure.axes[0].patches}
    heights = {patch.get_height() for patch in figure.axes[0].patches}
    assert widths == {4.0} and heights == {4.0}


def test_code_usage_shows_counts_per_entry_not_statistics_of_indices():
    counts = np.array([3, 0, 1, 2, 0, 1, 1, 0])
    figure = plots.code_usage_figure(counts, title="vq-vae, epoch 1")
    _render(figure)
    by_entry, by_rank = figure.axes
    bars = sorted((patch.get_x() + patch.get_width() / 2, patch.get_height()) for patch in by_entry.patches)
    assert [round(x) for x, _ in bars] == list(range(len(counts)))
    assert [h for _, h in bars] == counts.tolist()
    ranked = [patch.get_height() for patch in sorted(by_rank.patches, key=lambda patch: patch.get_x())]
    assert ranked == sorted(counts.tolist(), reverse=True)
    for axes in figure.axes:
        _assert_integer_ticks(axes.xaxis, "entry axis")
        _assert_integer_ticks(axes.yaxis, "count axis")
    # unused entries are marked where their (zero-height, invisible) bars would be
    marks = [line for line in by_entry.get_lines() if len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in marks] == [[1, 4, 7]]
    texts = [text.get_text() for axes in figure.axes for text in (axes.title, *axes.texts)]
    texts.append(figure.get_suptitle())
    words = " ".join(texts)
    assert "5 of 8" in words and "vq-vae, epoch 1" in words
    assert not re.search(r"\bmean\b|\bstd\b", words), words  # no statistics of code indices
    assert not _legends(figure)
    # two entries, used once and twice: matplotlib's own ticks would be 0.5 apart on both axes
    figure = plots.code_usage_figure([1, 2])
    _render(figure)
    for axes in figure.axes:
        _assert_integer_ticks(axes.xaxis, "entry axis of two")
        _assert_integer_ticks(axes.yaxis, "count axis up to 2")


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, d: plots.save_image_grid(p, d[:, 0, 0]), r"save_image_grid: images must have shape"),
        (lambda p, d: plots.save_image_grid(p, np.repeat(d, 3, axis=1)), r"save_image_grid: .*C=3"),
        (lambda p, d: plots.save_image_grid(p, d[:0]), r"save_image_grid: images is empty"),
        (lambda p, d: plots.save_image_grid(p, d, columns=0), r"save_image_grid: columns"),
        (lambda p, d: plots.save_image_grid(p.with_suffix(".jpg"), d), r"save_image_grid: path must end in .png"),
        (lambda p, d: plots.save_image_rows(p, [d[:4], d[:4, :, :6]]), r"save_image_rows: every row must have the same image size"),
        (lambda p, d: plots.save_image_rows(p, [np.repeat(d, 3, axis=1)]), r"save_image_rows: rows\[0\].*C=3"),
        (lambda p, d: plots.save_image_rows(p, [d[:4, 0, 0]]), r"save_image_rows: rows\[0\] must have shape"),
        (lambda p, d: plots.save_image_rows(p, d), r"save_image_rows: rows must be a list"),
        (lambda p, d: plots.save_image_rows(p, []), r"save_image_rows: rows is empty"),
        (lambda p, d: plots.save_image_rows(p, [d[:2], d[:2]], labels=["one"]), r"save_image_rows: got 1 labels for 2 rows"),
        (lambda p, d: plots.save_image_rows(p, [d[:2] * np.nan]), r"save_image_rows: rows\[0\] has 128 non-finite"),
        (lambda p, d: plots.save_filters(p, np.ones((4, 64)), (1, 7, 7)), r"save_filters: image_shape .* in_features=64"),
        (lambda p, d: plots.save_filters(p, np.ones((4, 64)), None), r"save_filters: image_shape must be"),
        (lambda p, d: plots.save_filters(p, np.ones(64), (8, 8)), r"save_filters: weight must be"),
        (lambda p, d: plots.save_curves(p, {}), r"save_curves: curves is empty"),
        (lambda p, d: plots.save_curves(p, {"a": ([], [])}), r"save_curves: curves\['a'\] is empty"),
        (lambda p, d: plots.save_curves(p, {"a": ([1, 2, 3], [1, 2])}), r"save_curves: curves\['a'\] has 3 x values but 2 y"),
        (lambda p, d: plots.save_curves(p, {"a": [1, 2, 3]}), r"save_curves: curves\['a'\] must be a pair"),
        (lambda p, d: plots.save_curves(p, [([1], [1])]), r"save_curves: curves must be a dict"),
        (lambda p, d: plots.save_curves(p, {"a": ([1, 2], [0, -1])}, logy=True), r"save_curves: logy=True"),
        (lambda p, d: plots.save_histogram(p, []), r"save_histogram: values is empty"),
        (lambda p, d: plots.save_histogram(p, [np.nan]), r"save_histogram: all 1 values"),
        (lambda p, d: plots.save_histogram(p, [1.0], bins=0), r"save_histogram: bins"),
        (lambda p, d: plots.save_histogram(p, ["a"]), r"save_histogram: values must hold real numbers"),
        (lambda p, d: plots.save_curves(p, {"a": ([1], [1])}, styles={"b": {}}), r"save_curves: styles names 'b'"),
        (lambda p, d: plots.save_curves(p, {"a": ([1], [1])}, styles={"a": {"lw": 2}}), r"save_curves: styles\['a'\] has unknown properties \['lw'\]"),
        (lambda p, d: plots.save_curves(p, {"a": ([1], [1])}, styles={"a": {"color": "nocolour"}}), r"save_curves: styles\['a'\]"),
        (lambda p, d: plots.save_curves(p, {"a": ([1], [1])}, styles=[{}]), r"save_curves: styles must be a dict"),
        (lambda p, d: plots.save_code_usage(p, [1, -1]), r"save_code_usage: counts must be non-negative whole numbers"),
        (lambda p, d: plots.save_code_usage(p, [1.5, 2]), r"save_code_usage: counts must be non-negative whole numbers"),
        (lambda p, d: plots.save_code_usage(p, np.ones((2, 2))), r"save_code_usage: counts must be 1-D"),
        (lambda p, d: plots.save_code_usage(p, []), r"save_code_usage: counts must be 1-D"),
        (lambda p, d: plots.save_scatter(p, np.ones((3, 3))), r"save_scatter: points must be \(N, 2\)"),
    ],
)  # fmt: skip
def test_bad_input_raises_value_error_naming_the_function(tmp_path, digits, call, message):
    target = tmp_path / "sub" / "out.png"
    with pytest.raises(ValueError, match=message):
        call(target, digits)
    assert not target.parent.exists(), "a refused call must not create directories"


# ------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------


def _fail_savefig(self, fname, *args, **kwargs):
    fname.write(PNG_SIGNATURE + b"half a picture")  # something reached the temporary file
    raise RuntimeError("disk full")


def _fail_replace(src, dst):
    raise OSError("rename refused")


@pytest.mark.parametrize("where", ["savefig", "replace"])
@pytest.mark.parametrize("kind", ["rows", "grid", "filters", "curves", "histogram", "code_usage", "scatter"])
def test_failed_write_leaves_target_unchanged_and_no_temporary_file(tmp_path, digits, monkeypatch, where, kind):
    import matplotlib.figure

    target = tmp_path / "artifact.png"
    calls = {
        "rows": lambda: plots.save_image_rows(target, [digits[:3]], labels=["x"]),
        "grid": lambda: plots.save_image_grid(target, digits[:4]),
        "filters": lambda: plots.save_filters(target, digits[:4].reshape(4, 64), (8, 8)),
        "curves": lambda: plots.save_curves(target, {"a": ([1, 2], [3, 4])}),
        "histogram": lambda: plots.save_histogram(target, [1.0, 2.0]),
        "code_usage": lambda: plots.save_code_usage(target, [3, 0, 1]),
        "scatter": lambda: plots.save_scatter(target, [[0.0, 1.0], [1.0, 0.0]], [0, 1]),
    }
    calls[kind]()  # a good, older version of the artifact
    before = target.read_bytes()
    if where == "savefig":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _fail_savefig)
    else:
        monkeypatch.setattr(os, "replace", _fail_replace)
    with pytest.raises((RuntimeError, OSError)):
        calls[kind]()
    assert target.read_bytes() == before
    assert _siblings(target) == ["artifact.png"]


def test_interrupt_mid_write_removes_the_temporary_file(tmp_path, digits, monkeypatch):
    import matplotlib.figure

    def interrupted(self, fname, *args, **kwargs):
        fname.write(b"\x89PNG")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plots.save_image_grid(tmp_path / "grid.png", digits[:4])
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_and_keeps_the_file_readable(tmp_path, digits):
    target = tmp_path / "grid.png"
    plots.save_image_grid(target, digits[:4])
    first = target.read_bytes()
    plots.save_image_grid(target, digits[4:8])
    assert target.read_bytes() != first
    assert target.stat().st_mode & 0o644 == 0o644  # not mkstemp's 0600
    assert _siblings(target) == ["grid.png"]


# ------------------------------------------------------------------------------------------------
# imports
# ------------------------------------------------------------------------------------------------


def test_import_is_lazy_and_pyplot_free(tmp_path):
    """Importing autoencoders.plots loads neither matplotlib nor torch; drawing never loads pyplot."""
    script = (
        "import sys, numpy as np\n"
        "import autoencoders.plots as plots\n"
        "assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules\n"
        f"plots.save_image_grid({str(tmp_path / 'g.png')!r}, np.random.default_rng(0).random((4, 5, 5)))\n"
        f"plots.save_curves({str(tmp_path / 'c.png')!r}, {{'a': ([1, 2], [1, 2])}})\n"
        "assert 'matplotlib.pyplot' not in sys.modules and 'torch' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, env=env, timeout=60)
