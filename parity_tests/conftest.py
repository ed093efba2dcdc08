"""Hypothesis profiles and process-wide settings for the parity suite.

Profiles (choose with HYPOTHESIS_PROFILE=...):
- ``default``: quick, random; what a developer runs locally.
- ``ci``: the same size, derandomized, so a red CI run reproduces exactly (picked automatically
  when the CI environment variable is set).
- ``thorough``: many more examples, for a deliberate hunt.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("default", max_examples=20, **_common)
settings.register_profile("ci", max_examples=20, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=400, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))

# One thread count for the whole suite, so that no pool waits on another: torch and Numba each
# run min(2, cores) threads (Numba's parallel kernels keep running on more than one), and BLAS
# runs one, because OpenBLAS's threads busy-wait ~0.1 s after each call and then slow whichever
# of torch or Numba runs next (autoencoders/bench/harness.py measured up to 2x). Tests that are
# about thread counts set them explicitly. The processes the tests start get the same counts
# through the environment, so that a run killed in a process and resumed in this one (or the
# other way round) computes with the same threads as the uninterrupted run it is compared with,
# bit for bit.
THREADS = min(2, os.cpu_count() or 1)
os.environ.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS=str(THREADS),
                  OMP_NUM_THREADS=str(THREADS))

try:
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(THREADS)
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=1, user_api="blas")
except ImportError:  # pragma: no cover - all three are dependencies
    pass
