"""A run as a product (issue 19): loaded in one line from Python on either backend, trained from
Python, self-describing and portable (moved, with its data moved, or written in format 1), and a
console that says each quantity once with its unit, the running loss, and how to resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import autoencoders
from autoencoders import training
from autoencoders.data import Dataset, load_dataset
from autoencoders.runs.checkpoint import CheckpointError, load_tensors
from autoencoders.training import CONFIG_FORMAT, PICTURES, TrainConfig, format_metrics, loss_unit, run_training
from parity_tests.mnist import MNIST_DIR
from parity_tests.test_reliability_runs import assert_same_run_directory
from parity_tests.test_train import cli
from parity_tests.tolerances import assert_close
from scratch.models import REGISTRY, draw_noise
from torch_impl.models import build as torch_build

QUIET = {"progress": False, "log": None}
_MNIST: dict = {}
_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _small_mnist(name, data_dir=None, **options) -> Dataset:
    """MNIST read from ``data_dir`` as the product reads it (checksums and all), cut to 192 training
    and 64 test images so that every model trains an epoch in a second."""
    if name != "mnist":
        return load_dataset(name, data_dir=data_dir, **options)
    key = str(Path(data_dir).resolve()) if data_dir is not None else None
    if key not in _MNIST or not all((Path(key) / f"{stem}.gz").is_file() for stem in _STEMS):  # moved: fail as the product
        _MNIST[key] = load_dataset(name, data_dir=data_dir, **options)
    full = _MNIST[key]
    return Dataset(name, full.train_images[:192], full.train_labels[:192], full.test_images[:64], full.test_labels[:64])


@pytest.fixture
def small_mnist(monkeypatch):
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    monkeypatch.setattr(training, "load_dataset", _small_mnist)


def _small_options(name: str) -> dict:
    """Small widths for the MLP models (the image models keep their geometry)."""
    options = REGISTRY[name].options
    small = {}
    if "hidden_dims" in options and REGISTRY[name].input_kind == "flat" and name != "deep-conv-vae":
        small["hidden_dims"] = [16] * len(REGISTRY[name].defaults["hidden_dims"])
    if "hidden_dim" in options:
        small["hidden_dim"] = 16
    if "latent_dim" in options:
        small["latent_dim"] = 4
    return small


# -- load_run and train from Python ---------------------------------------------------------


@pytest.mark.parametrize("trained_with", ["scratch", "torch"])
@pytest.mark.parametrize("model", sorted(REGISTRY))
def test_load_run_gives_a_working_twin_of_every_model_trained_with_either_backend(tmp_path, small_mnist, model,
                                                                                  trained_with):
    """``autoencoders.train`` then ``autoencoders.load_run(backend=...)``: both backends' models hold
    the checkpoint's weights and buffers, in evaluation mode, and reconstruct alike; config.json
    alone (its model_config) rebuilds the twin that model.safetensors loads into strictly."""
    run = autoencoders.train(model, dataset="mnist", data_dir=MNIST_DIR, epochs=1, batch_size=64, backend=trained_with,
                             out=tmp_path / "run", report=False, **QUIET, **_small_options(model))
    assert run.config.backend == trained_with and run.epoch == 1 and len(run.metrics) == 1
    saved = load_tensors(tmp_path / "run" / "model.safetensors")
    twin = autoencoders.load_run(tmp_path / "run", backend="torch")
    own = autoencoders.load_run(tmp_path / "run", backend="scratch")
    assert isinstance(twin.model, torch.nn.Module) and not twin.model.training and not own.model.training
    for loaded in (twin, own):
        weights = loaded.backend.weights()
        assert weights.keys() == saved.keys()
        for key in saved:
            np.testing.assert_array_equal(weights[key], saved[key], err_msg=f"{loaded.config.backend}: {key}")
    x = run.dataset.test_images[:8].reshape(8, -1) if REGISTRY[model].input_kind == "flat" else run.dataset.test_images[:8]
    x = (x > 0.5).astype(np.float32)
    labels = REGISTRY[model].label_arguments(run.dataset.test_labels[:8])
    noise = draw_noise(model, own.model.config, x.shape, np.random.default_rng(0), np.float32)  # ε, corruption: shared
    with torch.no_grad():
        torch_out = twin.model.reconstruct(torch.from_numpy(x), None if noise is None else torch.from_numpy(noise),
                                           **{k: torch.from_numpy(v) for k, v in labels.items()})
    assert_close(own.model.reconstruct(x, noise, **labels), torch_out.numpy(), "torch", np.float32, f"{model} reconstruct")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["format"] == CONFIG_FORMAT and config["model_config"] == own.model.config
    rebuilt = torch_build(config["model"], **config["model_config"])
    rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in saved.items()}, strict=True)


def test_the_quick_starts_digits_run_loads_from_its_config_alone(tmp_path):
    """The digits model has 64 inputs: config.json must say so for the README's loading example
    (format 1 recorded ``"model_config": {}``, and a 784-input twin refused the weights)."""
    cli("train", "mlp-ae", "--epochs", "2", "--out", "run", "--quiet", cwd=tmp_path, check_status=0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model_config"]["input_dim"] == 64
    from safetensors.torch import load_file

    twin = torch_build(config["model"], **config["model_config"])
    twin.load_state_dict(load_file(tmp_path / "run" / "model.safetensors"), strict=True)
    run = autoencoders.load_run(tmp_path / "run", backend="torch")
    assert run.data == {"dataset": "digits", "data_dir": None, "binarize": "threshold", "input": "64 values per image"}
    z = twin.encode(torch.zeros(1, 64))
    assert tuple(twin.decode(z).shape) == (1, 64)


def test_load_run_takes_a_kept_checkpoint_by_epoch_and_names_the_kept_ones(tmp_path):
    run_training(tmp_path / "run", TrainConfig(model="mlp-ae", epochs=3, model_config={"hidden_dims": [8]}),
                 progress=False, log=lambda _: None, report=False)
    second = autoencoders.load_run(tmp_path / "run", checkpoint=2)
    assert second.epoch == 2 and len(second.metrics) == 2
    assert autoencoders.load_run(tmp_path / "run").epoch == 3
    with pytest.raises(CheckpointError, match=r"no checkpoint of epoch 1 .*epochs kept: 2, 3"):
        autoencoders.load_run(tmp_path / "run", checkpoint=1)
    with pytest.raises(ValueError, match="checkpoint must be 'latest' or a positive epoch number"):
        autoencoders.load_run(tmp_path / "run", checkpoint="newest")


def test_train_refuses_an_option_its_model_does_not_take_before_writing_anything(tmp_path):
    with pytest.raises(ValueError, match=r"model_config has options \['beta'\] that mlp-ae does not take"):
        autoencoders.train("mlp-ae", epochs=1, out=tmp_path / "run", beta=4.0, **QUIET)
    assert not (tmp_path / "run").exists()


# -- portable runs ---------------------------------------------------------------------------


def _copy_mnist(target: Path) -> Path:
    target.mkdir(parents=True)
    for path in MNIST_DIR.glob("*-ubyte.gz"):
        shutil.copy(path, target / path.name)
    return target


def test_a_moved_run_evaluates_reconstructs_and_resumes_bit_exactly(tmp_path, small_mnist):
    """Trained from one folder with a relative --data-dir, moved elsewhere and used from a third
    folder: eval and reconstruct work, and a resume ends equal, file for file, to a run that was
    never moved. Then the data moves too: --data-dir points at it."""
    _copy_mnist(tmp_path / "work" / "data")
    common = ["--data-dir", "data", "--hidden-dims", "16", "--latent-dim", "4", "--batch-size", "64", "--quiet"]
    cli("train", "mlp-ae", *common, "--epochs", "3", "--out", "straight", cwd=tmp_path / "work", check_status=0)
    cli("train", "mlp-ae", *common, "--epochs", "2", "--out", "moved", cwd=tmp_path / "work", check_status=0)
    config = json.loads((tmp_path / "work" / "moved" / "config.json").read_text())
    assert config["data_dir"] == str((tmp_path / "work" / "data").resolve())
    shutil.move(tmp_path / "work" / "moved", tmp_path / "elsewhere")
    (tmp_path / "third").mkdir()
    elsewhere = str(tmp_path / "elsewhere")
    evaluated = cli("eval", elsewhere, "--json", cwd=tmp_path / "third", check_status=0)
    assert json.loads(evaluated.stdout)["epoch"] == 2
    cli("reconstruct", elsewhere, "--count", "4", cwd=tmp_path / "third", check_status=0)
    (tmp_path / "elsewhere" / "reconstructions.png").unlink()  # not part of a training run
    cli("train", "--resume", elsewhere, "--epochs", "3", "--quiet", cwd=tmp_path / "third", check_status=0)
    assert_same_run_directory(tmp_path / "elsewhere", tmp_path / "work" / "straight", "a moved run resumed")
    # the data moves too: the recorded folder is gone, --data-dir says where it is now
    resumed = json.loads(cli("eval", elsewhere, "--json", cwd=tmp_path / "third", check_status=0).stdout)
    shutil.move(tmp_path / "work" / "data", tmp_path / "moved-data")
    failed = cli("eval", elsewhere, cwd=tmp_path / "third", check_status=2)
    assert len(failed.stderr.strip().splitlines()) == 1 and "pass --data-dir" in failed.stderr, failed.stderr
    moved = cli("eval", elsewhere, "--data-dir", str(tmp_path / "moved-data"), "--json", cwd=tmp_path / "third",
                check_status=0)
    assert resumed["epoch"] == 3 and json.loads(moved.stdout)["test"] == resumed["test"]
    cli("reconstruct", elsewhere, "--data-dir", str(tmp_path / "moved-data"), cwd=tmp_path / "third", check_status=0)


def test_a_format_1_run_still_loads_and_evaluates_and_a_newer_format_is_refused_in_one_line(tmp_path):
    """Format 1 (no "format" key, only the options given) is read as when it trained; an unknown
    format is refused naming the file and what to do."""
    cli("train", "vae", "--epochs", "1", "--hidden-dims", "16", "--out", "run", "--quiet", cwd=tmp_path, check_status=0)
    path = tmp_path / "run" / "config.json"
    config = json.loads(path.read_text())
    del config["format"]
    config["model_config"] = {"hidden_dim": 16}  # what format 1 recorded: the options given
    path.write_text(json.dumps(config))
    loaded = autoencoders.load_run(tmp_path / "run", backend="torch")
    assert loaded.model.config["input_dim"] == 64 and loaded.config.model_config["hidden_dim"] == 16
    cli("eval", "run", cwd=tmp_path, check_status=0)
    config["format"] = 3
    path.write_text(json.dumps(config))
    refused = cli("eval", "run", cwd=tmp_path, check_status=2)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "written in format 3" in lines[0] and "config.json" in lines[0], lines


# -- the console -----------------------------------------------------------------------------


def test_an_epoch_line_says_each_quantity_once_with_its_unit():
    mlp = {"epoch": 1, "train": {"loss": 0.11051, "recon": 0.11051}, "seconds": 1.0,
           "test": {"loss": 0.1021, "recon": 0.1021, "bce": 0.10212, "mse": 0.031}}
    line = format_metrics(mlp, loss_unit("mlp-ae", {"loss": "bce"}))
    assert line.count("0.11051") == 1 and "recon" not in line and "0.10212" not in line
    assert "per-pixel BCE" in line and "per-pixel MSE 0.031" in line
    vae = {"epoch": 2, "train": {"loss": 104.5, "recon": 95.25, "kl": 9.25}, "seconds": 2.0,
           "test": {"loss": 103.0, "recon": 94.0, "kl": 9.0, "bce": 0.1199, "mse": 0.03}}
    line = format_metrics(vae, loss_unit("vae", {}))
    assert "nats per image" in line and "recon 95.25, KL 9.25" in line and "0.1199" not in line  # bce is recon / D
    mse = {**mlp, "test": {"loss": 0.03, "recon": 0.03, "bce": 0.2, "mse": 0.03}}
    line = format_metrics(mse, loss_unit("mlp-ae", {"loss": "mse"}))
    assert "per-pixel MSE" in line and "per-pixel BCE 0.2" in line and line.count("0.03") == 1


def test_train_prints_the_mlp_loss_once_per_split(tmp_path):
    result = cli("train", "mlp-ae", "--epochs", "1", "--out", "run", "--quiet", cwd=tmp_path, check_status=0)
    entry = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    line = next(line for line in result.stdout.splitlines() if line.startswith("epoch"))
    assert line.count(f"{entry['train']['loss']:.6g}") == 1 and "per-pixel BCE" in line, line
    assert "recon" not in line and "bce" not in line.lower().replace("per-pixel bce", ""), line


def test_eval_prints_each_quantity_once_with_its_unit(tmp_path):
    cli("train", "mlp-ae", "--epochs", "1", "--out", "run", "--quiet", cwd=tmp_path, check_status=0)
    lines = cli("eval", "run", cwd=tmp_path, check_status=0).stdout.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["loss", "mse"], lines
    assert lines[0].endswith("per-pixel BCE") and lines[1].endswith("per-pixel MSE")
    cli("train", "vae", "--epochs", "1", "--hidden-dims", "16", "--out", "vae", "--quiet", cwd=tmp_path, check_status=0)
    lines = cli("eval", "vae", cwd=tmp_path, check_status=0).stdout.splitlines()[1:5]
    assert [line.split()[0] for line in lines] == ["loss", "recon", "kl", "mse"], lines
    assert all(line.endswith("nats per image") for line in lines[:3])


def test_the_progress_bar_shows_the_running_loss(tmp_path, monkeypatch):
    shown = []

    class Bar:
        def __init__(self, iterable, *_):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix_str(self, text, refresh=True):
            shown.append(text)

    monkeypatch.setattr(training, "_progress", lambda iterable, total, description, enabled: Bar(iterable))
    run_training(tmp_path / "run", TrainConfig(model="vae", epochs=1, model_config={"hidden_dim": 16}),
                 progress=True, log=lambda _: None, report=False)
    entry = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert len(shown) == 12  # 1500 images in batches of 128
    assert shown[-1] == f"loss {entry['train']['loss']:.5g} nats per image", shown[-1]


def test_ctrl_c_names_the_resume_command_which_continues_the_run(tmp_path, monkeypatch):
    from autoencoders.backends.scratch_backend import ScratchBackend

    original, calls = ScratchBackend.train_step, []

    def interrupted_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 15:  # in epoch 2 (12 steps an epoch)
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ScratchBackend, "train_step", interrupted_step)
    result = cli("train", "mlp-ae", "--epochs", "2", "--out", "run", "--quiet", cwd=tmp_path, check_status=130)
    message = result.stderr.strip().splitlines()
    assert message == ["autoencoders train: interrupted; run has 1 finished epoch: continue with: "
                       "autoencoders train --resume run"], message
    monkeypatch.setattr(ScratchBackend, "train_step", original)
    cli("train", "--resume", "run", "--quiet", cwd=tmp_path, check_status=0)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_stop_for_a_nonfinite_loss_names_the_resume_command(tmp_path, monkeypatch):
    from autoencoders.backends.scratch_backend import ScratchBackend

    original, calls = ScratchBackend.train_step, []

    def poisoned_step(self, x, noise, before_update=None, labels=None):
        calls.append(1)
        if len(calls) == 15:
            before_update({"loss": float("nan")})
        return original(self, x, noise, before_update=before_update, labels=labels)

    monkeypatch.setattr(ScratchBackend, "train_step", poisoned_step)
    result = cli("train", "mlp-ae", "--epochs", "2", "--out", "run", "--quiet", cwd=tmp_path, check_status=1)
    assert "continue from it with: autoencoders train --resume run --on-nonfinite skip" in result.stderr, result.stderr


def test_a_run_that_cannot_start_announces_no_directory(tmp_path):
    result = cli("train", "mlp-ae", "--data-dir", "missing", "--out", "run", "--quiet", cwd=tmp_path, check_status=2)
    assert "run directory" not in result.stdout and not (tmp_path / "run").exists(), result.stdout


def test_reconstruct_draws_every_image_asked_for(tmp_path, monkeypatch):
    from autoencoders import plots

    cli("train", "mlp-ae", "--epochs", "1", "--out", "run", "--quiet", cwd=tmp_path, check_status=0)
    drawn = {}
    original = plots.save_image_rows

    def spy(path, rows, labels=None, **options):
        drawn.update(rows=rows, labels=labels, options=options)
        return original(path, rows, labels=labels, **options)

    monkeypatch.setattr(plots, "save_image_rows", spy)
    cli("reconstruct", "run", "--count", "32", cwd=tmp_path, check_status=0)
    originals = [row for row, label in zip(drawn["rows"], drawn["labels"]) if label.startswith("original")]
    reconstructions = [row for row, label in zip(drawn["rows"], drawn["labels"]) if label.startswith("reconstruction")]
    assert sum(len(row) for row in originals) == 32 and sum(len(row) for row in reconstructions) == 32
    assert all(len(row) <= drawn["options"]["max_columns"] for row in drawn["rows"])


def test_per_epoch_pictures_go_in_a_subfolder_and_a_report_is_written(tmp_path):
    cli("train", "vae", "--epochs", "3", "--image-every", "1", "--out", "run", "--quiet", cwd=tmp_path, check_status=0)
    top = sorted(p.name for p in (tmp_path / "run").glob("*.png"))
    assert top == ["loss.png"], top
    pictures = sorted(p.name for p in (tmp_path / "run" / PICTURES).iterdir())
    assert len(pictures) == 12 and "samples-epoch003.png" in pictures, pictures
    assert (tmp_path / "run" / "report.html").stat().st_size > 0
    (tmp_path / "run" / "report.html").unlink()
    again = cli("report", "run", cwd=tmp_path, check_status=0)
    assert again.stdout.strip() == f"wrote {Path('run') / 'report.html'}" and (tmp_path / "run" / "report.html").is_file()
