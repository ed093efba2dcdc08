"""Weights between .safetensors (this library's format) and torch's .pt state_dict files.

A .pt file is read with ``torch.load(weights_only=True)``, which refuses anything but tensors and
plain containers: no code is ever unpickled.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from scratch.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    latest_checkpoint,
    load_tensors,
    read_checkpoint,
    save_tensors,
)

SUFFIXES = (".safetensors", ".pt", ".pth")


def _read_pt(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a torch state_dict that loads with weights_only=True ({first_line})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a dict of parameter names to tensors (a model's state_dict)")
    weights = {}
    for key, value in state.items():
        # NumPy has no bfloat16 or float8, and sparse, quantized or meta tensors have no array.
        try:
            weights[key] = value.detach().cpu().numpy()
        except (TypeError, RuntimeError, ValueError, NotImplementedError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise CheckpointError(f"{path}: tensor {key!r} ({value.dtype}, {value.layout}) cannot be "
                                  f"converted to a NumPy array ({reason})") from None
    return weights


def _write_pt(path: Path, weights: dict[str, np.ndarray]) -> Path:
    import torch

    buffer = io.BytesIO()
    torch.save({key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in weights.items()}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_weights(source) -> dict[str, np.ndarray]:
    """Weights from a .safetensors file, a .pt/.pth state_dict, or a run directory's newest checkpoint.

    A run directory's checkpoint is read whole and verified (``read_checkpoint``: its state.json,
    the sha256 of its files), so a damaged checkpoint is refused rather than converted.

    Raises
    ------
    CheckpointError
        One line naming the file and the problem.
    """
    source = Path(source)
    if source.is_dir():
        return read_checkpoint(latest_checkpoint(source))[0]
    if source.suffix not in SUFFIXES:
        raise CheckpointError(f"{source}: expected a run directory or a file ending in {', '.join(SUFFIXES)}")
    if source.suffix == ".safetensors":
        return load_tensors(source)
    return _read_pt(source)


def convert(source, destination) -> Path:
    """Copy the weights in ``source`` to ``destination``, whose suffix picks the format."""
    destination = Path(destination)
    if destination.suffix not in SUFFIXES:
        raise CheckpointError(f"{destination}: the destination must end in .safetensors, .pt or .pth")
    weights = read_weights(source)
    if destination.suffix == ".safetensors":
        return save_tensors(destination, weights, metadata={"format": "pt"})
    return _write_pt(destination, weights)
