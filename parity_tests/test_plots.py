"""autoencoders.plots: every function writes a real, non-blank PNG, atomically, and refuses bad input.

Images are the 8 x 8 handwritten digits that ship with scikit-learn, so a grid of distinct
images is distinct for real. Everything is written under tmp_path.
"""

from __future__ import annotations

import os
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
@pytest.mark.parametrize("kind", ["rows", "grid", "filters", "curves", "histogram"])
def test_failed_write_leaves_target_unchanged_and_no_temporary_file(tmp_path, digits, monkeypatch, where, kind):
    import matplotlib.figure

    target = tmp_path / "artifact.png"
    calls = {
        "rows": lambda: plots.save_image_rows(target, [digits[:3]], labels=["x"]),
        "grid": lambda: plots.save_image_grid(target, digits[:4]),
        "filters": lambda: plots.save_filters(target, digits[:4].reshape(4, 64), (8, 8)),
        "curves": lambda: plots.save_curves(target, {"a": ([1, 2], [3, 4])}),
        "histogram": lambda: plots.save_histogram(target, [1.0, 2.0]),
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
