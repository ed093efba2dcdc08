"""Checkpoints: safetensors weights under torch's keys, optimizer state, JSON; never pickled.

A run directory holds::

    config.json                    what was trained and how (model, its config, training options)
    checkpoints/epoch-0003/        one complete checkpoint per directory:
        model.safetensors          weights, torch's state_dict keys (safetensors.torch.load_file
                                   loads it straight into the torch twin)
        optimizer.safetensors      optimizer buffers as "state.<index>.<name>"
        state.json                 epoch, optimizer scalars and groups, metrics so far, sha256 of both files
    checkpoints/latest             the name of the newest complete checkpoint directory
    model.safetensors              a copy of the newest weights, for convenience
    .autoencoders-run              the marker: this directory is a run of this library
    .autoencoders.lock             flocked by the one process writing the run (``autoencoders.runs.directory``)

Writes are crash-safe: a checkpoint is assembled in a temporary directory, flushed, then renamed
into place (an atomic rename), and only then does ``latest`` move (another atomic rename). A
process killed at any point leaves the previous checkpoint intact and ``latest`` pointing at it.
What follows (``publish_weights``, ``prune_checkpoints``, the pictures) is the training loop's
completion step, which ``--resume`` runs again for the newest checkpoint.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from autoencoders._faults import kill_point
from autoencoders._files import atomic_write_bytes, fsync_directory, make_staging_directory
from autoencoders._reader import JSON_LIMIT, POINTER_LIMIT, format_bytes, memory_limit, open_regular, read_bounded, sha256_bounded

FORMAT_VERSION = 1
KEEP_CHECKPOINTS = 2


class CheckpointError(Exception):
    """A checkpoint or run directory that cannot be read: one line naming the file and the problem."""


def atomic_write_json(path, value) -> Path:
    return atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


@contextmanager
def collector_paused():
    """The garbage collector off for the body, then as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_json(text: str):
    """``json.loads(text)`` with the garbage collector paused. A parse builds one container per
    JSON object or array, all acyclic; when they tip the collector over its threshold it walks
    every object of the process, which in a long-running one (a test suite) took a second of CPU
    for the header of 12,000 tensors that parses in 20 ms, and frees none of them."""
    with collector_paused():
        return json.loads(text)


def read_json(path) -> dict:
    """The JSON object stored in ``path``.

    Raises
    ------
    CheckpointError
        Naming ``path``: missing, unreadable, not a regular file (a FIFO, a device...), larger
        than ``JSON_LIMIT``, not UTF-8, not JSON (nesting deeper than the parser can follow and
        integers of more than 4300 digits included), or not a JSON object.
    """
    path = Path(path)
    data = read_bounded(path, JSON_LIMIT, CheckpointError, reason="the most a JSON file of this library may hold")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON (not UTF-8 text: {error})") from None
    try:
        value = parse_json(text)
    # JSONDecodeError is a ValueError, and so is an integer too long to convert; nesting deeper
    # than the interpreter's stack is a RecursionError. None of them may escape as a traceback.
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({_one_line(error)})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {_json_kind(value)}")
    if _json_depth(value) > _MAX_JSON_DEPTH:
        # Nothing we write nests deeper than a few levels, and a structure nested nearly as deep
        # as the parser allows would overflow the stack of whatever walks it next (repr, dumps).
        raise CheckpointError(f"{path}: JSON nested deeper than {_MAX_JSON_DEPTH} levels (checkpoints and configurations nest a few)")
    return value


_MAX_JSON_DEPTH = 32


def _json_depth(value) -> int:
    """How deeply ``value`` nests, found without recursion (it may nest as deep as the parser allows)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= _MAX_JSON_DEPTH:  # deeper is refused anyway: stop walking
                pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _one_line(error: BaseException) -> str:
    """An exception's message as one line (some libraries' messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def _json_kind(value) -> str:
    """What a JSON value is, for messages: 'a string', 'an array', ..."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    for kind, name in ((dict, "an object"), (list, "an array"), (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):
            return f"{name} ({_short(value)})" if kind in (str, (int, float)) else name
    return type(value).__name__


def _short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a damaged file can hold anything."""
    try:
        text = repr(value)
    except RecursionError:  # pragma: no cover - read_json refuses deep nesting first
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1 here


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sha256(path: Path, limit: int | None = None, reason: str = "") -> str:
    """The sha256 of regular file ``path``, hashed a chunk at a time; refused as a CheckpointError
    naming it before any of it is hashed when it is larger than ``limit`` (None: no limit)."""
    return sha256_bounded(path, limit, CheckpointError, reason=reason, follow_links=False)


# -- tensors -------------------------------------------------------------------------------


def save_tensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write NumPy arrays as safetensors, atomically."""
    from safetensors.numpy import save

    arrays = {key: np.require(value, requirements="C") for key, value in tensors.items()}  # 0-d stays 0-d
    return atomic_write_bytes(path, save(arrays, metadata=metadata))


# What a checkpoint's tensors may be: the dtypes NumPy holds natively. safetensors also knows
# bfloat16 and the float8s, which NumPy cannot represent.
_TENSOR_DTYPES = frozenset(np.dtype(name) for name in (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
))


def load_tensors(path, *, expected_count: int | None = None) -> dict[str, np.ndarray]:
    """Read a safetensors file into NumPy arrays.

    The file is read through ``autoencoders._reader`` (a regular file no larger than the memory
    available) and its header is checked (``_check_safetensors_header``) before safetensors
    parses it.

    Parameters
    ----------
    path : str or os.PathLike
        Any safetensors file (ours or another library's).
    expected_count : int, optional
        How many tensors the file must hold (a model's number of parameters).

    Returns
    -------
    dict of str to np.ndarray
        Read-only arrays, in the file's order.

    Raises
    ------
    CheckpointError
        Naming ``path``: missing, unreadable, not a regular file, larger than the memory
        available, a header larger than ``SAFETENSORS_HEADER_LIMIT`` or listing more than
        ``MAX_TENSORS`` tensors (or not ``expected_count``), not a valid safetensors file (a header
        longer than the file, offsets out of range, bad JSON, a dtype NumPy lacks...).
    """
    path = Path(path)
    limit, reason = memory_limit()
    data = read_bounded(path, limit, CheckpointError, reason=reason,
                        head=(8, lambda prefix, size: _check_header_length(prefix, size, path)))
    return _parse_tensors(data, path, expected_count=expected_count)


# A safetensors file starts with an 8-byte little-endian header length, then a JSON header of
# 45 to 100 bytes a tensor. This library's models have fewer than 100 tensors (a header of a few
# KiB) and large foreign files a few thousand; safetensors itself parses headers of up to 100 MB,
# which takes a minute and gigabytes when they list a million empty tensors. Refused before it
# parses: more than 1 MiB of header, or more than 10,000 tensors (parsing 1 MiB of header takes
# some 40 ms here; 8 MiB took 0.6 to 2 s, the garbage collector chasing 140,000 little dicts).
SAFETENSORS_HEADER_LIMIT = 1 << 20
MAX_TENSORS = 10_000
_MAX_ITEMSIZE = max(dtype.itemsize for dtype in _TENSOR_DTYPES)


def _parse_tensors(data: bytes, path: Path, *, expected_count: int | None = None, max_count: int = MAX_TENSORS,
                   count_reason: str = "the most this library reads from one file") -> dict[str, np.ndarray]:
    """The arrays of safetensors ``data`` (the bytes of ``path``), header checked first."""
    from safetensors.numpy import load

    _check_safetensors_header(data, path, expected_count, max_count, count_reason)
    try:
        tensors = dict(load(data))
    # safetensors raises its own SafetensorError for a malformed header, and its NumPy layer a
    # KeyError for a dtype it cannot map or a ValueError for a shape NumPy cannot hold.
    except Exception as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({_one_line(error)})") from None
    for key, value in tensors.items():
        if value.dtype not in _TENSOR_DTYPES:
            raise CheckpointError(f"{path}: tensor {_short(key)} has dtype {value.dtype}, which this library does not read")
    return tensors


def _check_header_length(prefix: bytes, size: int, path: Path) -> int:
    """The header length a safetensors file of ``size`` bytes starting with ``prefix`` declares,
    refused when it runs past the file or is larger than ``SAFETENSORS_HEADER_LIMIT``."""
    if size < 8 or len(prefix) < 8:
        raise CheckpointError(f"{path}: not a valid safetensors file ({size} bytes, too short for the "
                              f"8-byte header length)")
    length = int.from_bytes(prefix[:8], "little")
    if length > size - 8:
        raise CheckpointError(f"{path}: not a valid safetensors file (the header length {length} runs past "
                              f"the end of the file, {size} bytes)")
    if length > SAFETENSORS_HEADER_LIMIT:
        raise CheckpointError(f"{path}: a safetensors header of {format_bytes(length)} ({length} bytes), larger than "
                              f"the limit of {format_bytes(SAFETENSORS_HEADER_LIMIT)} (a model's header takes a few KiB); "
                              f"refusing to parse it")
    return length


def _check_safetensors_header(data: bytes, path: Path, expected_count: int | None, max_count: int,
                              count_reason: str) -> None:
    """Refuse a header that runs past the file, is larger than ``SAFETENSORS_HEADER_LIMIT``, is
    not a JSON object, or lists more than ``max_count`` tensors (or not ``expected_count``)."""
    def invalid(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a valid safetensors file ({problem})")

    length = _check_header_length(data[:8], len(data), path)
    try:
        header = parse_json(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise invalid(f"the header is not JSON: {_one_line(error)}") from None
    if not isinstance(header, dict):
        raise invalid(f"the header is {_json_kind(header)}, not an object")
    count = len(header) - ("__metadata__" in header)
    if count > max_count:
        raise CheckpointError(f"{path}: the safetensors header lists {count} tensors, more than {max_count} "
                              f"({count_reason}); refusing to parse it")
    if expected_count is not None and count != expected_count:
        raise CheckpointError(f"{path}: holds {count} tensors, the model has {expected_count}; not this model's weights")


# -- optimizer state -----------------------------------------------------------------------


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Split a torch-layout optimizer state_dict into arrays and a JSON-able remainder.

    Works for scratch.optim and torch.optim alike: tensors become arrays, ``step`` a float.
    """
    arrays, scalars = {}, {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if value is None:
                continue
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            if np.ndim(value) == 0:
                scalars[f"{int(index)}.{name}"] = float(value)
            else:
                arrays[f"state.{int(index)}.{name}"] = np.asarray(value)
    groups = []
    for group in state_dict["param_groups"]:
        groups.append({key: (list(value) if isinstance(value, tuple) else value)
                       for key, value in group.items()
                       if isinstance(value, (int, float, bool, str, list, tuple)) or value is None})
    return arrays, {"scalars": scalars, "param_groups": groups}


_STATE_TENSOR = re.compile(r"state\.(0|[1-9][0-9]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_STATE_SCALAR = re.compile(r"(0|[1-9][0-9]*)\.([A-Za-z_][A-Za-z0-9_]*)")
# Parameter-group entries whose type the optimizers rely on (torch's names; others pass through).
_NON_NEGATIVE = ("lr", "eps", "weight_decay", "momentum", "dampening")
_FLAGS = ("amsgrad", "maximize", "nesterov", "capturable", "differentiable", "decoupled_weight_decay")
_OPTIONAL_FLAGS = ("foreach", "fused")  # True, False or None (let torch choose)


def _group_entry_problem(key: str, value) -> str | None:
    """Why ``value`` cannot be parameter-group entry ``key``, or None."""
    if key in _NON_NEGATIVE:
        if not (_is_number(value) and math.isfinite(value) and value >= 0):
            return f"must be a finite non-negative number, found {_json_kind(value)}"
    elif key == "betas":
        if not (isinstance(value, list) and len(value) == 2
                and all(_is_number(beta) and 0 <= beta < 1 for beta in value)):
            return f"must be two numbers in [0, 1), found {_short(value)}"
    elif key in _FLAGS:
        if not isinstance(value, bool):
            return f"must be true or false, found {_json_kind(value)}"
    elif key in _OPTIONAL_FLAGS:
        if not (value is None or isinstance(value, bool)):
            return f"must be true, false or null, found {_json_kind(value)}"
    elif isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
        return f"must be a number, a string, a flag or a list of them, found {_short(value)}"
    return None


def unflatten_optimizer_state(arrays: dict[str, np.ndarray], meta: dict, *,
                              arrays_source="optimizer arrays", meta_source="optimizer meta") -> dict:
    """Inverse of ``flatten_optimizer_state``: ``{"state": {i: {...}}, "param_groups": [...]}``.

    Both halves are checked, since both come from files: ``meta`` must hold ``param_groups``
    (a non-empty list of objects, each with ``params``, distinct parameter indices, and
    hyper-parameters of the right types) and optionally ``scalars`` (``"<index>.<name>"`` to a
    finite number); each array must be named ``state.<index>.<name>``, be floating point, and
    belong to a parameter some group holds.

    Parameters
    ----------
    arrays : dict of str to np.ndarray
        The optimizer's buffers, as ``load_tensors`` returns them.
    meta : dict
        The JSON remainder (``state.json``'s ``"optimizer"``).
    arrays_source, meta_source : str or os.PathLike
        Where each came from, for error messages (the two files).

    Raises
    ------
    CheckpointError
        One line naming ``arrays_source`` or ``meta_source``, the entry and the problem.
    """
    def refuse(source, problem):
        return CheckpointError(f"{source}: {problem}")

    if not isinstance(meta, dict):
        raise refuse(meta_source, f"'optimizer' must be an object, found {_json_kind(meta)}")
    groups = meta.get("param_groups")
    if not (isinstance(groups, list) and groups):
        raise refuse(meta_source, f"optimizer.param_groups must be a non-empty array, found {_json_kind(groups)}")
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict):
        raise refuse(meta_source, f"optimizer.scalars must be an object, found {_json_kind(scalars)}")
    owned: set[int] = set()
    param_groups = []
    for number, group in enumerate(groups):
        where = f"optimizer.param_groups[{number}]"
        if not isinstance(group, dict):
            raise refuse(meta_source, f"{where} must be an object, found {_json_kind(group)}")
        params = group.get("params")
        if not (isinstance(params, list) and all(_is_int(index) and index >= 0 for index in params)):
            raise refuse(meta_source, f"{where}.params must be an array of parameter indices, found {_short(params)}")
        repeated = (set(params) & owned) or (len(set(params)) != len(params))
        if repeated:
            raise refuse(meta_source, f"{where}.params repeats a parameter index ({_short(params)})")
        owned.update(params)
        for key, value in group.items():
            problem = None if key == "params" else _group_entry_problem(key, value)
            if problem:
                raise refuse(meta_source, f"{where}.{key} {problem}")
        entry = dict(group)
        if "betas" in entry:
            entry["betas"] = tuple(entry["betas"])
        param_groups.append(entry)
    state: dict[int, dict] = {}
    for key, value in arrays.items():
        match = _STATE_TENSOR.fullmatch(key)
        if match is None:
            raise refuse(arrays_source, f"unexpected tensor {_short(key)} (expected state.<index>.<name>)")
        index = int(match[1])
        if index not in owned:
            raise refuse(arrays_source, f"{_short(key)} belongs to parameter {index}, which no parameter group holds")
        if value.dtype.kind != "f":
            raise refuse(arrays_source, f"{_short(key)} is {value.dtype}; optimizer buffers are floating point")
        state.setdefault(index, {})[match[2]] = value
    for key, value in scalars.items():
        match = _STATE_SCALAR.fullmatch(key)
        if match is None:
            raise refuse(meta_source, f"optimizer.scalars has key {_short(key)} (expected <index>.<name>)")
        if not (_is_number(value) and math.isfinite(value)):
            raise refuse(meta_source, f"optimizer.scalars[{_short(key)}] must be a finite number, found {_json_kind(value)}")
        index, name = int(match[1]), match[2]
        if index not in owned:
            raise refuse(meta_source, f"optimizer.scalars[{_short(key)}] belongs to parameter {index}, which no parameter group holds")
        if name in state.get(index, {}):
            raise refuse(meta_source, f"optimizer.scalars[{_short(key)}] is also a tensor in {arrays_source}")
        state.setdefault(index, {})[name] = float(value)
    return {"state": state, "param_groups": param_groups}


# -- checkpoints ---------------------------------------------------------------------------


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def write_checkpoint(run_dir, epoch: int, weights: dict[str, np.ndarray], optimizer_state: dict, state: dict) -> Path:
    """Write checkpoint ``epoch`` (weights, optimizer state, JSON ``state``) and move ``latest``.

    What follows a checkpoint (``RUN_DIR/model.safetensors``, pruning the older checkpoints, the
    pictures) is the training loop's completion step, which ``--resume`` always runs again."""
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    _refuse_links_out(run_dir, root)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(".epoch-*"):  # staging directories of a process killed mid-write
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
    final = root / checkpoint_name(epoch)
    point = f"checkpoint-{epoch}:"  # crash tests kill the process at each of these (autoencoders._faults)
    staging = make_staging_directory(root, f".{final.name}.")
    try:
        kill_point(point + "staging")
        save_tensors(staging / "model.safetensors", weights, metadata={"format": "pt"})
        kill_point(point + "weights-staged")
        arrays, meta = flatten_optimizer_state(optimizer_state)
        save_tensors(staging / "optimizer.safetensors", arrays)
        record = {
            "format": FORMAT_VERSION, "epoch": epoch, "optimizer": meta, **state,
            "sha256": {name: _sha256(staging / name) for name in ("model.safetensors", "optimizer.safetensors")},
        }
        atomic_write_json(staging / "state.json", record)
        kill_point(point + "state-staged")
        if final.is_symlink():
            raise CheckpointError(f"{final}: is a link; refusing to replace a checkpoint through it")
        if final.exists():  # a leftover of a run killed after this rename but before `latest` moved
            shutil.rmtree(final)
        os.rename(staging, final)
        fsync_directory(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kill_point(point + "renamed")
    atomic_write_bytes(root / "latest", (final.name + "\n").encode())
    kill_point(point + "latest")
    return final


def publish_weights(run_dir, directory: Path) -> Path:
    """Copy checkpoint ``directory``'s weights to ``RUN_DIR/model.safetensors`` (atomically),
    read as every file is (``autoencoders._reader``: a plain file, no larger than memory)."""
    limit, reason = memory_limit()
    data = read_bounded(Path(directory) / "model.safetensors", limit, CheckpointError, reason=reason, follow_links=False,
                        link_problem="a checkpoint holds no links")
    return atomic_write_bytes(Path(run_dir) / "model.safetensors", data)


def prune_checkpoints(run_dir, keep: int = KEEP_CHECKPOINTS) -> None:
    """Delete all but the newest ``keep`` checkpoint directories up to the one ``latest`` names."""
    root = Path(run_dir) / "checkpoints"
    newest = latest_checkpoint(run_dir).name
    older = sorted(p for p in root.glob("epoch-*") if p.is_dir() and not p.is_symlink() and p.name < newest)
    for old in older[:-(keep - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)


def _refuse_links_out(run_dir: Path, root: Path) -> None:
    """Checkpoints are written inside the run directory only: ``checkpoints`` must not be a link
    (to anywhere) nor resolve outside ``run_dir``."""
    if root.is_symlink() or (root.exists() and root.resolve().parent != run_dir.resolve()):
        raise CheckpointError(f"{root}: is a link out of the run directory {run_dir}; refusing to write "
                              f"checkpoints through it (replace it with a plain directory)")


# A checkpoint directory's name as ``checkpoint_name`` writes it; ``latest`` must hold one.
_CHECKPOINT_DIRECTORY = re.compile(r"epoch-([0-9]{4,})")
_TENSOR_FILES = ("model.safetensors", "optimizer.safetensors")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_POINTER_BYTES = POINTER_LIMIT  # ``latest`` holds one short name; read no more of a damaged one


def latest_checkpoint(run_dir) -> Path:
    """The checkpoint directory that ``run_dir/checkpoints/latest`` names.

    Raises
    ------
    CheckpointError
        No such run directory; no ``latest`` yet (the run never finished an epoch); or a
        ``latest`` that is a link (refused unread), not a regular file (a FIFO is refused without
        waiting on it), unreadable, not one ``epoch-NNNN`` name, or names something that is
        not a directory inside ``checkpoints/`` (missing, a file, or a link leading elsewhere).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    pointer = run_dir / "checkpoints" / "latest"
    if not os.path.lexists(pointer):
        raise CheckpointError(f"{run_dir}: no checkpoint yet (no checkpoints/latest); was the run stopped before its first epoch ended?")
    raw, size = _read_pointer(pointer)
    name = raw.decode("utf-8", errors="replace").strip()
    if len(raw) > _MAX_POINTER_BYTES:
        raise CheckpointError(f"{pointer}: holds {format_bytes(size)}, which is not a checkpoint directory name "
                              f"(a pointer holds one name like {checkpoint_name(1)}, at most {_MAX_POINTER_BYTES} bytes)")
    if not _CHECKPOINT_DIRECTORY.fullmatch(name):
        raise CheckpointError(f"{pointer}: names {_short(name)}, which is not a checkpoint directory "
                              f"(expected a name like {checkpoint_name(1)})")
    directory = pointer.parent / name
    # A link could lead anywhere, another run's checkpoints included: only a real directory counts.
    if directory.is_symlink() or not directory.is_dir():
        problem = "a link" if directory.is_symlink() else "missing" if not directory.exists() else "not a directory"
        raise CheckpointError(f"{pointer}: names {name!r}, which is not a checkpoint directory ({problem})")
    return directory


def _read_pointer(pointer: Path) -> tuple[bytes, int]:
    """(at most ``_MAX_POINTER_BYTES + 1`` bytes of ``latest``, its size): a plain file, a link
    refused unread (it would echo whatever file it leads to)."""
    fd, size = open_regular(pointer, CheckpointError, follow_links=False,
                            link_problem="a checkpoint pointer must be a plain file")
    try:
        return os.read(fd, _MAX_POINTER_BYTES + 1), size
    except OSError as error:
        raise CheckpointError(f"{pointer}: cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)


def check_weights(weights: dict[str, np.ndarray], expected: dict[str, np.ndarray], source) -> None:
    """Refuse weights that are not a model's, before any of them is loaded into it.

    Parameters
    ----------
    weights : dict of str to np.ndarray
        What a file holds (``load_tensors``).
    expected : dict of str to np.ndarray
        The model's own ``state_dict()`` (either backend's ``weights()``): the keys, shapes and
        dtypes the file must have.
    source : str or os.PathLike
        The file, for the message.

    Raises
    ------
    CheckpointError
        One line naming ``source`` and the first key missing, unexpected, of the wrong shape or
        of the wrong dtype, with what was expected and what was found.
    """
    missing = [key for key in expected if key not in weights]
    if missing:
        raise CheckpointError(f"{source}: lacks {_short(missing[0])}{_and_more(missing)}, which the model has "
                              f"(expected {len(expected)} tensors, found {len(weights)})")
    unexpected = [key for key in weights if key not in expected]
    if unexpected:
        raise CheckpointError(f"{source}: holds {_short(unexpected[0])}{_and_more(unexpected)}, which the model "
                              f"does not have (expected {len(expected)} tensors, found {len(weights)})")
    for key, own in expected.items():
        found = weights[key]
        if tuple(found.shape) != tuple(own.shape):
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(found.shape)}, the model expects {tuple(own.shape)}")
        if found.dtype != own.dtype:
            raise CheckpointError(f"{source}: {key!r} is {found.dtype}, the model expects {own.dtype}")


def check_finite_weights(weights: dict[str, np.ndarray], source) -> None:
    """Refuse weights holding NaN or inf, naming ``source`` and the first such tensor: evaluated,
    they would only surface later as a loss refusing its NaN input.

    Raises
    ------
    CheckpointError
        One line naming ``source``, the tensor and how many of its values are not finite.
    """
    for key, value in weights.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            count = int(value.size - np.count_nonzero(np.isfinite(value)))
            raise CheckpointError(f"{source}: tensor {_short(key)} holds NaN or inf ({count} of its {value.size} values); "
                                  "these weights cannot be evaluated")


def _and_more(keys: list) -> str:
    return f" and {len(keys) - 1} more" if len(keys) > 1 else ""


# BatchNorm's buffers (torch's names): in a model's state_dict, but no parameters of its optimizer;
# how the optimizer's parameters are told apart when the caller does not name them (``parameters``).
_BATCH_NORM_BUFFERS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
# The per-parameter state of this library's optimizers (torch's names): SGD, Adam, AdamW.
_OPTIMIZER_STATE_NAMES = frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"})


def _check_optimizer_fits(optimizer: dict, expected: dict[str, np.ndarray], arrays_source, meta_source,
                          parameters=None) -> None:
    """Refuse optimizer state that is not for ``expected``'s parameters (``parameters``: their
    keys, the model's buffers left out; None: every key but BatchNorm's buffers): the optimizers
    number parameters 0, 1, ... in ``state_dict()`` order; every parameter's state has the same
    entries, each a name this library's optimizers keep; each buffer has its parameter's shape and dtype."""
    if parameters is None:
        owns = [(key, own) for key, own in expected.items() if key.rsplit(".", 1)[-1] not in _BATCH_NORM_BUFFERS]
    else:
        owns = [(key, expected[key]) for key in parameters]
    held = sorted(index for group in optimizer["param_groups"] for index in group["params"])
    if held != list(range(len(owns))):
        raise CheckpointError(f"{meta_source}: the optimizer's parameter groups hold {len(held)} parameters "
                              f"({_short(held)}), the model has {len(owns)}")
    names = {frozenset(entries) for entries in optimizer["state"].values()}
    unknown = sorted(set().union(*names) - _OPTIMIZER_STATE_NAMES)
    if unknown:
        raise CheckpointError(f"{arrays_source}: unknown optimizer state {unknown[0]!r} (this library's "
                              f"optimizers keep {', '.join(sorted(_OPTIMIZER_STATE_NAMES))})")
    if len(names) > 1:
        raise CheckpointError(f"{arrays_source}: the parameters' optimizer states differ "
                              f"({' vs '.join(str(sorted(entry)) for entry in sorted(names, key=sorted)[:2])})")
    for index, entries in optimizer["state"].items():
        key, own = owns[index]
        for name, value in entries.items():
            if not isinstance(value, np.ndarray):
                continue  # a scalar such as step, checked by unflatten_optimizer_state
            if value.shape != own.shape or value.dtype != own.dtype:
                raise CheckpointError(f"{arrays_source}: 'state.{index}.{name}' is {value.dtype} of shape "
                                      f"{value.shape}; its parameter {key!r} is {own.dtype} of shape {tuple(own.shape)}")


def _check_state(state: dict, path: Path, directory: Path) -> None:
    """The fields of ``state.json`` that reading relies on, each of the right type."""
    version = state.get("format")
    if not _is_int(version):
        raise CheckpointError(f"{path}: not a checkpoint of this library (format {_short(version)}, expected {FORMAT_VERSION})")
    if version != FORMAT_VERSION:
        newer = " (written by a newer version of this library)" if version > FORMAT_VERSION else ""
        raise CheckpointError(f"{path}: checkpoint format {version}{newer}; this version reads format {FORMAT_VERSION}")
    epoch = state.get("epoch")
    if not (_is_int(epoch) and epoch >= 0):
        raise CheckpointError(f"{path}: 'epoch' must be a non-negative integer, found {_json_kind(epoch)}")
    named = _CHECKPOINT_DIRECTORY.fullmatch(directory.name)
    if named and int(named[1]) != epoch:  # state.json is not hashed: its epoch must agree with its directory
        raise CheckpointError(f"{path}: 'epoch' is {epoch} but the directory is {directory.name}")
    hashes = state.get("sha256")
    if not isinstance(hashes, dict):
        raise CheckpointError(f"{path}: 'sha256' must be an object naming each file's hash, found {_json_kind(hashes)}")
    for name in _TENSOR_FILES:  # never skipped: a state.json without a hash would load unverified
        if name not in hashes:
            raise CheckpointError(f"{path}: 'sha256' lacks {name!r}")
    for name, digest in hashes.items():
        # Only plain names of this directory: a damaged state.json must not make us read elsewhere.
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise CheckpointError(f"{path}: 'sha256' names {_short(name)}, which is not a file of the checkpoint")
        if not (isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)):
            raise CheckpointError(f"{path}: 'sha256'[{name!r}] must be 64 lowercase hex digits, found {_json_kind(digest)}")
    if not isinstance(state.get("optimizer"), dict):
        raise CheckpointError(f"{path}: 'optimizer' must be an object, found {_json_kind(state.get('optimizer'))}")
    metrics = state.get("metrics", [])
    if not (isinstance(metrics, list) and all(isinstance(entry, dict) for entry in metrics)):
        raise CheckpointError(f"{path}: 'metrics' must be an array of objects, found {_short(metrics)}")
    _check_metrics(metrics, epoch, path)


def _check_metrics(metrics: list, epoch: int, path: Path) -> None:
    """Each entry as the training loop writes it, one per epoch 1..``epoch`` in order: a resume
    extends this history and plots it, so a damaged entry must be refused here, not crash there."""
    for index, entry in enumerate(metrics):
        problem = _metrics_entry_problem(entry, index + 1)
        if problem:
            raise CheckpointError(f"{path}: metrics[{index}]{problem}")
    if len(metrics) != epoch:
        raise CheckpointError(f"{path}: 'metrics' holds {len(metrics)} entries, expected one per epoch "
                              f"(epochs 1 to {epoch})")


# The fields of a metrics entry (autoencoders.training writes them): field -> (required, its check), the
# check returning what follows the field's name in a refusal, or None.
_METRICS_FIELDS = {
    "epoch": (True, lambda value: _unless(_is_int(value), "must be an integer", value)),
    "train": (True, lambda value: _number_table_problem(value)),
    "test": (True, lambda value: _number_table_problem(value)),
    "seconds": (True, lambda value: _unless(_is_number(value) and math.isfinite(value) and value >= 0,
                                            "must be a finite number of seconds, at least 0", value)),
    "skipped_batches": (False, lambda value: _unless(_is_int(value) and value > 0, "must be a positive integer", value)),
}


def _unless(valid: bool, requirement: str, value) -> str | None:
    return None if valid else f" {requirement}, found {_json_kind(value)}"


def _metrics_entry_problem(entry: dict, epoch: int) -> str | None:
    """Why ``entry`` cannot be the metrics of epoch ``epoch`` (what follows ``metrics[i]`` in
    the refusal), or None."""
    for field, (required, problem_of) in _METRICS_FIELDS.items():
        if field not in entry:
            if required:
                return f" lacks {field!r} (an entry holds epoch, train, test and seconds)"
            continue
        problem = problem_of(entry[field])
        if problem:
            return f".{field}{problem}"
    if entry["epoch"] != epoch:
        return f".epoch is {entry['epoch']}, expected {epoch} (one entry per epoch, in order from 1)"
    return None


def _number_table_problem(value) -> str | None:
    """Why ``value`` is not an object of numbers (NaN and infinities included), or None."""
    if not isinstance(value, dict):
        return f" must be an object of numbers, found {_json_kind(value)}"
    bad = next((key for key, number in value.items() if not _is_number(number)), None)
    return None if bad is None else f"[{_short(bad)}] must be a number, found {_json_kind(value[bad])}"


class _Bound(NamedTuple):
    """How much of one checkpoint file is read: at most ``limit`` bytes (``reason`` says why),
    and the tensor counts its safetensors header may list (``_parse_tensors``'s keywords)."""

    limit: int | None
    reason: str
    counts: dict


def _file_bounds(expected: dict[str, np.ndarray] | None) -> dict:
    """Each checkpoint file's ``_Bound`` (key None: any other file the sha256 lists). Never more
    than the memory available; with the model known, no more than its tensors can take."""
    memory, memory_reason = memory_limit()
    generic = _Bound(memory, memory_reason, {})
    if expected is None:
        return {None: generic, _TENSOR_FILES[0]: generic, _TENSOR_FILES[1]: generic}
    values = sum(math.prod(tuple(value.shape)) for value in expected.values())
    buffers = len(_OPTIMIZER_STATE_NAMES)  # at most this many per parameter

    def bound(copies: int, what: str, counts: dict) -> _Bound:
        most = copies * values * _MAX_ITEMSIZE + 8 + SAFETENSORS_HEADER_LIMIT
        if memory is not None and memory < most:
            return _Bound(memory, memory_reason, counts)
        return _Bound(most, f"the most {what} of this model ({len(expected)} tensors, {values} values) can take, "
                            f"header included", counts)

    return {None: generic,
            _TENSOR_FILES[0]: bound(1, "the weights", {"expected_count": len(expected)}),
            _TENSOR_FILES[1]: bound(buffers, "the optimizer state",
                                    {"max_count": buffers * len(expected),
                                     "count_reason": f"the most an optimizer keeps for {len(expected)} parameters"})}


def _verified_file(path: Path, digest: str, bound: _Bound, keep: bool) -> bytes | None:
    """Check checkpoint file ``path`` against its sha256 ``digest``, refusing it unhashed when it
    is larger than ``bound.limit``; its bytes when ``keep`` (else None, hashed a chunk at a time)."""
    if not path.exists() and not path.is_symlink():
        raise CheckpointError(f"{path}: missing")
    if path.is_symlink() or not path.is_file():
        raise CheckpointError(f"{path}: not a plain file (a checkpoint holds no links or directories)")
    if keep:
        data = read_bounded(path, bound.limit, CheckpointError, reason=bound.reason, follow_links=False,
                            link_problem="a checkpoint holds no links")
        found = hashlib.sha256(data).hexdigest()
    else:
        data, found = None, _sha256(path, bound.limit, bound.reason)
    if found != digest:
        raise CheckpointError(f"{path}: checksum mismatch (sha256 {found[:12]}..., state.json expects "
                              f"{digest[:12]}...); the file was changed or truncated after it was written")
    return data


def read_checkpoint(directory, expected: dict[str, np.ndarray] | None = None,
                    parameters=None) -> tuple[dict[str, np.ndarray], dict, dict]:
    """(weights, optimizer state_dict, state.json) of one checkpoint directory, verified.

    Everything is checked before anything is returned: ``state.json``'s fields and their types,
    the sha256 of each file it lists (so a truncated or altered tensor file is refused), both
    safetensors files, the optimizer state's layout and, when ``expected`` is given, that the
    weights and the optimizer buffers are exactly those of that model. Each file is refused
    unread when it is larger than the memory available or, with ``expected``, than that model's
    tensors can take (``_file_bounds``); a safetensors header is checked before it is parsed.

    Parameters
    ----------
    directory : str or os.PathLike
        A checkpoint directory (``latest_checkpoint(run_dir)``).
    expected : dict of str to np.ndarray, optional
        The model's own ``state_dict()`` (a backend's ``weights()``): its keys, shapes and
        dtypes, in parameter order.
    parameters : sequence of str, optional
        The keys of ``expected`` that are the optimizer's parameters, in order (a backend's
        ``parameter_names()``); the rest are buffers (BatchNorm's statistics, an EMA codebook).
        Default: every key but BatchNorm's buffers.

    Returns
    -------
    tuple
        ``weights`` (torch's keys to arrays), the optimizer ``state_dict`` (torch's layout, for
        either backend's ``load_optimizer_state``), and ``state.json`` as a dict.

    Raises
    ------
    CheckpointError
        One line naming the file and the problem.
    """
    directory = Path(directory)
    state_path = directory / "state.json"
    state = read_json(state_path)
    _check_state(state, state_path, directory)
    bounds = _file_bounds(expected)
    # The tensor files are read once, bounded, hashed and parsed from the same bytes.
    blobs = {name: _verified_file(directory / name, digest, bounds.get(name, bounds[None]), keep=name in _TENSOR_FILES)
             for name, digest in state["sha256"].items()}
    model_path, optimizer_path = (directory / name for name in _TENSOR_FILES)
    weights = _parse_tensors(blobs.pop(_TENSOR_FILES[0]), model_path, **bounds[_TENSOR_FILES[0]].counts)
    arrays = _parse_tensors(blobs.pop(_TENSOR_FILES[1]), optimizer_path, **bounds[_TENSOR_FILES[1]].counts)
    optimizer = unflatten_optimizer_state(arrays, state["optimizer"], arrays_source=optimizer_path, meta_source=state_path)
    if expected is not None:
        check_weights(weights, expected, model_path)
        _check_optimizer_fits(optimizer, expected, optimizer_path, state_path, parameters)
    return weights, optimizer, state
