"""``autoencoders report RUN_DIR``: one self-contained HTML page for a training run or a compare.

``write_report(run_dir)`` writes ``RUN_DIR/report.html`` (atomically) and returns its path. The
page needs nothing but itself: every picture is embedded as a ``data:image/png;base64`` URI, the
style sheet is inline, there is no script, and a Content-Security-Policy meta tag forbids the
browser any other load (a stray external reference shows as an error, never as a request).

A training run (``config.json``) gets: a title (model, dataset, backend), its configuration (nested
objects such as ``model_config`` as nested tables), the metrics of every epoch of
``metrics.jsonl``, the curves (``loss.png``, ``perplexity.png``), every per-epoch picture
(``NAME-epochNNN.png`` in ``RUN_DIR/pictures/`` or, in runs written before that folder, in
``RUN_DIR`` itself) grouped by kind with the epochs in order, any other PNG of the run (the
``reconstruct`` command's ``reconstructions.png``), and the environment. A compare directory
(``compare.json``) gets both backends' test losses per epoch, the largest parameter difference,
ms per step and their ratio, ``compare.png`` and ``compare-difference.png``, and the environment.

Numbers: each metric cell shows ``format(value, ".6g")`` and carries the exact value in
``data-value`` (``repr`` of the JSON number: ``float(cell["data-value"]) == value`` bit for bit),
its column in ``data-metric`` (``train.loss``, ``test.kl``, ``seconds``...; a compare's keys as
compare.json names them) and its row's epoch in ``data-epoch`` on the ``<tr>``; hovering shows the
exact value too. A missing value shows a dash and carries no ``data-value``.

The environment is that of the process writing the report (versions, host, date, the BLAS that
threadpoolctl sees), next to what the run itself recorded: the thread counts in its newest
checkpoint's ``state.json`` (a compare: in ``compare.json``).

Every JSON file is read bounded and parsed without unpickling anything; a missing or damaged one
raises ``ReportError`` (a ``ValueError``) in one line naming the file. A picture that is not a PNG
is not embedded: the page says so in its place.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
import platform
import re
import struct
import sys
from importlib import metadata
from pathlib import Path

from autoencoders._files import atomic_write_bytes
from autoencoders._reader import JSON_LIMIT, read_bounded
from autoencoders.runs.checkpoint import CheckpointError, latest_checkpoint, read_json

REPORT_NAME = "report.html"
PICTURES_DIRECTORY = "pictures"
# One picture may hold this much; a run's pictures are tens of KiB each.
PICTURE_LIMIT = 64 << 20
# The curves a run keeps at its top level, drawn in this order before the per-epoch pictures.
CURVES = ("loss.png", "perplexity.png")
COMPARE_PICTURES = ("compare.png", "compare-difference.png")
# Per-epoch pictures: NAME-epochNNN.png.
_EPOCH_PICTURE = re.compile(r"(?P<kind>.+)-epoch(?P<epoch>[0-9]+)\.png")
# Kinds in the order a reader wants them; kinds not listed follow in alphabetical order.
_KIND_ORDER = ("reconstructions", "samples", "interpolation", "traversals", "latent", "filters",
               "activations", "unit-means", "codebook-usage")
# Pictures of digits (grids of small images): drawn with hard pixel edges when scaled.
_DIGIT_KINDS = {"reconstructions", "samples", "interpolation", "traversals", "filters"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The distributions whose versions the environment lists (metadata only: nothing is imported).
_DISTRIBUTIONS = ("autoencoders", "numpy", "numba", "torch", "safetensors", "matplotlib", "scikit-learn", "threadpoolctl")
_COMPARE_COLUMNS = (
    ("scratch_test_loss", "scratch test loss"),
    ("torch_test_loss", "torch test loss"),
    ("max_parameter_difference", "max |Δparam|"),
    ("scratch_ms_per_step", "scratch ms/step"),
    ("torch_ms_per_step", "torch ms/step"),
    ("ratio", "ratio scratch/torch"),
)


class ReportError(ValueError):
    """A directory that is not a run or compare directory, or a file of it that cannot be read:
    one line naming the file and the problem."""


def write_report(run_dir) -> Path:
    """Write ``RUN_DIR/report.html`` for the training run or compare directory ``run_dir``.

    Returns
    -------
    Path
        The report written.

    Raises
    ------
    ReportError
        (a ``ValueError``) ``run_dir`` is not a directory, holds neither ``config.json`` nor
        ``compare.json``, or one of the files the report reads is missing or damaged; the message
        names the file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    if (run_dir / "compare.json").exists():
        page = _compare_page(run_dir)
    elif (run_dir / "config.json").exists():
        page = _run_page(run_dir)
    else:
        raise ReportError(f"{run_dir}: not a run or compare directory (it holds neither config.json nor compare.json)")
    return atomic_write_bytes(run_dir / REPORT_NAME, page.encode("utf-8"))


def format_number(value) -> str:
    """How a metric cell shows ``value``: six significant digits (integers whole)."""
    if isinstance(value, int):
        return str(value)
    return format(value, ".6g")


# -- reading -------------------------------------------------------------------------------


def _read_object(path: Path) -> dict:
    try:
        return read_json(path)
    except CheckpointError as error:
        raise ReportError(str(error)) from None


def _read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl: one JSON object with an integer "epoch" per non-empty line."""
    try:
        data = read_bounded(path, JSON_LIMIT, ReportError, reason="the most a JSON file of this library may hold")
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ReportError(f"{path}: not valid JSON lines (not UTF-8 text: {error})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise ReportError(f"{path}: line {number} is not valid JSON ({' '.join(str(error).split())})") from None
        epoch = entry.get("epoch") if isinstance(entry, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise ReportError(f"{path}: line {number} is not an epoch's metrics (expected an object with an integer \"epoch\")")
        entries.append(entry)
    return entries


def _recorded_threads(run_dir: Path) -> tuple[dict | None, str]:
    """(thread counts, where they come from) of the run's newest checkpoint; (None, why) when
    the run has no checkpoint yet."""
    if not (run_dir / "checkpoints").exists():
        return None, "no checkpoint yet"
    try:
        directory = latest_checkpoint(run_dir)
    except CheckpointError as error:
        raise ReportError(str(error)) from None
    state_path = directory / "state.json"
    state = _read_object(state_path)
    threads = state.get("threads")
    if threads is None:
        return None, f"not recorded in {directory.name}/state.json (a run written before they were)"
    if not isinstance(threads, dict):
        raise ReportError(f"{state_path}: 'threads' must be an object of thread counts, found {str(threads)[:60]}")
    return threads, f"recorded in checkpoints/{directory.name}/state.json"


class _Picture:
    """A PNG file of the run, read and checked: ``data`` (None when not a PNG), its size, the problem."""

    def __init__(self, path: Path, label: str):
        self.path, self.label = path, label
        self.data = self.width = self.height = None
        self.problem = ""
        try:
            data = read_bounded(path, PICTURE_LIMIT, ReportError, reason="the most a picture of the report may hold")
        except ReportError as error:
            self.problem = str(error)
            return
        if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
            self.problem = f"{path}: not a PNG image; not embedded"
            return
        self.width, self.height = struct.unpack(">II", data[16:24])
        self.data = data


def _picture_files(run_dir: Path) -> tuple[dict[str, dict[int, Path]], list[Path]]:
    """({kind: {epoch: file}}, other PNG files) of ``RUN_DIR/pictures/`` and ``RUN_DIR``; a
    per-epoch picture in both places (a run resumed across the change of layout) is taken from
    ``pictures/``. The curves are not included."""
    by_kind: dict[str, dict[int, Path]] = {}
    others = []
    for folder in (run_dir / PICTURES_DIRECTORY, run_dir):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.png")):
            if not path.is_file() or (folder == run_dir and path.name in CURVES + COMPARE_PICTURES):
                continue
            match = _EPOCH_PICTURE.fullmatch(path.name)
            if match:
                by_kind.setdefault(match["kind"], {}).setdefault(int(match["epoch"]), path)
            else:
                others.append(path)
    return by_kind, others


def _kind_key(kind: str) -> tuple:
    return (_KIND_ORDER.index(kind), "") if kind in _KIND_ORDER else (len(_KIND_ORDER), kind)


# -- HTML ----------------------------------------------------------------------------------

_e = html.escape

_STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
header { background: var(--soft); border-bottom: 1px solid var(--line); }
header > div, main { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header > div { padding-top: 18px; padding-bottom: 12px; }
h1 { font-size: 26px; margin: 0 0 4px; font-weight: 600; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); font-weight: 600; }
h3 { font-size: 16px; margin: 18px 0 6px; font-weight: 600; }
.subtitle { color: var(--muted); margin: 0 0 10px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; font-size: 14px; }
nav a:hover { text-decoration: underline; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 8px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: var(--soft); font-weight: 600; }
th.group { text-align: center; }
tbody tr:nth-child(even) > td, tbody tr:nth-child(even) > th { background: #fbfcfd; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; }
table.keys > tbody > tr > th { background: var(--soft); font-weight: 600; white-space: nowrap; }
table.keys table { margin: 0; }
.scroll { overflow-x: auto; }
.row { display: flex; flex-wrap: wrap; gap: 0 40px; align-items: flex-start; }
.row > section { flex: 0 1 auto; min-width: 0; max-width: 100%; }
.row > section:last-child { flex: 1 1 400px; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px; }
.muted { color: var(--muted); }
.problem { color: #b3261e; font-weight: 600; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px 18px; align-items: flex-start; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 13px; color: var(--muted); margin-top: 3px; }
/* Digit grids keep hard pixel edges where the screen enlarges them (a HiDPI display shows an image
   at its natural CSS size with 2 device pixels per image pixel); shrunk, smoothing reads better. */
@media (min-resolution: 1.5dppx) { img.digits { image-rendering: pixelated; } }
details { margin: 10px 0 18px; }
summary { cursor: pointer; font-size: 16px; font-weight: 600; margin-bottom: 8px; }
summary .muted { font-weight: 400; font-size: 14px; }
footer { max-width: 1280px; margin: 40px auto 24px; padding: 10px 24px 0; border-top: 1px solid var(--line);
         color: var(--muted); font-size: 13px; }
"""

# No script, no fetch: pictures come from data: URIs, style from the page itself.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _page(title: str, subtitle: str, sections: list, run_dir: Path, written: str) -> str:
    """The document: ``sections`` are (anchor, heading, body HTML), or lists of them to set side by side."""
    flat = [item for section in sections for item in (section if isinstance(section, list) else [section])]
    nav = "".join(f'<a href="#{_e(anchor)}">{_e(heading)}</a>' for anchor, heading, _ in flat)

    def block(anchor, heading, content):
        return f'<section id="{_e(anchor)}"><h2>{_e(heading)}</h2>{content}</section>\n'

    body = "".join(f'<div class="row">{"".join(block(*item) for item in section)}</div>\n'
                   if isinstance(section, list) else block(*section) for section in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(_POLICY)}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><div><h1>{_e(title)}</h1><p class=\"subtitle\">{subtitle}</p><nav>{nav}</nav></div></header>\n"
        f"<main>\n{body}</main>\n"
        f"<footer>Written by <code>autoencoders report</code> from <code>{_e(str(run_dir.resolve()))}</code> "
        f"on {_e(written)}.</footer>\n</body>\n</html>\n"
    )


def _scalar(value) -> str:
    """A configuration value as text: strings as they are, the rest as JSON writes them."""
    if isinstance(value, str):
        return _e(value)
    try:
        return f'<span class="mono">{_e(json.dumps(value, allow_nan=True))}</span>'
    except (TypeError, ValueError):  # pragma: no cover - JSON values only
        return _e(repr(value))


def _value_html(value) -> str:
    """A configuration value: an object as a nested table, the rest as text."""
    if isinstance(value, dict):
        if not value:
            return '<span class="mono">{}</span> <span class="muted">(empty: the defaults)</span>'
        return _keys_table(value)
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return '<span class="mono">' + _e(json.dumps(value)) + "</span>"
    return _scalar(value)


def _keys_table(mapping: dict) -> str:
    rows = "".join(f"<tr><th>{_e(str(key))}</th><td>{_value_html(value)}</td></tr>" for key, value in mapping.items())
    return f'<table class="keys"><tbody>{rows}</tbody></table>'


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value, metric: str, best: bool = False) -> str:
    """A metric cell: the shown number, the exact one in ``data-value`` and the tooltip."""
    if value is None:
        return f'<td class="number muted" data-metric="{_e(metric)}">–</td>'
    if not _is_number(value):
        return f'<td data-metric="{_e(metric)}">{_e(str(value))}</td>'
    exact = repr(value)
    classes = "number best" if best else "number"
    return (f'<td class="{classes}" data-metric="{_e(metric)}" data-value="{_e(exact)}" title="{_e(exact)}">'
            f"{_e(format_number(value))}</td>")


def _metrics_table(entries: list[dict]) -> str:
    """Every epoch: a group of columns per object ("train", "test"), then the scalars ("seconds"...)."""
    groups: dict[str, list[str]] = {}
    scalars: list[str] = []
    for entry in entries:
        for key, value in entry.items():
            if key == "epoch":
                continue
            if isinstance(value, dict):
                parts = groups.setdefault(key, [])
                parts.extend(part for part in value if part not in parts)
            elif key not in scalars and key not in groups:
                scalars.append(key)
    test_losses = [entry.get("test", {}).get("loss") for entry in entries if isinstance(entry.get("test"), dict)]
    finite = [loss for loss in test_losses if _is_number(loss) and math.isfinite(loss)]
    best = min(finite) if finite else None
    top = '<th rowspan="2">epoch</th>' + "".join(
        f'<th class="group" colspan="{len(parts)}">{_e(group)}</th>' for group, parts in groups.items() if parts)
    top += "".join(f'<th rowspan="2" class="number">{_e(name.replace("_", " "))}</th>' for name in scalars)
    second = "".join(f'<th class="number">{_e(part)}</th>' for parts in groups.values() for part in parts)
    rows = []
    for entry in entries:
        cells = [f'<th class="number">{entry["epoch"]}</th>']
        for group, parts in groups.items():
            values = entry.get(group) if isinstance(entry.get(group), dict) else {}
            for part in parts:
                value = values.get(part)
                cells.append(_cell(value, f"{group}.{part}", best=group == "test" and part == "loss" and value == best))
        cells.extend(_cell(entry.get(name), name) for name in scalars)
        rows.append(f'<tr data-epoch="{entry["epoch"]}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="metrics" id="metrics-table"><thead><tr>{top}</tr><tr>{second}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="muted">Six significant digits; hover a number for its exact value. '
            "The best test loss is in bold.</p>")


def _figure(picture: _Picture, caption: str, digits: bool = False) -> str:
    if picture.data is None:
        return f'<figure><p class="problem">{_e(picture.problem)}</p><figcaption>{_e(caption)}</figcaption></figure>'
    uri = "data:image/png;base64," + base64.b64encode(picture.data).decode("ascii")
    name = picture.path.name
    classes = ' class="digits"' if digits else ""
    return (f'<figure><img{classes} src="{uri}" width="{picture.width}" height="{picture.height}" '
            f'alt="{_e(picture.label)}" data-file="{_e(name)}"><figcaption>{_e(caption)}</figcaption></figure>')


def _relative(path: Path, run_dir: Path) -> str:
    return path.relative_to(run_dir).as_posix()


def _curves_section(run_dir: Path, names) -> str:
    figures = [_figure(_Picture(run_dir / name, name), name) for name in names if (run_dir / name).is_file()]
    if not figures:
        return '<p class="muted">No curves yet.</p>'
    return f'<div class="gallery">{"".join(figures)}</div>'


def _pictures_section(run_dir: Path) -> str:
    by_kind, others = _picture_files(run_dir)
    if not by_kind and not others:
        return '<p class="muted">No pictures (none written yet, or image-every skipped them).</p>'
    parts = []
    for kind in sorted(by_kind, key=_kind_key):
        epochs = sorted(by_kind[kind])
        listed = ", ".join(str(epoch) for epoch in epochs)
        figures = "".join(_figure(_Picture(by_kind[kind][epoch], f"{kind}, epoch {epoch}"),
                                  f"epoch {epoch} · {_relative(by_kind[kind][epoch], run_dir)}", digits=kind in _DIGIT_KINDS)
                          for epoch in epochs)
        parts.append(f'<details open><summary>{_e(kind)} <span class="muted">· epoch{"s" if len(epochs) > 1 else ""} '
                     f'{_e(listed)}</span></summary><div class="gallery">{figures}</div></details>')
    if others:
        figures = "".join(_figure(_Picture(path, path.name), _relative(path, run_dir), digits=path.stem in _DIGIT_KINDS)
                          for path in others)
        parts.append(f'<details open><summary>other pictures</summary><div class="gallery">{figures}</div></details>')
    return "".join(parts)


def _blas() -> list[dict]:
    """threadpoolctl's view of the BLAS libraries loaded in this process (NumPy's, at least)."""
    try:
        import numpy  # noqa: F401 - loads its BLAS, which threadpoolctl then sees
        from threadpoolctl import threadpool_info
        return [info for info in threadpool_info() if info.get("user_api") == "blas"]
    except Exception:  # noqa: BLE001 - the environment section is informative; never fail the report for it
        return []


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _environment_section(threads: dict | None, threads_source: str, written: str) -> str:
    versions = {"python": platform.python_version()} | {name: _version(name) for name in _DISTRIBUTIONS}
    host = {"host": platform.node() or "unknown", "platform": platform.platform(), "CPUs": os.cpu_count(),
            "python executable": sys.executable, "report written": written}
    if os.environ.get("OPENBLAS_CORETYPE"):
        host["OPENBLAS_CORETYPE"] = os.environ["OPENBLAS_CORETYPE"]
    if threads:
        recorded = _keys_table(threads) + f'<p class="muted">{_e(threads_source)}</p>'
    else:
        recorded = f'<p class="muted">{_e(threads_source)}</p>'
    libraries = _blas()
    if libraries:
        columns = ("internal_api", "version", "architecture", "threading_layer", "num_threads", "filepath")
        head = "".join(f"<th>{_e(column.replace('_', ' '))}</th>" for column in columns)
        rows = "".join("<tr>" + "".join(f"<td>{_e(str(info.get(column, '')))}</td>" for column in columns) + "</tr>"
                       for info in libraries)
        blas = f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    else:
        blas = '<p class="muted">threadpoolctl found no BLAS library.</p>'
    return ('<div class="gallery">'
            f"<div><h3>Versions</h3>{_keys_table(versions)}</div>"
            f"<div><h3>Host</h3>{_keys_table(host)}</div>"
            f"<div><h3>Thread counts of the run</h3>{recorded}</div></div>"
            f'<h3>BLAS</h3><p class="muted">As threadpoolctl sees it in the process that wrote this report.</p>{blas}')


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")


def _run_page(run_dir: Path) -> str:
    config = _read_object(run_dir / "config.json")
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.exists():
        raise ReportError(f"{metrics_path}: not found (the run has not finished an epoch yet)")
    entries = _read_metrics(metrics_path)
    threads, threads_source = _recorded_threads(run_dir)
    written = _now()
    model, dataset, backend = (str(config.get(key, "?")) for key in ("model", "dataset", "backend"))
    title = f"{model} on {dataset} · {backend} backend"
    summary = [f"{len(entries)} of {_e(str(config.get('epochs', '?')))} epochs"]
    if entries and isinstance(entries[-1].get("test"), dict) and _is_number(entries[-1]["test"].get("loss")):
        summary.append(f"test loss {_e(format_number(entries[-1]['test']['loss']))} after epoch {entries[-1]['epoch']}")
    seconds = [entry["seconds"] for entry in entries if _is_number(entry.get("seconds"))]
    if seconds:
        summary.append(f"{sum(seconds):.1f} s of training")
    summary.append(f"report written {_e(written)}")
    curves = [name for name in CURVES if (run_dir / name).is_file()]
    sections = [
        ("metrics", "Metrics", (_metrics_table(entries) + _units_note(config)) if entries
         else '<p class="muted">No epoch finished yet.</p>'),
        [("configuration", "Configuration", _keys_table(config) + '<p class="muted">config.json</p>'),
         ("curves", "Curves", _curves_section(run_dir, curves))],
        ("pictures", "Pictures", _pictures_section(run_dir)),
        ("environment", "Environment", _environment_section(threads, threads_source, written)),
    ]
    return _page(title, " · ".join(summary), sections, run_dir, written)


def _units_note(config: dict) -> str:
    """What the numbers measure: the model's loss unit (``autoencoders.training.loss_unit``)."""
    from autoencoders.training import loss_unit

    try:
        unit = loss_unit(str(config.get("model")), config.get("model_config") or {})
    except KeyError:  # a model this version does not know
        return ""
    return (f'<p class="muted" id="units">Loss and its parts in {_e(unit)}; bce and mse: the test reconstruction\'s '
            "per-pixel binary cross-entropy and mean squared error; seconds: the epoch's wall time.</p>")


def _compare_table(epochs: list) -> str:
    head = '<th>epoch</th>' + "".join(f'<th class="number">{_e(label)}</th>' for _, label in _COMPARE_COLUMNS)
    rows = []
    for entry in epochs:
        cells = [f'<th class="number">{_e(str(entry.get("epoch", "?")))}</th>']
        cells.extend(_cell(entry.get(key), key) for key, _ in _COMPARE_COLUMNS)
        rows.append(f'<tr data-epoch="{_e(str(entry.get("epoch", "?")))}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="metrics" id="metrics-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="muted">Test losses after each epoch of both backends trained in lockstep from the same weights, '
            "batches and noise; the largest absolute difference of any parameter; median milliseconds per training "
            "step; the ratio is scratch's time over torch's. Hover a number for its exact value.</p>")


def _compare_page(run_dir: Path) -> str:
    path = run_dir / "compare.json"
    result = _read_object(path)
    epochs = result.get("epochs")
    if not isinstance(epochs, list) or not all(isinstance(entry, dict) for entry in epochs):
        raise ReportError(f"{path}: 'epochs' must be a list of objects, one per epoch")
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    threads = result.get("threads") if isinstance(result.get("threads"), dict) else None
    written = _now()
    model, dataset, dtype = (str(config.get(key, "?")) for key in ("model", "dataset", "dtype"))
    title = f"compare {model} on {dataset} · scratch vs torch"
    summary = [f"{len(epochs)} epoch{'s' if len(epochs) != 1 else ''}", _e(dtype)]
    steps = result.get("step_losses")
    if isinstance(steps, dict) and isinstance(steps.get("scratch"), list):
        summary.append(f"{len(steps['scratch'])} training steps per backend")
    if epochs and _is_number(epochs[-1].get("max_parameter_difference")):
        summary.append(f"max |Δparam| {_e(format(epochs[-1]['max_parameter_difference'], '.2e'))} after the last epoch")
    summary.append(f"report written {_e(written)}")
    sections = [
        ("comparison", "Comparison", _compare_table(epochs) if epochs else '<p class="muted">No epochs.</p>'),
        ("curves", "Curves", _curves_section(run_dir, COMPARE_PICTURES)),
        ("configuration", "Configuration", _keys_table(config) + '<p class="muted">compare.json "config"</p>'),
        ("environment", "Environment", _environment_section(threads, "recorded in compare.json", written)),
    ]
    return _page(title, " · ".join(summary), sections, run_dir, written)
