"""A small harness that times scratch against torch fairly, and only once both agree.

Rules (``measure``):

1. Same process, same thread count: ``scratch.compare.thread_counts(threads)`` pins Numba, torch
   and the BLAS to one count, called once per ``measure``; the counts are recorded.
2. Nothing is timed before it is checked: every case's ``check()`` runs both sides once and
   asserts that the scratch outputs and gradients equal torch's (``assert_matches``: rtol 2e-4,
   atol 2e-4·max|torch| in float32; ``check_against_torch`` adds a torch float64 referee for
   compositions where torch float32 itself strays, see there). A case that fails raises
   ``CheckFailed`` before any case's warm-up or repetition runs: a benchmark of wrong code is
   worthless.
3. JIT compile time is reported apart: the very first scratch call of each case is timed alone
   (``compile_ms``: Numba's compile, or its load from the on-disk cache, plus one unit of work;
   only the first case to use a kernel in a process pays for it, later cases show about one
   ordinary call). It is the one call made before ``check()``, so that nothing else has
   compiled the kernels first; no torch call is timed before the check.
4. Then ``warmup`` calls of each side, interleaved, untimed.
5. Then ``repeats`` repetitions, INTERLEAVED (scratch, torch, scratch, torch, ...), so that drift
   in the machine's speed (other processes, frequency, thermal) hits both sides alike. Each call
   is timed with ``time.perf_counter_ns``; the garbage collector is collected before and
   disabled during the repetitions (as ``timeit`` does), for both sides alike. Minor page
   faults per call are counted for each side (outside the timed windows), as a diagnostic.
6. Reported per side: median and interquartile range (q3 - q1) in milliseconds; and the ratio
   scratch/torch of the medians (< 1: scratch faster).

A case is a ``Case(name, scratch, torch, check, meta)``: ``scratch()`` and ``torch()`` each run one
unit of work (e.g. a layer's forward and backward), ``check()`` runs both once and raises
``AssertionError`` on a mismatch; ``meta`` is copied into the case's result.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

# (rtol, atol relative to max|expected|): parity_tests/tolerances.py's "torch" entries.
TOLERANCES = {"float32": (2e-4, 2e-4), "float64": (1e-10, 1e-10)}


class CheckFailed(AssertionError):
    """A case's scratch outputs differ from torch's: it is not timed."""


@dataclass
class Case:
    """One unit of work done twice: ``scratch()`` and ``torch()``; ``check()`` proves them equal."""

    name: str
    scratch: Callable[[], object]
    torch: Callable[[], object]
    check: Callable[[], None]
    meta: dict = field(default_factory=dict)


# -- checking ----------------------------------------------------------------------------------


def to_numpy(value) -> np.ndarray:
    """A NumPy array from an array, a torch tensor (detached) or a Python number."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _tolerance_dtype(a: np.ndarray, e: np.ndarray) -> str:
    """The less precise of the two float dtypes (a float32 result against a float64 referee is
    held to float32's tolerance); non-float arrays count as float64."""
    names = [np.dtype(x.dtype).name if np.issubdtype(x.dtype, np.floating) else "float64" for x in (a, e)]
    return "float32" if "float32" in names or "float16" in names else "float64"


def assert_matches(actual: Mapping, expected: Mapping, what: str = "") -> None:
    """Assert that every named scratch array equals torch's under TOLERANCES[dtype].

    ``actual`` (scratch) and ``expected`` (torch) map names (``"output"``, ``"grad weight"``...) to
    arrays or tensors; their keys must agree. Each pair is compared with
    ``np.testing.assert_allclose(actual, expected, rtol, atol = atol_factor · max|expected|)``,
    the dtype being the less precise of the two (float32: rtol 2e-4, atol 2e-4 · max|expected|).
    """
    if set(actual) != set(expected):
        raise AssertionError(f"{what}: scratch gives {sorted(actual)}, torch gives {sorted(expected)}")
    for key in expected:
        a, e = to_numpy(actual[key]), to_numpy(expected[key])
        if a.shape != e.shape:
            raise AssertionError(f"{what} {key}: scratch shape {a.shape} != torch shape {e.shape}")
        rtol, atol = TOLERANCES[_tolerance_dtype(a, e)]
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * scale, err_msg=f"{what} {key}: scratch != torch")


def worst_difference(actual: Mapping, expected: Mapping) -> tuple[str, float]:
    """The key with the largest max|actual - expected| / max|expected|, and that value."""
    worst = ("", 0.0)
    for key in expected:
        a, e = to_numpy(actual[key]).astype(np.float64), to_numpy(expected[key]).astype(np.float64)
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        value = float(np.max(np.abs(a - e))) / scale if scale > 0 else float(np.max(np.abs(a - e), initial=0.0))
        if value > worst[1]:
            worst = (key, value)
    return worst


def check_against_torch(scratch_outputs: Mapping, torch_outputs: Mapping, what: str,
                        referee: Callable[[], Mapping] | None = None, meta: dict | None = None) -> None:
    """``assert_matches(scratch, torch)``; where that fails and a ``referee`` is given, settle it.

    ``referee()`` runs the same unit of work in torch at higher precision (float64) from the same
    state and returns the same names. Some compositions are ill-conditioned in float32: a
    pre-activation within rounding of a ReLU's kink, or a near-tie in a max-pool window, lets a
    1-ulp difference in the forward pass route a gradient to another element, so two correct
    float32 implementations can disagree by far more than rounding. Then scratch passes if it
    matches the float64 referee under float32's tolerance; otherwise ``AssertionError``.
    ``meta["check"]`` records which oracle the outputs were checked against, with the worst
    relative differences (max|difference| / max|reference| of the worst-off array) when it took
    the referee.
    """
    meta = {} if meta is None else meta
    try:
        assert_matches(scratch_outputs, torch_outputs, what)
    except AssertionError as error:
        if referee is None:
            raise
        reference = referee()
        try:
            assert_matches(scratch_outputs, reference, f"{what}, against the torch float64 referee")
        except AssertionError as referee_error:
            raise AssertionError(f"{error}\n... and against the torch float64 referee: {referee_error}") from error
        scratch_vs_torch = worst_difference(scratch_outputs, torch_outputs)
        scratch_vs_referee = worst_difference(scratch_outputs, reference)
        torch_vs_referee = worst_difference(torch_outputs, reference)
        meta["check"] = "torch float64 referee"
        meta["check_note"] = (
            f"scratch vs torch differ by {scratch_vs_torch[1]:.1e} of max ({scratch_vs_torch[0]}); "
            f"vs torch float64: scratch {scratch_vs_referee[1]:.1e} ({scratch_vs_referee[0]}), "
            f"torch {torch_vs_referee[1]:.1e} ({torch_vs_referee[0]})")
    else:
        dtypes = {_tolerance_dtype(to_numpy(value), to_numpy(value)) for value in torch_outputs.values()}
        meta["check"] = "torch " + ("float32" if "float32" in dtypes else "float64")


# -- timing ------------------------------------------------------------------------------------


def _ms(nanoseconds) -> float:
    return float(nanoseconds) / 1e6


def summarize(samples_ns) -> dict:
    """Median, quartiles, IQR and min of a list of durations in ns, all in ms."""
    samples = np.asarray(samples_ns, dtype=np.float64) / 1e6
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return {"median_ms": float(median), "iqr_ms": float(q3 - q1), "q1_ms": float(q1), "q3_ms": float(q3),
            "min_ms": float(samples.min())}


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``); 0 where unavailable."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024


def pin_malloc() -> str | None:
    """Fix glibc malloc's mmap and trim thresholds for this process, and say so (None: not glibc).

    glibc adapts both thresholds as the process frees memory, so whether an allocation of a few
    MB comes from the heap or from a fresh ``mmap`` (whose pages then fault in, ~1 µs per 4 KiB, on
    every call) depends on the process's allocation history. Measured here: torch's
    ConvTranspose2d(8,1,2) forward+backward at batch 512 took 8.4 ms with 4,468 page faults per
    call in one process and 2.7 ms with none in another. Pinning the thresholds (mmap above 32 MiB
    only, heap top returned above 1 GiB only) takes that lottery out of both sides' timings alike.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (mallopt(m_mmap_threshold, MMAP_THRESHOLD) and mallopt(m_trim_threshold, TRIM_THRESHOLD)):
        return None
    return f"glibc mallopt: M_MMAP_THRESHOLD {MMAP_THRESHOLD >> 20} MiB, M_TRIM_THRESHOLD {TRIM_THRESHOLD >> 20} MiB"


def _time_once(function) -> int:
    started = time.perf_counter_ns()
    function()
    return time.perf_counter_ns() - started


def measure(cases: Iterable[Case], repeats: int = 30, warmup: int = 3, threads: int | None = None,
            log: Callable[[str], None] | None = None) -> list[dict]:
    """Check, then time, each case by the module's rules; one result dict per case, in order.

    Each result: ``name``, the case's ``meta``, ``scratch_median_ms``, ``scratch_iqr_ms``,
    ``torch_median_ms``, ``torch_iqr_ms`` (plus quartiles and minima), ``ratio`` (scratch median /
    torch median), ``compile_ms`` (the first scratch call), ``checked`` (True: outputs matched
    before timing), ``repeats``, ``warmup``, ``threads`` (the counts each library runs with),
    ``scratch_page_faults_per_call``, ``torch_page_faults_per_call`` and the raw samples in ms.
    """
    from scratch.compare import thread_counts

    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    cases = list(cases)
    counts = thread_counts(threads)

    # Phase 1, every case: the first scratch call alone (compile or cache load), then the check.
    first = []
    for case in cases:
        compile_ns = _time_once(case.scratch)
        try:
            case.check()
        except AssertionError as error:
            raise CheckFailed(f"{case.name}: scratch does not match torch, not timed: {error}") from error
        first.append(compile_ns)

    # Phase 2, every case: warm-up, then interleaved repetitions.
    results = []
    for case, compile_ns in zip(cases, first):
        for _ in range(warmup):
            case.scratch()
            case.torch()
        scratch_ns, torch_ns = [], []
        scratch_faults = torch_faults = 0
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(repeats):
                faults = minor_faults()
                started = time.perf_counter_ns()
                case.scratch()
                ended = time.perf_counter_ns()
                scratch_ns.append(ended - started)
                middle_faults = minor_faults()
                started = time.perf_counter_ns()
                case.torch()
                ended = time.perf_counter_ns()
                torch_ns.append(ended - started)
                end_faults = minor_faults()
                scratch_faults += middle_faults - faults
                torch_faults += end_faults - middle_faults
        finally:
            if was_enabled:
                gc.enable()
        scratch_stats, torch_stats = summarize(scratch_ns), summarize(torch_ns)
        result = {"name": case.name, **case.meta}
        result.update({f"scratch_{k}": v for k, v in scratch_stats.items()})
        result.update({f"torch_{k}": v for k, v in torch_stats.items()})
        result.update({
            "ratio": scratch_stats["median_ms"] / torch_stats["median_ms"],
            "compile_ms": _ms(compile_ns),
            "checked": True,
            "repeats": repeats,
            "warmup": warmup,
            "threads": dict(counts),
            "scratch_page_faults_per_call": scratch_faults / repeats,
            "torch_page_faults_per_call": torch_faults / repeats,
            "scratch_samples_ms": [_ms(t) for t in scratch_ns],
            "torch_samples_ms": [_ms(t) for t in torch_ns],
        })
        results.append(result)
        if log is not None:
            log(f"  {case.name}: scratch {result['scratch_median_ms']:.3f} ms, "
                f"torch {result['torch_median_ms']:.3f} ms")
    return results


# -- reporting ---------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: Mapping | None = None, malloc: str | None = None) -> dict:
    """What the numbers depend on: CPU, core count, library versions, thread counts, allocator
    settings (``pin_malloc``'s description, or None for the defaults), date."""
    import numba
    import torch

    try:
        threading_layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        threading_layer = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threading_layer": threading_layer,
        "torch": torch.__version__,
        "threads": dict(threads) if threads is not None else None,
        "malloc": malloc or "default",
    }


def write_json(path, results: list[dict], env: dict, **extra) -> Path:
    """``{"environment": env, **extra, "results": results}`` to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"environment": env, **extra, "results": results}, indent=1) + "\n",
                         encoding="utf-8")
    os.replace(temporary, path)
    return path


COLUMNS = ("case", "scratch ms (IQR)", "torch ms (IQR)", "ratio", "compile ms")


def table_rows(results: list[dict]) -> list[tuple[str, ...]]:
    return [(r["name"],
             f"{r['scratch_median_ms']:.3f} ({r['scratch_iqr_ms']:.3f})",
             f"{r['torch_median_ms']:.3f} ({r['torch_iqr_ms']:.3f})",
             f"{r['ratio']:.2f}",
             f"{r['compile_ms']:.1f}") for r in results]


def format_table(results: list[dict]) -> str:
    """A fixed-width text table: case, scratch and torch median (IQR) in ms, ratio, compile ms."""
    rows = [COLUMNS] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: list[dict]) -> str:
    """The same table in GitHub markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)
