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

try:  # torch and Numba each run on the same, fixed thread count, so runs are comparable
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
except ImportError:  # pragma: no cover - torch is a test dependency
    pass
