"""The three thread pools a training step runs on (Numba's, the BLAS's, torch's), set in one place.

Every command that computes takes ``--threads N`` and calls ``set_threads(N)`` before any work;
the benchmarks use the same function, so that each side runs with the same count.

Wait policies (``quiet_wait_policies``). After a parallel region, idle workers of each pool
busy-wait before they sleep: GNU OpenMP's (Numba's ``omp`` layer and torch's) spin for
``GOMP_SPINCOUNT`` iterations, OpenBLAS's for 2^``OPENBLAS_THREAD_TIMEOUT`` cycles (2^28, about
0.1 s, by default). A spinning worker holds a core that the other pool, or another process, needs
next: on 2 cores beside one busy process, the scratch ``mlp-ae`` step took 3.3x its quiet time.
The command sets both waits short, unless the environment already sets them; this must happen
before NumPy, Numba or torch loads, so ``autoencoders.cli`` calls it first. docs/speed.md has the
measurements behind the values.
"""

from __future__ import annotations

import os
import time

# name -> value set when the environment leaves it unset (see the module docstring)
QUIET_WAIT_POLICIES = {
    # OpenBLAS: spin 2^16 cycles (~20 µs) instead of 2^28 (~0.1 s): long enough to bridge the
    # back-to-back products of an MLP step, short enough to free the cores for the Numba kernels
    # between a convolution's products (2^4, the minimum, made the MLP steps slower; docs/speed.md)
    "OPENBLAS_THREAD_TIMEOUT": "16",
}


# the variables by which a user sets thread counts in the environment; the commands' default keeps them
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def environment_thread_counts(environ=os.environ) -> dict[str, str]:
    """The THREAD_VARIABLES the environment sets (non-empty)."""
    return {name: environ[name] for name in THREAD_VARIABLES if environ.get(name, "").strip()}


# GOMP_SPINCOUNT for the system's libgomp, loaded by Numba's pool: its workers spin this many
# iterations after a parallel region before they sleep, instead of libgomp's 300,000. It governs
# Numba's pool only in a process without torch: where torch has loaded, Numba's ``omppool`` binds
# the OpenMP entry points to torch's libgomp, which keeps its default (``start_numba_pool``).
# 10,000 for both copies made the conv-vae step at batch 128 1.3x faster and every batch-1 step,
# torch's too, up to 3x slower (docs/speed.md), so torch's copy is left as it is.
NUMBA_SPINCOUNT = "10000"


def numba_pool_started() -> bool:
    """Whether Numba's thread pool has started (its threading layer is loaded)."""
    from numba.np.ufunc import parallel

    return bool(getattr(parallel, "_is_initialized", True))


def start_numba_pool(threads: int | None = None, environ=os.environ) -> None:
    """Start Numba's OpenMP pool with GOMP_SPINCOUNT=NUMBA_SPINCOUNT for the system's libgomp
    (unless the environment sets one), then set its thread count (None: leave it).

    libgomp reads GOMP_SPINCOUNT once, when it loads. Where torch has loaded first, its
    ``libgomp.so.1`` is in the global symbol scope and Numba's ``omppool`` binds ``GOMP_parallel``
    and the rest to it (``LD_DEBUG=bindings``; a test asks the linker), although it lists the
    system's copy: both pools then run on torch's libgomp with its default spin, and the value set
    here reaches only the unused copy. A torch imported after Numba's pool starts shares the
    system's copy instead, which made its ops up to 50x slower, so the callers import torch first
    where they use it (``set_threads``)."""
    import numba

    if not numba_pool_started() and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = NUMBA_SPINCOUNT
        try:
            numba.set_num_threads(numba.get_num_threads())  # launches the pool: libgomp loads now
        finally:
            del environ["GOMP_SPINCOUNT"]
    if threads is not None:
        numba.set_num_threads(threads)


def start_pools(torch: bool = False) -> None:
    """Load torch's OpenMP runtime first where ``torch``, then start Numba's pool (``start_numba_pool``);
    thread counts untouched."""
    if torch:
        import torch as torch_module  # noqa: F401 - its own libgomp, loaded before Numba's

    start_numba_pool()


def quiet_wait_policies(environ=os.environ) -> dict[str, str]:
    """Set each of QUIET_WAIT_POLICIES the environment leaves unset; return what is now in force.

    Has effect only when called before the libraries that read them load (NumPy's OpenBLAS, the
    OpenMP runtime of Numba or torch)."""
    for name, value in QUIET_WAIT_POLICIES.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in QUIET_WAIT_POLICIES}


def available_cores() -> int:
    """Cores this process may run on (its affinity mask; the CPU count where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_times(cpus) -> tuple[int, int]:
    """(busy, total) clock ticks of ``cpus`` since boot, from /proc/stat (idle and iowait are not busy)."""
    busy = total = 0
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(ticks)
                busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def _own_ticks() -> int:
    """Clock ticks this process has used (utime + stime, /proc/self/stat)."""
    with open("/proc/self/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def busy_cores(interval: float = 0.2) -> float | None:
    """Cores that other processes keep busy, averaged over ``interval`` seconds: the busy share
    of the cores this process may run on, less this process's own time. None where /proc is missing."""
    try:
        cpus = os.sched_getaffinity(0)
        busy0, total0, own0 = *_cpu_times(cpus), _own_ticks()
        time.sleep(interval)
        busy1, total1, own1 = *_cpu_times(cpus), _own_ticks()
    except (OSError, ValueError, AttributeError, IndexError):  # pragma: no cover - not Linux
        return None
    if total1 <= total0:
        return 0.0
    others = max(0, (busy1 - busy0) - (own1 - own0))
    return len(cpus) * others / (total1 - total0)


def auto_threads(interval: float = 0.2) -> tuple[int, float | None]:
    """``(threads, busy)``: the cores available less those other processes keep busy now
    (``busy_cores``, rounded), at least 1 and at most Numba's pool; the default of ``--threads``.

    A fork-join step with as many threads as cores waits, at every parallel region, for a thread
    that shares its core with another process: on 2 cores beside one busy process the scratch
    ``mlp-ae`` step took 3.3x its quiet time with 2 threads (docs/speed.md has the measurements)."""
    busy = busy_cores(interval)
    limit = default_threads()
    if busy is None:
        return limit, None
    return max(1, min(limit, available_cores() - int(busy + 0.5))), busy


def default_threads() -> int:
    """The thread count when ``--threads`` is not given: Numba's pool size, which is the cores
    available unless NUMBA_NUM_THREADS says otherwise."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def check_threads(threads: int, where: str = "--threads") -> int:
    """``threads`` if Numba's pool can run that many; a ValueError that says how to allow more otherwise."""
    import numba

    limit = int(numba.config.NUMBA_NUM_THREADS)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{where}: expected a positive integer, got {threads!r}")
    if threads > limit:
        raise ValueError(f"{where} {threads}: Numba's pool has {limit} threads (NUMBA_NUM_THREADS; by default the "
                         f"{available_cores()} cores available); start with NUMBA_NUM_THREADS={threads} to allow more")
    return threads


def set_threads(threads: int | None = None, *, torch: bool = True) -> dict[str, int]:
    """Pin Numba, the BLAS (threadpoolctl) and, with ``torch=True``, torch to ``threads`` (None:
    ``default_threads()``); return the counts now in force, ``{"blas", "numba"[, "torch"]}``."""

    threads = check_threads(default_threads() if threads is None else threads)
    if torch:
        # torch first: numba.set_num_threads starts Numba's OpenMP pool, and a torch loaded after
        # it shares that libgomp instead of its own (its ops then ran up to 50x slower here).
        import torch as torch_module

        torch_module.set_num_threads(threads)
    start_numba_pool(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")
    return current_thread_counts("torch" if torch else "scratch")


def current_thread_counts(backend: str) -> dict[str, int]:
    """{"blas": n, "numba": n, and "torch": n for the torch backend}: the counts in force now."""
    import numba
    from threadpoolctl import threadpool_info

    counts = {"numba": int(numba.get_num_threads())}
    blas = [int(info["num_threads"]) for info in threadpool_info() if info.get("user_api") == "blas"]
    if blas:
        counts["blas"] = max(blas)
    if backend == "torch":
        import torch

        counts["torch"] = int(torch.get_num_threads())
    return dict(sorted(counts.items()))
