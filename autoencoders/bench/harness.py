"""The timing harness: scratch against torch, fairly, and only while both agree.

Rules (``measure``):

1. **Same process, same thread count.** ``autoencoders.threads.set_threads(threads)`` pins Numba,
   torch and the BLAS (through threadpoolctl) to one count, once per ``measure``; the counts
   are recorded in every result. torch's ``Timer`` is told the same count, so it does not
   switch torch to its own default of one thread while timing.
2. **Nothing is timed before it is checked.** Every case's ``check()`` runs both sides and
   asserts that the scratch outputs and gradients equal torch's (``assert_matches``: rtol 2e-4,
   atol 2e-4·max|torch| in float32; ``check_against_torch`` adds a torch float64 referee for
   compositions where torch float32 itself strays). A case that fails raises ``CheckFailed``
   before any case's warm-up or timed block runs: a benchmark of wrong code is worthless.
3. **JIT compile time is reported apart.** The very first scratch call of each case is timed
   alone (``compile_ms``: Numba's compile, or its load from the on-disk cache, plus one unit of
   work; only the first case to use a kernel in a process pays it). It is the one call made
   before ``check()``, so that nothing else has compiled the kernels first.
4. **Warm-up, untimed**: ``max(warmup, 1)`` calls of each side, each side after a settle pause
   (rule 5); the fastest of them sizes the blocks: ``k = ceil(block_ms / fastest call)`` calls
   (at least 1), chosen per side, so that every timed block lasts at least ``block_ms``
   (default 15 ms) and the timer's own overhead (~50 ns a call) is negligible.
5. **Repetitions in blocks, with a settle pause before each.** NumPy's OpenBLAS keeps its worker
   threads busy-waiting for about 0.1 s after every BLAS call (OpenBLAS's THREAD_TIMEOUT,
   2^28 cycles), and torch's OpenMP threads spin after torch ops too. On 2 cores a torch call
   made right after a NumPy matrix multiply therefore shares the cores with spinning threads:
   measured here, torch's mlp-ae training step at batch 1024 took 32.7 ms right after scratch
   work and 17.3 ms after a 0.2 s pause, and the same happens the other way round. Interleaving
   single calls (scratch, torch, scratch, ...), as this harness used to, penalises whichever
   side runs second. So each repetition is a *block*: sleep ``settle_ms`` (default 150 ms,
   ``--settle-ms``, recorded in every result and JSON file; longer than OpenBLAS's timeout,
   so the other side's threads are asleep again), then torch's ``Timer.timeit(number=k)``,
   which first makes its own untimed warm-up calls (``max(k // 100, 2)``; they serve as the
   block's untimed call that wakes this side's threads) and then times ``k`` calls in one
   stretch. Blocks alternate which side goes first (scratch-torch, torch-scratch, ...; with a
   third side, a peer such as jax, each goes first in turn), so that slow drift of the machine
   (other processes, clock frequency) and any order effect left hit every side alike.
6. **What is reported**, per side: one sample per block, the mean time per call in that block;
   the median and interquartile range over blocks (``Measurement.merge`` of the blocks'
   measurements, then ``.median`` and ``.iqr``), quartiles and minimum, in milliseconds; and
   ``ratio`` = scratch median / torch median (< 1: scratch faster), and beside it
   ``ratio_paired``, the median over i of block i of scratch / block i of torch (two blocks run
   back to back, so a drift of the whole machine's speed cancels in each pair). With the case's
   ``meta["flops"]`` (``autoencoders.bench.flops`` states the counting rule), GFLOP/s of each side's
   median and, given ``peak_gflops``, the fraction of that peak; with ``meta["bytes"]`` for
   memory-bound cases, GB/s instead.
7. **Checked again after timing.** ``check()`` runs once more after the case's last block; a
   mismatch then (state corrupted by repetition, a buffer reused across calls) raises
   ``CheckFailed`` too, and the case's numbers are not reported.

Timing uses ``torch.utils.benchmark.Timer`` (a ``stmt`` that calls the side's Python callable
through ``globals``) rather than a hand-written loop: its ``timeit`` is ``timeit.Timer``'s, so
the garbage collector is disabled during the warm-up and timed calls and restored after, as
``timeit`` does (a collection that falls due runs between blocks, untimed; the harness forces
none: a full collection takes ~0.2 s with torch and Numba loaded, longer than a block); its
``Measurement`` objects carry the per-block samples. Minor page faults per call are counted for
each side around each block, as a diagnostic.

A case is a ``Case(name, scratch, torch, check, meta)``: ``scratch()`` and ``torch()`` each run one
unit of work (e.g. a layer's forward pass), ``check()`` runs both and raises ``AssertionError``
on a mismatch; ``meta`` is copied into the case's result. ``Case.peers`` adds more sides
(``{"jax": step}``: ``autoencoders.bench.models`` with ``--peers torch,jax``), which ``check()``
must hold to torch too; each gets ``{peer}_median_ms`` and the other per-side fields, and
``ratio_{peer}`` = scratch median / its median, with ``ratio_paired_{peer}`` beside it. docs/benchmarks/README.md shows how to time
a kernel of your own this way.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from autoencoders.threads import available_cores
from scratch.testing import assert_close, to_numpy

# A training step's gradients against the float64 referee, in norm, when neither float32 side
# matches element-wise (see check_against_torch): measured on conv-vae, whose decoder has ~10^7
# ReLU pre-activations per batch of 1024: scratch float32 off by 4.9e-4 in norm (a flip in
# scratch), torch float32 off by 3.2e-4 at batch 256 (a flip in torch), both against float64.
# A wrong formula is off by 1e-2 to 1 in norm.
TRAINING_NORM_RTOL = 1e-3

DEFAULT_SETTLE_MS = 150.0  # > OpenBLAS's ~0.1 s busy-wait after a BLAS call (rule 5)
DEFAULT_BLOCK_MS = 15.0    # shortest timed block (rule 4)
MAX_BLOCK_CALLS = 100_000  # a block of a ~100 ns callable lasts 10 ms; no case needs more
SIDES = ("scratch", "torch")


class CheckFailed(AssertionError):
    """A case's scratch outputs differ from torch's: it is not timed (or, after timing, not reported)."""


@dataclass
class Case:
    """One unit of work done twice: ``scratch()`` and ``torch()``; ``check()`` proves them equal.

    ``meta`` is copied into the result; ``meta["flops"]`` (floating-point operations per call)
    gives GFLOP/s, ``meta["bytes"]`` (bytes read and written per call) GB/s for memory-bound work.
    ``peers`` adds more sides, name -> callable (e.g. ``{"jax": step}``), timed in the same
    rotating blocks; ``check()`` must prove them equal too.
    """

    name: str
    scratch: Callable[[], object]
    torch: Callable[[], object]
    check: Callable[[], None]
    meta: dict = field(default_factory=dict)
    peers: dict = field(default_factory=dict)

    @property
    def sides(self) -> tuple[str, ...]:
        return SIDES + tuple(self.peers)

    def function(self, side: str) -> Callable[[], object]:
        return {"scratch": self.scratch, "torch": self.torch, **self.peers}[side]


# -- checking ----------------------------------------------------------------------------------


def _tolerance_dtype(a: np.ndarray, e: np.ndarray) -> str:
    """The less precise of the two float dtypes (a float32 result against a float64 referee is
    held to float32's tolerance); non-float arrays count as float64."""
    names = [np.dtype(x.dtype).name if np.issubdtype(x.dtype, np.floating) else "float64" for x in (a, e)]
    return "float32" if "float32" in names or "float16" in names else "float64"


def assert_matches(actual: Mapping, expected: Mapping, what: str = "") -> None:
    """Assert that every named scratch array equals torch's: ``scratch.testing.assert_close`` under
    the table's ("torch", dtype) row, the dtype being the less precise of the two.

    ``actual`` (scratch) and ``expected`` (torch) map names (``"output"``, ``"grad weight"``...) to
    arrays or tensors; their keys must agree.
    """
    if set(actual) != set(expected):
        raise AssertionError(f"{what}: scratch gives {sorted(actual)}, torch gives {sorted(expected)}")
    for key in expected:
        a, e = to_numpy(actual[key]), to_numpy(expected[key])
        if a.shape != e.shape:
            raise AssertionError(f"{what} {key}: scratch shape {a.shape} != torch shape {e.shape}")
        assert_close(a, e, "torch", _tolerance_dtype(a, e), what=f"{what} {key}: scratch != torch")


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


def relative_norm_differences(actual: Mapping, expected: Mapping) -> dict[str, float]:
    """‖actual − expected‖₂ / ‖expected‖₂ for every name (0 where both are zero)."""
    differences = {}
    for key in expected:
        a, e = to_numpy(actual[key]).astype(np.float64), to_numpy(expected[key]).astype(np.float64)
        size = float(np.linalg.norm(e))
        difference = float(np.linalg.norm(a - e))
        differences[key] = difference / size if size > 0 else difference
    return differences


def check_against_torch(scratch_outputs: Mapping, torch_outputs: Mapping, what: str,
                        referee: Callable[[], Mapping] | None = None, meta: dict | None = None,
                        norm_rtol: float | None = None) -> None:
    """``assert_matches(scratch, torch)``; where that fails and a ``referee`` is given, settle it.

    ``referee()`` runs the same unit of work in torch at higher precision (float64) from the same
    state and returns the same names. Some compositions are ill-conditioned in float32: a
    pre-activation within rounding of a ReLU's kink, or a near-tie in a max-pool window, lets a
    1-ulp difference in the forward pass route a gradient to another element, so two correct
    float32 implementations can disagree by far more than rounding. Then scratch passes if it
    matches the float64 referee under float32's tolerance; otherwise ``AssertionError``.
    With ``norm_rtol`` (training steps: ``TRAINING_NORM_RTOL``), a scratch result that matches
    neither element by element still passes when every array agrees with the referee in norm,
    ‖scratch − referee‖ <= norm_rtol·‖referee‖: at batch 1024 a model has millions of
    pre-activations, and a few within float32 rounding of a ReLU's kink *in scratch* (not in
    torch) change one example's whole upstream gradient, which spreads ~1e-4 of error in norm
    over every earlier layer (seen: conv-vae, 4.9e-4 on decoder.0.weight; with another batch
    torch float32 was the one off, by 3.2e-4). Wrong code misses by far more, in norm too.
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
        in_norm = None
        try:
            assert_matches(scratch_outputs, reference, f"{what}, against the torch float64 referee")
        except AssertionError as referee_error:
            norms = relative_norm_differences(scratch_outputs, reference) if norm_rtol is not None else {}
            if not norms or max(norms.values()) > norm_rtol:
                worst = max(norms.items(), key=lambda item: item[1]) if norms else None
                detail = (f"\n... nor in norm: {worst[0]} differs by {worst[1]:.2e} > {norm_rtol:g}"
                          if worst else "")
                raise AssertionError(f"{error}\n... and against the torch float64 referee: {referee_error}{detail}") \
                    from error
            in_norm = max(norms.items(), key=lambda item: item[1])
        scratch_vs_torch = worst_difference(scratch_outputs, torch_outputs)
        scratch_vs_referee = worst_difference(scratch_outputs, reference)
        torch_vs_referee = worst_difference(torch_outputs, reference)
        meta["check"] = "torch float64 referee" + ("" if in_norm is None else ", in norm")
        meta["check_note"] = (("" if in_norm is None else
                               f"in norm: worst {in_norm[0]} at {in_norm[1]:.1e} of its norm (<= {norm_rtol:g}); ") +
            f"scratch vs torch differ by {scratch_vs_torch[1]:.1e} of max ({scratch_vs_torch[0]}); "
            f"vs torch float64: scratch {scratch_vs_referee[1]:.1e} ({scratch_vs_referee[0]}), "
            f"torch {torch_vs_referee[1]:.1e} ({torch_vs_referee[0]})")
    else:
        dtypes = {_tolerance_dtype(to_numpy(value), to_numpy(value)) for value in torch_outputs.values()}
        meta["check"] = "torch " + ("float32" if "float32" in dtypes else "float64")


# -- timing ------------------------------------------------------------------------------------


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
    """Nanoseconds one call takes (for the compile call and for sizing blocks, never reported as a sample)."""
    started = time.perf_counter_ns()
    function()
    return time.perf_counter_ns() - started


def settle(settle_s: float) -> None:
    """Sleep, so that the other side's spinning BLAS/OpenMP threads go idle (rule 5)."""
    if settle_s > 0:
        time.sleep(settle_s)


def block_calls(seconds_per_call: float, block_ms: float) -> int:
    """Calls per block so that a block lasts at least ``block_ms``: ceil(block / call), 1 at least."""
    if block_ms <= 0:
        return 1
    per_call = max(seconds_per_call, 1e-9)
    return int(min(MAX_BLOCK_CALLS, max(1, math.ceil(block_ms / 1e3 / per_call))))


def timeit_warmup_calls(number: int) -> int:
    """The untimed calls ``torch.utils.benchmark.Timer.timeit(number)`` makes before timing."""
    return max(number // 100, 2)


def summarize_ms(samples_ms) -> dict:
    """Median, quartiles, IQR and min of samples in ms (linear interpolation, as numpy and torch's
    ``Measurement`` do)."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return {"median_ms": float(median), "iqr_ms": float(q3 - q1), "q1_ms": float(q1), "q3_ms": float(q3),
            "min_ms": float(samples.min())}


def throughput(result: dict, peak_gflops: float | None = None) -> dict:
    """Add GFLOP/s (or GB/s) of each side's median, and the fraction of ``peak_gflops``, to ``result``.

    ``result["flops"]`` is the case's FLOP count per call (``autoencoders.bench.flops``); a case without
    one, or with 0 (memory-bound work), gets ``None`` GFLOP/s, and GB/s from ``result["bytes"]``
    when the case states the bytes it reads and writes per call.
    """
    flops, moved = result.get("flops"), result.get("bytes")
    for side in result.get("sides", SIDES):
        seconds = result[f"{side}_median_ms"] / 1e3
        gflops = flops / seconds / 1e9 if flops else None
        result[f"gflops_{side}"] = gflops
        result[f"peak_fraction_{side}"] = gflops / peak_gflops if gflops is not None and peak_gflops else None
        result[f"gbytes_per_s_{side}"] = moved / seconds / 1e9 if moved else None
    result["peak_gflops"] = peak_gflops
    return result


def _run_check(case: Case, when: str) -> None:
    try:
        case.check()
    except AssertionError as error:
        if when == "before":
            raise CheckFailed(f"{case.name}: scratch does not match torch, not timed: {error}") from error
        raise CheckFailed(f"{case.name}: scratch no longer matches torch after timing, its numbers are not "
                          f"reported: {error}") from error


def _time_case(case: Case, counts: Mapping, repeats: int, warmup: int, settle_s: float, block_ms: float) -> dict:
    """Warm-up, then ``repeats`` blocks per side in rotating order (rules 4 to 6)."""
    from torch.utils.benchmark import Measurement, Timer

    sides = case.sides
    fastest = {}
    for side in sides:
        settle(settle_s)
        fastest[side] = min(_time_once(case.function(side)) for _ in range(max(warmup, 1))) / 1e9
    calls = {side: block_calls(fastest[side], block_ms) for side in sides}
    timers = {side: Timer(stmt="run_once()", globals={"run_once": case.function(side)}, label=case.name,
                          description=side, num_threads=counts.get("torch", 1))
              for side in sides}
    measurements = {side: [] for side in sides}
    faults = {side: 0 for side in sides}
    first_sides = []
    for block in range(repeats):
        # each side goes first in turn (two sides: scratch-torch, torch-scratch, ...)
        shift = block % len(sides)
        order = sides[shift:] + sides[:shift]
        first_sides.append(order[0])
        for side in order:
            settle(settle_s)
            before = minor_faults()
            measurements[side].append(timers[side].timeit(number=calls[side]))
            faults[side] += minor_faults() - before
    result = {"sides": list(sides)}
    for side in sides:
        merged = Measurement.merge(measurements[side])[0]
        samples_ms = [t * 1e3 for t in merged.times]
        stats = summarize_ms(samples_ms)
        stats["median_ms"], stats["iqr_ms"] = merged.median * 1e3, merged.iqr * 1e3
        result.update({f"{side}_{key}": value for key, value in stats.items()})
        result[f"{side}_samples_ms"] = samples_ms
        result[f"{side}_block_calls"] = calls[side]
        result[f"{side}_page_faults_per_call"] = faults[side] / (repeats * (calls[side] + timeit_warmup_calls(calls[side])))
    result["block_first_side"] = first_sides
    # Block i of one side and block i of the other ran back to back: their ratio cancels whatever
    # slowed or sped up the whole machine during that pair (a shared VM drifts over seconds), which
    # the ratio of the two medians does not. Reported beside it, never instead of it.
    for other in sides[1:]:
        pairs = [result["scratch_samples_ms"][i] / result[f"{other}_samples_ms"][i] for i in range(repeats)]
        q1, median, q3 = np.percentile(pairs, [25, 50, 75])
        suffix = "" if other == "torch" else f"_{other}"
        result[f"ratio_paired{suffix}"], result[f"ratio_paired{suffix}_iqr"] = float(median), float(q3 - q1)
    return result


def measure(cases: Iterable[Case], repeats: int = 10, warmup: int = 3, threads: int | None = None,
            settle_ms: float = DEFAULT_SETTLE_MS, block_ms: float = DEFAULT_BLOCK_MS,
            peak_gflops: float | None = None, log: Callable[[str], None] | None = None) -> list[dict]:
    """Check, then time, then check again, each case by the module's rules; one result per case.

    Parameters
    ----------
    cases : the ``Case`` objects, timed in order.
    repeats : timed blocks per side (each block is one sample).
    warmup : untimed calls per side before the blocks (at least one is made: it sizes the blocks).
    threads : thread count for Numba, torch and the BLAS alike (None: Numba's default).
    settle_ms : pause before every block and warm-up, so that the other side's threads idle.
    block_ms : the shortest timed block; ``k`` calls per block are chosen to reach it.
    peak_gflops : this machine's measured peak (``autoencoders.bench.peak``), for the fraction of peak.
    log : called with one line per case as it finishes.

    Returns
    -------
    list of dict
        ``name``, the case's ``meta``; per side ``{side}_median_ms``, ``_iqr_ms``, ``_q1_ms``,
        ``_q3_ms``, ``_min_ms``, ``_samples_ms`` (one per block), ``_block_calls`` (k),
        ``_page_faults_per_call``; ``ratio`` (scratch median / torch median), ``compile_ms``,
        ``checked`` and ``checked_after_timing`` (True), ``block_first_side`` (which side went
        first in each block), ``repeats``, ``warmup``, ``settle_ms``, ``block_ms``, ``threads``,
        ``timer``; ``gflops_scratch``, ``gflops_torch``, ``peak_fraction_*`` and ``gbytes_per_s_*``
        (None where they do not apply; see ``throughput``).

    Raises
    ------
    CheckFailed
        A case's scratch side disagrees with torch: before timing (then nothing at all is timed),
        or after its blocks.
    """
    from autoencoders.threads import set_threads

    if repeats < 1 or warmup < 0 or settle_ms < 0 or block_ms < 0:
        raise ValueError(f"measure: repeats must be >= 1, warmup, settle_ms and block_ms >= 0; got "
                         f"{repeats}, {warmup}, {settle_ms}, {block_ms}")
    cases = list(cases)
    counts = set_threads(threads)

    # Every case first: its first scratch call alone (compile or cache load), then the check.
    compile_ns = []
    for case in cases:
        compile_ns.append(_time_once(case.scratch))
        _run_check(case, "before")

    results = []
    for case, first_call_ns in zip(cases, compile_ns):
        timing = _time_case(case, counts, repeats, warmup, settle_ms / 1e3, block_ms)
        _run_check(case, "after")
        result = {"name": case.name, **case.meta, **timing}
        result.update({f"ratio_{peer}": result["scratch_median_ms"] / result[f"{peer}_median_ms"] for peer in case.peers})
        result.update({
            "ratio": result["scratch_median_ms"] / result["torch_median_ms"],
            "compile_ms": first_call_ns / 1e6,
            "checked": True,
            "checked_after_timing": True,
            "repeats": repeats,
            "warmup": warmup,
            "settle_ms": settle_ms,
            "block_ms": block_ms,
            "threads": dict(counts),
            "timer": "torch.utils.benchmark.Timer.timeit, one sample per block",
        })
        throughput(result, peak_gflops)
        results.append(result)
        if log is not None:
            log(f"  {case.name}: scratch {result['scratch_median_ms']:.3f} ms, "
                f"torch {result['torch_median_ms']:.3f} ms, ratio {result['ratio']:.2f}")
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


# The variables that change what the BLAS and OpenMP runtimes do. This project's machines set
# OPENBLAS_CORETYPE=Haswell (NumPy's OpenBLAS then runs its AVX2 kernels whatever it detects);
# the benchmarks run in the environment as it is and record these.
ENVIRONMENT_PREFIXES = ("OPENBLAS_", "OMP_", "GOTO", "MKL_", "KMP_", "GOMP_", "NUMBA_")


def environment_variables() -> dict:
    """The OPENBLAS_*, OMP_*, MKL_*, KMP_*, GOMP_*, NUMBA_* variables of this process, sorted."""
    return {key: os.environ[key] for key in sorted(os.environ) if key.startswith(ENVIRONMENT_PREFIXES)}


def blas_libraries() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries (kind, version, CPU kernels,
    threads); empty without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return []
    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads",
            "filepath")
    return [{key: info[key] for key in keys if key in info} for info in threadpool_info()]


def environment(threads: Mapping | None = None, malloc: str | None = None, **extra) -> dict:
    """What the numbers depend on: CPU, cores, library versions, thread counts, the BLAS and its
    environment variables, allocator settings (``pin_malloc``'s description, or "default"), the
    date; plus ``extra`` (settle time, peak measurement...)."""
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
        "available_cores": available_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threading_layer": threading_layer,
        "torch": torch.__version__,
        # jax only where a suite timed it (a peer): its version, and XLA's own CPU thread pool
        "jax": getattr(sys.modules.get("jax"), "__version__", None),
        "threads": dict(threads) if threads is not None else None,
        "blas": blas_libraries(),
        "environment_variables": environment_variables(),
        "malloc": malloc or "default",
        **extra,
    }


def write_bytes(path, data: bytes) -> Path:
    """``data`` to ``path`` atomically (a temporary file in the same folder, then a rename),
    readable as an ordinary new file would be (the temporary file is created private)."""
    from autoencoders._files import atomic_write_bytes

    path = atomic_write_bytes(path, data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, results: list[dict], env: dict, **extra) -> Path:
    """``{"environment": env, **extra, "results": results}`` to ``path``, atomically (parents created)."""
    payload = json.dumps({"environment": env, **extra, "results": results}, indent=1, default=str) + "\n"
    return write_text(path, payload)


COLUMNS = ("case", "scratch ms (IQR)", "torch ms (IQR)", "ratio (paired)", "GFLOP/s scratch", "GFLOP/s torch",
           "% of peak (scratch / torch)", "compile ms")


def _rate_cell(result: dict, side: str) -> str:
    gflops = result.get(f"gflops_{side}")
    if gflops is not None:
        return f"{gflops:.1f}"
    moved = result.get(f"gbytes_per_s_{side}")
    return "mem-bound" if moved is None else f"mem-bound, {moved:.1f} GB/s"


def _peak_cell(result: dict) -> str:
    scratch, torch_side = result.get("peak_fraction_scratch"), result.get("peak_fraction_torch")
    if scratch is None or torch_side is None:
        return "-"
    return f"{100 * scratch:.1f} / {100 * torch_side:.1f}"


def _peers(results: list[dict]) -> list[str]:
    """The sides beyond scratch and torch that any of ``results`` has, in first-seen order."""
    return list(dict.fromkeys(side for r in results for side in r.get("sides", SIDES) if side not in SIDES))


def columns(results: list[dict]) -> tuple[str, ...]:
    """COLUMNS, and per peer (e.g. jax) its median, scratch / peer and GFLOP/s before compile ms."""
    extra = tuple(heading for peer in _peers(results)
                  for heading in (f"{peer} ms (IQR)", f"scratch / {peer} (paired)", f"GFLOP/s {peer}"))
    return COLUMNS[:-1] + extra + COLUMNS[-1:]


def _peer_cells(r: dict, peer: str) -> tuple[str, ...]:
    if f"{peer}_median_ms" not in r:
        return ("-", "-", "-")
    return (f"{r[f'{peer}_median_ms']:.3f} ({r[f'{peer}_iqr_ms']:.3f})",
            f"{r[f'ratio_{peer}']:.2f} ({r[f'ratio_paired_{peer}']:.2f})", _rate_cell(r, peer))


def table_rows(results: list[dict]) -> list[tuple[str, ...]]:
    peers = _peers(results)
    return [(r["name"],
             f"{r['scratch_median_ms']:.3f} ({r['scratch_iqr_ms']:.3f})",
             f"{r['torch_median_ms']:.3f} ({r['torch_iqr_ms']:.3f})",
             f"{r['ratio']:.2f}" + (f" ({r['ratio_paired']:.2f})" if "ratio_paired" in r else ""),
             _rate_cell(r, "scratch"),
             _rate_cell(r, "torch"),
             _peak_cell(r),
             *(cell for peer in peers for cell in _peer_cells(r, peer)),
             f"{r['compile_ms']:.1f}") for r in results]


def format_table(results: list[dict]) -> str:
    """A fixed-width text table: case, median (IQR) ms each side, ratio, GFLOP/s, % of peak, any
    peer's median, ratio and GFLOP/s, compile ms."""
    heads = columns(results)
    rows = [heads] + table_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(heads))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: list[dict]) -> str:
    """The same table in GitHub markdown."""
    heads = columns(results)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)
