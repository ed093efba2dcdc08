"""Benchmark plots as matplotlib ``Figure`` objects (Agg canvas, no pyplot state); the suites
write them with ``report.write_png``.

- ``batch_sweep_figure``: training-step time against batch size, scratch and torch, one panel
  per model, log-log, with the ratio scratch/torch beneath each;
- ``thread_sweep_figure``: time against thread count, one panel per model, with the ratio;
- ``ratio_figure``: one bar per case, ratio scratch/torch on a log axis (left of 1: scratch faster).
"""

from __future__ import annotations

SCRATCH_COLOUR, TORCH_COLOUR = "tab:blue", "tab:orange"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _plain_log_labels(axis) -> None:
    """Label a log axis "0.4", "20" rather than "4 x 10^-1" (the training plots' formatter)."""
    from autoencoders.plots import _plain_log_labels as plain_log_labels

    plain_log_labels(axis)


def _errors(results, side):
    """Asymmetric error bars from the quartiles: (median - q1, q3 - median)."""
    return ([r[f"{side}_median_ms"] - r[f"{side}_q1_ms"] for r in results],
            [r[f"{side}_q3_ms"] - r[f"{side}_median_ms"] for r in results])


def _sweep_figure(results: list[dict], x_key: str, x_label: str, title: str, log_x: bool):
    models = list(dict.fromkeys(r["model"] for r in results))
    figure = _figure(3.4 * len(models) + 0.6, 5.6)
    axes = figure.subplots(2, len(models), squeeze=False, sharex="col", gridspec_kw={"height_ratios": [2.2, 1]})
    for column, model in enumerate(models):
        chosen = sorted((r for r in results if r["model"] == model), key=lambda r: r[x_key])
        xs = [r[x_key] for r in chosen]
        top, bottom = axes[0][column], axes[1][column]
        for side, colour in (("scratch", SCRATCH_COLOUR), ("torch", TORCH_COLOUR)):
            top.errorbar(xs, [r[f"{side}_median_ms"] for r in chosen], yerr=_errors(chosen, side), marker="o",
                         markersize=3.5, capsize=2, color=colour, label=side)
        top.set_yscale("log")
        _plain_log_labels(top.yaxis)
        top.set_title(model)
        top.grid(True, which="both", alpha=0.3)
        bottom.plot(xs, [r["ratio"] for r in chosen], marker="o", markersize=3.5, color="tab:green")
        bottom.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        bottom.set_xlabel(x_label)
        bottom.grid(True, which="both", alpha=0.3)
        if log_x:
            top.set_xscale("log", base=2)
            bottom.set_xscale("log", base=2)
        bottom.set_xticks(xs)
        bottom.set_xticklabels([str(x) for x in xs], rotation=90 if len(xs) > 6 else 0, fontsize=8)
        if column == 0:
            top.set_ylabel("ms per training step (median, IQR)")
            bottom.set_ylabel("scratch / torch")
            top.legend(fontsize=8)
    figure.suptitle(title)
    return figure


def batch_sweep_figure(results: list[dict], title: str = "Training step against batch size"):
    """Time per step against batch size (log-log), one column per model; ratio beneath."""
    return _sweep_figure(results, "batch_size", "batch size", title, log_x=True)


def thread_sweep_figure(results: list[dict], title: str = "Training step against thread count"):
    """Time per step against thread count (log time), one column per model; ratio beneath."""
    return _sweep_figure(results, "thread_count", "threads (Numba, torch and BLAS alike)", title, log_x=False)


def ratio_figure(results: list[dict], title: str):
    """One horizontal bar per case: scratch median / torch median, log axis, a line at 1."""
    figure = _figure(8.0, 0.26 * len(results) + 1.4)
    axis = figure.subplots()
    names = [r["name"] + (f" (B={r['batch_size']})" if r.get("batch_size") is not None else "") for r in results]
    ratios = [r["ratio"] for r in results]
    colours = [SCRATCH_COLOUR if ratio <= 1 else TORCH_COLOUR for ratio in ratios]
    positions = list(range(len(results)))[::-1]
    # each bar runs from 1 to the ratio, so faster and slower point away from the line at 1
    axis.barh(positions, [ratio - 1 for ratio in ratios], left=1.0, color=colours, height=0.7)
    axis.set_xscale("log")
    _plain_log_labels(axis.xaxis)
    axis.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axis.set_yticks(positions)
    axis.set_yticklabels(names, fontsize=7)
    axis.set_xlabel("scratch median / torch median (< 1: scratch faster)")
    axis.grid(True, axis="x", which="both", alpha=0.3)
    axis.set_title(title)
    return figure
