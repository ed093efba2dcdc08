"""Runs that go wrong lose nothing and say so: SIGKILL at any point of a run (inside a checkpoint
write included) then --resume ends on exactly the uninterrupted run's weights; a non-finite loss
stops the run (or skips the batch) with the epoch and the step; a failed write or an unwritable
run directory leaves the earlier checkpoints intact; checkpoints are never written through a link
out of the run directory."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
from pathlib import Path

import numpy as np
import pytest

from autoencoders._faults import CHECKPOINT_PHASES, FAIL_AT_VARIABLE, KILL_AT_VARIABLE
from autoencoders.backends import ScratchBackend
from autoencoders.cli import main
from autoencoders.data import binarize, load_dataset
from autoencoders.runs import checkpoint as checkpoint_module
from autoencoders.runs.checkpoint import CheckpointError, latest_checkpoint, load_tensors, read_checkpoint
from autoencoders.runs.directory import LOCK_NAME
from autoencoders.training import (
    KILL_AT_STEP_VARIABLE,
    NonFiniteLossError,
    TrainConfig,
    _batches,
    epoch_rng,
    model_config_for,
    run,
)
from parity_tests.mnist import MNIST_DIR
from parity_tests.test_train import SMALL, cli
from scratch.models import draw_noise
from scratch.models.mlp import MLPAutoencoder

# 3 epochs of 12 steps on the offline digits, float64 (bit-for-bit comparisons), pictures once.
COMMON = ["train", "mlp-ae", "--epochs", "3", "--dtype", "float64", "--image-every", "3", *SMALL]
STEPS_PER_EPOCH = 12


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"  # killed before its first write: none yet
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _without_seconds(value):
    """A metrics entry, state.json or any JSON value with the epochs' wall-clock times removed."""
    if isinstance(value, dict):
        return {key: _without_seconds(item) for key, item in value.items() if key != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(item) for item in value]
    return value


def run_directory_contents(run_dir: Path) -> dict[str, object]:
    """Every file under ``run_dir`` by relative path: its bytes, or for the JSON files its value
    less the epochs' timings (``seconds``); the lock file's content (a pid) and report.html's (the
    timings again, and when it was written) are left out."""
    contents = {}
    for path in sorted(p for p in run_dir.rglob("*") if not p.is_dir()):
        name = path.relative_to(run_dir).as_posix()
        if path.name == LOCK_NAME:
            contents[name] = "lock"
        elif path.name == "report.html":  # present; it shows the timings and when it was written
            contents[name] = "report"
        elif path.name == "metrics.jsonl":
            contents[name] = [_without_seconds(json.loads(line)) for line in path.read_text().splitlines()]
        elif path.name == "state.json":
            contents[name] = _without_seconds(json.loads(path.read_text()))
        else:
            contents[name] = path.read_bytes()
    return contents


def assert_same_run_directory(actual: Path, expected: Path, what: str) -> None:
    """The two run directories hold the same files with the same contents (timings aside)."""
    found, wanted = run_directory_contents(actual), run_directory_contents(expected)
    assert sorted(found) == sorted(wanted), f"{what}: files differ: {sorted(set(found) ^ set(wanted))}"
    for name in wanted:
        assert found[name] == wanted[name], f"{what}: {name} differs from the uninterrupted run's"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference: the same run, never killed."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    cli(*COMMON, "--out", "run", cwd=directory, check_status=0)
    return directory / "run"


KILL_POINTS = [
    *(f"checkpoint-2:{phase}" for phase in CHECKPOINT_PHASES),  # every phase of a checkpoint write
    "metrics-2", "published-2",  # the completion step after it (epoch 2 draws no pictures)
    "write:state.json",       # mid-way through an atomic write (epoch 1's state.json: temp written, not renamed)
    "write:latest",           # the same for the pointer
    "write:metrics.jsonl",
    "artifacts-3",            # after the last checkpoint, before the pictures
    "write:loss.png",         # mid-way through a picture's write
]


# The default run kills at one point of each kind (inside a checkpoint write, inside an atomic
# write, in the completion step); `-m slow` kills at every one of them.
DEFAULT_KILL_POINTS = ("checkpoint-2:renamed", "write:state.json", "artifacts-3")


@pytest.mark.parametrize("point", [point if point in DEFAULT_KILL_POINTS else pytest.param(point, marks=pytest.mark.slow)
                                   for point in KILL_POINTS])
def test_sigkill_at_any_point_then_resume_ends_with_the_uninterrupted_weights(tmp_path, uninterrupted, point):
    killed = cli(*COMMON, "--out", "run", cwd=tmp_path, env={KILL_AT_VARIABLE: point})
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stderr}"
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    if (checkpoints / "latest").exists():  # whatever was killed, what `latest` names is complete
        _, _, state = read_checkpoint(latest_checkpoint(run_dir))
        assert len(_metrics(run_dir)) in (state["epoch"] - 1, state["epoch"])
    cli("train", "--resume", "run", "--quiet", cwd=tmp_path, check_status=0)
    expected, actual = load_tensors(uninterrupted / "model.safetensors"), load_tensors(run_dir / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{point}: {key}")
    assert [m["test"] for m in _metrics(run_dir)] == [m["test"] for m in _metrics(uninterrupted)]
    assert (checkpoints / "latest").read_text().strip() == "epoch-0003"
    # the whole directory: weights, optimizer state, pictures, metrics; no temporary or staging left
    assert_same_run_directory(run_dir, uninterrupted, point)


# Every point of the last epoch (3): mid-epoch, each phase of its checkpoint, each atomic write of
# its completion step (``#N``: the N-th write of that name; RUN_DIR/model.safetensors is the 6th
# model.safetensors written, after two per earlier epoch and the checkpoint's own), each picture.
LAST_EPOCH_POINTS = [
    *(f"checkpoint-3:{phase}" for phase in CHECKPOINT_PHASES),
    "write:state.json#3", "write:latest#3", "write:metrics.jsonl#3", "metrics-3",
    "write:model.safetensors#6", "published-3", "artifacts-3",
    "write:reconstructions-epoch003.png", "write:filters-epoch003.png", "write:loss.png",
]


@pytest.mark.slow
@pytest.mark.parametrize("fault, point", [
    ("kill", "step"),  # mid-epoch 3, between two training steps (which write nothing: no disk to fill)
    *((fault, point) for fault in ("kill", "full disk") for point in LAST_EPOCH_POINTS),
])
def test_a_kill_or_a_full_disk_anywhere_in_the_last_epoch_then_resume_gives_the_uninterrupted_run(
        tmp_path, uninterrupted, point, fault):
    """Killed (SIGKILL) or out of disk (ENOSPC) anywhere in the last epoch, then ``--resume``: the
    run directory equals the uninterrupted run's, file for file (weights, the copy at
    RUN_DIR/model.safetensors, pictures, metrics, optimizer state, older checkpoints pruned)."""
    if point == "step":
        env = {KILL_AT_STEP_VARIABLE: str(2 * STEPS_PER_EPOCH + 5)}
    else:
        env = {KILL_AT_VARIABLE if fault == "kill" else FAIL_AT_VARIABLE: point}
    interrupted = cli(*COMMON, "--out", "run", cwd=tmp_path, env=env)
    if fault == "kill":
        assert interrupted.returncode == -signal.SIGKILL, f"{point} was never reached: {interrupted.stderr}"
    else:
        lines = interrupted.stderr.strip().splitlines()
        assert interrupted.returncode == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
    resumed = cli("train", "--resume", "run", "--quiet", cwd=tmp_path, check_status=0)
    assert "done: " in resumed.stdout
    assert_same_run_directory(tmp_path / "run", uninterrupted, f"{fault} at {point}")


def test_the_step_kill_point_and_the_named_points_agree(tmp_path, uninterrupted):
    """The older per-step variable still works beside the named points (mid-epoch 2)."""
    killed = cli(*COMMON, "--out", "run", cwd=tmp_path, env={KILL_AT_STEP_VARIABLE: str(STEPS_PER_EPOCH + 5)})
    assert killed.returncode == -signal.SIGKILL
    assert len(_metrics(tmp_path / "run")) == 1
    cli("train", "--resume", "run", "--quiet", cwd=tmp_path, check_status=0)
    expected = load_tensors(uninterrupted / "model.safetensors")
    actual = load_tensors(tmp_path / "run" / "model.safetensors")
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


# -- non-finite losses --------------------------------------------------------------------------


def _config(**changes) -> TrainConfig:
    settings = dict(model="mlp-ae", epochs=3, dtype="float64", image_every=3,
                    model_config={"hidden_dims": [32], "latent_dim": 8})
    return TrainConfig(**{**settings, **changes})


def _poison_loss_at(monkeypatch, bad_calls: set[int], value=float("nan")):
    """Make the model's loss ``value`` on the given training calls (1-based), as an overflowing
    model would: the loop's check is what is under test, not how the NaN arose."""
    original = MLPAutoencoder.loss
    calls = {"n": 0}

    def loss(self, x, noise=None):
        parts = original(self, x, noise)
        if self.training:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                return {**parts, "loss": value}
        return parts

    monkeypatch.setattr(MLPAutoencoder, "loss", loss)


def test_a_nan_loss_stops_the_run_naming_the_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    bad_step = STEPS_PER_EPOCH + 7  # epoch 2, batch 7
    _poison_loss_at(monkeypatch, {bad_step})
    with pytest.raises(NonFiniteLossError, match=rf"loss nan at epoch 2, step {bad_step} \(batch 7 of the epoch\).*"
                                                 r"epoch 1, is the last good state"):
        run(run_dir, _config(), progress=False, log=lambda line: None)
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "epoch-0001"
    weights, _, state = read_checkpoint(latest_checkpoint(run_dir))
    assert state["epoch"] == 1 and len(_metrics(run_dir)) == 1
    monkeypatch.undo()  # the same run, resumed without the poison, ends where a clean run ends
    run(run_dir, resume=True, progress=False, log=lambda line: None)
    clean = tmp_path / "clean"
    run(clean, _config(), progress=False, log=lambda line: None)
    for key, value in load_tensors(clean / "model.safetensors").items():
        np.testing.assert_array_equal(load_tensors(run_dir / "model.safetensors")[key], value, err_msg=key)


def test_an_infinite_loss_in_the_first_epoch_says_there_is_no_checkpoint_yet(tmp_path, monkeypatch):
    _poison_loss_at(monkeypatch, {3}, value=float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"loss inf at epoch 1, step 3 .*no checkpoint was written yet"):
        run(tmp_path / "run", _config(), progress=False, log=lambda line: None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_skip_leaves_the_weights_as_if_the_batch_had_updated_nothing(tmp_path, monkeypatch):
    """--on-nonfinite skip: the poisoned steps apply nothing, are logged with epoch and step, and
    are counted in the metrics; the run finishes with finite weights."""
    lines = []
    _poison_loss_at(monkeypatch, {2, STEPS_PER_EPOCH + 4})
    history = run(tmp_path / "run", _config(on_nonfinite="skip"), progress=False, log=lines.append)
    assert [entry.get("skipped_batches") for entry in history] == [1, 1, None]
    skipped = [line for line in lines if "skipped" in line]
    assert "epoch 1, step 2 " in skipped[0] and f"epoch 2, step {STEPS_PER_EPOCH + 4} " in skipped[1]
    for value in load_tensors(tmp_path / "run" / "model.safetensors").values():
        assert np.isfinite(value).all()


def test_skip_applies_nothing_for_the_skipped_step(tmp_path, monkeypatch):
    """One epoch whose last batch is skipped ends with exactly the weights and the Adam state of
    its first 11 steps, replayed here by hand with the same batches."""
    _poison_loss_at(monkeypatch, {STEPS_PER_EPOCH})  # the last batch of epoch 1
    run(tmp_path / "skip", _config(epochs=1, on_nonfinite="skip"), progress=False, log=lambda line: None)
    skipped_weights, skipped_optimizer, _ = read_checkpoint(latest_checkpoint(tmp_path / "skip"))
    monkeypatch.undo()
    config = _config(epochs=1)
    dataset = load_dataset(config.dataset)
    backend = ScratchBackend(config, model_config_for(config, dataset))
    rng = epoch_rng(config.seed, 1)
    order = rng.permutation(len(dataset.train_images))
    for index, batch in enumerate(_batches(dataset.train_images, config.batch_size, order)):
        x = binarize(batch, config.binarize, rng).astype(np.float64, copy=False)
        noise = draw_noise(config.model, backend.model.config, x.shape, rng, np.float64)
        if index < STEPS_PER_EPOCH - 1:
            backend.train_step(x, noise)
    for key, value in backend.weights().items():
        np.testing.assert_array_equal(skipped_weights[key], value, err_msg=key)
    assert skipped_optimizer["state"][0]["step"] == STEPS_PER_EPOCH - 1


def test_a_nan_batch_is_a_nonfinite_loss_too(tmp_path, monkeypatch):
    """NaN pixels make the reconstruction NaN, which BCE refuses before any loss exists (as
    torch's does): the loop reports it as the batch's fault, and skip goes past it."""
    import autoencoders.training as train_module

    original = train_module.binarize
    calls = {"n": 0}

    def binarize(images, mode, rng=None):
        calls["n"] += 1
        out = original(images, mode, rng)
        if calls["n"] == 5:
            out = out.astype(np.float64).copy()
            out[0, 0, 0, 0] = np.nan
        return out

    monkeypatch.setattr(train_module, "binarize", binarize)
    with pytest.raises(NonFiniteLossError, match=r"the batch holds NaN or inf at epoch 1, step 5 .*--on-nonfinite skip"):
        run(tmp_path / "stop", _config(), progress=False, log=lambda line: None)
    calls["n"] = 0
    history = run(tmp_path / "skip", _config(on_nonfinite="skip"), progress=False, log=lambda line: None)
    assert history[0]["skipped_batches"] == 1


def test_overflowing_weights_stop_the_command_with_one_line_and_status_1(tmp_path):
    """A learning rate of 1e38 overflows the weights within two steps: one line on stderr naming
    the epoch and step, exit status 1, no traceback, no NumPy warnings."""
    result = cli("train", "mlp-ae", "--epochs", "2", "--lr", "1e38", "--out", "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the weights hold NaN or inf at epoch 1, step 2" in lines[0]
    assert "no checkpoint was written yet" in lines[0]


def test_resume_can_switch_to_skipping(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run(run_dir, _config(epochs=1), progress=False, log=lambda line: None)
    run(run_dir, resume=True, epochs=2, on_nonfinite="skip", progress=False, log=lambda line: None)
    assert json.loads((run_dir / "config.json").read_text())["on_nonfinite"] == "skip"
    with pytest.raises(ValueError, match="on-nonfinite must be one of"):
        _config(on_nonfinite="ignore").validate()


# -- writes that fail ---------------------------------------------------------------------------


def test_a_failed_checkpoint_write_keeps_the_earlier_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """The disk fills up while epoch 2's checkpoint is written: exit status 2, one line naming the
    file; epoch 1's checkpoint intact and still `latest`; no staging directory left behind."""
    original = checkpoint_module.save_tensors
    written = {"n": 0}

    def save_tensors(path, tensors, metadata=None):
        written["n"] += 1
        if written["n"] == 3:  # epoch 1 wrote 2 files; the 3rd is epoch 2's model.safetensors
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, tensors, metadata)

    monkeypatch.setattr(checkpoint_module, "save_tensors", save_tensors)
    status = main([*COMMON[:4], "--epochs", "3", "--dtype", "float64", *SMALL, "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "No space left on device" in error[0] and "model.safetensors" in error[0]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "epoch-0001"
    _, _, state = read_checkpoint(checkpoints / "epoch-0001")  # hashes verified
    assert state["epoch"] == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0001", "latest"]


def test_an_unwritable_run_directory_is_one_line_and_leaves_nothing(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a directory")
    status = main(["train", "mlp-ae", "--epochs", "1", "--out", str(tmp_path / "a-file" / "run"), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "cannot write to run directory" in error[0], error
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_checkpoints_are_never_written_through_a_link_out_of_the_run_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointError, match="is a link out of the run directory"):
        checkpoint_module.write_checkpoint(run_dir, 1, {"w": np.zeros(2)}, {"state": {}, "param_groups": []}, {})
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("field, value, message", [
    ("model_config", [1, 2], "model_config must be an object"),
    ("model_config", {"hidden_dims": [32], "latent_dim": 8, "depth": 3}, r"options \['depth'\] that mlp-ae does not take"),
    ("seed", "0", "seed must be a non-negative integer"),
    ("seed", -1, "seed must be a non-negative integer"),
    ("dataset", "cifar", "dataset must be one of"),
    ("lr", "fast", "lr must be a positive number"),
    ("epochs", True, "epochs must be a positive integer"),
    ("on_nonfinite", "ignore", "on-nonfinite must be one of"),
])
def test_a_damaged_config_json_is_one_line_naming_it(tmp_path, capsys, field, value, message):
    run_dir = tmp_path / "run"
    run(run_dir, _config(epochs=1), progress=False, log=lambda line: None)
    config = json.loads((run_dir / "config.json").read_text())
    config[field] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    for command in (["train", "--resume", str(run_dir), "--quiet"], ["eval", str(run_dir)]):
        status = main(command)
        error = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(error) == 1, error
        assert str(run_dir / "config.json") in error[0] and re.search(message, error[0]), error[0]


def test_skip_still_stops_when_the_weights_themselves_are_not_finite(tmp_path, monkeypatch):
    """Skipping batches cannot repair NaN weights: even under --on-nonfinite skip, the run stops."""
    original = MLPAutoencoder.loss
    calls = {"n": 0}

    def loss(self, x, noise=None):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                self.encoder[0].weight.data[0, 0] = np.nan  # as an overflowing update would leave it
        return original(self, x, noise)

    monkeypatch.setattr(MLPAutoencoder, "loss", loss)
    with pytest.raises(NonFiniteLossError, match=r"the weights hold NaN or inf at epoch 1, step 4 .*"
                                                 r"skipping batches cannot repair weights"):
        run(tmp_path / "run", _config(on_nonfinite="skip"), progress=False, log=lambda line: None)


# -- weights that overflow on an epoch's last step ---------------------------------------------


def test_weights_that_overflow_on_an_epochs_last_step_stop_the_run_naming_epoch_and_step(tmp_path, capsys):
    """One step an epoch (the digits' 1,500 images, batch 1,500) and a learning rate that
    overflows the weights: exit status 1, one line naming the epoch and step, no warning, and no
    checkpoint of the overflowed weights; not a complaint about the user's input."""
    status = main(["train", "mlp-ae", "--lr", "1e38", "--batch-size", "1500", "--epochs", "2", *SMALL,
                   "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(error) == 1, error
    assert "the weights hold NaN or inf after epoch 1, step 1" in error[0] and "BCELoss" not in error[0], error[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- smaller items: long names, modes, seeds, --epochs on resume -------------------------------


def test_an_output_name_of_255_bytes_is_written(tmp_path):
    """Temporaries are named apart from their target, so any legal name has a legal temporary."""
    from autoencoders._files import atomic_write_bytes
    from autoencoders.plots import save_curves

    target = tmp_path / ("w" * 243 + ".safetensors")  # 255 bytes
    atomic_write_bytes(target, b"data")
    assert target.read_bytes() == b"data"
    picture = save_curves(tmp_path / ("p" * 251 + ".png"), {"a": ([1, 2], [3, 4])})
    assert picture.is_file() and sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, picture.name])


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_every_output_has_the_mode_the_umask_gives(tmp_path, mask):
    previous = os.umask(mask)
    try:
        run(tmp_path / "run", _config(epochs=1, image_every=1), progress=False, log=lambda line: None)
        run(tmp_path / "run", resume=True, epochs=2, progress=False, log=lambda line: None)
    finally:
        os.umask(previous)
    paths = list((tmp_path / "run").rglob("*"))
    assert any(p.suffix == ".png" for p in paths) and any(p.name == "state.json" for p in paths)
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path}: {oct(path.stat().st_mode)}"


def test_a_negative_seed_is_refused_naming_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["train", "mlp-ae", "--seed", "-1", "--out", str(tmp_path / "run")])
    assert exit_status.value.code == 2 and "--seed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_with_fewer_epochs_than_done_is_refused_and_config_json_is_unchanged(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(run_dir, _config(epochs=2), progress=False, log=lambda line: None)
    before = (run_dir / "config.json").read_bytes()
    status = main(["train", "--resume", str(run_dir), "--epochs", "1", "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "has trained 2 epochs already" in error[0], error
    assert (run_dir / "config.json").read_bytes() == before


# -- thread counts -----------------------------------------------------------------------------


def test_each_checkpoint_records_its_thread_counts_and_resume_sets_them_again(tmp_path):
    from threadpoolctl import threadpool_limits

    from autoencoders.training import current_thread_counts

    run_dir = tmp_path / "run"
    with threadpool_limits(limits=2, user_api="blas"):
        run(run_dir, _config(epochs=1), progress=False, log=lambda line: None)
    _, _, state = read_checkpoint(latest_checkpoint(run_dir))
    assert state["threads"]["blas"] == 2 and state["threads"]["numba"] >= 1
    lines = []
    with threadpool_limits(limits=1, user_api="blas"):
        run(run_dir, resume=True, epochs=2, progress=False, log=lines.append)
        assert current_thread_counts("scratch")["blas"] == 2  # set as the run recorded them
        _, _, state = read_checkpoint(latest_checkpoint(run_dir))
        assert state["threads"]["blas"] == 2
    assert any("thread counts set as the run recorded them: blas 1 -> 2" in line for line in lines), lines


def test_a_damaged_threads_record_is_refused_naming_state_json(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(run_dir, _config(epochs=1), progress=False, log=lambda line: None)
    path = latest_checkpoint(run_dir) / "state.json"
    state = json.loads(path.read_text())
    state["threads"] = {"blas": "two"}
    path.write_text(json.dumps(state))
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(path) in error[0] and "'threads'" in error[0], error


@pytest.mark.slow
def test_a_float32_mnist_run_resumed_under_another_blas_thread_count_is_bit_exact(tmp_path):
    """Float32 products over 784 inputs depend on OpenBLAS's thread count (the sums' order). A run
    started with 2 threads, killed mid-epoch 2 and resumed in a process started with 1, ends
    with the uninterrupted run's weights, because the resume sets the recorded count again."""
    # --threads 2: the default (auto) would take fewer on a busy machine
    args = ["train", "mlp-ae", "--dataset", "mnist", "--data-dir", MNIST_DIR, "--epochs", "2", "--quiet", "--threads", "2"]
    two, one = {"OPENBLAS_NUM_THREADS": "2"}, {"OPENBLAS_NUM_THREADS": "1"}
    cli(*args, "--out", "uninterrupted", cwd=tmp_path, env=two, check_status=0)
    killed = cli(*args, "--out", "run", cwd=tmp_path, env={**two, KILL_AT_STEP_VARIABLE: str(469 + 100)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = cli("train", "--resume", "run", "--quiet", cwd=tmp_path, env=one, check_status=0)
    expected = load_tensors(tmp_path / "uninterrupted" / "model.safetensors")
    actual = load_tensors(tmp_path / "run" / "model.safetensors")
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert "thread counts set as the run recorded them: blas 1 -> 2" in resumed.stdout


def test_a_0d_buffer_keeps_its_shape_and_dtype_through_a_checkpoint_file(tmp_path):
    """BatchNorm's num_batches_tracked is a 0-d int64 (torch's too): written and read back, it
    stays 0-d int64 (np.ascontiguousarray would have made it (1,), which the model then refuses)."""
    from autoencoders.runs.checkpoint import load_tensors, save_tensors

    tensors = {"bn.num_batches_tracked": np.array(7, dtype=np.int64), "bn.running_mean": np.arange(3.0)}
    save_tensors(tmp_path / "t.safetensors", tensors)
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert loaded["bn.num_batches_tracked"].shape == () and loaded["bn.num_batches_tracked"].dtype == np.int64
    assert int(loaded["bn.num_batches_tracked"]) == 7
    np.testing.assert_array_equal(loaded["bn.running_mean"], tensors["bn.running_mean"])
