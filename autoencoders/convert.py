"""Weights between .safetensors (this library's format) and torch's .pt state_dict files.

A .pt file is read with ``torch.load(weights_only=True)``, which refuses anything but tensors and
plain containers: no code is ever unpickled. Public advisories report code execution through
``weights_only=True`` itself in older torch (CVE-2025-32434 up to 2.5.1, CVE-2026-24747 below
2.10), so a .pt file is refused unread under a torch older than ``TORCH_FLOOR``. Every file is read
through ``autoencoders._reader`` (a regular file, no larger than the memory available) and torch is
handed the bytes, never the path: it never opens a FIFO or a device.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from autoencoders._reader import memory_limit, read_bounded
from autoencoders.runs.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    latest_checkpoint,
    load_tensors,
    read_checkpoint,
    save_tensors,
)

SUFFIXES = (".safetensors", ".pt", ".pth")


# The first torch whose torch.load(weights_only=True) has no public code-execution advisory.
TORCH_FLOOR = (2, 10)
_ADVISORIES = "CVE-2025-32434, CVE-2026-24747"
# Sentences of torch's refusal that advise loading the file anyway (weights_only=False runs the
# file's code): never repeated to a user who handed us a file that was refused.
_TORCH_ADVICE = re.compile(r"weights_only\W+(set to\W+)?False|trust|In PyTorch 2\.6|Check the documentation|"
                           r"can still be loaded|Alternatively|file an issue", re.IGNORECASE)


def _torch_version(version) -> tuple[int, int] | None:
    """(major, minor) of a torch version string such as ``"2.13.0+cpu"``; None when unreadable."""
    match = re.match(r"\s*(\d+)\.(\d+)", str(version))
    return (int(match[1]), int(match[2])) if match else None


def _check_torch_version(path: Path, version) -> None:
    """Refuse to unpickle anything under a torch whose ``weights_only=True`` is known unsafe."""
    found = _torch_version(version)
    if found is None or found < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        raise CheckpointError(f"{path}: refusing to read a .pt file with torch {version}: torch.load(weights_only=True) "
                              f"can run a hostile file's code in torch below {floor} ({_ADVISORIES}); install "
                              f"torch>={floor}, or convert the file where it is installed")


def _torch_reason(error: BaseException, limit: int = 300) -> str:
    """torch's reason for refusing a file, in one line, without its advice to load it anyway."""
    sentences = re.split(r"(?<=[.!?:])\s+", " ".join(str(error).split()))
    reason = " ".join(sentence for sentence in sentences if sentence and not _TORCH_ADVICE.search(sentence))
    reason = reason or type(error).__name__
    return reason if len(reason) <= limit else reason[:limit - 3] + "..."


def _read_pt(path: Path) -> dict[str, np.ndarray]:
    import torch

    _check_torch_version(path, torch.__version__)
    limit, reason = memory_limit()
    data = read_bounded(path, limit, CheckpointError, reason=reason)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(f"{path}: not a torch state_dict that loads with weights_only=True "
                              f"({_torch_reason(error)})") from None
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
