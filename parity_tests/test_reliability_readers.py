"""Every reader is bounded: what a file is and how large it is are checked before it is read.

- FIFOs, links to ``/dev/zero`` and 100 GiB sparse files (larger than the memory, whatever the
  machine) as ``config.json``, ``state.json``, ``checkpoints/latest``, an IDX data file, a
  checkpoint's tensor files and the ``.safetensors``/``.pt`` given to ``convert``: refused in one
  line (exit status 2), at once, without waiting on the FIFO and without allocating what the
  file's size claims. A guard (SIGALRM in process, a timeout for a subprocess) turns a hang into
  a failure.
- A legal safetensors header listing 1.5 million empty tensors is refused in well under a
  second by ``eval`` and ``convert``; a header listing more tensors than the model has, before
  safetensors parses it.
- A ``checkpoints/latest`` that is a link is refused without reading through it; weights holding
  NaN or inf are refused by ``eval`` naming the file and the tensor.
- ``state.json``'s metrics entries are checked as the training loop writes them.
- ``.pt`` files: refused under a torch older than 2.10 (public advisories against
  ``weights_only=True``); torch's advice to retry with ``weights_only=False`` is never repeated.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import tomllib
import torch
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from autoencoders import convert as convert_module
from autoencoders import data
from autoencoders.cli import main
from autoencoders.convert import TORCH_FLOOR, convert
from autoencoders.data import DataError, read_idx, write_idx
from autoencoders.runs import checkpoint as checkpoint_module
from autoencoders.runs.checkpoint import (
    CheckpointError,
    collector_paused,
    latest_checkpoint,
    load_tensors,
    read_checkpoint,
    read_json,
)
from parity_tests.test_reliability_files import assert_one_line, hostile_files, rehash, tiny_mnist_dir
from parity_tests.test_train import SMALL
from scratch.memory import available_bytes

ROOT = Path(__file__).resolve().parents[1]
# Sparse, so free to make: larger than the memory available on any machine that runs this.
HUGE = max(100 << 30, 2 * (available_bytes() or 0))
GUARD_S = 20  # a bounded reader answers in milliseconds; a hang or a 100 GiB read does not
# What "at once" means below: CPU seconds of this process (time.process_time), not wall time, so
# that a busy CI machine that deschedules the test cannot fail it (a wall-clock bound of 1 s did,
# at 1.16 s for a refusal that takes 20 ms of CPU). The work these bounds exclude (hashing or
# reading 100 GiB, inflating gzip, parsing a huge header) is CPU work; a reader that blocks (a
# FIFO) uses none, and the wall-clock GUARD_S alarm catches it instead.
QUICK_S = 1.0
SMALL_PEAK = 4 << 20  # bytes a refusal may allocate (tracemalloc)
MANY = 1_500_000  # empty tensors in the big header (about 80 MB of legal JSON)


class Hung(Exception):
    """Raised by the SIGALRM guard; neither an OSError nor a ValueError, so ``main`` lets it out."""


@contextmanager
def guard(seconds: float = GUARD_S):
    """Fail, rather than hang, when the body runs longer than ``seconds``."""
    def alarm(signum, frame):
        raise Hung(f"still running after {seconds} s: a reader blocked or read a huge file")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_main(argv, capsys) -> tuple[int, str, float]:
    """(exit status, stderr, CPU seconds) of ``autoencoders ARGV`` in process, under the guard."""
    capsys.readouterr()
    # The collector paused (as the product's JSON parses pause it): late in the suite a full
    # collection walks the millions of objects earlier tests left, a second of CPU that measures
    # the suite's heap, not the reader (CI failed on 1.07 s for an eval that refuses in ms).
    with guard(), collector_paused():
        started = time.process_time()
        status = main([str(arg) for arg in argv])
        seconds = time.process_time() - started
    return status, capsys.readouterr().err, seconds


def refusal(call, trace: bool = True) -> tuple[Exception, float, int]:
    """(the exception ``call()`` raised, CPU seconds, bytes allocated at the peak when ``trace``,
    which slows Python down, else 0), under the guard."""
    if trace:
        tracemalloc.start()
    try:
        with guard(), collector_paused():
            started = time.process_time()
            with pytest.raises((CheckpointError, DataError)) as caught:
                call()
            seconds = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
    finally:
        tracemalloc.stop()
    return caught.value, seconds, peak


# -- what a path can be instead of a file ------------------------------------------------------


def make_fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def make_zero_link(path: Path) -> Path:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")
    return path


def make_sparse(path: Path) -> Path:
    """``path`` as a sparse file of ``HUGE`` bytes (``truncate -s``): no disk, no memory."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as stream:
        stream.truncate(HUGE)
    return path


KINDS = {"fifo": make_fifo, "zero": make_zero_link, "sparse": make_sparse}
# What each kind's refusal says (for a file with a size limit).
SAYS = {"fifo": "is a FIFO (named pipe), not a regular file", "zero": "is a character device, not a regular file",
        "sparse": "larger than the limit of"}


# -- runs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A one-epoch run of a small mlp-ae on the offline digits (scratch backend)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "mlp-ae", "--epochs", "1", "--out", str(run_dir), *SMALL]) == 0
    return run_dir


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def checkpoint_of(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "epoch-0001"


RUN_FILES = {
    "config.json": lambda run_dir: run_dir / "config.json",
    "state.json": lambda run_dir: checkpoint_of(run_dir) / "state.json",
    "latest": lambda run_dir: run_dir / "checkpoints" / "latest",
}
# latest: a link is refused as a link; a huge one is read for 257 bytes only, then refused.
LATEST_SAYS = {"fifo": SAYS["fifo"], "zero": "is a link; a checkpoint pointer must be a plain file",
               "sparse": "which is not a checkpoint directory name"}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("target", list(RUN_FILES))
def test_eval_refuses_a_run_file_that_is_not_a_plain_small_file(run_dir, capsys, target, kind):
    path = KINDS[kind](RUN_FILES[target](run_dir))
    status, stderr, seconds = run_main(["eval", run_dir], capsys)
    assert_one_line(status, stderr, "eval", path, LATEST_SAYS[kind] if target == "latest" else SAYS[kind])
    if kind == "sparse" and target != "latest":  # refused from its size, before reading any of it
        assert f"({HUGE} bytes)" in stderr, stderr
    assert seconds < QUICK_S, f"{seconds:.2f} s to refuse"


@pytest.mark.parametrize("command", ["resume", "reconstruct", "convert"])
@pytest.mark.parametrize("target", ["state.json", "latest"])
def test_other_commands_refuse_a_fifo_without_waiting(run_dir, tmp_path, capsys, target, command):
    path = make_fifo(RUN_FILES[target](run_dir))
    argv = {"resume": ["train", "--resume", run_dir, "--epochs", "2", "--quiet"],
            "reconstruct": ["reconstruct", run_dir, "--out", tmp_path / "r.png"],
            "convert": ["convert", run_dir, tmp_path / "w.safetensors"]}[command]
    status, stderr, _ = run_main(argv, capsys)
    assert_one_line(status, stderr, command, path, SAYS["fifo"])


def test_a_fifo_as_state_json_is_one_line_from_a_real_process(run_dir):
    """As a user sees it: ``python -m autoencoders.cli eval`` exits 2 at once (a timeout, not a hang)."""
    path = make_fifo(RUN_FILES["state.json"](run_dir))
    result = subprocess.run([sys.executable, "-m", "autoencoders.cli", "eval", str(run_dir)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_one_line(result.returncode, result.stderr, "eval", path, SAYS["fifo"])


@pytest.mark.parametrize("command", ["eval", "convert"])
def test_a_huge_model_safetensors_is_refused_before_it_is_hashed(run_dir, tmp_path, capsys, command):
    """100 GiB of weights: with the model known (eval), more than its tensors can take; without
    (convert of a run directory), more than the memory. Never hashed (that took minutes)."""
    path = make_sparse(checkpoint_of(run_dir) / "model.safetensors")
    argv = ["eval", run_dir] if command == "eval" else ["convert", run_dir, tmp_path / "w.pt"]
    status, stderr, seconds = run_main(argv, capsys)
    assert_one_line(status, stderr, command, path, f"({HUGE} bytes), larger than the limit of")
    assert ("the weights of this model (8 tensors" in stderr) if command == "eval" else ("the memory available" in stderr)
    assert seconds < QUICK_S, f"{seconds:.2f} s to refuse"


# -- each reader, in the library: quick, and without allocating ---------------------------------


def _sparse_extra_file(run_dir: Path) -> Path:
    """A file state.json lists beside the tensor files, 100 GiB: hashed a chunk at a time, so
    it could not exhaust memory, but it would take minutes; refused before hashing."""
    checkpoint = checkpoint_of(run_dir)
    state = json.loads((checkpoint / "state.json").read_text())
    state["sha256"]["notes.bin"] = "0" * 64
    (checkpoint / "state.json").write_text(json.dumps(state))
    return make_sparse(checkpoint / "notes.bin")


def _model_expected() -> dict:
    from scratch.models import build

    return dict(build("mlp-ae", dtype=np.float32, hidden_dims=(32,), latent_dim=8, input_dim=64).state_dict())


READERS = {  # name -> (make the huge file in run_dir, then read it)
    "read_json": (RUN_FILES["config.json"], lambda run_dir: read_json(run_dir / "config.json")),
    "latest_checkpoint": (RUN_FILES["latest"], latest_checkpoint),
    "read_checkpoint": (lambda run_dir: checkpoint_of(run_dir) / "model.safetensors",
                        lambda run_dir: read_checkpoint(checkpoint_of(run_dir))),
    "read_checkpoint(expected)": (lambda run_dir: checkpoint_of(run_dir) / "model.safetensors",
                                  lambda run_dir: read_checkpoint(checkpoint_of(run_dir), expected=_model_expected())),
    "read_checkpoint, another file": (None, lambda run_dir: read_checkpoint(checkpoint_of(run_dir))),
    "load_tensors": (lambda run_dir: run_dir / "big.safetensors", lambda run_dir: load_tensors(run_dir / "big.safetensors")),
    "read_idx": (lambda run_dir: run_dir / "big-idx3-ubyte", lambda run_dir: read_idx(run_dir / "big-idx3-ubyte")),
    "convert .pt": (lambda run_dir: run_dir / "big.pt", lambda run_dir: convert(run_dir / "big.pt", run_dir / "o.safetensors")),
    "convert .safetensors": (lambda run_dir: run_dir / "big.safetensors",
                             lambda run_dir: convert(run_dir / "big.safetensors", run_dir / "o.pt")),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_each_reader_refuses_a_100_gib_sparse_file_at_once_without_allocating(run_dir, reader):
    where, read = READERS[reader]
    path = _sparse_extra_file(run_dir) if where is None else make_sparse(where(run_dir))
    error, seconds, peak = refusal(lambda: read(run_dir))
    message = str(error)
    assert str(path) in message and "\n" not in message, message
    assert f"{HUGE} bytes" in message or reader == "latest_checkpoint", message
    assert ("limit of" in message) if reader != "latest_checkpoint" else ("at most 256 bytes" in message), message
    assert seconds < QUICK_S and peak < SMALL_PEAK, f"{seconds:.3f} s and {peak} bytes to refuse: {message}"


# A checkpoint's tensor files were refused as "not a plain file" already when a FIFO or a link.
FIFO_READERS = [name for name in READERS if READERS[name][0] is not None and not name.startswith("read_checkpoint")]


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("reader", FIFO_READERS)
def test_each_reader_refuses_a_fifo_or_a_device(run_dir, reader, kind):
    where, read = READERS[reader]
    path = KINDS[kind](where(run_dir))
    expected = LATEST_SAYS[kind] if reader == "latest_checkpoint" else SAYS[kind]
    error, seconds, _ = refusal(lambda: read(run_dir))
    assert str(path) in str(error) and expected in str(error) and "\n" not in str(error), str(error)
    assert seconds < QUICK_S


def test_a_huge_gzip_payload_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """A gzipped IDX file whose header declares more than the memory available (made small
    here: the limit is lowered) is refused from its header, nothing inflated."""
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, np.zeros((4, 32, 32), np.uint8))
    monkeypatch.setattr(data, "memory_limit", lambda: (1000, "the memory available"))
    with pytest.raises(DataError, match=r"the IDX header declares .* \(4096 bytes: .*larger than the limit") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


# -- the data files and convert's sources, from the command line --------------------------------


_data_dir = tiny_mnist_dir


@pytest.mark.parametrize("kind", list(KINDS))
def test_train_refuses_an_idx_file_that_is_not_a_plain_file_that_fits(tmp_path, capsys, kind):
    path = KINDS[kind](_data_dir(tmp_path) / "train-images-idx3-ubyte.gz")
    status, stderr, seconds = run_main(["train", "mlp-ae", "--dataset", "mnist", "--data-dir", path.parent,
                                        "--out", tmp_path / "run", "--quiet"], capsys)
    assert_one_line(status, stderr, "train", path, SAYS[kind])
    assert seconds < QUICK_S and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_convert_refuses_a_source_that_is_not_a_plain_file_that_fits(tmp_path, capsys, suffix, kind):
    """The .pt case also shows torch is never handed the path: it would block opening a FIFO."""
    path = KINDS[kind](tmp_path / f"weights{suffix}")
    out = tmp_path / ("out.pt" if suffix == ".safetensors" else "out.safetensors")
    status, stderr, seconds = run_main(["convert", path, out], capsys)
    assert_one_line(status, stderr, "convert", path, SAYS[kind])
    assert seconds < QUICK_S and not out.exists()


def test_convert_of_a_fifo_pt_is_one_line_from_a_real_process(tmp_path):
    path = make_fifo(tmp_path / "weights.pt")
    result = subprocess.run([sys.executable, "-m", "autoencoders.cli", "convert", str(path), str(tmp_path / "o.safetensors")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_one_line(result.returncode, result.stderr, "convert", path, SAYS["fifo"])


# -- safetensors headers -------------------------------------------------------------------------


def empty_tensors_file(path: Path, count: int) -> Path:
    """A legal safetensors file listing ``count`` empty float32 tensors (built by hand)."""
    entries = b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(count))
    header = b"{" + entries + b"}"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def never_parse(data):
    raise AssertionError("safetensors parsed a header that should have been refused before")


@pytest.fixture(scope="module")
def many_tensors(tmp_path_factory) -> Path:
    return empty_tensors_file(tmp_path_factory.mktemp("many") / "many.safetensors", MANY)


def test_convert_refuses_a_header_of_1_5_million_tensors_at_once(many_tensors, tmp_path, capsys):
    assert len(safetensors_load(empty_tensors_file(tmp_path / "few.safetensors", 3).read_bytes())) == 3  # legal
    status, stderr, seconds = run_main(["convert", many_tensors, tmp_path / "o.pt"], capsys)
    assert_one_line(status, stderr, "convert", many_tensors, "safetensors header of")
    assert "larger than the limit of 1.0 MiB" in stderr
    assert seconds < QUICK_S, f"{seconds:.2f} s to refuse"


@pytest.mark.parametrize("command", ["eval", "convert"])
def test_a_checkpoint_holding_a_header_of_1_5_million_tensors_is_refused_at_once(many_tensors, run_dir, tmp_path,
                                                                                capsys, command):
    """Its sha256 forged to match: eval (the model known: refused by size) and convert of the run
    directory (model unknown: read, hashed, refused by its header length)."""
    path = checkpoint_of(run_dir) / "model.safetensors"
    shutil.copyfile(many_tensors, path)
    rehash(checkpoint_of(run_dir), "model.safetensors")
    argv = ["eval", run_dir] if command == "eval" else ["convert", run_dir, tmp_path / "o.pt"]
    status, stderr, seconds = run_main(argv, capsys)
    assert_one_line(status, stderr, command, path, "larger than the limit of")
    assert seconds < QUICK_S, f"{seconds:.2f} s to refuse"


def test_a_header_listing_more_than_10000_tensors_is_refused_unparsed(tmp_path, monkeypatch):
    path = empty_tensors_file(tmp_path / "w.safetensors", 12_000)  # 0.7 MB: under the header limit
    monkeypatch.setattr(safetensors.numpy, "load", never_parse)
    error, seconds, _ = refusal(lambda: load_tensors(path), trace=False)
    assert "lists 12000 tensors, more than 10000" in str(error) and str(path) in str(error)
    assert seconds < QUICK_S


@pytest.mark.parametrize("reader", ["load_tensors", "read_json"])
def test_headers_and_json_files_are_parsed_with_the_garbage_collector_paused(tmp_path, monkeypatch, reader):
    """In CI, late in the suite, the 12,000-tensor refusal above took 1.0 to 1.2 s of CPU (20 ms
    alone): a full collection, tipped by the parse's 36,000 new containers, walked the suite's
    millions of objects. The parse now runs with the collector paused, and restores it after."""
    states, original = [], json.loads

    def spy(text):
        states.append(gc.isenabled())
        return original(text)

    monkeypatch.setattr(checkpoint_module.json, "loads", spy)  # the one json module, patched for this test
    if reader == "load_tensors":
        path = empty_tensors_file(tmp_path / "w.safetensors", 12_000)
        monkeypatch.setattr(safetensors.numpy, "load", never_parse)
        call = lambda: load_tensors(path)  # noqa: E731
    else:
        path = tmp_path / "c.json"
        path.write_text('{"a": [1, 2]}')
        call = lambda: read_json(path)  # noqa: E731
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            if reader == "load_tensors":
                with pytest.raises(CheckpointError, match="lists 12000 tensors"):
                    call()
            else:
                assert call() == {"a": [1, 2]}
            assert gc.isenabled() is enabled  # restored as it was
        finally:
            gc.enable()
    assert states == [False, False]


def test_a_header_listing_other_than_the_models_tensor_count_is_refused_unparsed(run_dir, capsys, monkeypatch):
    """Small enough to pass the size bound; refused by its count before safetensors sees it."""
    path = empty_tensors_file(checkpoint_of(run_dir) / "model.safetensors", 5000)
    rehash(checkpoint_of(run_dir), "model.safetensors")
    monkeypatch.setattr(safetensors.numpy, "load", never_parse)
    status, stderr, _ = run_main(["eval", run_dir], capsys)
    assert_one_line(status, stderr, "eval", path, f"holds 5000 tensors, the model has {len(_model_expected())}")


# -- checkpoints/latest as a link; weights holding NaN --------------------------------------------


@pytest.mark.parametrize("target", ["a secret", "a valid pointer"])
def test_a_linked_latest_is_refused_without_reading_through_it(run_dir, tmp_path, capsys, target):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("password=hunter2\n" if target == "a secret" else "epoch-0001\n")
    pointer = RUN_FILES["latest"](run_dir)
    pointer.unlink()
    pointer.symlink_to(elsewhere)
    status, stderr, _ = run_main(["eval", run_dir], capsys)
    assert_one_line(status, stderr, "eval", pointer, "is a link; a checkpoint pointer must be a plain file")
    assert "hunter2" not in stderr


@pytest.mark.parametrize("command", ["eval", "reconstruct"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_weights_holding_nan_or_inf_are_refused_naming_the_file_and_tensor(run_dir, tmp_path, capsys, command, value):
    path = checkpoint_of(run_dir) / "model.safetensors"
    tensors = {key: np.array(array) for key, array in safetensors_load(path.read_bytes()).items()}
    key = sorted(tensors)[-1]
    tensors[key].flat[0] = value
    path.write_bytes(safetensors_save(tensors, metadata={"format": "pt"}))
    rehash(checkpoint_of(run_dir), "model.safetensors")
    argv = ["eval", run_dir] if command == "eval" else ["reconstruct", run_dir, "--out", tmp_path / "r.png"]
    status, stderr, _ = run_main(argv, capsys)
    assert_one_line(status, stderr, command, path, f"tensor {key!r} holds NaN or inf (1 of its")
    assert not (tmp_path / "r.png").exists()


# -- state.json's metrics ---------------------------------------------------------------------------


def edit_metrics(run_dir: Path, edit) -> Path:
    path = RUN_FILES["state.json"](run_dir)
    state = json.loads(path.read_text())
    state["metrics"] = edit(state["metrics"])
    path.write_text(json.dumps(state))
    return path


def _without(field):
    return lambda metrics: [{k: v for k, v in metrics[0].items() if k != field}]


def _with(**fields):
    return lambda metrics: [{**metrics[0], **fields}]


METRICS_DAMAGES = {
    "an empty entry": (lambda metrics: [{}], "metrics[0] lacks 'epoch'"),
    "no train": (_without("train"), "metrics[0] lacks 'train'"),
    "no test": (_without("test"), "metrics[0] lacks 'test'"),
    "no seconds": (_without("seconds"), "metrics[0] lacks 'seconds'"),
    "epoch a string": (_with(epoch="1"), "metrics[0].epoch must be an integer, found a string"),
    "epoch true": (_with(epoch=True), "metrics[0].epoch must be an integer, found true"),
    "train a list": (_with(train=[1.0]), "metrics[0].train must be an object of numbers, found an array"),
    "test value a string": (_with(test={"loss": "0.5"}), "metrics[0].test['loss'] must be a number, found a string"),
    "test value null": (_with(test={"loss": None}), "metrics[0].test['loss'] must be a number, found null"),
    "seconds negative": (_with(seconds=-1.0), "metrics[0].seconds must be a finite number of seconds, at least 0"),
    "seconds a string": (_with(seconds="1"), "metrics[0].seconds must be a finite number"),
    "skipped_batches zero": (_with(skipped_batches=0), "metrics[0].skipped_batches must be a positive integer"),
    "skipped_batches a float": (_with(skipped_batches=1.5), "metrics[0].skipped_batches must be a positive integer"),
    "epoch not 1": (_with(epoch=2), "metrics[0].epoch is 2, expected 1"),
    "an epoch too many": (lambda metrics: metrics + [{**metrics[0], "epoch": 2}], "'metrics' holds 2 entries, expected one per epoch"),
    "an epoch repeated": (lambda metrics: metrics + metrics, "metrics[1].epoch is 1, expected 2"),
    "none": (lambda metrics: [], "'metrics' holds 0 entries, expected one per epoch (epochs 1 to 1)"),
}


@pytest.mark.parametrize("damage", list(METRICS_DAMAGES))
def test_read_checkpoint_refuses_a_damaged_metrics_entry(run_dir, damage):
    edit, message = METRICS_DAMAGES[damage]
    path = edit_metrics(run_dir, edit)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(checkpoint_of(run_dir))
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
    assert message in str(caught.value), str(caught.value)


def test_metrics_as_the_training_loop_may_write_them_are_read(run_dir):
    """NaN and infinite values, an epoch whose every batch was skipped (no train parts)."""
    edit_metrics(run_dir, _with(train={}, test={"loss": float("nan"), "bce": float("inf")}, skipped_batches=12))
    _, _, state = read_checkpoint(checkpoint_of(run_dir))
    assert state["metrics"][0]["skipped_batches"] == 12


def test_resume_refuses_empty_metrics_before_writing_anything(run_dir, capsys):
    """``"metrics": [{}]`` made --resume write epoch 2's checkpoint, then crash (KeyError: 'epoch')."""
    path = edit_metrics(run_dir, lambda metrics: [{}])
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    status, stderr, _ = run_main(["train", "--resume", run_dir, "--epochs", "2", "--quiet"], capsys)
    assert_one_line(status, stderr, "resume", path, "metrics[0] lacks 'epoch'")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


# -- .pt files: the torch floor; torch's advice never repeated --------------------------------------


def test_the_distribution_requires_the_torch_floor():
    with open(ROOT / "pyproject.toml", "rb") as stream:
        dependencies = tomllib.load(stream)["project"]["dependencies"]
    assert "torch>=2.10,<3" in dependencies
    assert TORCH_FLOOR == (2, 10)


@pytest.mark.parametrize("version", ["2.5.1", "2.9.1+cu121", "1.13.0", "nightly"])
def test_a_pt_file_is_refused_under_a_torch_with_advisories(tmp_path, monkeypatch, version):
    source = tmp_path / "w.pt"
    torch.save({"weight": torch.zeros(2)}, source)

    def never(*args, **kwargs):
        raise AssertionError("torch.load called under an unsafe torch")

    monkeypatch.setattr(torch, "__version__", version)
    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(CheckpointError) as caught:
        convert(source, tmp_path / "w.safetensors")
    message = str(caught.value)
    assert str(source) in message and f"torch {version}" in message and "\n" not in message
    assert "CVE-2025-32434" in message and "CVE-2026-24747" in message and "torch>=2.10" in message


@pytest.mark.parametrize("version", ["2.10.0", "2.13.0+cpu", "3.0.0"])
def test_a_pt_file_is_read_under_a_torch_at_or_above_the_floor(tmp_path, monkeypatch, version):
    source = tmp_path / "w.pt"
    torch.save({"weight": torch.arange(3.0)}, source)
    monkeypatch.setattr(torch, "__version__", version)
    convert(source, tmp_path / "w.safetensors")
    np.testing.assert_array_equal(load_tensors(tmp_path / "w.safetensors")["weight"], [0.0, 1.0, 2.0])


@pytest.mark.parametrize("form", ["zip", "state_dict", "legacy"])
def test_a_refused_pt_never_advises_weights_only_false(tmp_path, form):
    marker = tmp_path / "ran"
    source = hostile_files(tmp_path, marker)[form]
    with pytest.raises(CheckpointError) as caught:
        convert(source, tmp_path / "out.safetensors")
    message = str(caught.value)
    assert "weights_only=True" in message and "\n" not in message and str(source) in message
    for advice in ("False", "trusted source", "will likely succeed", "arbitrary code"):
        assert advice not in message, message
    assert "GLOBAL" in message, message  # what torch refused is still said
    assert not marker.exists()


def test_torch_is_handed_bytes_never_the_path(tmp_path, monkeypatch):
    source = tmp_path / "w.pt"
    torch.save({"weight": torch.zeros(2)}, source)
    seen = []
    original = torch.load

    def load(f, *args, **kwargs):
        seen.append(type(f).__name__)
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    convert_module.read_weights(source)
    assert seen == ["BytesIO"]
