"""``autoencoders compare``: both backends side by side, same weights, batches and noise."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from autoencoders.backends import ScratchBackend
from autoencoders.data import binarize, load_dataset
from autoencoders.runs.checkpoint import atomic_write_json
from autoencoders.runs.directory import RunDirectoryError, claim_new_run_directory, claim_unique_run_directory
from autoencoders.threads import set_threads
from autoencoders.training import (
    TrainConfig,
    _batches,
    _progress,
    complete_config,
    epoch_rng,
    evaluate,
    loss_unit,
    model_config_for,
)
from scratch.models import draw_noise


def max_parameter_difference(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[key].astype(np.float64) - b[key].astype(np.float64)))) for key in a)


def compare(config: TrainConfig, out_dir, *, progress: bool = True, log=print, unique: bool = False,
            threads: int | None = None, report: bool = True) -> dict:
    """Train ``config.model`` with both backends in lockstep; print and save the comparison.

    ``out_dir`` must be new or empty; it is locked and marked like a run directory
    (``autoencoders.runs.directory``), so a second compare never overwrites it. With ``unique=True`` it is a
    base name whose first free variant (``-2``, ``-3``, ...) is taken. ``report``: write
    OUT_DIR/report.html at the end (``autoencoders.report``)."""
    from autoencoders.backends import TorchBackend

    out_dir = Path(out_dir)
    threads = set_threads(threads)  # torch, Numba and BLAS alike
    dataset = load_dataset(config.dataset, data_dir=config.data_dir)
    model_config = model_config_for(config, dataset)
    scratch = ScratchBackend(config, model_config)
    torch_backend = TorchBackend(config, model_config)
    torch_backend.load_weights(scratch.weights())
    try:
        out_dir, lock = claim_unique_run_directory(out_dir, "compare") if unique else \
            (out_dir, claim_new_run_directory(out_dir, "compare"))
    except OSError as error:
        raise RunDirectoryError(f"cannot write to {out_dir}: {error.strerror or error}") from None
    complete_config(config, scratch.model.config)  # compare.json records the whole model configuration
    with lock:
        result = _compare(config, out_dir, dataset, {"scratch": scratch, "torch": torch_backend}, threads, progress, log)
        if report:
            from autoencoders.report import write_report

            log(f"wrote {write_report(out_dir)}")
        return result


def _compare(config: TrainConfig, out_dir: Path, dataset, backends: dict, threads: dict, progress: bool, log) -> dict:
    from autoencoders import plots

    scratch, torch_backend = backends["scratch"], backends["torch"]
    dtype = np.dtype(config.dtype)
    log(f"compare {config.model} on {config.dataset}: {config.epochs} epochs, batch {config.batch_size}, "
        f"{config.dtype}, threads {threads}; test losses in {loss_unit(config.model, scratch.model.config)}")
    log(f"{'epoch':>5} {'scratch test':>14} {'torch test':>14} {'max |Δparam|':>13} "
        f"{'scratch ms/step':>16} {'torch ms/step':>14} {'ratio':>6}")
    epochs, step_losses = [], {"scratch": [], "torch": []}
    steps_per_epoch = math.ceil(len(dataset.train_images) / config.batch_size)
    for epoch in range(1, config.epochs + 1):
        rng = epoch_rng(config.seed, epoch)
        order = rng.permutation(len(dataset.train_images))
        times = {"scratch": [], "torch": []}
        for batch, labels in _progress(_batches(dataset.train_images, config.batch_size, order, labels=dataset.train_labels),
                                       steps_per_epoch, f"epoch {epoch}/{config.epochs}", progress):
            x = binarize(batch, config.binarize, rng).astype(dtype, copy=False)
            noise = draw_noise(config.model, scratch.model.config, x.shape, rng, dtype)
            for name, backend in backends.items():
                started = time.perf_counter()
                parts = backend.train_step(x, noise, labels=labels)
                times[name].append(time.perf_counter() - started)
                step_losses[name].append(parts["loss"])
        test = {name: evaluate(backend, config, dataset.test_images, dataset.test_labels)
                for name, backend in backends.items()}
        # the first epoch's first step includes Numba's compile (or cache load) time: report medians
        entry = {
            "epoch": epoch,
            "scratch_test_loss": test["scratch"]["loss"], "torch_test_loss": test["torch"]["loss"],
            "max_parameter_difference": max_parameter_difference(scratch.weights(), torch_backend.weights()),
            "scratch_ms_per_step": 1e3 * float(np.median(times["scratch"])),
            "torch_ms_per_step": 1e3 * float(np.median(times["torch"])),
        }
        entry["ratio"] = entry["scratch_ms_per_step"] / entry["torch_ms_per_step"]
        epochs.append(entry)
        log(f"{epoch:>5} {entry['scratch_test_loss']:>14.6f} {entry['torch_test_loss']:>14.6f} "
            f"{entry['max_parameter_difference']:>13.3e} {entry['scratch_ms_per_step']:>16.3f} "
            f"{entry['torch_ms_per_step']:>14.3f} {entry['ratio']:>6.2f}")
    result = {"config": config.__dict__, "threads": threads, "epochs": epochs, "step_losses": step_losses}
    atomic_write_json(out_dir / "compare.json", result)
    steps = list(range(1, len(step_losses["scratch"]) + 1))
    plots.save_curves(out_dir / "compare.png", {
        "scratch (training loss per step)": (steps, step_losses["scratch"]),
        "torch (training loss per step)": (steps, step_losses["torch"]),
    }, xlabel="step", ylabel=f"training loss, {loss_unit(config.model, scratch.model.config)}",
        title=f"{config.model}: scratch vs torch, max |Δparam| {epochs[-1]['max_parameter_difference']:.1e}",
        styles={"scratch (training loss per step)": plots.OVERLAY_STYLE,  # thin, dashed, on top
                "torch (training loss per step)": plots.REFERENCE_STYLE})  # wide, translucent, underneath
    scratch_losses, torch_losses = np.array(step_losses["scratch"]), np.array(step_losses["torch"])
    relative = np.abs(scratch_losses - torch_losses) / np.abs(torch_losses)
    # exact agreement (0) cannot sit on a log axis: drawn at the unit roundoff instead
    floor = float(np.finfo(dtype).eps) / 2
    plots.save_curves(out_dir / "compare-difference.png", {
        f"|scratch - torch| / torch (exact agreement drawn at {floor:.0e})": (steps, np.maximum(relative, floor)),
    }, xlabel="step", ylabel="relative loss difference", logy=True,
        title=f"{config.model}, {config.dtype}: how far the two runs drift apart")
    log(f"wrote {out_dir / 'compare.png'}, {out_dir / 'compare-difference.png'}, {out_dir / 'compare.json'}")
    return result
