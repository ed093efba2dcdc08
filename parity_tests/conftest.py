"""Hypothesis profiles and process-wide settings for the parity suite.

Profiles (choose with HYPOTHESIS_PROFILE=...):
- ``default``: quick, random; what a developer runs locally.
- ``ci``: the same size, derandomized, so a red CI run reproduces exactly (picked automatically
  when the CI environment variable is set).
- ``thorough``: many more examples, for a deliberate hunt.
- ``ci-thorough``: as many, derandomized; CI runs the op families (parity_tests/ops/) with it.
"""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("default", max_examples=20, **_common)
settings.register_profile("ci", max_examples=20, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=400, **_common)
settings.register_profile("ci-thorough", max_examples=400, derandomize=True, **_common)
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

import numba  # noqa: E402 - after the environment above, which Numba reads at import
import pytest  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import ThreadpoolController  # noqa: E402

NUMBA_THREADS = min(THREADS, numba.config.NUMBA_NUM_THREADS)
_blas = {"modules": -1, "controller": None}


def _blas_libraries():
    """The BLAS libraries loaded now (scipy brings its own OpenBLAS later than NumPy's); rescanned,
    at ~3 ms, only when a module was imported since the last scan."""
    if len(sys.modules) != _blas["modules"]:
        _blas["controller"] = ThreadpoolController().select(user_api="blas")
        _blas["modules"] = len(sys.modules)
    return _blas["controller"]


def _set_suite_thread_counts() -> None:
    """torch and Numba at THREADS, BLAS at 1; only what differs is set (each check costs microseconds)."""
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)
    if numba.get_num_threads() != NUMBA_THREADS:
        numba.set_num_threads(NUMBA_THREADS)
    blas = _blas_libraries()
    if any(library.num_threads != 1 for library in blas.lib_controllers):
        blas.limit(limits=1)


_set_suite_thread_counts()


@pytest.fixture(autouse=True)
def _suite_thread_counts():
    """Each test starts with the suite's thread counts: a run resumed in this process sets the
    counts its checkpoint recorded (as it should), and that must not leak into the next test."""
    _set_suite_thread_counts()
    yield
    _set_suite_thread_counts()  # before the next test's wider-scoped fixtures run, too


def pytest_terminal_summary(terminalreporter):
    """The fourth oracle's counts (ran, passed, excluded per torch entry), when its tests ran."""
    database = sys.modules.get("parity_tests.torch_database")
    if database is not None and database.COUNTS:
        terminalreporter.write_sep("-", "torch's own sample inputs (parity_tests/torch_database.py)")
        terminalreporter.write_line(database.report())
