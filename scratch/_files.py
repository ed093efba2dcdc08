"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from scratch._faults import kill_point


def fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        kill_point(f"write:{path.name}")  # crash tests: the temporary is written, not yet renamed
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def remove_temporaries(directory, patterns=(".*.tmp",)) -> list[Path]:
    """Delete what an atomic write leaves when its process is killed between writing the
    temporary file and renaming it (``atomic_write_bytes``: ``.<name>.<random>.tmp``; the PNG
    writer: ``.<stem>.<random>.png``, pass ``".*.png"``); returns what was removed."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for leftover in (path for pattern in patterns for path in directory.glob(pattern)):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed
