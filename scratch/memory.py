"""Memory checks made before a large allocation, and initial weights drawn in bounded memory.

A layer asked for a weight of (1000000000, 784) would otherwise fail deep inside NumPy with a
``MemoryError`` traceback, or be killed by the kernel's OOM killer once its pages are touched.
``check_allocation`` and ``check_bytes`` compare the bytes an allocation needs with
``available_bytes()`` first and raise ``AllocationTooLarge`` (a ``MemoryError``) with one line
naming what asked: ``"Linear(784, 1000000000): its weight (1000000000, 784) float32, with its
gradient, needs 5.7 TiB; 22.1 GiB of memory is available"``. Sizes are multiplied as Python
ints, so they never overflow.

The memory available is, on Linux, the smaller of the kernel's ``MemAvailable`` estimate
(``/proc/meminfo``) and the headroom left under this process's cgroup memory limit, if any;
elsewhere the free physical pages (``os.sysconf``). The environment variable
``AUTOENCODERS_MEMORY_LIMIT`` (a whole number of bytes) replaces that measurement: tests set it
low to see a check fire; a user whose machine under-reports its memory can set it high.
"""

from __future__ import annotations

import math
import os

import numpy as np

#: environment variable: a whole number of bytes to take as the memory available, instead of measuring
LIMIT_VARIABLE = "AUTOENCODERS_MEMORY_LIMIT"
#: allocations smaller than this are not checked against a measurement (but are against the variable)
UNMEASURED = 1 << 20
#: elements drawn per float64 chunk by ``uniform_array`` (512 KiB of temporary)
CHUNK = 1 << 16
_MEMINFO = "/proc/meminfo"
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
_READ_LIMIT = 1 << 16  # bytes read from any of those files at most


class AllocationTooLarge(MemoryError):
    """An allocation refused before it was tried: it needs more memory than is available."""


def format_bytes(count: int) -> str:
    """``count`` bytes in binary units with one decimal: 512 -> '512 B', 3136000000000 -> '2.9 TiB'."""
    count = int(count)
    if count < 1024:
        return f"{count} B"
    for exponent, unit in enumerate(("KiB", "MiB", "GiB", "TiB", "PiB"), start=1):
        value = count / 1024 ** exponent
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _read_text(path: str) -> str | None:
    """The first ``_READ_LIMIT`` bytes of ``path`` as text, or None where it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(_READ_LIMIT).decode("ascii", "replace")
    except OSError:
        return None


def _meminfo_available() -> int | None:
    """``MemAvailable`` from /proc/meminfo, in bytes (None where there is none)."""
    text = _read_text(_MEMINFO)
    for line in (text or "").splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name == "MemAvailable" and fields and fields[0].isdigit():
            return int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return None


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1); None when unlimited or unknown."""
    for limit_path, usage_path in _CGROUP_FILES:
        limit, usage = (_read_text(path) for path in (limit_path, usage_path))
        if limit is None or usage is None:
            continue
        limit, usage = limit.strip(), usage.strip()
        if limit.isdigit() and usage.isdigit() and int(limit) < 1 << 60:  # v1 says "unlimited" with ~2**63
            return max(int(limit) - int(usage), 0)
    return None


def _sysconf_available() -> int | None:
    """Free physical pages times the page size, where ``os.sysconf`` knows them."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _override() -> int | None:
    """``AUTOENCODERS_MEMORY_LIMIT`` as bytes, None when unset; a bad value raises ValueError."""
    text = os.environ.get(LIMIT_VARIABLE)
    if text is None or not text.strip():
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{LIMIT_VARIABLE} must be a whole number of bytes, got {text!r}")
    return value


def available_bytes() -> int | None:
    """Bytes of memory this process may still allocate, measured now; None when unknown.

    ``AUTOENCODERS_MEMORY_LIMIT`` (bytes) if set; else on Linux the smaller of ``MemAvailable``
    and the cgroup headroom; else free physical pages (``os.sysconf``).
    """
    override = _override()
    if override is not None:
        return override
    measured = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
    return min(measured) if measured else _sysconf_available()


def nbytes(shape, dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype``, as an exact Python int (no overflow)."""
    return math.prod(int(size) for size in shape) * np.dtype(dtype).itemsize


def check_bytes(what: str, count: int) -> None:
    """Raise ``AllocationTooLarge`` if ``count`` bytes exceed the memory available.

    ``what`` is the subject of the message: ``"{what} needs 2.9 TiB; 22.1 GiB of memory is
    available"``. When the memory available cannot be measured, only a size no address space
    could hold (over 2**63 bytes) is refused. Under ``UNMEASURED`` bytes nothing is measured
    (reading /proc costs about 0.1 ms, more than such an allocation) unless the limit is set.
    """
    if count < UNMEASURED and _override() is None:
        return
    available = available_bytes()
    if available is None:
        if count >= 1 << 63:
            raise AllocationTooLarge(f"{what} needs {format_bytes(count)}, more than any address space holds")
        return
    if count > available:
        raise AllocationTooLarge(f"{what} needs {format_bytes(count)}; {format_bytes(available)} of memory "
                                 f"is available")


def _shape_text(shape) -> str:
    return str(tuple(int(size) for size in shape))


def check_allocation(what: str, shape, dtype) -> None:
    """Refuse, before allocating, an array of ``shape`` and ``dtype`` that would not fit in memory.

    The message reads ``"{what} (1000000000, 784) float32 needs 2.9 TiB; ..."``.
    """
    check_bytes(f"{what} {_shape_text(shape)} {np.dtype(dtype).name}", nbytes(shape, dtype))


def check_parameter(owner: str, name: str, shape, dtype) -> None:
    """Refuse, before allocating, a parameter of ``shape`` and ``dtype`` whose data and gradient
    (a ``Parameter`` holds both) would not fit in memory; the message names ``owner`` and ``name``."""
    check_bytes(f"{owner}: its {name} {_shape_text(shape)} {np.dtype(dtype).name}, with its gradient,",
                2 * nbytes(shape, dtype))


def uniform_array(rng: np.random.Generator, low: float, high: float, shape, dtype) -> np.ndarray:
    """``rng.uniform(low, high, shape).astype(dtype)``, bit for bit, without the float64 temporary.

    Returns a new C-contiguous array of ``shape`` and ``dtype``, filled chunk by chunk from float64
    draws of at most ``CHUNK`` elements each. ``Generator.uniform`` turns each 64-bit output of the
    bit generator into one double, in order, so consecutive smaller draws give exactly the values of
    one large draw and leave ``rng`` in the same state; each is rounded to ``dtype`` as ``astype``
    rounds it.
    """
    out = np.empty(tuple(int(size) for size in shape), dtype=dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, CHUNK):
        stop = min(start + CHUNK, flat.size)
        flat[start:stop] = rng.uniform(low, high, stop - start)
    return out
