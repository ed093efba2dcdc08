"""The training loop and the command line: both backends, resume after SIGKILL, checkpoints
that the torch twin loads, and every user error as one line with exit status 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoencoders.runs.checkpoint import load_tensors
from autoencoders.training import KILL_AT_STEP_VARIABLE, TrainConfig, run
from parity_tests.mnist import MNIST_DIR
from parity_tests.tolerances import assert_close
from torch_impl.models import build as torch_build

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden-dims", "32", "--latent-dim", "8", "--quiet"]


def cli(*args, cwd, env=None, check_status=None, process=False):
    """``autoencoders ARGS`` as a user would run it: in a fresh process when ``process`` or ``env``
    is given (a SIGKILL, an environment variable), otherwise through the same entry point,
    ``autoencoders.cli.main``, in this process (a new Python costs ~2 s of imports per call)."""
    args = [str(arg) for arg in args]
    if process or env is not None:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        result = subprocess.run([sys.executable, "-m", "autoencoders", *args], cwd=cwd,
                                capture_output=True, text=True, env=environment, timeout=600)
    else:
        result = _in_process(args, cwd)
    if check_status is not None:
        assert result.returncode == check_status, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _in_process(args: list[str], cwd) -> subprocess.CompletedProcess:
    """``main(args)`` run in ``cwd`` with its stdout and stderr captured; argparse's exits are statuses."""
    from autoencoders.cli import main

    stdout, stderr, before = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                status = main(args)
            except SystemExit as exit:  # --help, --version and argparse's usage errors
                status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["autoencoders", *args], status, stdout.getvalue(), stderr.getvalue())


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_killed_run_resumes_bit_for_bit(tmp_path: Path, common: list[str], kill_at: int = 18) -> None:
    """Run ``common`` whole (``whole``) and SIGKILLed at step ``kill_at`` (``killed``), resume the
    killed one: its weights and buffers, and every epoch's test metrics, equal the whole run's."""
    cli(*common, "--out", "whole", cwd=tmp_path, check_status=0)
    killed = cli(*common, "--out", "killed", cwd=tmp_path, env={KILL_AT_STEP_VARIABLE: str(kill_at)})
    assert killed.returncode == -signal.SIGKILL
    cli("train", "--resume", "killed", "--quiet", cwd=tmp_path, check_status=0)
    whole = load_tensors(tmp_path / "whole" / "model.safetensors")
    again = load_tensors(tmp_path / "killed" / "model.safetensors")
    assert whole.keys() == again.keys()
    for key in whole:
        np.testing.assert_array_equal(again[key], whole[key], err_msg=key)
    assert [m["test"] for m in _metrics(tmp_path / "killed")] == [m["test"] for m in _metrics(tmp_path / "whole")]


@pytest.mark.parametrize("model, model_config, parts", [
    ("mlp-ae", {"hidden_dims": [32], "latent_dim": 8}, {"loss", "recon"}),
    ("denoising-ae", {"hidden_dims": [32], "latent_dim": 8}, {"loss", "recon"}),
    ("sparse-ae", {"hidden_dim": 32}, {"loss", "recon", "penalty"}),
    ("sparse-ae", {"hidden_dim": 32, "penalty": "l1", "sparsity_weight": 0.5}, {"loss", "recon", "penalty"}),
    ("contractive-ae", {"hidden_dim": 32, "contraction_weight": 1.0}, {"loss", "recon", "penalty"}),
    ("tied-ae", {"hidden_dim": 32}, {"loss", "recon"}),
    ("tied-ae", {"hidden_dim": 32, "activation": "tanh"}, {"loss", "recon"}),
    ("deep-conv-vae", {"hidden_dims": [4, 8], "latent_dim": 4}, {"loss", "recon", "kl"}),
    ("iwae", {"hidden_dims": [16, 8], "latent_dim": 4, "num_samples": 3}, {"loss", "recon", "kl"}),
    ("cvae", {"hidden_dim": 32, "latent_dim": 4}, {"loss", "recon", "kl"}),
    ("wae-mmd", {"hidden_dim": 32, "latent_dim": 4, "kernel": "rbf"}, {"loss", "recon", "mmd"}),
    ("vq-vae", {"channels": [4, 8], "embedding_dim": 4, "num_embeddings": 8}, {"loss", "recon", "codebook", "commitment"}),
    ("vq-vae", {"channels": [4, 8], "embedding_dim": 4, "num_embeddings": 8, "ema": True},
     {"loss", "recon", "codebook", "commitment"}),
], ids=["mlp-ae", "denoising-ae", "sparse-ae", "sparse-ae-l1", "contractive-ae", "tied-ae", "tied-ae-tanh",
        "deep-conv-vae", "iwae", "cvae", "wae-mmd", "vq-vae", "vq-vae-ema"])
def test_both_backends_train_the_same_run(tmp_path, model, model_config, parts):
    """Same seed: identical initial weights, batches and noise, so the two runs agree (float64),
    every loss part (the penalty too) epoch by epoch and the final weights."""
    histories, weights = {}, {}
    for backend in ("scratch", "torch"):
        config = TrainConfig(model=model, epochs=2, backend=backend, dtype="float64", seed=3,
                             model_config=model_config)
        histories[backend] = run(tmp_path / backend, config, progress=False, log=lambda _: None)
        weights[backend] = load_tensors(tmp_path / backend / "model.safetensors")
    for a, b in zip(histories["scratch"], histories["torch"]):
        # vq-vae's test metrics add the codebook's perplexity over the whole test set
        assert set(a["train"]) == parts and set(a["test"]) == parts | {"bce", "mse"} | (
            {"perplexity"} if model == "vq-vae" else set())
        for split in ("train", "test"):
            assert set(a[split]) == set(b[split])
            for key in a[split]:
                assert_close(np.asarray(a[split][key]), np.asarray(b[split][key]), "training", np.float64, f"{split} {key}")
    for key in weights["scratch"]:
        assert_close(weights["scratch"][key], weights["torch"][key], "training", np.float64, key)
    assert histories["scratch"][1]["test"]["loss"] < histories["scratch"][0]["test"]["loss"]


@pytest.mark.parametrize("backend, kill_at", [
    ("scratch", 5),
    pytest.param("scratch", 18, marks=pytest.mark.slow),
    pytest.param("torch", 30, marks=pytest.mark.slow),
])
def test_resume_after_sigkill_ends_with_the_uninterrupted_weights(tmp_path, backend, kill_at):
    """Kill a real training process with SIGKILL mid-epoch (12 steps per epoch on the digits),
    resume it, and end bit-for-bit where an uninterrupted run ends (float64, same seed)."""
    common = ["train", "mlp-ae", "--epochs", "3", "--dtype", "float64", "--backend", backend, *SMALL]
    cli(*common, "--out", "whole", cwd=tmp_path, check_status=0)
    killed = cli(*common, "--out", "killed", cwd=tmp_path, env={KILL_AT_STEP_VARIABLE: str(kill_at)})
    assert killed.returncode == -signal.SIGKILL
    done_before_kill = (kill_at - 1) // 12
    assert len(_metrics(tmp_path / "killed")) == done_before_kill if done_before_kill else True
    resumed = cli("train", "--resume", "killed", "--quiet", cwd=tmp_path, check_status=0)
    if done_before_kill:
        assert f"resuming killed after epoch {done_before_kill}" in resumed.stdout
    whole = load_tensors(tmp_path / "whole" / "model.safetensors")
    again = load_tensors(tmp_path / "killed" / "model.safetensors")
    assert whole.keys() == again.keys()
    for key in whole:
        np.testing.assert_array_equal(again[key], whole[key], err_msg=key)
    assert [m["test"] for m in _metrics(tmp_path / "killed")] == [m["test"] for m in _metrics(tmp_path / "whole")]


BATCH_NORM_RUN = ["--hidden-dims", "4,8", "--latent-dim", "4", "--quiet"]


@pytest.mark.parametrize("backend", ["scratch", pytest.param("torch", marks=pytest.mark.slow)])
def test_a_batch_norm_model_resumes_with_the_uninterrupted_running_statistics(tmp_path, backend):
    """deep-conv-vae (BatchNorm after every convolution) killed with SIGKILL in epoch 2 and resumed:
    its parameters and BatchNorm's buffers (running_mean, running_var, num_batches_tracked, which
    the checkpoint holds beside the weights) end bit for bit where the uninterrupted run's end."""
    common = ["train", "deep-conv-vae", "--epochs", "3", "--dtype", "float64", "--backend", backend, *BATCH_NORM_RUN]
    cli(*common, "--out", "whole", cwd=tmp_path, check_status=0)
    killed = cli(*common, "--out", "killed", cwd=tmp_path, env={KILL_AT_STEP_VARIABLE: "18"})
    assert killed.returncode == -signal.SIGKILL
    resumed = cli("train", "--resume", "killed", "--quiet", cwd=tmp_path, check_status=0)
    assert "resuming killed after epoch 1" in resumed.stdout
    whole = load_tensors(tmp_path / "whole" / "model.safetensors")
    again = load_tensors(tmp_path / "killed" / "model.safetensors")
    assert whole.keys() == again.keys()
    buffers = [key for key in whole if key.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")]
    assert len(buffers) == 3 * 4  # two encoder and two decoder BatchNorms
    for key in whole:
        assert again[key].dtype == whole[key].dtype and again[key].shape == whole[key].shape, key
        np.testing.assert_array_equal(again[key], whole[key], err_msg=key)
    for key in buffers:
        if key.endswith("num_batches_tracked"):  # one per training step: 3 epochs of 12; evaluation counts none
            assert whole[key].shape == () and whole[key].dtype == np.int64 and int(whole[key]) == 36, key
        else:  # moved away from their initial 0 and 1
            assert not np.array_equal(whole[key], np.zeros_like(whole[key])) and not np.array_equal(
                whole[key], np.ones_like(whole[key])), key
    assert [m["test"] for m in _metrics(tmp_path / "killed")] == [m["test"] for m in _metrics(tmp_path / "whole")]
    # the checkpoint loads into the torch twin, buffers included (strict)
    from safetensors.torch import load_file

    config = json.loads((tmp_path / "killed" / "config.json").read_text())
    twin = torch_build("deep-conv-vae", **{**config["model_config"], "image_size": 8}).double()
    twin.load_state_dict(load_file(tmp_path / "killed" / "model.safetensors"), strict=True)


def test_a_run_leaves_metrics_pictures_and_a_checkpoint_torch_loads(tmp_path):
    result = cli("train", "denoising-ae", "--epochs", "3", "--out", "run", *SMALL, cwd=tmp_path, check_status=0)
    run_dir = tmp_path / "run"
    assert "epoch   3" in result.stdout
    metrics = _metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["test"]["loss"] < metrics[0]["test"]["loss"]
    assert {"loss", "recon", "bce", "mse"} <= set(metrics[-1]["test"])
    for name in ("pictures/reconstructions-epoch003.png", "pictures/filters-epoch003.png", "loss.png", "model.safetensors",
                 "config.json", "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    from safetensors.torch import load_file

    config = json.loads((run_dir / "config.json").read_text())
    twin = torch_build("denoising-ae", **config["model_config"])  # the whole configuration: input_dim 64 too
    twin.load_state_dict(load_file(run_dir / "model.safetensors"), strict=True)
    evaluation = cli("eval", "run", "--json", cwd=tmp_path, check_status=0)
    assert json.loads(evaluation.stdout)["test"]["loss"] == pytest.approx(metrics[-1]["test"]["loss"], rel=1e-6)
    cli("reconstruct", "run", "--count", "8", cwd=tmp_path, check_status=0)
    assert (run_dir / "reconstructions.png").exists()


def test_resume_extends_a_finished_run_exactly(tmp_path):
    """Two epochs, then --resume --epochs 3, equals three epochs straight (float64)."""
    common = ["--dtype", "float64", *SMALL]
    cli("train", "mlp-ae", "--epochs", "3", "--out", "straight", *common, cwd=tmp_path, check_status=0)
    cli("train", "mlp-ae", "--epochs", "2", "--out", "extended", *common, cwd=tmp_path, check_status=0)
    cli("train", "--resume", "extended", "--epochs", "3", "--quiet", cwd=tmp_path, check_status=0)
    straight = load_tensors(tmp_path / "straight" / "model.safetensors")
    extended = load_tensors(tmp_path / "extended" / "model.safetensors")
    for key in straight:
        np.testing.assert_array_equal(extended[key], straight[key], err_msg=key)


def test_convert_round_trip(tmp_path):
    cli("train", "mlp-ae", "--epochs", "1", "--out", "run", *SMALL, cwd=tmp_path, check_status=0)
    cli("convert", "run", "weights.pt", cwd=tmp_path, check_status=0)
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    original = load_tensors(tmp_path / "run" / "model.safetensors")
    assert set(state) == set(original)
    cli("convert", "weights.pt", "back.safetensors", cwd=tmp_path, check_status=0)
    back = load_tensors(tmp_path / "back.safetensors")
    for key in original:
        np.testing.assert_array_equal(back[key], original[key])


@pytest.mark.parametrize("args, message", [
    (["train", "no-such-model"], "invalid choice"),
    (["train", "mlp-ae", "--epochs", "0"], "expected a positive integer"),
    (["train", "mlp-ae", "--lr", "abc"], "expected a number"),
    (["train", "mlp-ae", "--noise", "masking"], "apply to denoising-ae"),
    (["train", "mlp-ae", "--dataset", "mnist", "--data-dir", "nowhere"], "nowhere"),
    (["train", "--resume", "nowhere"], "nowhere"),
    (["train"], "needs a MODEL"),
    (["train", "conv-ae"], "maps 28x28 images to 28x28 only"),
    (["train", "conv-ae", "--hidden-dims", "8"], "applies to the MLP models"),
    (["train", "vae", "--hidden-dims", "8,4"], "one hidden layer"),
    (["eval", "nowhere"], "nowhere"),
    (["convert", "missing.safetensors", "out.pt"], "missing.safetensors: not found"),
    (["convert", "garbage.pt", "out.safetensors"], "weights_only=True"),
    (["convert", "garbage.safetensors", "out.pt"], "not a valid safetensors file"),
    (["convert", "garbage.safetensors", "out.txt"], "must end in"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle at all")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "a run that cannot start must leave no run directory"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert message in lines[-1], result.stderr
    assert len(lines) == 1, result.stderr


def test_corrupt_checkpoint_and_occupied_run_dir_are_refused(tmp_path):
    cli("train", "mlp-ae", "--epochs", "1", "--out", "run", *SMALL, cwd=tmp_path, check_status=0)
    again = cli("train", "mlp-ae", "--epochs", "1", "--out", "run", *SMALL, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    weights = next((tmp_path / "run" / "checkpoints").glob("epoch-*")) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    broken = cli("eval", "run", cwd=tmp_path)
    assert broken.returncode == 2 and "checksum mismatch" in broken.stderr and "Traceback" not in broken.stderr


def test_every_command_has_help(tmp_path):
    for command in ("train", "eval", "reconstruct", "convert", "compare", "gradcheck", "bench"):
        result = cli(command, "--help", cwd=tmp_path, check_status=0)
        assert "usage: autoencoders" in result.stdout


def test_the_installed_entry_points_run_in_a_process_of_their_own(tmp_path):
    """``python -m autoencoders`` and the console script reach the same main, with its statuses."""
    assert cli("--version", cwd=tmp_path, process=True, check_status=0).stdout.startswith("autoencoders ")
    refused = cli("train", "mlp-ae", "--epochs", "0", cwd=tmp_path, process=True)
    assert refused.returncode == 2 and "expected a positive integer" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    script = Path(sys.executable).with_name("autoencoders")
    if script.exists():  # installed with pip install -e: the console script
        result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0 and result.stdout.startswith("autoencoders ")


def test_compare_prints_both_backends_and_writes_a_plot(tmp_path):
    result = cli("compare", "mlp-ae", "--epochs", "2", "--dtype", "float64", "--out", "cmp", *SMALL,
                 cwd=tmp_path, check_status=0)
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2
    for row in rows:
        scratch_loss, torch_loss, difference = float(row[1]), float(row[2]), float(row[3])
        assert scratch_loss == pytest.approx(torch_loss, rel=1e-9)
        assert difference < 1e-9
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0


# -- sparse-ae, contractive-ae, tied-ae -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["scratch", "torch"])
@pytest.mark.parametrize("model, options, model_config, parts", [
    ("sparse-ae", ["--sparsity-target", "0.1", "--sparsity-weight", "2"],
     {"hidden_dim": 16, "sparsity_target": 0.1, "sparsity_weight": 2.0}, {"loss", "recon", "penalty"}),
    ("contractive-ae", ["--contraction-weight", "0.5"], {"hidden_dim": 16, "contraction_weight": 0.5},
     {"loss", "recon", "penalty"}),
    ("tied-ae", ["--activation", "relu"], {"hidden_dim": 16, "activation": "relu"}, {"loss", "recon"}),
], ids=["sparse-ae", "contractive-ae", "tied-ae"])
def test_the_regularized_models_train_from_the_command_line(tmp_path, model, options, model_config, parts, backend):
    """`autoencoders train` of each: its options reach the model, the metrics hold the loss parts,
    and the run directory holds the checkpoint (which the torch twin loads), the filters and
    the hidden activations' histogram (and, sparse-ae, the units' mean activations')."""
    cli("train", model, "--epochs", "1", "--backend", backend, "--hidden-dims", "16", *options, "--out", "run",
        "--quiet", cwd=tmp_path, check_status=0)
    run_dir = tmp_path / "run"
    recorded = json.loads((run_dir / "config.json").read_text())["model_config"]  # the whole configuration
    assert {key: recorded[key] for key in model_config} == model_config and recorded["input_dim"] == 64
    [entry] = _metrics(run_dir)
    assert set(entry["train"]) == parts and set(entry["test"]) == parts | {"bce", "mse"}
    for split in ("train", "test"):
        values = entry[split]
        assert all(np.isfinite(value) for value in values.values()), values
        assert values["loss"] == pytest.approx(values["recon"] + values.get("penalty", 0.0), rel=1e-6)
        if "penalty" in parts:
            assert values["penalty"] > 0
    for name in ("model.safetensors", "checkpoints/epoch-0001/model.safetensors", "pictures/filters-epoch001.png",
                 "pictures/activations-epoch001.png", "pictures/reconstructions-epoch001.png", "loss.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "pictures" / "unit-means-epoch001.png").exists() == (model == "sparse-ae")
    weights = load_tensors(run_dir / "model.safetensors")
    assert weights["encoder.weight"].shape == (16, 64)  # --hidden-dims 16 on the 8x8 digits
    from safetensors.torch import load_file

    twin = torch_build(model, input_dim=64, **model_config)
    twin.load_state_dict(load_file(run_dir / "model.safetensors"), strict=True)


@pytest.mark.parametrize("backend", ["scratch", "torch"])
def test_the_activation_histograms_show_the_code_of_the_test_images(tmp_path, monkeypatch, backend):
    """What the histograms are drawn from: h of the trained model on every test image (the digits
    have 297, fewer than the 1000 used at most), and each unit's mean of it; the titles name the
    model, the epoch, the target ρ and the measured mean activation."""
    from autoencoders import plots
    from autoencoders.data import binarize, load_dataset
    from scratch.models import build

    drawn = {}
    save_histogram = plots.save_histogram

    def spy(path, values, **options):
        drawn[Path(path).name] = (np.array(values, dtype=np.float64), options["title"])
        return save_histogram(path, values, **options)

    monkeypatch.setattr(plots, "save_histogram", spy)
    config = TrainConfig(model="sparse-ae", epochs=1, backend=backend, dtype="float64", model_config={"hidden_dim": 16})
    run(tmp_path / "run", config, progress=False, log=lambda _: None)
    assert set(drawn) == {"activations-epoch001.png", "unit-means-epoch001.png"}
    model = build("sparse-ae", dtype=np.float64, input_dim=64, hidden_dim=16)
    model.load_state_dict(load_tensors(tmp_path / "run" / "model.safetensors"))
    images = load_dataset("digits").test_images
    hidden = model.encode(binarize(images, "threshold").astype(np.float64))
    assert hidden.shape == (297, 16)
    activations, title = drawn["activations-epoch001.png"]
    assert_close(activations, hidden, "training", np.float64, "hidden activations")
    for needle in ("sparse-ae", f"({backend})", "epoch 1", "ρ = 0.05", f"mean activation {hidden.mean():.4f}"):
        assert needle in title, (needle, title)
    unit_means, title = drawn["unit-means-epoch001.png"]
    assert_close(unit_means, hidden.mean(axis=0), "training", np.float64, "ρ̂")
    assert "ρ = 0.05" in title and "epoch 1" in title


@pytest.mark.parametrize("args, needles", [
    (["train", "mlp-ae", "--penalty", "l1"], ["--penalty", "sparse-ae", "mlp-ae"]),
    (["train", "tied-ae", "--sparsity-target", "0.1"], ["--sparsity-target", "tied-ae"]),
    (["train", "contractive-ae", "--sparsity-weight", "1"], ["--sparsity-weight", "contractive-ae"]),
    (["train", "sparse-ae", "--contraction-weight", "0.5"], ["--contraction-weight", "contractive-ae", "sparse-ae"]),
    (["train", "vae", "--activation", "relu"], ["--activation", "tied-ae", "vae"]),
    (["train", "sparse-ae", "--beta", "2"], ["--beta", "sparse-ae"]),
    (["train", "sparse-ae", "--latent-dim", "8"], ["--latent-dim", "sparse-ae"]),
    (["train", "contractive-ae", "--latent-dim", "8"], ["--latent-dim", "contractive-ae"]),
    (["train", "tied-ae", "--latent-dim", "8"], ["--latent-dim", "tied-ae"]),
    (["train", "contractive-ae", "--hidden-dims", "32,16"], ["--hidden-dims", "contractive-ae", "one hidden layer"]),
    (["train", "sparse-ae", "--penalty", "l1", "--sparsity-target", "0.1"], ["--sparsity-target", "sparse-ae", "l1"]),
    (["compare", "tied-ae", "--penalty", "kl"], ["autoencoders compare", "--penalty", "tied-ae"]),
    (["train", "sparse-ae", "--sparsity-target", "1"], ["--sparsity-target", "strictly between 0 and 1"]),
    (["train", "sparse-ae", "--sparsity-target", "0"], ["--sparsity-target", "strictly between 0 and 1"]),
    (["train", "sparse-ae", "--sparsity-target", "nan"], ["--sparsity-target", "strictly between 0 and 1"]),
    (["train", "sparse-ae", "--penalty", "l2"], ["--penalty", "invalid choice"]),
    (["train", "sparse-ae", "--sparsity-weight", "-1"], ["--sparsity-weight", "non-negative"]),
    (["train", "contractive-ae", "--contraction-weight", "inf"], ["--contraction-weight", "non-negative"]),
    (["train", "tied-ae", "--activation", "softmax"], ["--activation", "invalid choice"]),
])
def test_regularized_model_options_give_one_line_usage_errors(tmp_path, args, needles):
    """Each option of sparse-ae, contractive-ae or tied-ae is refused, in one line naming the
    option and the model, for a model it does not apply to, and so is a value out of its range."""
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "a run that cannot start must leave no run directory"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, result.stderr)


def _constant_predictor_bce() -> float:
    """Test BCE of the best constant predictor: each pixel's frequency in the training set."""
    from autoencoders.data import binarize, load_dataset

    data = load_dataset("mnist", data_dir=MNIST_DIR)
    frequency = np.clip(binarize(data.train_images, "threshold").mean(axis=0), 1e-7, 1 - 1e-7)
    target = binarize(data.test_images, "threshold")
    return float(-(target * np.log(frequency) + (1 - target) * np.log1p(-frequency)).mean())


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists(), reason="real MNIST not available")
def test_conv_ae_trains_on_real_mnist(tmp_path):
    """conv-ae from the command line: learns, leaves the same artifacts, and torch loads its weights."""
    cli("train", "conv-ae", "--dataset", "mnist", "--data-dir", MNIST_DIR, "--epochs", "1", "--out", "conv",
        "--quiet", cwd=tmp_path, check_status=0)
    run_dir = tmp_path / "conv"
    assert _metrics(run_dir)[0]["test"]["bce"] < _constant_predictor_bce()
    for name in ("pictures/reconstructions-epoch001.png", "pictures/filters-epoch001.png", "loss.png"):
        assert (run_dir / name).stat().st_size > 0, name
    from safetensors.torch import load_file

    torch_build("conv-ae").load_state_dict(load_file(run_dir / "model.safetensors"), strict=True)


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists(), reason="real MNIST not available")
def test_trains_on_real_mnist(tmp_path):
    """The issue's acceptance command, two epochs instead of five: the test BCE falls, and ends
    well below the best constant predictor's (each pixel's training-set frequency)."""
    cli("train", "mlp-ae", "--dataset", "mnist", "--data-dir", MNIST_DIR, "--epochs", "2", "--out", "mnist",
        "--quiet", cwd=tmp_path, check_status=0)
    metrics = _metrics(tmp_path / "mnist")
    assert metrics[1]["test"]["bce"] < metrics[0]["test"]["bce"] < 0.5 * _constant_predictor_bce()


def test_a_vae_run_leaves_samples_interpolation_traversals_and_a_latent_map(tmp_path):
    cli("train", "beta-vae", "--epochs", "2", "--latent-dim", "2", "--binarize", "grey", "--out", "run", "--quiet",
        cwd=tmp_path, check_status=0)
    run_dir = tmp_path / "run"
    for name in ("samples", "interpolation", "traversals", "latent", "reconstructions"):
        assert (run_dir / "pictures" / f"{name}-epoch002.png").stat().st_size > 0, name
    metrics = _metrics(run_dir)
    assert {"loss", "recon", "kl", "bce", "mse"} <= set(metrics[-1]["test"])
    # nats per image: the summed objective divided by the image count, so recon ≈ 64 pixels × bce
    test = metrics[-1]["test"]
    assert test["recon"] == pytest.approx(64 * test["bce"], rel=1e-4)


@pytest.mark.slow
def test_capacity_schedule_resumes_exactly_after_sigkill(tmp_path):
    """The β-VAE's capacity C depends on the step count: a resumed run must restore it."""
    common = ["train", "beta-vae", "--epochs", "3", "--dtype", "float64", "--capacity-max", "5",
              "--capacity-steps", "20", "--latent-dim", "4", "--quiet"]
    cli(*common, "--out", "whole", cwd=tmp_path, check_status=0)
    killed = cli(*common, "--out", "killed", cwd=tmp_path, env={KILL_AT_STEP_VARIABLE: "20"})
    assert killed.returncode == -signal.SIGKILL
    cli("train", "--resume", "killed", "--quiet", cwd=tmp_path, check_status=0)
    whole = load_tensors(tmp_path / "whole" / "model.safetensors")
    again = load_tensors(tmp_path / "killed" / "model.safetensors")
    for key in whole:
        np.testing.assert_array_equal(again[key], whole[key], err_msg=key)


def test_eval_of_a_vae_reports_elbo_kl_per_dimension_active_units_and_nll(tmp_path):
    cli("train", "vae", "--epochs", "2", "--latent-dim", "4", "--binarize", "grey", "--backend", "torch",
        "--out", "run", "--quiet", cwd=tmp_path, check_status=0)
    result = json.loads(cli("eval", "run", "--json", "--nll-samples", "50", cwd=tmp_path, check_status=0).stdout)
    variational = result["variational"]
    assert len(variational["kl_per_dimension"]) == 4 and 0 <= variational["active_units"] <= 4
    assert sum(variational["kl_per_dimension"]) == pytest.approx(result["test"]["kl"], rel=1e-4)
    # the importance-sampled bound is tighter than the ELBO (K = 50, 297 test images)
    assert variational["nll"] < variational["negative_elbo"]
    assert variational["negative_elbo"] == pytest.approx(result["test"]["loss"], rel=0.05)
    assert list(variational["bounds"]) == ["1", "5", "50"]  # −ℒ_K, tighter with K, above −log p̂_50 at K = 50
    assert variational["bounds"]["1"] > variational["bounds"]["5"] > variational["bounds"]["50"]
    bad = cli("eval", "run", "--nll-samples", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "non-negative integer" in bad.stderr


def test_the_training_loop_gives_a_conditional_model_each_images_own_label(tmp_path, monkeypatch):
    """cvae on grey levels (the batch is the images themselves): every step's labels are the
    dataset's labels of exactly the images in that batch, in the epoch's shuffled order, and the
    test metrics read the test labels (wrong labels would cost the class-bias the model learns)."""
    from autoencoders.backends.scratch_backend import ScratchBackend
    from autoencoders.data import load_dataset

    seen, calls = [], []
    original_step, original_evaluate = ScratchBackend.train_step, ScratchBackend.evaluate

    def recording_step(self, x, noise, before_update=None, labels=None):
        seen.append((x.copy(), None if labels is None else labels.copy()))
        return original_step(self, x, noise, before_update, labels)

    def recording_evaluate(self, x, noise, labels=None):
        calls.append((x.copy(), None if labels is None else labels.copy()))
        return original_evaluate(self, x, noise, labels)

    monkeypatch.setattr(ScratchBackend, "train_step", recording_step)
    monkeypatch.setattr(ScratchBackend, "evaluate", recording_evaluate)
    config = TrainConfig(model="cvae", epochs=1, dtype="float64", binarize="grey", model_config={"hidden_dim": 8,
                                                                                                 "latent_dim": 2})
    run(tmp_path / "run", config, progress=False, log=lambda _: None)
    dataset = load_dataset("digits")
    train = dataset.train_images.reshape(len(dataset.train_images), -1)
    assert sum(len(x) for x, _ in seen) == len(train)
    for x, labels in seen:
        rows = [int(np.flatnonzero((train == row).all(axis=1))[0]) for row in x.reshape(len(x), -1)]
        np.testing.assert_array_equal(labels, dataset.train_labels[rows])
    test = dataset.test_images.reshape(len(dataset.test_images), -1)
    for x, labels in calls:
        rows = [int(np.flatnonzero((test == row).all(axis=1))[0]) for row in x.reshape(len(x), -1)]
        np.testing.assert_array_equal(labels, dataset.test_labels[rows])


IWAE_RUN = ["--hidden-dims", "16,8", "--latent-dim", "4", "--num-samples", "3", "--binarize", "dynamic", "--quiet"]


@pytest.mark.parametrize("model, options", [
    ("cvae", ["--hidden-dims", "16", "--latent-dim", "3"]),
    ("wae-mmd", ["--hidden-dims", "16", "--latent-dim", "3", "--reg-weight", "5"]),
    ("vq-vae", ["--embedding-dim", "3", "--num-embeddings", "6", "--ema"]),
])
def test_cvae_wae_and_vq_vae_resume_after_sigkill_bit_for_bit(tmp_path, model, options):
    """cvae (each batch's labels from the shuffled order), wae-mmd (prior samples drawn every step)
    and vq-vae with its EMA codebook (buffers moved by every training-mode loss, saved in the
    checkpoint) killed in epoch 2 and resumed: the weights, buffers and test metrics of the
    uninterrupted run, bit for bit; and the run's pictures."""
    _assert_killed_run_resumes_bit_for_bit(tmp_path, ["train", model, "--epochs", "3", "--dtype", "float64", *options,
                                                      "--quiet"])
    pictures = {"cvae": ["pictures/samples-epoch003.png"],
                "wae-mmd": ["pictures/samples-epoch003.png", "pictures/interpolation-epoch003.png"],
                "vq-vae": ["pictures/codebook-usage-epoch003.png", "perplexity.png"]}[model]
    for name in pictures:
        assert (tmp_path / "whole" / name).stat().st_size > 0, name


def test_an_iwae_resumes_after_sigkill_with_the_uninterrupted_weights_and_reports_its_bounds(tmp_path):
    """iwae (K = 3 ε per image and Bernoulli-resampled images every batch, both from the run's
    generators) killed with SIGKILL in epoch 2 and resumed: bit for bit the uninterrupted run. Its
    evaluation reports −ℒ_K at K = 1, 3 (its own), 5, 50, each at least the importance-sampled
    −log p(x) at K = 200 up to the estimates' noise, and falling with K."""
    _assert_killed_run_resumes_bit_for_bit(tmp_path, ["train", "iwae", "--epochs", "3", "--dtype", "float64", *IWAE_RUN])
    result = json.loads(cli("eval", "whole", "--json", "--nll-samples", "200", cwd=tmp_path, check_status=0).stdout)
    bounds = result["variational"]["bounds"]
    assert list(bounds) == ["1", "3", "5", "50"]
    values = [bounds[k] for k in bounds]
    assert values == sorted(values, reverse=True), bounds  # tighter with K
    assert result["variational"]["nll"] < bounds["50"]


def test_load_run_gives_the_model_with_its_newest_weights_in_either_backend(tmp_path):
    """``autoencoders.load_run``, the application's Python face (DESIGN.md's contract)."""
    import autoencoders

    config = TrainConfig(model="mlp-ae", epochs=2, dtype="float64", seed=5, model_config={"hidden_dims": [8], "latent_dim": 2})
    history = run(tmp_path / "run", config, progress=False, log=lambda _: None)
    saved = load_tensors(tmp_path / "run" / "model.safetensors")
    for backend in ("scratch", "torch"):
        loaded = autoencoders.load_run(tmp_path / "run", backend=backend)
        assert loaded.config.backend == backend and loaded.config.model == "mlp-ae"
        assert loaded.metrics == history and len(loaded.metrics) == 2
        weights = loaded.backend.weights()
        assert weights.keys() == saved.keys()
        for key in saved:
            np.testing.assert_array_equal(weights[key], saved[key], err_msg=f"{backend}: {key}")
    assert isinstance(autoencoders.load_run(tmp_path / "run", backend="torch").model, torch.nn.Module)
    with pytest.raises(ValueError, match="backend must be one of scratch, torch, got 'jax'"):
        autoencoders.load_run(tmp_path / "run", backend="jax")


@pytest.mark.parametrize("backend", ["scratch", "torch"])
def test_evaluation_and_pictures_run_in_evaluation_mode_and_give_back_each_modules_mode(backend):
    """BatchNorm must use its running statistics and Dropout drop nothing when a backend evaluates,
    encodes or decodes; afterwards every module has the mode it had (a submodule the user froze
    in evaluation mode stays so)."""
    from autoencoders.backends import make_backend
    from autoencoders.training import TrainConfig

    config = TrainConfig(model="vae", dtype="float64", backend=backend)
    engine = make_backend(config, {})
    modules = [module for _, module in engine.model.named_modules()]
    frozen = modules[-1]
    frozen.training = False
    seen = []
    original = type(engine.model).loss

    def spy(self, *args, **kwargs):
        seen.append([module.training for module in modules])
        return original(self, *args, **kwargs)

    x = np.random.default_rng(0).random((3, 784))
    noise = np.random.default_rng(1).standard_normal((3, engine.model.config["latent_dim"]))
    type(engine.model).loss = spy
    try:
        engine.evaluate(x, noise)
    finally:
        type(engine.model).loss = original
    assert seen and not any(seen[0]), "evaluate runs every module in evaluation mode"
    assert [module.training for module in modules] == [True] * (len(modules) - 1) + [False]
