"""Data-parallel training (torch.distributed, gloo, loopback only) is the one-process run: the
same weights after every step, for both backends; a killed rank ends the run in one line, and a
resume with another number of processes continues to the uninterrupted weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoencoders.distributed import shard, shard_weight
from autoencoders.launch import free_port
from autoencoders.runs.checkpoint import load_tensors
from parity_tests.mnist import MNIST_DIR
from parity_tests.test_train import cli
from parity_tests.tolerances import assert_close

ROOT = Path(__file__).resolve().parents[1]
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists(), reason="real MNIST not available")


def test_the_shards_of_a_batch_are_contiguous_disjoint_and_even():
    for size in range(0, 40):
        for world in range(1, 6):
            rows = [shard(size, rank, world) for rank in range(world)]
            assert [r.start for r in rows] == [0] + [r.stop for r in rows[:-1]] and rows[-1].stop == size
            lengths = [r.stop - r.start for r in rows]
            assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    assert shard_weight(46, 92, "mean") == 0.5 and shard_weight(46, 92, "sum") == 1.0


BROADCAST_SNIPPET = """
import os, numpy as np
from autoencoders import distributed
group = distributed.start()
base = np.arange(12.0).reshape(3, 4) if group.rank == 0 else np.zeros((3, 4))
view = base[:, ::2]  # not contiguous: a tensor cannot share it
group.broadcast(view)
assert np.array_equal(view, [[0, 2], [4, 6], [8, 10]]), view
assert np.array_equal(base[:, 1::2], np.arange(12.0).reshape(3, 4)[:, 1::2] if group.rank == 0 else np.zeros((3, 2))), base
group.close()
"""


def test_broadcast_reaches_a_view_that_is_not_contiguous(tmp_path):
    """Rank 0's values land in rank 1's strided view itself (received through a copy), and only there."""
    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, "-c", BROADCAST_SNIPPET], stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT), "RANK": str(rank), "WORLD_SIZE": "2",
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "AUTOENCODERS_DIST_TIMEOUT": "30"})
                 for rank in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr


def _workers(out: Path, model: str, backend: str, world: int) -> np.ndarray:
    """``parity_tests.distributed_worker`` as ``world`` ranks (1: the reference): rank 0's weights
    after every step, (steps, parameters)."""
    out.mkdir(parents=True)
    port = str(free_port())
    processes = []
    for rank in range(world):
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOENCODERS_DIST_TIMEOUT": "60"}
        if world > 1:
            environment.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        processes.append(subprocess.Popen([sys.executable, "-m", "parity_tests.distributed_worker", str(out), model,
                                           backend], env=environment, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    return np.load(out / "steps.npy")


def _assert_every_step_matches(tmp_path: Path, model: str, backend: str) -> None:
    alone = _workers(tmp_path / "one", model, backend, 1)
    shared = _workers(tmp_path / "two", model, backend, 2)
    assert alone.shape == shared.shape and len(alone) == 30
    for step in range(len(alone)):
        assert_close(shared[step], alone[step], "distributed", np.float64, f"{model} ({backend}), weights after step {step + 1}")
    assert not np.array_equal(alone[0], alone[-1])  # it trained


@needs_mnist
def test_two_processes_train_mlp_ae_as_one_at_every_step(tmp_path):
    """The default suite's case: mlp-ae, scratch backend (the rest are -m slow)."""
    _assert_every_step_matches(tmp_path, "mlp-ae", "scratch")


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("model, backend", [("mlp-ae", "torch"), ("vae", "scratch"), ("vae", "torch"),
                                            ("conv-ae", "scratch"), ("conv-ae", "torch")])
def test_two_processes_train_as_one_at_every_step(tmp_path, model, backend):
    """float64, 30 steps of a global batch of 64 split 32 + 32: scratch all-reduces its flat
    gradient buffer, torch's twin runs in DistributedDataParallel; vae's loss is summed over the
    batch (each rank weighs 1), the others' averaged (each rank weighs 1/2)."""
    _assert_every_step_matches(tmp_path, model, backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["scratch", "torch"])
def test_a_killed_rank_ends_the_run_in_one_line_and_a_resume_with_other_n_gives_the_same_weights(tmp_path, backend):
    """--nproc 2 with rank 1 SIGKILLed in epoch 2: one line naming it, status 1, no hang; the
    checkpoint of epoch 1 resumes under --nproc 3 to the weights of an uninterrupted one-process run."""
    common = ["mlp-ae", "--epochs", "3", "--dtype", "float64", "--backend", backend, "--hidden-dims", "32",
              "--latent-dim", "8", "--quiet"]
    environment = {"AUTOENCODERS_FAULT_KILL_AT_STEP": "18", "AUTOENCODERS_FAULT_KILL_RANK": "1",
                   "AUTOENCODERS_DIST_TIMEOUT": "60"}
    killed = cli("train", *common, "--nproc", "2", "--out", "run", cwd=tmp_path, env=environment, check_status=1)
    lines = killed.stderr.strip().splitlines()
    assert lines == ["autoencoders train: rank 1 of 2 was killed by SIGKILL; the other ranks were stopped; the newest "
                     "checkpoint in run is intact: continue with: autoencoders train --resume run --nproc 2"], lines
    cli("train", "--resume", "run", "--nproc", "3", "--quiet", cwd=tmp_path, process=True, check_status=0)
    cli("train", *common, "--threads", "1", "--out", "alone", cwd=tmp_path, check_status=0)
    resumed, alone = load_tensors(tmp_path / "run" / "model.safetensors"), load_tensors(tmp_path / "alone" / "model.safetensors")
    for key in alone:
        assert_close(resumed[key], alone[key], "distributed", np.float64, key)


def test_a_rank_refusing_its_data_is_the_one_process_commands_line_and_status(tmp_path):
    refused = cli("train", "mlp-ae", "--dataset", "mnist", "--data-dir", "missing", "--nproc", "2", "--out", "run",
                  cwd=tmp_path, check_status=2)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoencoders train: error: mnist: data dir missing is not a directory"), lines
    assert not (tmp_path / "run").exists()


def test_nproc_refuses_what_it_cannot_split_before_starting_anything(tmp_path):
    refused = cli("train", "mlp-ae", "--nproc", "4", "--batch-size", "2", "--out", "run", cwd=tmp_path, check_status=2)
    assert "--batch-size 2 cannot be split over --nproc 4" in refused.stderr and not (tmp_path / "run").exists()


def test_a_rank_that_never_meets_the_others_ends_within_the_timeout(tmp_path):
    """WORLD_SIZE 2 with no rank 1: the rendezvous times out into one line (exit 1), not a hang."""
    environment = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                   "AUTOENCODERS_DIST_TIMEOUT": "3"}
    alone = cli("train", "mlp-ae", "--epochs", "1", "--out", "run", "--quiet", cwd=tmp_path, env=environment)
    lines = alone.stderr.strip().splitlines()
    assert alone.returncode == 1 and len(lines) == 1 and "did not complete within 3 s" in lines[0], alone.stderr


@pytest.mark.slow
def test_the_same_command_runs_under_torchrun(tmp_path):
    """torchrun (torch.distributed.run) starts the ranks and sets the environment; the command,
    without --nproc, reads it: the weights equal the one-process run's."""
    common = ["train", "mlp-ae", "--epochs", "2", "--dtype", "float64", "--hidden-dims", "32", "--latent-dim", "8",
              "--threads", "1", "--quiet"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOENCODERS_DIST_TIMEOUT": "60"}
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "autoencoders", *common, "--out", "run"], cwd=tmp_path, env=environment,
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout.count("epoch   2") == 1  # rank 0 alone reports
    cli(*common, "--out", "alone", cwd=tmp_path, check_status=0)
    shared, alone = load_tensors(tmp_path / "run" / "model.safetensors"), load_tensors(tmp_path / "alone" / "model.safetensors")
    for key in alone:
        assert_close(shared[key], alone[key], "distributed", np.float64, key)


def test_a_port_in_use_is_one_line_naming_it(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "AUTOENCODERS_DIST_TIMEOUT": "10"}
        result = cli("train", "mlp-ae", "--epochs", "1", "--out", "run", "--quiet", cwd=tmp_path, env=environment)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and f"port {port} is in use" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_and_names_the_resume_command(tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C): one line with the command that
    continues the run, status 130, and no rank left behind."""
    import signal
    import time

    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "autoencoders", "train", "mlp-ae", "--epochs", "500", "--nproc",
                                "2", "--out", "run", "--quiet"], cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # an epoch is done: the ranks are training
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["autoencoders train: interrupted; continue with: autoencoders train "
                                           "--resume run --nproc 2"], stderr
    survivors = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert survivors == [], survivors
