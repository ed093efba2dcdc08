"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every temporary is named ``.ae-<8 random characters>.tmp`` whatever its target: short, so that
any legal target name (up to 255 bytes) has a legal temporary beside it, and distinctive, so
that the clean-up after a killed process (``remove_temporaries``) removes only this library's
temporaries, never a user's ``.draft.tmp``. Files and directories are created with the modes
the process's umask gives (0644 and 0755 under the usual 022), as ``open`` and ``mkdir`` would.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from autoencoders._faults import kill_point

TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".ae-", ".tmp"
# What tempfile.mkstemp puts between prefix and suffix: 8 characters of this alphabet.
_TEMPORARY_NAME = re.compile(r"\.ae-[a-z0-9_]{8}\.tmp")


def umask() -> int:
    """The process's umask, read without changing it where the kernel says (Linux ≥ 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):  # pragma: no cover - not Linux
        pass
    current = os.umask(0o022)  # pragma: no cover - setting it is the only portable way to read it
    os.umask(current)  # pragma: no cover
    return current  # pragma: no cover


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


def directory_mode() -> int:
    """The mode ``mkdir`` would give a new directory: 0o777 less the umask."""
    return 0o777 & ~umask()


def fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(stream)`` on a temporary file beside ``path``, flush it, then rename it onto
    ``path``; on any error (KeyboardInterrupt included) the temporary is removed and ``path`` is
    untouched. The new file has the umask's mode (``file_mode``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fchmod(stream.fileno(), file_mode())  # mkstemp creates 0600
            os.fsync(stream.fileno())
        kill_point(f"write:{path.name}")  # crash tests: the temporary is written, not yet renamed
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    return atomic_write(path, lambda stream: stream.write(data))


def make_staging_directory(parent: Path, prefix: str) -> Path:
    """A new, empty directory ``parent/<prefix><random>`` with the umask's mode (mkdtemp: 0700)."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(staging, directory_mode())
    return staging


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named as this library names its temporaries."""
    return _TEMPORARY_NAME.fullmatch(path.name) is not None


def remove_temporaries(directory) -> list[Path]:
    """Delete what an atomic write leaves when its process is killed between writing the
    temporary file and renaming it: plain files named ``.ae-<8 characters>.tmp``, nothing else
    (a user's ``.draft.tmp`` or ``.thumbnail.png`` stays). Returns what was removed."""
    directory = Path(directory)
    removed = []
    if directory.is_dir() and not directory.is_symlink():
        for leftover in directory.iterdir():
            if is_temporary(leftover) and leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed
