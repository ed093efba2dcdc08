"""This machine's float32 matrix-multiply peak, measured, at the benchmark's thread count.

    python -m autoencoders.bench.peak [--peak-size 2048] [--peak-repeats 5] [--threads N]

One square float32 matrix multiply ``C = A @ B`` of size N (default 2048: 2·N³ = 17.2 GFLOP, big
enough that every BLAS runs at its best), timed by the harness's rules (same thread count for
NumPy's BLAS and torch, a settle pause before each block, blocks alternating) with NumPy
(``np.matmul(a, b, out=c)``: the BLAS that scratch's matrix products run on) and with torch
(``torch.mm(a, b, out=c)``). Each side's peak is 2·N³ / its fastest block; the machine's peak,
against which every benchmark's "% of peak" is computed, is the larger of the two. The two
products are checked equal first, as every case is.

This project's machines set ``OPENBLAS_CORETYPE=Haswell``, so NumPy's OpenBLAS runs its AVX2
kernels; the measurement runs in the environment as it is, and ``environment()`` records the
OPENBLAS_*/OMP_* variables and the BLAS that threadpoolctl found (with its kernel architecture).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from autoencoders.bench.harness import Case, assert_matches, measure

DTYPE = np.float32
_CACHE: dict[tuple, dict] = {}


def sgemm_case(size: int, seed: int = 0) -> Case:
    """``C = A @ B`` for two (size, size) float32 matrices: NumPy against torch."""
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((size, size)).astype(DTYPE) for _ in range(2))
    c = np.empty((size, size), dtype=DTYPE)
    ta, tb = torch.from_numpy(a.copy()), torch.from_numpy(b.copy())
    tc = torch.empty((size, size), dtype=torch.float32)

    def numpy_sgemm():
        return np.matmul(a, b, out=c)

    def torch_sgemm():
        return torch.mm(ta, tb, out=tc)

    def check():
        assert_matches({"C": numpy_sgemm().copy()}, {"C": torch_sgemm().clone()}, f"sgemm {size}")

    return Case(f"sgemm {size}x{size} float32", numpy_sgemm, torch_sgemm, check,
                {"kind": "peak", "size": size, "dtype": "float32", "flops": 2 * size ** 3})


def measure_peak(threads: int | None = None, size: int = 2048, repeats: int = 5, settle_ms: float = 150.0,
                 log=None, fresh: bool = False) -> dict:
    """Measure the float32 sgemm peak at ``threads`` (once per process for the same arguments,
    unless ``fresh``: then measured again, and the cached value left as it was).

    Returns ``{"size", "threads", "numpy_gflops", "torch_gflops", "peak_gflops", "peak_library",
    "numpy_median_gflops", "torch_median_gflops", "result"}``: the ``*_gflops`` from each side's
    fastest block, the medians for reference, and the harness's full result.
    """
    key = (threads, size, repeats, settle_ms)
    if fresh:
        saved = _CACHE.pop(key, None)
        try:
            return measure_peak(threads, size, repeats, settle_ms, log)
        finally:
            if saved is not None:
                _CACHE[key] = saved
    if key not in _CACHE:
        [result] = measure([sgemm_case(size)], repeats=repeats, warmup=1, threads=threads, settle_ms=settle_ms,
                           block_ms=0.0)
        flops = result["flops"]
        numpy_gflops = flops / (result["scratch_min_ms"] / 1e3) / 1e9
        torch_gflops = flops / (result["torch_min_ms"] / 1e3) / 1e9
        _CACHE[key] = {
            "size": size, "threads": result["threads"], "repeats": repeats,
            "numpy_gflops": numpy_gflops, "torch_gflops": torch_gflops,
            "peak_gflops": max(numpy_gflops, torch_gflops),
            "peak_library": "numpy" if numpy_gflops >= torch_gflops else "torch",
            "numpy_median_gflops": result["gflops_scratch"], "torch_median_gflops": result["gflops_torch"],
            "result": result,
        }
        if log is not None:
            log(peak_line(_CACHE[key]))
    return _CACHE[key]


def peak_line(peak: dict) -> str:
    """One sentence: both measurements and the peak taken."""
    threads = peak["threads"].get("blas", peak["threads"].get("torch"))
    return (f"float32 matrix-multiply peak ({peak['size']}x{peak['size']} sgemm, {threads} threads, fastest of "
            f"{peak['repeats']} blocks): NumPy {peak['numpy_gflops']:.1f} GFLOP/s, torch {peak['torch_gflops']:.1f} "
            f"GFLOP/s; peak = {peak['peak_gflops']:.1f} GFLOP/s ({peak['peak_library']})")


def peak_for(args, threads: int | None = None, log=print) -> dict:
    """The peak at ``threads`` (default ``args.threads``) with the suite's options."""
    return measure_peak(threads or args.threads, args.peak_size, args.peak_repeats, args.settle_ms, log=log)


def run(args) -> int:
    from autoencoders.bench import report
    from autoencoders.bench.harness import pin_malloc

    malloc = None if args.default_malloc else pin_malloc()
    peak = peak_for(args)
    env = report.environment_for(args, peak, malloc)
    result = peak["result"]
    markdown = report.header("Float32 matrix-multiply peak", args, env) + [
        "", peak_line(peak) + ".", "",
        f"NumPy median {peak['numpy_median_gflops']:.1f} GFLOP/s, torch median {peak['torch_median_gflops']:.1f} "
        f"GFLOP/s (blocks of {result['scratch_block_calls']} and {result['torch_block_calls']} calls).",
    ]
    paths = report.write_suite(args.out, "peak", [result], env, args, markdown)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def main(argv=None) -> int:
    from autoencoders.bench.options import main_for

    return main_for("peak", argv)


if __name__ == "__main__":
    sys.exit(main())
