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

Writes are crash-safe: a checkpoint is assembled in a temporary directory, flushed, then renamed
into place (an atomic rename), and only then does ``latest`` move (another atomic rename). A
process killed at any point leaves the previous checkpoint intact and ``latest`` pointing at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from scratch._files import atomic_write_bytes, fsync_directory

FORMAT_VERSION = 1
KEEP_CHECKPOINTS = 2


class CheckpointError(Exception):
    """A checkpoint or run directory that cannot be read: one line naming the file and the problem."""


def atomic_write_json(path, value) -> Path:
    return atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


def read_json(path) -> dict:
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- tensors -------------------------------------------------------------------------------


def save_tensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write NumPy arrays as safetensors, atomically."""
    from safetensors.numpy import save

    arrays = {key: np.ascontiguousarray(value) for key, value in tensors.items()}
    return atomic_write_bytes(path, save(arrays, metadata=metadata))


def load_tensors(path) -> dict[str, np.ndarray]:
    """Read a safetensors file into NumPy arrays; anything malformed is a CheckpointError."""
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        return dict(load(data))
    except Exception as error:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from None


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


def unflatten_optimizer_state(arrays: dict[str, np.ndarray], meta: dict) -> dict:
    """Inverse of ``flatten_optimizer_state``: ``{"state": {i: {...}}, "param_groups": [...]}``."""
    state: dict[int, dict] = {}
    for key, value in arrays.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [dict(group) for group in meta["param_groups"]]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# -- checkpoints ---------------------------------------------------------------------------


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def write_checkpoint(run_dir, epoch: int, weights: dict[str, np.ndarray], optimizer_state: dict, state: dict) -> Path:
    """Write checkpoint ``epoch`` (weights, optimizer state, JSON ``state``) and move ``latest``."""
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(".epoch-*"):  # staging directories of a process killed mid-write
        shutil.rmtree(leftover, ignore_errors=True)
    final = root / checkpoint_name(epoch)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_tensors(staging / "model.safetensors", weights, metadata={"format": "pt"})
        arrays, meta = flatten_optimizer_state(optimizer_state)
        save_tensors(staging / "optimizer.safetensors", arrays)
        record = {
            "format": FORMAT_VERSION, "epoch": epoch, "optimizer": meta, **state,
            "sha256": {name: _sha256(staging / name) for name in ("model.safetensors", "optimizer.safetensors")},
        }
        atomic_write_json(staging / "state.json", record)
        if final.exists():  # a leftover of a run killed after this rename but before `latest` moved
            shutil.rmtree(final)
        os.rename(staging, final)
        fsync_directory(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_bytes(root / "latest", (final.name + "\n").encode())
    atomic_write_bytes(run_dir / "model.safetensors", (final / "model.safetensors").read_bytes())
    for old in sorted(p for p in root.glob("epoch-*") if p.is_dir() and p.name < final.name)[:-(KEEP_CHECKPOINTS - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir) -> Path:
    """The directory ``checkpoints/latest`` names, checked to exist."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    pointer = run_dir / "checkpoints" / "latest"
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: no checkpoint yet (no checkpoints/latest); was the run stopped before its first epoch ended?") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{pointer}: cannot be read ({error})") from None
    if not name.startswith("epoch-") or "/" in name or not (pointer.parent / name).is_dir():
        raise CheckpointError(f"{pointer}: names {name!r}, which is not a checkpoint directory")
    return pointer.parent / name


def read_checkpoint(directory) -> tuple[dict[str, np.ndarray], dict, dict]:
    """(weights, optimizer state_dict, state.json) of one checkpoint directory, hashes verified."""
    directory = Path(directory)
    state = read_json(directory / "state.json")
    if state.get("format") != FORMAT_VERSION or "epoch" not in state or "sha256" not in state:
        raise CheckpointError(f"{directory / 'state.json'}: not a checkpoint of this library (format {state.get('format')!r})")
    for name, expected in state["sha256"].items():
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"{path}: missing")
        if _sha256(path) != expected:
            raise CheckpointError(f"{path}: checksum mismatch; the file was changed or truncated after it was written")
    weights = load_tensors(directory / "model.safetensors")
    optimizer = unflatten_optimizer_state(load_tensors(directory / "optimizer.safetensors"), state["optimizer"])
    return weights, optimizer, state
