"""Damaged files are refused in one line, never a crash: IDX files, checkpoints, .pt files.

- Fuzzing (hypothesis): ``read_idx`` on random bytes and on mutated IDX files (raw and gzipped,
  header fields included); the checkpoint readers on mutations of each file of a real
  checkpoint. Every outcome is a correct load or the library's own error naming the file: never
  another exception, a huge allocation or a hang (a deadline per example). Fast in the default
  and ci profiles; ``HYPOTHESIS_PROFILE=thorough`` runs 400 examples each.
- The command line on each kind of damage (``eval``, ``reconstruct``, ``train --resume``,
  ``convert``): exit status 2 and exactly one line on stderr naming the file and the problem.
  In process through ``autoencoders.cli.main`` for the whole matrix, as a subprocess for a few.
- Security: no module unpickles (an ``ast`` scan of scratch/, torch_impl/, autoencoders/), a .pt
  file whose pickle would run code is refused without running it, and a download is verified
  before any of its bytes is decompressed or parsed.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import math
import os
import pickle
import re
import shlex
import shutil
import struct
import tempfile
import tracemalloc
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from autoencoders import data
from autoencoders.cli import main
from autoencoders.convert import convert
from autoencoders.data import DataError, read_idx, write_idx
from autoencoders.runs.checkpoint import (
    CheckpointError,
    check_weights,
    latest_checkpoint,
    load_tensors,
    read_checkpoint,
    read_json,
    write_checkpoint,
)
from parity_tests.strategies import (
    apply_mutations,
    byte_flips,
    byte_mutations,
    idx_header_edits,
    idx_headers,
    seeds,
    shapes,
)
from parity_tests.test_train import SMALL, cli
from scratch import optim
from scratch.models import build

ROOT = Path(__file__).resolve().parents[1]
# Generous: a correct reader answers in milliseconds; a hang or a runaway inflate does not.
FUZZ_DEADLINE = timedelta(seconds=5)
fuzz = settings(deadline=FUZZ_DEADLINE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_dir(parent: Path) -> Path:
    """A new directory per hypothesis example (tmp_path is shared by all of a test's examples)."""
    return Path(tempfile.mkdtemp(dir=parent))


# -- IDX: a reference decoder, independent of autoencoders.data -------------------------------------

_STRUCT_CODES = {0x08: ("B", np.uint8), 0x09: ("b", np.int8), 0x0B: ("h", np.int16),
                 0x0C: ("i", np.int32), 0x0D: ("f", np.float32), 0x0E: ("d", np.float64)}


def reference_idx(content: bytes) -> np.ndarray | None:
    """The array IDX ``content`` holds, decoded with ``struct``, or None when it is malformed (or
    declares an array NumPy cannot hold)."""
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in _STRUCT_CODES or content[3] == 0:
        return None
    ndim = content[3]
    if len(content) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", content[4:4 + 4 * ndim])
    code, dtype = _STRUCT_CODES[content[2]]
    count = math.prod(shape)
    if len(content) != 4 + 4 * ndim + count * struct.calcsize(code):
        return None
    values = struct.unpack(f">{count}{code}", content[4 + 4 * ndim:])
    try:
        return np.array(values, dtype=dtype).reshape(shape)
    except ValueError:  # more than NumPy's 64 dimensions, or a size NumPy cannot index
        return None


def reference_gunzip(stream: bytes) -> bytes | None:
    try:
        return gzip.decompress(stream)
    except (OSError, EOFError, zlib.error):
        return None


def check_read_idx(path: Path, stream: bytes) -> None:
    """``read_idx(path)`` returns exactly what the reference decodes from ``stream`` (the file's
    bytes), or raises a one-line DataError naming ``path`` when the reference finds it malformed."""
    content = reference_gunzip(stream) if stream[:2] == b"\x1f\x8b" else stream
    expected = None if content is None else reference_idx(content)
    if expected is None:
        with pytest.raises(DataError) as caught:
            read_idx(path)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message, message
        event(f"DataError: {_problem(message, path)}")  # --hypothesis-show-statistics lists what was hit
        return
    array = read_idx(path)
    event("read")
    assert array.dtype == expected.dtype and array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)


def _problem(message: str, path: Path) -> str:
    """The kind of problem a message reports: its first words after the file, digits dropped."""
    words = message.replace(str(path), "").lstrip(": ").split(" (")[0]
    words = re.sub(r"'[^']*'|\"[^\"]*\"", "...", words)  # what a damaged file names varies
    return "".join(ch for ch in words if not ch.isdigit())[:50]


def random_array(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def edit_header(content: bytes, edit) -> bytes:
    """``content`` with one IDX header field set (``idx_header_edits``)."""
    field, side, value = edit
    content = bytearray(content)
    if field == "side":
        at = 4 + 4 * side
        if at + 4 <= len(content):
            content[at:at + 4] = struct.pack(">I", value)
    else:
        at = {"zero0": 0, "zero1": 1, "type": 2, "ndim": 3}[field]
        content[at] = value
    return bytes(content)


IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


# -- IDX fuzzing -------------------------------------------------------------------------------


@fuzz
@given(payload=st.binary(max_size=80), form=st.sampled_from(["raw", "gzip magic", "gzipped"]))
def test_read_idx_on_random_bytes(tmp_path, payload, form):
    """Random bytes as they are, behind the gzip magic (a broken gzip header), and gzipped
    (a valid stream of random content): a correct array or a DataError naming the file."""
    stream = {"raw": payload, "gzip magic": b"\x1f\x8b" + payload,
              "gzipped": gzip.compress(payload, mtime=0)}[form]
    path = fresh_dir(tmp_path) / "random.idx"
    path.write_bytes(stream)
    check_read_idx(path, stream)


@fuzz
@given(payload=st.binary(max_size=64), header=idx_headers(), fit=st.booleans(), gz=st.booleans())
def test_read_idx_on_random_payloads_behind_plausible_headers(tmp_path, payload, header, fit, gz):
    """A well-formed header before random bytes, cut or padded to the size it declares half the
    time: random bytes rarely get past the magic, so this reaches the size checks, the decoding
    of every type, and the shapes NumPy cannot hold (more than 64 dimensions; no elements, but
    sides whose product overflows)."""
    code, sides = header
    needed = math.prod(sides) * struct.calcsize(_STRUCT_CODES.get(code, ("B",))[0])
    if fit and needed <= 64:
        payload = (payload + bytes(needed))[:needed]
    content = bytes((0, 0, code, len(sides))) + struct.pack(f">{len(sides)}I", *sides) + payload
    stream = gzip.compress(content, mtime=0) if gz else content
    path = fresh_dir(tmp_path) / ("plausible.gz" if gz else "plausible")
    path.write_bytes(stream)
    check_read_idx(path, stream)


@fuzz
@given(dtype=st.sampled_from(IDX_DTYPES), shape=shapes(min_dims=1, max_dims=3, max_side=5), seed=seeds,
       gz=st.booleans(), damage=st.sampled_from(["content", "stream"]),
       header=st.none() | idx_header_edits, mutations=st.none() | byte_mutations())
def test_read_idx_on_mutated_files(tmp_path, dtype, shape, seed, gz, damage, header, mutations):
    """A file written by ``write_idx``, then damaged: header fields set (magic, type, ndim, a side
    made 0 or huge), then bit flips, truncations, insertions, deletions or overwrites, of the IDX
    content (re-gzipped) or of the gzip stream itself. Unchanged or with only payload bytes
    changed, it reads back as what it now holds; otherwise a DataError naming the file."""
    array = random_array(np.random.default_rng(seed), dtype, shape)
    path = fresh_dir(tmp_path) / ("data.gz" if gz else "data")
    write_idx(path, array)
    written = path.read_bytes()
    content = gzip.decompress(written) if gz else written
    if header is not None:
        content = edit_header(content, header)
    if mutations is not None and (damage == "content" or not gz):
        content = apply_mutations(content, mutations)
    stream = gzip.compress(content, mtime=0) if gz else content
    if gz and damage == "stream" and mutations is not None:
        stream = apply_mutations(stream, mutations)
    path.write_bytes(stream)
    check_read_idx(path, stream)
    if header is None and mutations is None:  # untouched: what was written
        np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize("gz", [False, True])
def test_a_header_claiming_a_trillion_elements_is_refused_without_allocating(tmp_path, gz):
    """10**12 elements declared, 16 bytes present: refused from the sizes alone."""
    content = bytes((0, 0, 0x08, 2)) + struct.pack(">II", 10**6, 10**6) + bytes(16)
    path = tmp_path / ("huge.gz" if gz else "huge")
    path.write_bytes(gzip.compress(content) if gz else content)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated IDX payload") as caught:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(caught.value) and "1000000000000 bytes" in str(caught.value)
    assert peak < 4 << 20, f"{peak} bytes allocated to refuse a 10**12-element header"


def test_a_gzip_header_claiming_more_than_deflate_can_hold_is_refused_unread(tmp_path):
    content = bytes((0, 0, 0x0E, 1)) + struct.pack(">I", 2**32 - 1) + bytes(64)
    path = tmp_path / "claims.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(DataError, match=r"truncated IDX payload .*inflates to at most") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def test_a_gzip_bomb_behind_a_small_header_is_refused_without_inflating_it(tmp_path):
    """A 4-element header, then 64 MiB of zeros that gzip squeezes to ~64 KiB: refused after
    inflating about a chunk past the payload, not the whole bomb."""
    content = bytes((0, 0, 0x08, 1)) + struct.pack(">I", 4) + bytes(64 << 20)
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(content, compresslevel=9))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="unexpected trailing bytes") as caught:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(caught.value)
    assert peak < 16 << 20, f"{peak >> 20} MiB inflated to refuse a file whose header declares 4 bytes"


def test_a_dataset_file_failing_its_checksum_is_not_inflated_into_memory(tmp_path):
    """A gzip bomb in --data-dir: its md5 is wrong, so its content is only hashed, a chunk at a
    time, for the message; it is never held whole."""
    for stem in data._IDX_FILES:
        (tmp_path / f"{stem}.gz").write_bytes(b"")
    bomb = tmp_path / "train-images-idx3-ubyte.gz"  # read first
    bomb.write_bytes(gzip.compress(bytes(64 << 20), compresslevel=9))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="checksum mismatch") as caught:
            data.load_dataset("mnist", data_dir=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(bomb) in str(caught.value)
    assert peak < 16 << 20, f"{peak >> 20} MiB held to refuse a file that fails its checksum"


@pytest.mark.parametrize("shape, message", [
    ((1,) * 65, "65 dimensions"),
    ((1,) * 255, "255 dimensions"),
    ((0, 2**32 - 1, 2**32 - 1, 2**32 - 1), "cannot be held in a NumPy array"),
    ((2**32 - 1,) * 5 + (0,), "cannot be held in a NumPy array"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_headers_numpy_cannot_hold_are_data_errors(tmp_path, shape, message, gz):
    """An IDX header may declare 255 dimensions and sides up to 2**32 - 1 with no payload at all
    (a side of 0): NumPy holds neither, and says so with a ValueError that must not escape."""
    content = bytes((0, 0, 0x0E, len(shape))) + struct.pack(f">{len(shape)}I", *shape)
    path = tmp_path / ("odd.gz" if gz else "odd")
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataError, match=message) as caught:
        read_idx(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_array_round_trips(tmp_path):
    write_idx(tmp_path / "empty.gz", np.zeros((0, 3), np.int16))
    array = read_idx(tmp_path / "empty.gz")
    assert array.shape == (0, 3) and array.dtype == np.int16


# -- checkpoints: a real one, then damaged ----------------------------------------------------

TINY = dict(input_dim=6, hidden_dims=(4,), latent_dim=2)


class Pristine:
    """A run directory with two checkpoints written by ``write_checkpoint`` of a tiny mlp-ae,
    and what reading each returns (checked against what was written)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        model = build("mlp-ae", dtype=np.float32, rng=0, **TINY)
        optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
        x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
        self.written, self.loaded = {}, {}
        for epoch in (1, 2):
            optimizer.zero_grad()
            model.loss(x)
            model.backward()
            optimizer.step()
            weights = {key: np.array(value) for key, value in model.state_dict().items()}
            state = optimizer.state_dict()
            directory = write_checkpoint(run_dir, epoch, weights, state, {"metrics": [
                {"epoch": e, "train": {"loss": 1.0}, "test": {"loss": 1.0}, "seconds": 0.5} for e in range(1, epoch + 1)]})
            self.written[directory.name] = (weights, state)
            self.loaded[directory.name] = read_checkpoint(directory)
        self.expected = {key: np.array(value) for key, value in model.state_dict().items()}

    def copy(self, parent: Path) -> Path:
        run_dir = fresh_dir(parent) / "run"
        shutil.copytree(self.run_dir, run_dir)
        return run_dir


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Pristine:
    return Pristine(tmp_path_factory.mktemp("pristine") / "run")


def assert_same_optimizer(loaded: dict, reference: dict) -> None:
    assert loaded["param_groups"] == reference["param_groups"]
    assert loaded["state"].keys() == reference["state"].keys()
    for index, entries in reference["state"].items():
        assert loaded["state"][index].keys() == entries.keys()
        for name, value in entries.items():
            np.testing.assert_array_equal(loaded["state"][index][name], value, err_msg=f"{index}.{name}")


def test_the_pristine_checkpoint_reads_back_as_written(pristine):
    for name, (weights, state) in pristine.written.items():
        loaded_weights, loaded_optimizer, loaded_state = pristine.loaded[name]
        assert loaded_weights.keys() == weights.keys()
        for key in weights:
            np.testing.assert_array_equal(loaded_weights[key], weights[key], err_msg=key)
        assert_same_optimizer(loaded_optimizer, {"state": state["state"],
                                                 "param_groups": [{**g, "betas": tuple(g["betas"])} for g in state["param_groups"]]})
        assert loaded_state["epoch"] == int(name.split("-")[1])
    assert latest_checkpoint(pristine.run_dir).name == "epoch-0002"
    read_checkpoint(latest_checkpoint(pristine.run_dir), expected=pristine.expected)  # fits its own model


def rehash(checkpoint: Path, name: str) -> None:
    """Rewrite state.json's sha256 of ``name`` to the file as it is now, as a forger would: the
    checksum passes, so only the readers' own checks stand between the damage and the model."""
    state = json.loads((checkpoint / "state.json").read_text())
    state["sha256"][name] = sha256(checkpoint / name)
    (checkpoint / "state.json").write_text(json.dumps(state, indent=2))


CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "state.json", "latest")


@fuzz
@given(target=st.sampled_from(CHECKPOINT_FILES), mutations=st.one_of(byte_mutations(), byte_flips()),
       forge=st.booleans())
def test_checkpoint_readers_on_mutated_files(pristine, tmp_path, target, mutations, forge):
    """Each file of a real checkpoint, mutated (and for the tensor files, with state.json's
    sha256 forged to match, half the time). ``latest_checkpoint`` then ``read_checkpoint`` with
    the model's own shapes: a CheckpointError naming the damaged file, or a load equal to the
    original checkpoint the pointer names. Where the damage is not covered by a checksum
    (state.json; a forged sha256), the load may differ only where the damage is: state.json's
    values as now written, weights as safetensors now reads them, in the model's shapes."""
    run_dir = pristine.copy(tmp_path)
    checkpoint = run_dir / "checkpoints" / "epoch-0002"
    damaged = run_dir / "checkpoints" / "latest" if target == "latest" else checkpoint / target
    damaged.write_bytes(apply_mutations(damaged.read_bytes(), mutations))
    forged = forge and target.endswith(".safetensors")
    if forged:
        rehash(checkpoint, target)
    try:
        directory = latest_checkpoint(run_dir)
        weights, optimizer, state = read_checkpoint(directory, expected=pristine.expected)
    except CheckpointError as error:
        message = str(error)
        assert "\n" not in message and str(run_dir) in message and target in message, message
        event(f"{target}{' forged' if forged else ''}: {_problem(message.split(': ', 1)[1], run_dir)}")
        return
    event(f"{target}{' forged' if forged else ''}: loaded")
    original_weights, original_optimizer, original_state = pristine.loaded[directory.name]
    if not (forged and target == "model.safetensors"):
        for key in original_weights:
            np.testing.assert_array_equal(weights[key], original_weights[key], err_msg=key)
    else:
        now = safetensors_load(damaged.read_bytes())
        for key, value in pristine.expected.items():
            assert weights[key].shape == value.shape and weights[key].dtype == value.dtype
            np.testing.assert_array_equal(weights[key], now[key])
    if target == "state.json" and directory == checkpoint:
        assert state == json.loads(damaged.read_text())
        for index, entries in original_optimizer["state"].items():  # the hashed buffers
            for name, value in entries.items():
                if isinstance(value, np.ndarray):
                    np.testing.assert_array_equal(optimizer["state"][index][name], value)
        return
    hashes = {**original_state["sha256"], **({target: sha256(damaged)} if forged else {})}
    assert state == {**original_state, "sha256": hashes}
    if forged and target == "optimizer.safetensors":
        now = safetensors_load(damaged.read_bytes())
        for index, entries in optimizer["state"].items():
            for name, value in entries.items():
                if isinstance(value, np.ndarray):
                    np.testing.assert_array_equal(value, now[f"state.{index}.{name}"])
    else:
        assert_same_optimizer(optimizer, original_optimizer)


@fuzz
@given(payload=st.binary(max_size=200))
def test_read_json_and_load_tensors_on_random_bytes(tmp_path, payload):
    """Any bytes: a dict (what json.loads makes of them) or a CheckpointError naming the file;
    a dict of arrays or a CheckpointError."""
    path = fresh_dir(tmp_path) / "random"
    path.write_bytes(payload)
    try:
        value = read_json(path)
    except CheckpointError as error:
        assert str(path) in str(error) and "\n" not in str(error)
    else:
        assert value == json.loads(payload.decode("utf-8"))
    try:
        tensors = load_tensors(path)
    except CheckpointError as error:
        assert str(path) in str(error) and "\n" not in str(error)
    else:
        assert all(isinstance(value, np.ndarray) for value in tensors.values())


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000, "not valid JSON"),                        # deeper than the parser's stack
    ('{"a": ' + "[" * 40 + "]" * 40 + "}", "nested deeper than"),  # parses, but nests absurdly
    ('{"format": ' + "1" * 5000 + "}", "not valid JSON"),        # an integer Python will not convert
    ("\xff\xfe{}", "not UTF-8"),
    ("[1, 2]", "expected a JSON object, found an array"),
])
def test_read_json_refuses_json_bombs_in_one_line(tmp_path, text, message):
    path = tmp_path / "state.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match=message) as caught:
        read_json(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_check_weights_names_the_key_and_what_was_expected(tmp_path):
    own = {"a.weight": np.zeros((2, 3), np.float32), "a.bias": np.zeros(2, np.float32)}
    source = tmp_path / "model.safetensors"
    cases = [
        ({"a.weight": own["a.weight"]}, "lacks 'a.bias'"),
        ({**own, "b.weight": own["a.bias"]}, "holds 'b.weight', which the model does not have"),
        ({**own, "a.bias": np.zeros(3, np.float32)}, r"'a.bias' has shape \(3,\), the model expects \(2,\)"),
        ({**own, "a.bias": np.zeros(2, np.int32)}, "'a.bias' is int32, the model expects float32"),
    ]
    for weights, message in cases:
        with pytest.raises(CheckpointError, match=message) as caught:
            check_weights(weights, own, source)
        assert str(source) in str(caught.value)
    check_weights(dict(own), own, source)


# -- the command line on each kind of damage ---------------------------------------------------


def _state(run_dir: Path) -> Path:
    return latest_checkpoint(run_dir) / "state.json"


def _edit_state(edit):
    def damage(run_dir: Path) -> Path:
        path = _state(run_dir)
        state = json.loads(path.read_text())
        edit(state)
        path.write_text(json.dumps(state))
        return path
    return damage


def _write_state(text: str):
    def damage(run_dir: Path) -> Path:
        path = _state(run_dir)
        path.write_text(text)
        return path
    return damage


def _truncate_model(forge: bool):
    def damage(run_dir: Path) -> Path:
        checkpoint = latest_checkpoint(run_dir)
        path = checkpoint / "model.safetensors"
        path.write_bytes(path.read_bytes()[:200])
        if forge:
            rehash(checkpoint, "model.safetensors")
        return path
    return damage


def _huge_header_length(run_dir: Path) -> Path:
    checkpoint = latest_checkpoint(run_dir)
    path = checkpoint / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + path.read_bytes()[8:])
    rehash(checkpoint, "model.safetensors")
    return path


def _foreign_bfloat16(run_dir: Path) -> Path:
    """Another library's safetensors: the model's keys, in bfloat16 (which NumPy cannot hold)."""
    checkpoint = latest_checkpoint(run_dir)
    path = checkpoint / "model.safetensors"
    weights = safetensors_load(path.read_bytes())
    header, offset, payload = {}, 0, b""
    for key, value in weights.items():
        size = value.size * 2
        header[key] = {"dtype": "BF16", "shape": list(value.shape), "data_offsets": [offset, offset + size]}
        offset += size
        payload += bytes(size)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + payload)
    rehash(checkpoint, "model.safetensors")
    return path


def _replace_tensor(file: str, change):
    """Rewrite the first tensor of ``file`` (forging its sha256): a valid file, but not the
    model's. ``change(array)`` returns the new array, or ``(new key, array)``."""
    def damage(run_dir: Path) -> Path:
        checkpoint = latest_checkpoint(run_dir)
        path = checkpoint / file
        tensors = dict(safetensors_load(path.read_bytes()))
        key = sorted(tensors)[0]
        replaced = change(tensors.pop(key))
        key, value = replaced if isinstance(replaced, tuple) else (key, replaced)
        tensors[key] = value
        path.write_bytes(safetensors_save(tensors, metadata={"format": "pt"} if file == "model.safetensors" else None))
        rehash(checkpoint, file)
        return path
    return damage


def _remove(name: str):
    def damage(run_dir: Path) -> Path:
        path = latest_checkpoint(run_dir) / name
        path.unlink()
        return path
    return damage


def _latest(text: str):
    def damage(run_dir: Path) -> Path:
        path = run_dir / "checkpoints" / "latest"
        path.write_text(text)
        return path
    return damage


def _latest_through_a_link(run_dir: Path) -> Path:
    """``latest`` names a link that leads to another run's checkpoint."""
    elsewhere = run_dir.parent / "elsewhere"
    shutil.copytree(latest_checkpoint(run_dir), elsewhere)
    (run_dir / "checkpoints" / "epoch-0009").symlink_to(elsewhere, target_is_directory=True)
    path = run_dir / "checkpoints" / "latest"
    path.write_text("epoch-0009\n")
    return path


def _no_latest(run_dir: Path) -> Path:
    (run_dir / "checkpoints" / "latest").unlink()
    return run_dir


def _deep_metrics(state):
    state["metrics"] = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]


# name -> (damage, what the one line must say). Each damage returns the file the line must name.
DAMAGES = {
    "truncated model": (_truncate_model(forge=False), "checksum mismatch"),
    "truncated model, sha256 forged": (_truncate_model(forge=True), "not a valid safetensors file"),
    "huge safetensors header length": (_huge_header_length, "not a valid safetensors file"),
    "foreign safetensors in bfloat16": (_foreign_bfloat16, "not a valid safetensors file"),
    "model.safetensors missing": (_remove("model.safetensors"), "missing"),
    "state.json missing": (_remove("state.json"), "not found"),
    "state.json not JSON": (_write_state("{\"format\": 1, "), "not valid JSON"),
    "state.json nested 100000 deep": (_write_state("[" * 100_000), "not valid JSON"),
    "state.json nested 37 deep": (_edit_state(_deep_metrics), "nested deeper than"),
    "state.json an array": (_write_state("[]"), "expected a JSON object"),
    "epoch a string": (_edit_state(lambda s: s.update(epoch="1")), "'epoch' must be a non-negative integer"),
    "epoch not the directory's": (_edit_state(lambda s: s.update(epoch=7)), "'epoch' is 7 but the directory is epoch-0001"),
    "sha256 a list": (_edit_state(lambda s: s.update(sha256=[])), "'sha256' must be an object"),
    "sha256 empty": (_edit_state(lambda s: s.update(sha256={})), "'sha256' lacks 'model.safetensors'"),
    "sha256 names a file elsewhere": (_edit_state(lambda s: s["sha256"].update({"../../config.json": "0" * 64})),
                                      "not a file of the checkpoint"),
    "sha256 not hex": (_edit_state(lambda s: s["sha256"].update({"model.safetensors": 12})), "64 lowercase hex digits"),
    "format from a newer version": (_edit_state(lambda s: s.update(format=2)), "checkpoint format 2 (written by a newer version"),
    "format true (foreign)": (_edit_state(lambda s: s.update(format=True)), "not a checkpoint of this library"),
    "format missing (foreign)": (_edit_state(lambda s: s.pop("format")), "not a checkpoint of this library"),
    "optimizer an array": (_edit_state(lambda s: s.update(optimizer=[])), "'optimizer' must be an object"),
    "param_groups missing": (_edit_state(lambda s: s["optimizer"].pop("param_groups")), "optimizer.param_groups must be"),
    "params not indices": (_edit_state(lambda s: s["optimizer"]["param_groups"][0].update(params=["a"])),
                           "optimizer.param_groups[0].params must be"),
    "lr a string": (_edit_state(lambda s: s["optimizer"]["param_groups"][0].update(lr="fast")),
                    "optimizer.param_groups[0].lr must be a finite non-negative number"),
    "betas malformed": (_edit_state(lambda s: s["optimizer"]["param_groups"][0].update(betas=[0.9])), "betas must be two numbers"),
    "scalar key malformed": (_edit_state(lambda s: s["optimizer"]["scalars"].update(step=1.0)), "optimizer.scalars has key 'step'"),
    "scalar a string": (_edit_state(lambda s: s["optimizer"]["scalars"].update({"0.step": "12"})), "must be a finite number"),
    "metrics a string": (_edit_state(lambda s: s.update(metrics="none")), "'metrics' must be an array of objects"),
    "optimizer tensor misnamed": (_replace_tensor("optimizer.safetensors", lambda v: ("exp_avg.0", v)), "unexpected tensor 'exp_avg.0'"),
    "optimizer tensor of integers": (_replace_tensor("optimizer.safetensors", lambda v: v.astype(np.int32)), "optimizer buffers are floating point"),
    "latest empty": (_latest(""), "names '', which is not a checkpoint directory"),
    "latest names a path out": (_latest("../../elsewhere\n"), "names '../../elsewhere', which is not a checkpoint directory"),
    "latest names a missing checkpoint": (_latest("epoch-0042\n"), "names 'epoch-0042', which is not a checkpoint directory (missing)"),
    "latest is binary": (_latest("\0" * 4096), "which is not a checkpoint directory"),
    "latest leads through a link": (_latest_through_a_link, "(a link)"),
    "latest missing": (_no_latest, "no checkpoint yet"),
}
# The model's own shapes and dtypes: refused only once the command line passes the model's
# weights to read_checkpoint(expected=...) (or calls check_weights) before loading them.
MODEL_DAMAGES = {
    "weights of the wrong shape": (_replace_tensor("model.safetensors", lambda v: np.zeros((3, 3), v.dtype)), "has shape (3, 3), the model expects"),
    "weights of the wrong dtype": (_replace_tensor("model.safetensors", lambda v: v.astype(np.float64)), "is float64, the model expects float32"),
    "weights of another model": (_replace_tensor("model.safetensors", lambda v: ("fc9.weight", v)), "lacks"),
    "optimizer buffer of the wrong shape": (_replace_tensor("optimizer.safetensors", lambda v: np.zeros((3, 3), v.dtype)),
                                            "its parameter"),
}
COMMANDS = {
    "eval": lambda run_dir, tmp: ["eval", str(run_dir)],
    "reconstruct": lambda run_dir, tmp: ["reconstruct", str(run_dir), "--out", str(tmp / "r.png")],
    "resume": lambda run_dir, tmp: ["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"],
    "convert": lambda run_dir, tmp: ["convert", str(run_dir), str(tmp / "weights.pt")],
}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """One-epoch runs of a small mlp-ae on the offline digits, one per backend."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for backend in ("scratch", "torch"):
        runs[backend] = root / backend
        assert main(["train", "mlp-ae", "--epochs", "1", "--backend", backend, "--out", str(runs[backend]), *SMALL]) == 0
    return runs


def run_damaged(trained_runs, tmp_path, capsys, backend, damage, command) -> tuple[int, str, Path]:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_runs[backend], run_dir)
    named = damage(run_dir)
    capsys.readouterr()
    status = main(COMMANDS[command](run_dir, tmp_path))
    return status, capsys.readouterr().err, named


def assert_one_line(status: int, stderr: str, command: str, named: Path, message: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    word = "train" if command == "resume" else command
    assert lines[0].startswith(f"autoencoders {word}: error: "), lines[0]
    assert str(named) in lines[0], f"the line does not name {named}: {lines[0]}"
    assert message in lines[0], f"{message!r} not in {lines[0]}"


# train --resume without checkpoints/latest starts the run over (a process killed before its
# first checkpoint was complete leaves none): not an error there.
DAMAGE_CASES = [(kind, command) for kind in DAMAGES for command in COMMANDS
                if (kind, command) != ("latest missing", "resume")]


@pytest.mark.parametrize("kind, command", DAMAGE_CASES)
def test_each_damage_is_one_line_and_status_2(trained_runs, tmp_path, capsys, kind, command):
    damage, message = DAMAGES[kind]
    status, stderr, named = run_damaged(trained_runs, tmp_path, capsys, "scratch", damage, command)
    assert_one_line(status, stderr, command, named, message)


# eval and reconstruct load no optimizer state: a buffer that does not fit matters to resume only.
MODEL_DAMAGE_CASES = [pytest.param(kind, command, backend)
                      for kind in MODEL_DAMAGES for command in ("eval", "reconstruct", "resume")
                      for backend in ("scratch", "torch")
                      if command == "resume" or not kind.startswith("optimizer")]


@pytest.mark.parametrize("kind, command, backend", MODEL_DAMAGE_CASES)
def test_weights_that_do_not_fit_the_model_are_refused_naming_the_key(trained_runs, tmp_path, capsys, kind, command, backend):
    """Valid files (their sha256 forged) whose tensors are not the run's model's: refused naming
    the file and the key before anything is loaded (the torch backend would otherwise raise
    its multi-line RuntimeError, or fail at the first step for an optimizer buffer)."""
    damage, message = MODEL_DAMAGES[kind]
    status, stderr, named = run_damaged(trained_runs, tmp_path, capsys, backend, damage, command)
    assert_one_line(status, stderr, command, named, message)


@pytest.mark.parametrize("kind", list(MODEL_DAMAGES))
def test_read_checkpoint_with_the_model_refuses_weights_that_do_not_fit(trained_runs, tmp_path, kind):
    """The library half of the test above, which passes today: read_checkpoint(expected=...)."""
    damage, message = MODEL_DAMAGES[kind]
    run_dir = tmp_path / "run"
    shutil.copytree(trained_runs["scratch"], run_dir)
    named = damage(run_dir)
    model = build("mlp-ae", dtype=np.float32, hidden_dims=(32,), latent_dim=8, input_dim=64)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(latest_checkpoint(run_dir), expected=dict(model.state_dict()))
    assert str(named) in str(caught.value) and message in str(caught.value), str(caught.value)


# -- convert: foreign and hostile .pt and .safetensors files ----------------------------------


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``: what a hostile .pt holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def hostile_files(directory: Path, marker: Path) -> dict[str, Path]:
    """The same payload three ways: torch.save's zip format (alone, and inside a state_dict
    beside real tensors) and a bare pickle (torch's legacy format)."""
    files = {"zip": directory / "hostile.pt", "state_dict": directory / "hostile-state.pth",
             "legacy": directory / "hostile-legacy.pt"}
    torch.save(RunsCode(marker), files["zip"])
    torch.save({"weight": torch.zeros(2, 2), "bias": RunsCode(marker)}, files["state_dict"])
    files["legacy"].write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    return files


def test_the_hostile_pickle_really_runs_code_when_unpickled(tmp_path):
    """The control: unpickled without weights_only, the payload does create its marker (so the
    tests below, where it must not, test something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.exists()


@pytest.mark.parametrize("form", ["zip", "state_dict", "legacy"])
def test_convert_refuses_a_pt_that_would_run_code_without_running_it(tmp_path, form):
    marker = tmp_path / "ran"
    source = hostile_files(tmp_path, marker)[form]
    with pytest.raises(CheckpointError, match="weights_only=True") as caught:
        convert(source, tmp_path / "out.safetensors")
    assert str(source) in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists(), "unpickling ran the payload's code"
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_names_a_tensor_numpy_cannot_hold(tmp_path):
    source = tmp_path / "bf16.pt"
    torch.save({"weight": torch.zeros(2, 2, dtype=torch.bfloat16)}, source)
    with pytest.raises(CheckpointError, match=r"tensor 'weight' \(torch.bfloat16") as caught:
        convert(source, tmp_path / "out.safetensors")
    assert str(source) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("content, message", [
    (struct.pack("<Q", 2**62) + b"{}", "not a valid safetensors file"),
    (b"", "not a valid safetensors file"),
    (struct.pack("<Q", 2) + b"[]", "not a valid safetensors file"),
])
def test_convert_refuses_malformed_safetensors(tmp_path, content, message):
    source = tmp_path / "bad.safetensors"
    source.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as caught:
        convert(source, tmp_path / "out.pt")
    assert str(source) in str(caught.value) and "\n" not in str(caught.value)


# -- a few as a user sees them: a real process, its exit status and its stderr ------------------


def test_the_command_line_refuses_damage_in_one_line(tmp_path, trained_runs):
    """Five damages through ``python -m autoencoders.cli``: each exits 2 with one line, no traceback,
    and the hostile .pt never runs its payload."""
    cases = []
    for name, (damage, message), command in [
        ("eval", DAMAGES["truncated model, sha256 forged"], "eval"),
        ("reconstruct", DAMAGES["latest leads through a link"], "reconstruct"),
        ("resume", DAMAGES["epoch a string"], "resume"),
        ("convert", DAMAGES["sha256 a list"], "convert"),
    ]:
        run_dir = tmp_path / name / "run"
        shutil.copytree(trained_runs["scratch"], run_dir)
        cases.append((COMMANDS[command](run_dir, tmp_path / name), command, damage(run_dir), message))
    marker = tmp_path / "ran"
    hostile = hostile_files(tmp_path, marker)["zip"]
    cases.append((["convert", str(hostile), str(tmp_path / "out.safetensors")], "convert", hostile, "weights_only=True"))
    for argv, command, named, message in cases:
        result = cli(*argv, cwd=tmp_path)
        assert_one_line(result.returncode, result.stderr, command, named, message)
    assert not marker.exists()


TINY_MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def tiny_mnist_dir(tmp_path: Path) -> Path:
    """``tmp_path/mnist``: the four MNIST IDX files (.gz) of a 3-image training set and 2 test images."""
    directory = tmp_path / "mnist"
    directory.mkdir()
    arrays = {"train-images-idx3-ubyte": np.zeros((3, 4, 4), np.uint8), "train-labels-idx1-ubyte": np.zeros(3, np.uint8),
              "t10k-images-idx3-ubyte": np.zeros((2, 4, 4), np.uint8), "t10k-labels-idx1-ubyte": np.zeros(2, np.uint8)}
    for stem, array in arrays.items():
        write_idx(directory / f"{stem}.gz", array)
    return directory


def test_a_corrupt_dataset_file_is_one_line_from_the_command_line(tmp_path, capsys, monkeypatch):
    directory = tiny_mnist_dir(tmp_path)
    # Trusted checksums (as for real MNIST), then the images truncated: the md5 check names it.
    monkeypatch.setitem(data._GZ_MD5, "mnist", {stem: hashlib.md5((directory / f"{stem}.gz").read_bytes()).hexdigest()
                                                 for stem in TINY_MNIST_STEMS})
    damaged = directory / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-9])
    status = main(["train", "mlp-ae", "--dataset", "mnist", "--data-dir", str(directory),
                   "--out", str(tmp_path / "run"), "--quiet"])
    stderr = capsys.readouterr().err
    assert status == 2 and [line for line in stderr.splitlines() if line.strip()] == [stderr.strip()], stderr
    assert str(damaged) in stderr and "corrupt or truncated gzip" in stderr and "Traceback" not in stderr


# -- security: nothing unpickles; downloads are verified before use -----------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "marshal", "shelve"}
SCANNED = ("scratch", "torch_impl", "autoencoders")


def _qualified(node, aliases: dict[str, str]) -> str | None:
    """``np.load`` -> ``numpy.load`` after ``import numpy as np``; None for calls on values."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _qualified(node.value, aliases)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _is_constant(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_deserialization(source: str, filename: str) -> list[str]:
    """Every way ``source`` could unpickle or run data: imports of pickle-like modules, calls
    with ``allow_pickle`` not literally False, ``numpy.load`` without ``allow_pickle=False``,
    ``torch.load`` without ``weights_only=True`` (and either with ``**kwargs``), ``eval`` and
    ``exec``, and ``__import__``/``import_module`` of a pickle-like module."""
    tree = ast.parse(source, filename)
    aliases, problems = {}, []
    for node in ast.walk(tree):  # imports anywhere, lazy ones inside functions included
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    problems.append(f"{filename}:{node.lineno}: imports {alias.name}")
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in UNSAFE_MODULES:
                problems.append(f"{filename}:{node.lineno}: imports from {module}")
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases) or ""
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        where = f"{filename}:{node.lineno}"
        if name in ("eval", "exec"):
            problems.append(f"{where}: calls {name}()")
        if name in ("__import__", "importlib.import_module") and node.args and isinstance(node.args[0], ast.Constant) \
                and str(node.args[0].value).split(".")[0] in UNSAFE_MODULES:
            problems.append(f"{where}: imports {node.args[0].value} dynamically")
        if "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
            problems.append(f"{where}: {name}(allow_pickle=...) not literally False")
        if name == "numpy.load" and not _is_constant(keywords.get("allow_pickle"), False):
            problems.append(f"{where}: numpy.load without allow_pickle=False")
        if name == "torch.load" and not _is_constant(keywords.get("weights_only"), True):
            problems.append(f"{where}: torch.load without weights_only=True")
        if name in ("numpy.load", "torch.load") and None in keywords:
            problems.append(f"{where}: {name} with **kwargs, which could override the safe setting")
    return problems


@pytest.mark.parametrize("source", [
    "import pickle",
    "import cPickle as p",
    "from joblib import load",
    "import dill",
    "import marshal",
    "def f():\n    import cloudpickle",
    "import numpy as np\nnp.load(f)",
    "import numpy\nnumpy.load(f, allow_pickle=True)",
    "from numpy import load\nload(f)",
    "import numpy as np\nnp.load(f, allow_pickle=flag)",
    "import numpy as np\nnp.save(f, a, allow_pickle=True)",
    "import torch\ntorch.load(f)",
    "import torch\ntorch.load(f, weights_only=False)",
    "from torch import load as tl\ntl(f, map_location='cpu')",
    "import torch\ntorch.load(f, weights_only=True, **options)",
    "eval(text)",
    "exec(code, {})",
    "__import__('pickle').loads(b)",
    "import importlib\nimportlib.import_module('dill')",
])
def test_the_scan_finds_each_unsafe_pattern(source):
    assert unsafe_deserialization(source, "example.py"), source


@pytest.mark.parametrize("source", [
    "import numpy as np\nnp.load(f, allow_pickle=False)",
    "import torch\ntorch.load(f, map_location='cpu', weights_only=True)",
    "from safetensors.numpy import load\nload(data)",
    "model.eval()",
    "import json\njson.loads(text)",
])
def test_the_scan_passes_safe_code(source):
    assert unsafe_deserialization(source, "example.py") == []


def test_nothing_in_the_library_or_benchmarks_can_unpickle():
    files = sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py"))
    assert len(files) > 20 and any(path.name == "convert.py" for path in files)
    problems = [problem for path in files
                for problem in unsafe_deserialization(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert problems == [], "\n".join(problems)


def test_a_download_is_verified_before_any_of_it_is_decompressed_or_parsed(tmp_path, monkeypatch):
    """A mirror serving the wrong bytes (here a broken gzip stream): refused by its md5, and not
    one of its bytes reaches gzip or the IDX parser, nor the cache."""
    hostile = b"\x1f\x8b\x08\x00" + bytes(32)
    monkeypatch.setattr(data, "_fetch", lambda url, label: hostile)
    touched = []
    for name in ("_decompress", "_content_md5", "_inflate_idx", "_parse_idx"):
        real = getattr(data, name, None)
        if real is None:  # the internals may change; whichever exist are watched
            continue
        monkeypatch.setattr(data, name, lambda payload, *rest, _real=real, _name=name: (
            touched.append(_name) if payload == hostile else None, _real(payload, *rest))[1])
    with pytest.raises(DataError, match="checksum mismatch for downloaded train-images-idx3-ubyte.gz"):
        data.load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert touched == []
    cache = tmp_path / "cache" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []
