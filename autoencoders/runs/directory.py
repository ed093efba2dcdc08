"""Run directories: one writer at a time, and only directories this library made.

- **A lock.** A process that writes a run directory (``train``, ``train --resume``, ``compare``)
  holds an exclusive ``flock`` on ``RUN_DIR/.autoencoders.lock`` for as long as it runs. The
  kernel releases it when the process ends, however it ends (SIGKILL included), so a stale lock
  never needs clearing by hand. A second writer refuses in one line naming the holder's pid.
- **An ownership marker.** A new run takes only a directory that is new or empty (but for a lock
  file), and writes ``RUN_DIR/.autoencoders-run`` before anything else; a directory holding
  anything else is the user's, and is refused rather than overwritten.
- **Unique default names.** A default run directory (``runs/MODEL-DATASET-TIME``) is created with
  an exclusive ``mkdir``; when a process started in the same second took that name, the next
  free ``-2``, ``-3``, ... is taken instead, so a sweep launched at once gets one directory per job.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path

from autoencoders._files import atomic_write_bytes, file_mode

LOCK_NAME = ".autoencoders.lock"
MARKER_NAME = ".autoencoders-run"
MARKER_FORMAT = 1
_MAX_SUFFIX = 10_000
_MAX_LISTED = 3  # foreign files named in a refusal; the rest are counted


class RunDirectoryError(ValueError):
    """A run directory that this process may not write: taken by another process, holding a
    run already, or holding the user's own files. One line; the command exits with status 2."""


class RunLock:
    """An exclusive lock on a run directory, held until ``release`` or the end of the process."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self._fd = run_dir, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_directory(run_dir, purpose: str) -> RunLock:
    """Take ``run_dir``'s lock without waiting, or refuse naming the process that holds it.

    Parameters
    ----------
    run_dir : str or os.PathLike
        An existing directory.
    purpose : str
        What this process does there ("train", "resume", "compare"); recorded for the refusal.

    Raises
    ------
    RunDirectoryError
        Another process holds the lock, or the lock file is a link or cannot be opened.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, file_mode())
    except OSError as error:
        problem = "is a link" if error.errno == errno.ELOOP else (error.strerror or str(error))
        raise RunDirectoryError(f"{path}: cannot take the run directory's lock ({problem})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device under the lock's name
        os.close(fd)
        raise RunDirectoryError(f"{path}: is not a regular file; cannot take the run directory's lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirectoryError(f"{run_dir} is in use by another autoencoders process ({holder}); "
                                f"wait for it to end, or choose another directory") from None
    except OSError as error:  # pragma: no cover - a filesystem without flock
        os.close(fd)
        raise RunDirectoryError(f"{path}: cannot take the run directory's lock ({error.strerror or error})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}, {purpose}\n".encode())
    return RunLock(run_dir, fd)


def _holder(fd: int) -> str:
    """What the lock's holder wrote into it ("pid 1234, train"), or a placeholder."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", errors="replace").strip()
    except OSError:  # pragma: no cover
        text = ""
    return text if text.startswith("pid ") and text.isprintable() else "pid unknown"


def claim_new_run_directory(run_dir, purpose: str = "train", *, exclusive: bool = False) -> RunLock:
    """Create ``run_dir`` (or take it when empty), lock it and mark it as this library's.

    Parameters
    ----------
    run_dir : str or os.PathLike
    purpose : str
        "train" or "compare": what the marker and the lock record.
    exclusive : bool
        Refuse an existing ``run_dir`` even when empty (``FileExistsError``): how a default name
        is claimed (``claim_unique_run_directory``).

    Raises
    ------
    RunDirectoryError
        ``run_dir`` holds a run already, holds files this library did not write, or is locked.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=not exclusive)
    lock = lock_run_directory(run_dir, purpose)
    try:
        present = sorted(entry.name for entry in run_dir.iterdir() if entry.name != LOCK_NAME)
        if MARKER_NAME in present or "config.json" in present:
            advice = f"continue it with --resume {run_dir}, or " if purpose == "train" else ""
            raise RunDirectoryError(f"{run_dir} already holds a run; {advice}choose another --out")
        if present:
            listed = ", ".join(present[:_MAX_LISTED]) + (f" and {len(present) - _MAX_LISTED} more" if len(present) > _MAX_LISTED else "")
            raise RunDirectoryError(f"{run_dir} holds files this library did not write ({listed}); "
                                    f"choose a new or empty directory with --out")
        marker = {"format": MARKER_FORMAT, "written_by": "autoencoders", "purpose": purpose}
        atomic_write_bytes(run_dir / MARKER_NAME, (json.dumps(marker) + "\n").encode())
    except BaseException:
        lock.release()
        raise
    return lock


def claim_unique_run_directory(base, purpose: str = "train") -> tuple[Path, RunLock]:
    """Claim ``base``, else the first free ``base-2``, ``base-3``, ...: (the directory, its lock)."""
    base = Path(base)
    for number in range(1, _MAX_SUFFIX + 1):
        candidate = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            return candidate, claim_new_run_directory(candidate, purpose, exclusive=True)
        except FileExistsError:
            continue
    raise RunDirectoryError(f"{base}: {_MAX_SUFFIX} run directories of this name exist; choose one with --out")
