"""Bounded reading: the one way this library reads a file that a user or a run directory names.

A file is opened without blocking (a FIFO must not hang the reader), checked to be a regular
file (not a FIFO, a device, a directory or a socket), checked against a size limit the caller
gives *before* anything is read, and then read up to that limit plus one byte (a file may grow
while it is read). Every refusal raises the caller's error type with one line naming the file
and, for a size, the size found and the limit.

Limits used by the readers: ``JSON_LIMIT`` for ``config.json`` and ``state.json``,
``POINTER_LIMIT`` for ``checkpoints/latest``, and ``memory_limit()`` (the memory available now)
for data and tensor files, which are held in memory whole.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import Callable

from scratch.memory import available_bytes, format_bytes

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
# config.json and state.json hold a few KiB (state.json grows by ~300 bytes an epoch).
JSON_LIMIT = 64 * MIB
# checkpoints/latest holds one short directory name.
POINTER_LIMIT = 256
_CHUNK = 1 << 24  # read and hash this much at a time once past the size fstat reported

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a link"),
)


def memory_limit() -> tuple[int | None, str]:
    """(limit, reason) for a file held in memory whole: the memory available now
    (``scratch.memory.available_bytes``; None when unknown)."""
    return available_bytes(), "the memory available"


def _kind(mode: int) -> str | None:
    """What a file of ``mode`` is when it is not a regular file, for messages; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path, error: type[Exception], *, follow_links: bool = True,
                 link_problem: str = "refusing to follow it") -> tuple[int, int]:
    """Open ``path`` for reading without blocking; (file descriptor, size) of a regular file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    error : type
        The exception to raise (the caller's: CheckpointError, DataError...).
    follow_links : bool
        False: a link is refused unread (``O_NOFOLLOW``), with ``link_problem`` in the message.
    link_problem : str
        Why a link is refused, for the message.

    Raises
    ------
    error
        One line naming ``path``: not found, a link (when not followed), not a regular file
        (naming its kind), or unreadable.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: not found") from None
    except OSError as failure:
        if not follow_links and failure.errno == errno.ELOOP:
            raise error(f"{path}: is a link; {link_problem}") from None
        raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None
    try:
        status = os.fstat(fd)
        kind = _kind(status.st_mode)
        if kind is not None:
            raise error(f"{path}: is {kind}, not a regular file; refusing to read it")
    except BaseException:
        os.close(fd)
        raise
    return fd, status.st_size


def _refuse_size(path, size: int, limit: int, reason: str, error: type[Exception], more: bool = False) -> Exception:
    found = f"more than {format_bytes(size)}" if more else format_bytes(size)
    exact = "" if size < KIB else f" ({'more than ' if more else ''}{size} bytes)"
    return error(f"{path}: {found}{exact}, larger than the limit of {format_bytes(limit)} ({reason}); refusing to read it")


def _read_fd(fd: int, first: int, most: int) -> bytes:
    """Up to ``most`` bytes from ``fd``: one read of ``first`` bytes (the size fstat reported,
    plus one), then reads growing with what came (64 KiB to 16 MiB) until the end or ``most``:
    os.read allocates what it is asked for, so a small file costs a small buffer."""
    parts, total, want = [], 0, first
    while total < most:
        chunk = os.read(fd, min(want, most - total, GIB))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        want = min(max(64 * KIB, total), _CHUNK)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_bounded(path, limit: int | None, error: type[Exception], *, reason: str = "",
                 follow_links: bool = True, link_problem: str = "refusing to follow it",
                 head: tuple[int, Callable[[bytes, int], None]] | None = None) -> bytes:
    """The bytes of regular file ``path``, refused when larger than ``limit``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    limit : int or None
        The most bytes the caller accepts (None: no limit).
    error : type
        The exception to raise.
    reason : str
        What the limit is, for the message ("the memory available", "a JSON file's limit"...).
    follow_links, link_problem
        As for ``open_regular``.
    head : (int, callable), optional
        ``(count, check)``: ``check(first count bytes, size)`` runs before the rest is read and
        may refuse the file (raising) from its header alone.

    Raises
    ------
    error
        As ``open_regular``, or the file is (or grows) larger than ``limit``: one line naming
        ``path``, the size found and the limit. Nothing is read of a file refused by its size.
    """
    fd, size = open_regular(path, error, follow_links=follow_links, link_problem=link_problem)
    try:
        if limit is not None and size > limit:
            raise _refuse_size(path, size, limit, reason, error)
        if head is not None:
            count, check = head
            check(_pread(fd, count, path, error), size)
        most = size + _CHUNK if limit is None else limit + 1
        try:
            data = _read_fd(fd, size + 1, most)
        except OSError as failure:
            raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None
    finally:
        os.close(fd)
    if limit is not None and len(data) > limit:  # it grew while we read it
        raise _refuse_size(path, len(data) - 1, limit, reason, error, more=True)
    return data


def _pread(fd: int, count: int, path, error: type[Exception]) -> bytes:
    """The first ``count`` bytes of ``fd`` (fewer at its end), its offset left where it was."""
    try:
        return os.pread(fd, count, 0)
    except OSError as failure:
        raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None


def sha256_bounded(path, limit: int | None, error: type[Exception], *, reason: str = "",
                   follow_links: bool = True) -> str:
    """The sha256 of regular file ``path``, hashed a chunk at a time, refused (before hashing)
    when larger than ``limit``; raises as ``read_bounded``."""
    fd, size = open_regular(path, error, follow_links=follow_links)
    digest, total = hashlib.sha256(), 0
    try:
        if limit is not None and size > limit:
            raise _refuse_size(path, size, limit, reason, error)
        while chunk := os.read(fd, _CHUNK):
            total += len(chunk)
            if limit is not None and total > limit:
                raise _refuse_size(path, total, limit, reason, error, more=True)
            digest.update(chunk)
    except OSError as failure:
        raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None
    finally:
        os.close(fd)
    return digest.hexdigest()
