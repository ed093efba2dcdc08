"""One training loop for both backends, over the same batches and the same noise.

Determinism is by construction: every random draw of epoch ``e`` (batch order, dynamic
binarization, corruption noise, ε) comes from ``default_rng([seed, 0, e])``, and evaluation
draws from ``default_rng([seed, 1])``. A run resumed from the checkpoint of epoch ``e`` therefore
replays epoch ``e + 1`` exactly as an uninterrupted run would, with no generator state to save.
The weights are initialised by the scratch model from ``seed`` and copied into the torch twin
when ``backend="torch"``, so both backends start from identical weights too.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from autoencoders import distributed
from autoencoders._faults import kill_point
from autoencoders._files import atomic_write_bytes, remove_temporaries
from autoencoders.backends import make_backend
from autoencoders.data import BINARIZATION_MODES, DATASET_NAMES, Dataset, binarize, load_dataset
from autoencoders.runs.checkpoint import (
    CheckpointError,
    atomic_write_json,
    checkpoint_name,
    latest_checkpoint,
    prune_checkpoints,
    publish_weights,
    read_checkpoint,
    read_json,
    write_checkpoint,
)
from autoencoders.runs.directory import (
    MARKER_NAME,
    RunDirectoryError,
    RunLock,
    claim_new_run_directory,
    claim_unique_run_directory,
    lock_run_directory,
)
from autoencoders.threads import check_threads, current_thread_counts, set_threads, start_pools
from scratch.models import REGISTRY, draw_noise, model_names

BACKENDS = ("scratch", "torch")
DTYPES = ("float32", "float64")
# One hidden layer whose activations are the code a penalty shapes (or, tied-ae, a constraint):
# their runs also picture those activations (``write_code_artifacts``).
HIDDEN_CODE_MODELS = model_names(family="regularized")
# Test images whose hidden activations the histograms show: enough for the shape of a
# distribution (the offline digits have 297 test images; then all of them).
ACTIVATION_IMAGES = 1000
# A batch whose loss is NaN or ±inf: stop the run (the last checkpoint stays the newest), or skip
# the batch (no backward, no optimizer step) and go on.
NONFINITE_POLICIES = ("stop", "skip")
# Fault injection for the crash tests: SIGKILL this process just before training step N (in a
# distributed run, only the rank KILL_RANK_VARIABLE names, when set).
KILL_AT_STEP_VARIABLE = "AUTOENCODERS_FAULT_KILL_AT_STEP"
KILL_RANK_VARIABLE = "AUTOENCODERS_FAULT_KILL_RANK"
# Per-epoch pictures (NAME-epochNNN.png) go in this folder of the run directory; the curves over
# all epochs (loss.png, perplexity.png) and report.html stay at its top.
PICTURES = "pictures"
# config.json's "format": 2 records the model's whole configuration (derived sizes included) and
# an absolute data_dir; format 1 (no "format" key) recorded only the options given, and still loads.
CONFIG_FORMAT = 2


class NonFiniteLossError(RuntimeError):
    """A training batch's loss was NaN or infinite and the run stopped; nothing of that step was
    applied and the newest checkpoint on disk is the last good state."""


class _SkipBatch(Exception):
    """Raised between the loss and the backward pass to leave the weights untouched."""


@dataclass
class TrainConfig:
    """Everything that determines a run; saved as config.json in the run directory."""

    model: str
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-5
    backend: str = "scratch"
    seed: int = 0
    dtype: str = "float32"
    binarize: str = "threshold"
    image_every: int = 1
    model_config: dict = field(default_factory=dict)
    on_nonfinite: str = "stop"

    def validate(self) -> "TrainConfig":
        if self.model not in REGISTRY:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(REGISTRY)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on-nonfinite must be one of {NONFINITE_POLICIES}, got {self.on_nonfinite!r}")
        if self.binarize not in BINARIZATION_MODES:
            raise ValueError(f"binarize must be one of {BINARIZATION_MODES}, got {self.binarize!r}")
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"dataset must be one of {DATASET_NAMES}, got {self.dataset!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir must be a path or null, got {self.data_dir!r}")
        for name in ("epochs", "batch_size", "image_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name, low in (("lr", "positive"), ("weight_decay", "non-negative")):
            value = getattr(self, name)
            number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not number or value < 0 or (low == "positive" and value == 0):
                raise ValueError(f"{name.replace('_', '-')} must be a {low} number, got {value!r}")
        if not isinstance(self.model_config, dict) or not all(isinstance(key, str) for key in self.model_config):
            raise ValueError(f"model_config must be an object of named options, got {self.model_config!r}")
        accepted = REGISTRY[self.model].options  # the constructor's keyword arguments
        unknown = sorted(set(self.model_config) - accepted)
        if unknown:
            raise ValueError(f"model_config has options {unknown} that {self.model} does not take "
                             f"(it takes {sorted(accepted)})")
        return self

    @classmethod
    def from_json(cls, value: dict, where: str) -> "TrainConfig":
        try:
            return cls(**value).validate()
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{where}: not a valid training configuration ({error})") from None


# -- data ----------------------------------------------------------------------------------


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator for every random draw of training epoch ``epoch`` (1-based)."""
    return np.random.default_rng([seed, 0, epoch])


def evaluation_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 1])


def model_config_for(config: TrainConfig, dataset: Dataset) -> dict:
    """The model's configuration with its input size adapted to the dataset's images."""
    return {**config.model_config, **REGISTRY[config.model].cls.config_for_images(dataset.image_shape)}


def _batches(images: np.ndarray, batch_size: int, order: np.ndarray | None = None, labels: np.ndarray | None = None):
    """The images of each batch in ``order``; (images, labels) pairs when ``labels`` is given."""
    indices = np.arange(len(images)) if order is None else order
    for start in range(0, len(indices), batch_size):
        chosen = indices[start:start + batch_size]
        yield images[chosen] if labels is None else (images[chosen], labels[chosen])


def reconstruction_metrics(reconstruction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean per-element BCE (log terms clamped at -100, as torch) and MSE, in float64."""
    p = reconstruction.astype(np.float64).reshape(len(target), -1)
    y = target.astype(np.float64).reshape(len(target), -1)
    with np.errstate(divide="ignore"):
        bce = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    return {"bce": float(bce.mean()), "mse": float(((p - y) ** 2).mean())}


def _mean(weighted: dict[str, float], count: int) -> dict[str, float]:
    return {key: value / count for key, value in weighted.items()}


def evaluate(backend, config: TrainConfig, images: np.ndarray, labels: np.ndarray | None = None,
             group=None) -> dict[str, float]:
    """Test metrics: the model's loss parts and reconstruction BCE/MSE, averaged per image
    (``labels``, each image's class: what a conditional model reads besides it). With a process
    ``group`` (``autoencoders.distributed``) each rank evaluates its shard of every batch, with
    that shard's part of the one-process noise, and the sums are all-reduced."""
    rng = evaluation_rng(config.seed)
    dtype = np.dtype(config.dtype)
    totals: dict[str, float] = {}
    quantized = REGISTRY[config.model].family == "quantized"
    usage = 0
    batches = _batches(images, max(config.batch_size, 500), labels=labels)
    # no labels: every batch's are None (a conditional model then refuses, naming them)
    for batch, batch_labels in (batches if labels is not None else ((batch, None) for batch in batches)):
        x = binarize(batch, config.binarize, rng).astype(dtype, copy=False)
        noise = draw_noise(config.model, backend.model.config, x.shape, rng, dtype)
        if group is not None:  # this rank's shard, with its part of the batch's noise
            x, noise, batch_labels = _shard_of(group, x, noise, batch_labels)
        parts, reconstruction = backend.evaluate(x, noise, batch_labels)
        weight = _batch_weight(backend, len(x))
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + float(value) * weight
        for key, value in reconstruction_metrics(reconstruction, x).items():
            totals[key] = totals.get(key, 0.0) + value * len(x)
        if quantized:
            usage = usage + backend.codebook_usage(x)
    if group is not None:
        totals = group.sum_values(totals)  # the same keys in the same order on every rank
        if quantized:
            usage = group.all_reduce(np.ascontiguousarray(usage, dtype=np.int64))
    metrics = _mean(totals, len(images))
    if quantized:  # of the whole test set's codes, not a mean of per-batch values
        metrics["perplexity"] = codebook_perplexity(usage)
    return metrics


def _shard_of(group, x: np.ndarray, noise, labels):
    """This rank's rows of a global batch, of its noise and of its labels (``distributed.shard``)."""
    rows = distributed.shard(len(x), group.rank, group.world_size)
    return x[rows], None if noise is None else noise[rows], None if labels is None else labels[rows]


def codebook_perplexity(counts: np.ndarray) -> float:
    """exp(−Σ_k p_k log p_k) of code frequencies p = counts / Σ counts (0·log 0 = 0): 1 when one
    code is used, K when all K are used equally (van den Oord et al.'s codebook usage)."""
    p = np.asarray(counts, dtype=np.float64) / max(1, int(np.sum(counts)))
    used = p[p > 0]
    return float(np.exp(-(used * np.log(used)).sum()))


def _batch_weight(backend, batch_size: int) -> int:
    """What a loss part is multiplied by before dividing by the image count: the batch size for
    a loss averaged over the batch, 1 for one summed over it (the VAEs': nats per image)."""
    return 1 if getattr(backend.model, "loss_reduction", "mean") == "sum" else batch_size


# -- artifacts -----------------------------------------------------------------------------


def picture_directory(run_dir: Path) -> Path:
    """``RUN_DIR/pictures``, made when missing: where the per-epoch pictures go."""
    directory = Path(run_dir) / PICTURES
    directory.mkdir(exist_ok=True)
    return directory


def write_artifacts(run_dir: Path, backend, config: TrainConfig, dataset: Dataset, epoch: int, history: list) -> None:
    """Reconstructions (with the noisy input for the denoising model), filters, loss curves; the
    VAEs' samples and interpolations; the hidden activations' histograms of ``HIDDEN_CODE_MODELS``."""
    from autoencoders import plots

    pictures = picture_directory(run_dir)
    dtype = np.dtype(config.dtype)
    rng = evaluation_rng(config.seed)
    x = binarize(dataset.test_images[:16], config.binarize, rng).astype(dtype, copy=False)
    noise = draw_noise(config.model, backend.model.config, x.shape, rng, dtype)
    _, reconstruction = backend.evaluate(x, noise, dataset.test_labels[:16])
    rows, labels = [x], ["original"]
    corrupted = backend.corrupted_input(x, noise)
    if corrupted is not None:
        rows.append(corrupted)
        labels.append("noisy input")
    rows.append(reconstruction)
    labels.append("reconstruction")
    tag = f"epoch{epoch:03d}"
    plots.save_image_rows(pictures / f"reconstructions-{tag}.png", rows, labels=labels,
                          title=f"{config.model} ({config.backend}), epoch {epoch}")
    first = next(iter(backend.weights().items()))  # encoder.0.weight: the first layer's filters
    # tied-ae's decoder uses the same weight, transposed: its filters are the decoder's too
    tied = " (the decoder's too, transposed)" if config.model == "tied-ae" else ""
    weight = first[1]
    if REGISTRY[config.model].conditional:  # fc1 reads [x, one-hot(y)]: its image columns are the filters
        weight, tied = weight[:, :math.prod(dataset.image_shape)], " (its image columns)"
    plots.save_filters(pictures / f"filters-{tag}.png", weight, dataset.image_shape,
                       title=f"{first[0]}{tied}, epoch {epoch}")
    family = REGISTRY[config.model].family
    if family == "conditional":
        write_conditional_artifacts(pictures, backend, config, dataset, tag)
    elif getattr(backend.model, "loss_reduction", None) == "sum":  # the VAEs: a generative model
        write_generative_artifacts(pictures, backend, config, dataset, tag)
    elif family == "wasserstein":
        write_prior_artifacts(pictures, backend, config, dataset, tag)
    elif family == "quantized":
        write_codebook_artifacts(pictures, backend, config, dataset, epoch, history)
    if config.model in HIDDEN_CODE_MODELS:
        write_code_artifacts(pictures, backend, config, dataset, epoch)
    epochs = [entry["epoch"] for entry in history]
    plots.save_curves(run_dir / "loss.png", {
        "train loss": (epochs, [entry["train"]["loss"] for entry in history]),
        "test loss": (epochs, [entry["test"]["loss"] for entry in history]),
    }, ylabel=f"loss, {loss_unit(config.model, backend.model.config)}",
        title=f"{config.model} on {config.dataset} ({config.backend})")


def write_code_artifacts(pictures: Path, backend, config: TrainConfig, dataset: Dataset, epoch: int) -> None:
    """What the penalty does to the code: a histogram of the hidden activations h on the first
    ``ACTIVATION_IMAGES`` test images (``activations-epochNNN.png``) and, for sparse-ae, of each
    unit's mean activation ρ̂_j over them (``unit-means-epochNNN.png``), the quantity its KL
    penalty pulls towards ρ."""
    from autoencoders import plots

    rng = evaluation_rng(config.seed)
    images = dataset.test_images[:ACTIVATION_IMAGES]
    x = binarize(images, config.binarize, rng).astype(np.dtype(config.dtype), copy=False)
    hidden = np.asarray(backend.hidden_activations(x), dtype=np.float64)  # (N, H)
    count, units = hidden.shape
    model_config = backend.model.config
    tag = f"epoch{epoch:03d}"
    heading = f"{config.model} ({config.backend}), epoch {epoch}"
    mean = float(hidden.mean())
    if config.model == "sparse-ae":
        weight = model_config["sparsity_weight"]
        if model_config["penalty"] == "kl":
            penalty = f"KL penalty, target ρ = {model_config['sparsity_target']:g}, β = {weight:g}"
        else:
            penalty = f"L1 penalty, λ = {weight:g}"
        detail = f"{penalty}; mean activation {mean:.4f}"
    elif config.model == "contractive-ae":
        detail = f"contraction λ = {model_config['contraction_weight']:g}; mean activation {mean:.4f}"
    else:
        detail = f"{model_config['activation']} units, tied weights; mean activation {mean:.4f}"
    plots.save_histogram(pictures / f"activations-{tag}.png", hidden, bins=50,
                         title=f"{heading}: {units} hidden units on {count} test images\n{detail}",
                         xlabel="hidden activation h")
    if config.model == "sparse-ae":
        plots.save_histogram(pictures / f"unit-means-{tag}.png", hidden.mean(axis=0), bins=min(50, units),
                             title=f"{heading}: each unit's mean activation ρ̂_j\nover {count} test images; {detail}",
                             xlabel="ρ̂_j, unit j's mean activation")


def write_conditional_artifacts(pictures: Path, backend, config: TrainConfig, dataset: Dataset, tag: str) -> None:
    """cvae: samples of every class, one row per class and one prior draw z ~ N(0, I) per column
    (the same z down each column: what the label alone changes)."""
    from autoencoders import plots

    dtype = np.dtype(config.dtype)
    rng = evaluation_rng(config.seed)
    classes, columns = backend.model.config["num_classes"], 10
    z = rng.standard_normal((columns, backend.model.config["latent_dim"])).astype(dtype)
    labels = np.repeat(np.arange(classes, dtype=np.int64), columns)  # (classes·columns,)
    images = np.asarray(backend.decode(np.tile(z, (classes, 1)), labels)).reshape(classes, columns, *dataset.image_shape)
    plots.save_image_rows(pictures / f"samples-{tag}.png", list(images), labels=[f"y = {c}" for c in range(classes)],
                          title=f"{config.model}: {columns} prior samples per class, the same z down each column")


def write_prior_artifacts(pictures: Path, backend, config: TrainConfig, dataset: Dataset, tag: str) -> None:
    """wae-mmd: 64 decoded prior samples z ~ N(0, I), and the codes of two test digits mixed
    linearly in ten steps, decoded (its encoder is deterministic)."""
    from autoencoders import plots

    dtype = np.dtype(config.dtype)
    rng = evaluation_rng(config.seed)
    image_shape = dataset.image_shape
    as_images = lambda flat: np.asarray(flat).reshape(len(flat), *image_shape)  # noqa: E731
    z = rng.standard_normal((64, backend.model.config["latent_dim"])).astype(dtype)
    plots.save_image_grid(pictures / f"samples-{tag}.png", as_images(backend.decode(z)),
                          title=f"{config.model}: 64 samples from the prior")
    pair = binarize(dataset.test_images[:2], config.binarize, rng).astype(dtype).reshape(2, -1)
    codes = np.asarray(backend.encode(pair))
    steps = np.linspace(0, 1, 10, dtype=dtype)[:, None]
    row = backend.decode((1 - steps) * codes[0] + steps * codes[1])
    plots.save_image_rows(pictures / f"interpolation-{tag}.png", [as_images(pair), as_images(row)],
                          labels=["endpoints", "interpolation"], title=f"{config.model}: between two test digits' codes")


def write_codebook_artifacts(pictures: Path, backend, config: TrainConfig, dataset: Dataset, epoch: int,
                             history: list) -> None:
    """vq-vae: how often each codebook entry is chosen on the first ``ACTIVATION_IMAGES`` test
    images (``codebook-usage-epochNNN.png``) and the test set's codebook perplexity by epoch."""
    from autoencoders import plots

    rng = evaluation_rng(config.seed)
    x = binarize(dataset.test_images[:ACTIVATION_IMAGES], config.binarize, rng).astype(np.dtype(config.dtype), copy=False)
    counts = backend.codebook_usage(x)
    used = int(np.count_nonzero(counts))
    plots.save_code_usage(pictures / f"codebook-usage-epoch{epoch:03d}.png", counts,
                          title=f"{config.model} ({config.backend}), epoch {epoch}: {used} of {len(counts)} codes used "
                                f"on {len(x)} test images, perplexity {codebook_perplexity(counts):.1f}")
    epochs = [entry["epoch"] for entry in history]
    plots.save_curves(pictures.parent / "perplexity.png", {
        "test perplexity": (epochs, [entry["test"]["perplexity"] for entry in history])},
        ylabel="codebook perplexity", title=f"{config.model}: codebook perplexity (max {len(counts)})")


def write_generative_artifacts(pictures: Path, backend, config: TrainConfig, dataset: Dataset, tag: str) -> None:
    """Samples from the prior (8x8), an interpolation between two test digits, latent traversals
    (β-VAE), and the test set's posterior means coloured by digit when the latent is 2-D."""
    from autoencoders import plots

    dtype = np.dtype(config.dtype)
    rng = evaluation_rng(config.seed)
    latent = backend.model.config["latent_dim"]
    image_shape = dataset.image_shape
    as_images = lambda flat: np.asarray(flat).reshape(len(flat), *image_shape)  # noqa: E731
    z = rng.standard_normal((64, latent)).astype(dtype)  # z ~ p(z) = N(0, I)
    plots.save_image_grid(pictures / f"samples-{tag}.png", as_images(backend.decode(z)),
                          title=f"{config.model}: 64 samples from the prior")
    # The seed's interpolation: mean and log-variance of two test digits, mixed in ten steps, sampled.
    pair = binarize(dataset.test_images[:2], config.binarize, rng).astype(dtype).reshape(2, -1)
    mean, logvar = (np.asarray(a) for a in backend.encode(pair))
    steps = np.linspace(0, 1, 10, dtype=dtype)[:, None]
    mixed_mean = (1 - steps) * mean[0] + steps * mean[1]
    mixed_logvar = (1 - steps) * logvar[0] + steps * logvar[1]
    eps = rng.standard_normal((1, latent)).astype(dtype)  # one ε for the whole row: a smooth path
    row = backend.decode(mixed_mean + np.exp(0.5 * mixed_logvar) * eps)
    plots.save_image_rows(pictures / f"interpolation-{tag}.png", [as_images(pair), as_images(row)],
                          labels=["endpoints", "interpolation"], title=f"{config.model}: between two test digits")
    if config.model == "beta-vae":  # one row per latent dimension, swept over [-3, 3] around a digit
        values = np.linspace(-3, 3, 10, dtype=dtype)
        rows = []
        for dimension in range(latent):
            sweep = np.repeat(mean[:1], len(values), axis=0)
            sweep[:, dimension] = values
            rows.append(as_images(backend.decode(sweep)))
        plots.save_image_rows(pictures / f"traversals-{tag}.png", rows, labels=[f"z[{d}]" for d in range(latent)],
                              title=f"{config.model}: latent traversals, -3 to 3")
    if latent == 2:
        images = binarize(dataset.test_images, config.binarize, rng).astype(dtype).reshape(len(dataset.test_images), -1)
        means = np.concatenate([np.asarray(backend.encode(images[i:i + 1000])[0]) for i in range(0, len(images), 1000)])
        plots.save_scatter(pictures / f"latent-{tag}.png", means, dataset.test_labels,
                           title=f"{config.model}: posterior means of the test set")


# -- the loop ------------------------------------------------------------------------------


# What the loss parts of each family measure, as metrics.jsonl and the console report them: the
# VAEs' sums over the batch divided by its size, the regularized models' and wae-mmd's batch means
# of per-image sums (their reconstruction is the BCE summed over pixels), the others' means over
# every pixel (mlp-ae and denoising-ae may take MSE instead of BCE).
PER_IMAGE_FAMILIES = ("variational", "conditional", "regularized", "wasserstein")
PART_NAMES = {"kl": "KL", "mmd": "MMD"}


def loss_unit(model: str, model_config: dict) -> str:
    """The unit of ``model``'s loss parts: "nats per image", "per-pixel BCE" or "per-pixel MSE"
    (vq-vae's code terms are squared distances averaged per code element)."""
    if REGISTRY[model].family in PER_IMAGE_FAMILIES:
        return "nats per image"
    if REGISTRY[model].family == "quantized":
        return "per-pixel BCE (recon), per code element (codebook, commitment)"
    return "per-pixel MSE" if model_config.get("loss") == "mse" else "per-pixel BCE"


RECONSTRUCTION_METRICS = {"bce": "per-pixel BCE", "mse": "per-pixel MSE", "perplexity": "codebook perplexity"}


def test_extras(test: dict, unit: str) -> dict[str, float]:
    """The test metrics beside the loss parts that the loss does not already measure: per-pixel
    BCE where the loss is per-pixel BCE is the loss again, and where it is nats per image it is
    the reconstruction term over the pixel count; likewise MSE for an MSE loss."""
    measured = {"per-pixel BCE": "bce", "per-pixel MSE": "mse"}.get(unit.split(" (")[0])
    return {key: value for key, value in test.items() if key in RECONSTRUCTION_METRICS
            and key != measured and not (key == "bce" and unit == "nats per image")}


def format_metrics(entry: dict, unit: str) -> str:
    """One epoch in one line, each distinct quantity once, with its unit: the loss with its parts
    (``recon`` alone is the loss itself: not repeated), then the test-set reconstruction metrics
    that the loss does not already measure (``test_extras``), then the time."""
    extras = [f"{RECONSTRUCTION_METRICS[key]} {value:.5g}" for key, value in test_extras(entry["test"], unit).items()]
    text = (f"epoch {entry['epoch']:3d}  train {_loss_and_parts(entry['train'])}  |  test {_loss_and_parts(entry['test'])}"
            f" {unit}")
    if extras:
        text += "; test " + ", ".join(extras)
    return f"{text}  ({entry['seconds']:.1f} s)"


def loss_parts(parts: dict) -> list[str]:
    """The named parts of a loss worth showing beside it: none when ``recon`` is all of it."""
    named = [key for key in parts if key != "loss" and key not in RECONSTRUCTION_METRICS]
    return [] if named == ["recon"] else named


def _loss_and_parts(parts: dict) -> str:
    """"loss 104.2 (recon 95.1, KL 9.07)", or "loss 0.1105" when the loss is its reconstruction alone."""
    named = loss_parts(parts)
    text = f"loss {parts['loss']:.6g}"
    if named:
        text += " (" + ", ".join(f"{PART_NAMES.get(key, key)} {parts[key]:.4g}" for key in named) + ")"
    return text


def _progress(iterable, total: int, description: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, leave=False, disable=None, file=sys.stderr)


def load_run_config(run_dir) -> TrainConfig:
    """RUN_DIR/config.json as a ``TrainConfig`` (``read_run_config`` without the format)."""
    return read_run_config(run_dir)[0]


def read_run_config(run_dir) -> tuple[TrainConfig, int]:
    """(RUN_DIR/config.json as a ``TrainConfig``, its format): 2, or 1 (no "format" key: only the
    options given were recorded, the rest follow from the dataset as when it trained)."""
    path = Path(run_dir) / "config.json"
    value = read_json(path)
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a valid training configuration (expected a JSON object)")
    value = dict(value)
    version = value.pop("format", 1)
    if version not in (1, CONFIG_FORMAT) or isinstance(version, bool):
        raise CheckpointError(f"{path}: written in format {version!r}, which this autoencoders "
                              f"{_package_version()} does not read (it reads formats 1 and {CONFIG_FORMAT}); "
                              f"load it with the version that wrote it, or upgrade autoencoders")
    return TrainConfig.from_json(value, str(path)), version


def write_run_config(run_dir: Path, config: TrainConfig) -> None:
    """RUN_DIR/config.json, atomically, in format ``CONFIG_FORMAT``."""
    atomic_write_json(Path(run_dir) / "config.json", {"format": CONFIG_FORMAT, **asdict(config)})


def complete_config(config: TrainConfig, model_config: dict) -> None:
    """Record what a new run resolved: the model's whole configuration (the sizes the dataset
    set included, so that the weights' shapes can be read off config.json) and an absolute
    data_dir (so that the run evaluates and resumes from any working directory)."""
    config.model_config = json.loads(json.dumps(model_config))  # lists, numbers, strings: as read back
    if config.data_dir is not None:
        config.data_dir = os.path.abspath(os.path.expanduser(config.data_dir))


def load_run_dataset(config: TrainConfig, data_dir=None) -> Dataset:
    """The run's dataset, from ``data_dir`` when given (moved data), else where config.json says;
    a failure says how to point at the data elsewhere."""
    from autoencoders.data import DataError

    where = config.data_dir if data_dir is None else os.path.abspath(os.path.expanduser(str(data_dir)))
    try:
        return load_dataset(config.dataset, data_dir=where)
    except DataError as error:
        if config.dataset == "digits" or data_dir is not None:
            raise
        raise DataError(f"{error}; the run's config.json records data_dir {config.data_dir!r}: pass --data-dir "
                        f"(load_run(..., data_dir=)) to read the data from elsewhere") from None


def _package_version() -> str:
    from autoencoders import __version__

    return __version__


def _claim(run_dir: Path, unique: bool) -> tuple[Path, RunLock]:
    """Lock and mark a new run directory (``autoencoders.runs.directory``); (the directory, its lock)."""
    try:
        if unique:
            return claim_unique_run_directory(run_dir, "train")
        return run_dir, claim_new_run_directory(run_dir, "train")
    except OSError as error:
        raise RunDirectoryError(f"cannot write to run directory {run_dir}: {error.strerror or error}") from None


def _start_new_run(run_dir: Path, config: TrainConfig, unique: bool, log):
    """Validate, load the data and build the model, then claim the directory and write
    config.json: a run that cannot start leaves no directory and no file behind.
    Returns (run_dir, lock, dataset, backend)."""
    config.validate()
    if not unique and (run_dir / "config.json").exists():  # the common case, refused before loading anything
        raise RunDirectoryError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another --out")
    dataset = load_dataset(config.dataset, data_dir=config.data_dir)
    backend = make_backend(config, model_config_for(config, dataset))
    complete_config(config, backend.model.config)
    run_dir, lock = _claim(run_dir, unique)
    try:
        write_run_config(run_dir, config)
    except OSError as error:
        (run_dir / MARKER_NAME).unlink(missing_ok=True)  # not a run after all: the directory is free again
        lock.release()
        raise RunDirectoryError(f"cannot write to run directory {run_dir}: {error.strerror or error}") from None
    log(f"training {config.model} on {config.dataset} with the {config.backend} backend; run directory {run_dir}")
    return run_dir, lock, dataset, backend


def _lock_for_resume(run_dir: Path) -> RunLock:
    if not (run_dir / "config.json").is_file():
        what = "no such run directory" if not run_dir.is_dir() else "not a run directory (no config.json)"
        raise CheckpointError(f"{run_dir}: {what}")
    return lock_run_directory(run_dir, "resume")


def _resume(run_dir: Path, epochs: int | None, on_nonfinite: str | None, log, threads: int | None = None,
            data_dir=None):
    """Reload a run under its lock: (config, dataset, backend, history, start epoch).

    Removes what a killed process left half-written, reloads the newest checkpoint (verified
    against the model), sets the thread counts the run recorded, and runs that epoch's
    completion step again (a process killed inside it left it partly done)."""
    config = load_run_config(run_dir)
    changes = {key: value for key, value in (("epochs", epochs), ("on_nonfinite", on_nonfinite)) if value is not None}
    dataset = load_run_dataset(config, data_dir)  # data_dir: this process only; config.json keeps its own
    backend = make_backend(config, model_config_for(config, dataset))
    remove_temporaries(run_dir)  # half-finished atomic writes of a killed run (only this library's names)
    remove_temporaries(run_dir / "checkpoints")
    remove_temporaries(run_dir / PICTURES)
    pointer = run_dir / "checkpoints" / "latest"
    if not (pointer.exists() or pointer.is_symlink()):
        # Killed before the first checkpoint was complete (`latest` moves last): start over, same
        # seed, which replays exactly what the killed process did.
        _update_config(run_dir, config, changes, done=0)
        return config, dataset, backend, [], 1
    directory = latest_checkpoint(run_dir)  # a damaged pointer is an error, not a fresh start
    # Checked against this model (keys, shapes, dtypes, optimizer buffers) before any loads.
    weights, optimizer_state, state = read_checkpoint(directory, expected=backend.weights(),
                                                      parameters=backend.parameter_names())
    _update_config(run_dir, config, changes, done=state["epoch"])
    recorded = _recorded_threads(state, directory / "state.json")
    start_pools(torch=config.backend == "torch")
    if threads is None:
        restore_thread_counts(recorded, config.backend, log)
    else:
        _override_thread_counts(threads, recorded, config.backend, log)
    backend.load_weights(weights)
    backend.load_optimizer_state(optimizer_state)
    history = state.get("metrics", [])
    log(f"resuming {run_dir} after epoch {state['epoch']}")
    complete_epoch(run_dir, backend, config, dataset, history)
    return config, dataset, backend, history, state["epoch"] + 1


def _update_config(run_dir: Path, config: TrainConfig, changes: dict, done: int) -> None:
    """Apply --epochs / --on-nonfinite given with --resume, and record them in config.json."""
    if "epochs" in changes and changes["epochs"] < done:
        raise RunDirectoryError(f"--epochs {changes['epochs']}: {run_dir} has trained {done} epochs already; with "
                                f"--resume, --epochs is the run's total, which cannot be less than that")
    changed = {key: value for key, value in changes.items() if getattr(config, key) != value}
    if changed:
        for key, value in changed.items():
            setattr(config, key, value)
        config.validate()
        write_run_config(run_dir, config)


def complete_epoch(run_dir: Path, backend, config: TrainConfig, dataset: Dataset, history: list) -> None:
    """What follows the checkpoint of epoch ``history[-1]["epoch"]``: metrics.jsonl, the copy of
    its weights at ``RUN_DIR/model.safetensors``, pruning older checkpoints, and the pictures
    when they are due. Each piece is a function of the checkpoint alone, so ``--resume`` runs it
    again whole, and a run killed (or out of disk) anywhere in it ends equal to an uninterrupted one."""
    epoch = history[-1]["epoch"]
    _rewrite_metrics(run_dir, history)  # the whole file, atomically: a crash never leaves half a line
    kill_point(f"metrics-{epoch}")
    publish_weights(run_dir, run_dir / "checkpoints" / checkpoint_name(epoch))
    kill_point(f"published-{epoch}")
    prune_checkpoints(run_dir)
    if epoch % config.image_every == 0 or epoch == config.epochs:
        kill_point(f"artifacts-{epoch}")
        write_artifacts(run_dir, backend, config, dataset, epoch, history)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run: ``run_dir`` continues with ``autoencoders train --resume``
    from its newest checkpoint (``epochs_done`` epochs; 0: it starts again, same seed)."""

    def __init__(self, run_dir: Path, epochs_done: int):
        super().__init__(f"interrupted; {run_dir} has {epochs_done} finished epoch{'s' if epochs_done != 1 else ''}: "
                         f"continue with: {resume_command(run_dir)}")
        self.run_dir, self.epochs_done = run_dir, epochs_done


def resume_command(run_dir: Path, *options: str) -> str:
    """The command line that continues ``run_dir`` (quoted for a POSIX shell)."""
    import shlex

    return " ".join(["autoencoders", "train", "--resume", shlex.quote(str(run_dir)), *options])


def run(run_dir, config: TrainConfig | None = None, *, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] = print, epochs: int | None = None,
        on_nonfinite: str | None = None, unique: bool = False, threads: int | None = None,
        data_dir=None) -> list[dict]:
    """Train (or resume) the run in ``run_dir``; returns the metrics of every epoch so far
    (``run_training`` also returns the directory a ``unique`` name resolved to)."""
    return run_training(run_dir, config, resume=resume, progress=progress, log=log, epochs=epochs,
                        on_nonfinite=on_nonfinite, unique=unique, threads=threads, data_dir=data_dir)[1]


def run_training(run_dir, config: TrainConfig | None = None, *, resume: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print, epochs: int | None = None,
                 on_nonfinite: str | None = None, unique: bool = False, threads: int | None = None,
                 data_dir=None, report: bool = True) -> tuple[Path, list[dict]]:
    """Train (or resume) the run in ``run_dir``: (the run directory, the metrics of every epoch so far).

    New run: ``config`` given; ``run_dir`` new or empty (it is locked and marked as this
    library's, ``autoencoders.runs.directory``), or with ``unique=True`` a base name whose first free
    variant (``-2``, ``-3``, ...) is taken. config.json then records the model's whole
    configuration and an absolute data_dir (``complete_config``). Resume: ``config=None,
    resume=True``; the run continues after its newest checkpoint with the configuration it was
    started with, for ``epochs`` epochs in all when given (extending a finished run is how to
    train longer; it cannot be less than the epochs done), with ``on_nonfinite`` ("stop" or
    "skip") replacing the run's policy when given, and its data read from ``data_dir`` when given
    (for this process only). Either way the process holds the run directory's lock until it
    returns, and another process refuses it. ``report``: write RUN_DIR/report.html at the end.

    ``threads``: the thread count of Numba, the BLAS and torch (``autoencoders.threads.set_threads``).
    A new run takes it, or with None leaves the pools as the caller set them (the command passes
    its ``--threads``, by default ``auto_threads()``); either way each checkpoint records the
    counts in force. A resume takes the counts its checkpoint recorded unless ``threads`` is
    given, which wins, with a warning when it differs from them (float32 results then differ in
    the last bits from an uninterrupted run's).

    Raises ``NonFiniteLossError`` when a batch's loss is NaN or infinite under the "stop" policy,
    or when the weights are not finite after an epoch's last step: that step is not applied
    (or, at the epoch's end, not checkpointed), and the newest checkpoint is the last good state.
    Raises ``TrainingInterrupted`` (a KeyboardInterrupt) on Ctrl-C, naming the resume command, and
    ``RunDirectoryError`` when ``run_dir`` is taken.
    """
    run_dir = Path(run_dir)
    if threads is not None:
        check_threads(threads)  # before anything is locked, claimed or written
    group = distributed.start()  # None in one process; else this rank's place (WORLD_SIZE > 1)
    try:
        if group is not None and not group.writer:
            return run_dir, _follow(run_dir, config, group, resume=resume, threads=threads, data_dir=data_dir)
        return _lead(run_dir, config, group, resume=resume, progress=progress, log=log, epochs=epochs,
                     on_nonfinite=on_nonfinite, unique=unique, threads=threads, data_dir=data_dir, report=report)
    finally:
        if group is not None:
            group.close()


def _lead(run_dir: Path, config, group, *, resume, progress, log, epochs, on_nonfinite, unique, threads, data_dir,
          report) -> tuple[Path, list[dict]]:
    """The run in one process, or rank 0 of several: it alone claims, locks and writes the run directory."""
    if resume:
        lock = _lock_for_resume(run_dir)
    else:
        if threads is not None:
            set_threads(threads, torch=config.backend == "torch")
        else:
            start_pools(torch=config.backend == "torch")
        run_dir, lock, dataset, backend = _start_new_run(run_dir, config, unique, log)
    history: list[dict] = []
    with lock:
        try:
            if resume:
                config, dataset, backend, history, start_epoch = _resume(run_dir, epochs, on_nonfinite, log, threads,
                                                                         data_dir)
            else:
                start_epoch = 1
            if group is not None:
                group.barrier()  # the directory is ready (and a resume's checkpoint complete) for the others
            if start_epoch > config.epochs:
                log(f"{run_dir}: all {config.epochs} epochs are done")
            else:
                _train_epochs(run_dir, backend, config, dataset, history, start_epoch, progress, log, group)
        except KeyboardInterrupt:
            raise TrainingInterrupted(run_dir, len(history)) from None
        if history and report:
            _write_report(run_dir, log)
        if history:
            log(f"done: {run_dir}/metrics.jsonl, {run_dir}/model.safetensors, "
                f"{run_dir}/{PICTURES}/reconstructions-epoch{history[-1]['epoch']:03d}.png, {run_dir}/loss.png"
                + (f", {run_dir}/report.html" if report else ""))
    return run_dir, history


def _follow(run_dir: Path, config, group, *, resume: bool, threads, data_dir) -> list[dict]:
    """Rank r > 0: the same model and data as rank 0, from the same configuration or checkpoint,
    trained on its shards; it writes nothing (rank 0 does). Returns the metrics, as rank 0's."""
    if resume:
        group.barrier()  # rank 0 has locked the run, applied --epochs, and completed its newest epoch
        config = load_run_config(run_dir)
    else:
        config.validate()
    if threads is not None:
        set_threads(threads, torch=config.backend == "torch")
    else:
        start_pools(torch=config.backend == "torch")
    dataset = load_run_dataset(config, data_dir) if resume else load_dataset(config.dataset, data_dir=config.data_dir)
    backend = make_backend(config, model_config_for(config, dataset))
    history, start_epoch = [], 1
    pointer = run_dir / "checkpoints" / "latest"
    if resume and (pointer.exists() or pointer.is_symlink()):
        weights, optimizer_state, state = read_checkpoint(latest_checkpoint(run_dir), expected=backend.weights(),
                                                          parameters=backend.parameter_names())
        backend.load_weights(weights)
        backend.load_optimizer_state(optimizer_state)
        history, start_epoch = state.get("metrics", []), state["epoch"] + 1
    if not resume:
        group.barrier()  # rank 0 has claimed the directory and written config.json
    if start_epoch <= config.epochs:
        _train_epochs(run_dir, backend, config, dataset, history, start_epoch, False, lambda _: None, group)
    return history


def _write_report(run_dir: Path, log) -> None:
    """RUN_DIR/report.html (``autoencoders.report``)."""
    from autoencoders.report import write_report

    write_report(run_dir)


def _train_epochs(run_dir: Path, backend, config: TrainConfig, dataset: Dataset, history: list,
                  start_epoch: int, progress: bool, log, group=None) -> None:
    """Epochs ``start_epoch`` to ``config.epochs``: train, check, checkpoint, complete. With a
    process ``group``, rank 0 alone writes (checkpoint, metrics, pictures) while the others wait."""
    steps_per_epoch = math.ceil(len(dataset.train_images) / config.batch_size)
    step = (start_epoch - 1) * steps_per_epoch
    writer = group is None or group.writer
    if hasattr(backend.model, "step"):  # the β-VAE's capacity schedule counts training steps
        backend.model.step = step
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        totals, trained_images, skipped_batches, step = _train_epoch(
            run_dir, backend, config, dataset, epoch, step, steps_per_epoch, progress and writer, log, group)
        _check_weights_after_epoch(run_dir, backend, epoch, step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            test = evaluate(backend, config, dataset.test_images, dataset.test_labels, group=group)
        entry = {"epoch": epoch, "train": _mean(totals, max(trained_images, 1)), "test": test,
                 "seconds": time.perf_counter() - started}
        if skipped_batches:
            entry["skipped_batches"] = skipped_batches
        history.append(entry)
        if writer:
            state = {"metrics": history, "threads": current_thread_counts(config.backend)}
            if group is not None:
                state["world_size"] = group.world_size
            write_checkpoint(run_dir, epoch, backend.weights(), backend.optimizer_state(), state)
            complete_epoch(run_dir, backend, config, dataset, history)
            log(format_metrics(entry, loss_unit(config.model, backend.model.config)))
        if group is not None:
            group.barrier()  # the epoch's checkpoint is complete before any rank goes on


def _rank(group) -> int:
    return 0 if group is None else group.rank


def _train_epoch(run_dir: Path, backend, config: TrainConfig, dataset: Dataset, epoch: int, step: int,
                 steps_per_epoch: int, progress: bool, log, group=None) -> tuple[dict[str, float], int, int, int]:
    """One epoch's steps: (image-weighted loss totals, images trained on, batches skipped, last step).
    With a process ``group``, this rank's shard of every global batch (the totals are global)."""
    dtype = np.dtype(config.dtype)
    kill_at = int(os.environ.get(KILL_AT_STEP_VARIABLE, "0") or 0)
    rng = epoch_rng(config.seed, epoch)
    order = rng.permutation(len(dataset.train_images))
    totals: dict[str, float] = {}
    skipped_batches, trained_images = 0, 0
    batches = _batches(dataset.train_images, config.batch_size, order, labels=dataset.train_labels)
    bar = _progress(batches, steps_per_epoch, f"epoch {epoch}/{config.epochs}", progress)
    unit = loss_unit(config.model, backend.model.config)
    for batch, labels in bar:
        step += 1
        if kill_at and step == kill_at and os.environ.get(KILL_RANK_VARIABLE, str(_rank(group))) == str(_rank(group)):
            os.kill(os.getpid(), signal.SIGKILL)
        x = binarize(batch, config.binarize, rng).astype(dtype, copy=False)
        noise = draw_noise(config.model, backend.model.config, x.shape, rng, dtype)  # the global batch's
        sharing, size = {}, len(x)
        if group is not None:  # this rank's rows; its gradient weighs what they weigh in the global loss
            x, noise, labels = _shard_of(group, x, noise, labels)
            sharing = {"group": group, "weight": distributed.shard_weight(len(x), size, getattr(backend.model, "loss_reduction", "mean"))}
        guard = _StepGuard(run_dir, config, backend, x, noise, epoch, step, step - (epoch - 1) * steps_per_epoch,
                           labels, sharing)
        parts = _guarded_step(backend, guard, log)
        if parts is None:
            skipped_batches += 1
            continue
        weight = _batch_weight(backend, size)
        trained_images += size
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + float(value) * weight
        if progress:  # the epoch's running loss, in the unit of its line
            _show_running_loss(bar, totals["loss"] / trained_images, unit)
    return totals, trained_images, skipped_batches, step


def _show_running_loss(bar, loss: float, unit: str) -> None:
    """The running mean loss of the epoch so far beside the progress bar (tqdm's postfix)."""
    if hasattr(bar, "set_postfix_str"):
        bar.set_postfix_str(f"loss {loss:.5g} {unit}", refresh=False)


class _StepGuard:
    """One training step's non-finite policy: ``check`` runs between the loss and the backward pass."""

    def __init__(self, run_dir: Path, config: TrainConfig, backend, x, noise, epoch: int, step: int, in_epoch: int,
                 labels=None, sharing=None):
        self.run_dir, self.config, self.backend, self.x, self.noise, self.epoch = run_dir, config, backend, x, noise, epoch
        self.labels, self.sharing = labels, sharing or {}  # sharing: {"group", "weight"} of a rank
        self.where = f"epoch {epoch}, step {step} (batch {in_epoch} of the epoch)"

    def nonfinite(self, cause: str, what: str, detail: str = "") -> str:
        """Stop the run (raise), or return the line to log when the batch may be skipped."""
        if cause != "weights" and self.config.on_nonfinite == "skip":
            return f"{self.run_dir}: {what} at {self.where}{detail}: batch skipped (--on-nonfinite skip)"
        if cause == "weights":
            advice, options = ("an earlier update overflowed, and skipping batches cannot repair weights; a new "
                               "run with a lower --lr may get past it"), ()
        else:
            advice, options = "a lower --lr, or --on-nonfinite skip, may get past it", ("--on-nonfinite", "skip")
        raise NonFiniteLossError(f"{self.run_dir}: {what} at {self.where}{detail}; stopped before that step "
                                 f"changed anything; {_last_good_state(self.run_dir, self.epoch, *options)}; {advice}")

    def check(self, parts) -> None:
        """Raise (stop, or ``_SkipBatch``) when the loss is NaN or infinite."""
        loss = float(parts["loss"])
        if not math.isfinite(loss):
            cause = _nonfinite_cause(self.backend, self.x, self.noise) or "loss"
            detail = "" if cause == "loss" else f" ({_HOLDS[cause]})"
            raise _SkipBatch(self.nonfinite(cause, f"loss {loss}", detail))


def _guarded_step(backend, guard: _StepGuard, log) -> dict | None:
    """One optimizer step under ``guard``; the loss parts, or None when the batch was skipped (logged)."""
    try:
        with warnings.catch_warnings():  # NaN/inf are reported by the checks here, once, clearly
            warnings.simplefilter("ignore", RuntimeWarning)
            return backend.train_step(guard.x, guard.noise, before_update=guard.check, labels=guard.labels,
                                      **guard.sharing)
    except _SkipBatch as skipped:
        log(str(skipped))
        return None
    except (ValueError, RuntimeError, FloatingPointError) as error:
        # NaN or inf in the batch, the noise or the weights makes the outputs NaN, which the
        # losses refuse (torch's BCE too) before a loss exists: a non-finite loss all the same.
        cause = None if isinstance(error, NonFiniteLossError) else _nonfinite_cause(backend, guard.x, guard.noise)
        if cause is None:
            raise
        failed = str(error).splitlines()[0] if str(error) else type(error).__name__
        log(guard.nonfinite(cause, _HOLDS[cause], f", so the loss failed ({failed})"))
        return None


def _check_weights_after_epoch(run_dir: Path, backend, epoch: int, step: int) -> None:
    """The epoch's last update may have overflowed the weights: then nothing is evaluated nor saved."""
    if not backend.weights_finite():
        raise NonFiniteLossError(f"{run_dir}: the weights hold NaN or inf after epoch {epoch}, step {step} "
                                 f"(the epoch's last step overflowed them); {_last_good_state(run_dir, epoch)}; "
                                 f"a new run with a lower --lr may get past it")


_HOLDS = {"weights": "the weights hold NaN or inf", "batch": "the batch holds NaN or inf",
          "noise": "the noise holds NaN or inf"}


def _nonfinite_cause(backend, x: np.ndarray, noise) -> str | None:
    """"weights", "batch" or "noise": which of the step's inputs holds NaN or inf (None: none)."""
    if not backend.weights_finite():
        return "weights"
    if not np.isfinite(x).all():
        return "batch"
    if noise is not None and not np.isfinite(noise).all():
        return "noise"
    return None


def _last_good_state(run_dir: Path, epoch: int, *options: str) -> str:
    """Where a run stopped in ``epoch`` can continue from: its newest checkpoint, if any, and the
    command that continues it (with ``options``)."""
    if epoch > 1:
        return (f"its newest checkpoint, epoch {epoch - 1}, is the last good state; continue from it with: "
                f"{resume_command(run_dir, *options)}")
    return "no checkpoint was written yet (it stopped in its first epoch): start it again"


def _rewrite_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl as the checkpoint knows it: drops lines of epochs a crash undid."""
    text = "".join(json.dumps(entry) + "\n" for entry in history)
    atomic_write_bytes(run_dir / "metrics.jsonl", text.encode())


# -- thread counts -------------------------------------------------------------------------
# Float32 results depend on how many threads BLAS splits a product over (the order of the sums
# changes). Each checkpoint records the counts it was trained under and a resume sets them again,
# so that a resumed run equals an uninterrupted one on any machine that can run those counts.


def _recorded_threads(state: dict, source: Path) -> dict[str, int]:
    """state.json's "threads" ({} for a checkpoint written before they were recorded)."""
    threads = state.get("threads", {})
    if not (isinstance(threads, dict) and all(key in ("blas", "numba", "torch") and isinstance(value, int)
                                               and not isinstance(value, bool) and 1 <= value <= 4096
                                               for key, value in threads.items())):
        raise CheckpointError(f"{source}: 'threads' must map blas, numba and torch to thread counts, "
                              f"found {str(threads)[:60]}")
    return threads


def _override_thread_counts(threads: int, recorded: dict[str, int], backend: str, log) -> None:
    """--threads given to a resume: it wins over the recorded counts; say so where they differ."""
    now = set_threads(threads, torch=backend == "torch")
    differing = {key: value for key, value in recorded.items() if key in now and now[key] != value}
    if differing:
        log(f"warning: --threads {threads} replaces the thread counts the run recorded "
            f"({', '.join(f'{key} {value}' for key, value in sorted(differing.items()))}); float32 results may "
            f"differ in the last bits from an uninterrupted run's")


def restore_thread_counts(recorded: dict[str, int], backend: str, log) -> None:
    """Set the thread counts a run recorded, and say so; say too which cannot be set (Numba's
    count cannot exceed the NUMBA_NUM_THREADS this process started with)."""
    current = current_thread_counts(backend)
    differing = {key: value for key, value in recorded.items() if key in current and current[key] != value}
    if not differing:
        return
    if "blas" in differing:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=differing["blas"], user_api="blas")
    if "numba" in differing:
        import numba

        if differing["numba"] <= numba.config.NUMBA_NUM_THREADS:
            numba.set_num_threads(differing["numba"])
    if "torch" in differing:
        import torch

        torch.set_num_threads(differing["torch"])
    now = current_thread_counts(backend)
    applied = ", ".join(f"{key} {current[key]} -> {value}" for key, value in differing.items() if now[key] == value)
    missed = ", ".join(f"{key} {now[key]} (the run used {value})" for key, value in differing.items() if now[key] != value)
    if applied:
        log(f"thread counts set as the run recorded them: {applied}")
    if missed:
        log(f"warning: cannot set the thread counts the run recorded: {missed}; float32 results may differ "
            f"in the last bits from an uninterrupted run's")
