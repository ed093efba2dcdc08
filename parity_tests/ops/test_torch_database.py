"""Oracle 4 for every op family: torch's own sample inputs (OpInfo, ModuleInfo, OptimizerInfo).

Each test runs every sample torch's developers wrote for one torch entry that scratch
implements, in one dtype, through scratch and through torch, and compares outputs, input and
parameter gradients, state (buffers) and optimizer updates (``parity_tests/torch_database.py``
maps each sample onto scratch's API). Excluded cases, with their reasons, are the
``EXCLUSIONS`` table there. The counts (ran, passed, excluded per entry and dtype) are printed
at the end of the run; ``python -m parity_tests.torch_database`` prints them on their own.
"""

from __future__ import annotations

import numpy as np
import pytest

from parity_tests import torch_database as D

ENTRIES = D.entries()


@pytest.mark.parametrize("dtype", D.DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("source, name, entry", ENTRIES, ids=[f"{s}-{n}" for s, n, _ in ENTRIES])
def test_torch_samples_match(source, name, entry, dtype):
    failures = D.run_entry(source, name, entry, dtype)
    counts = D.COUNTS[(source, name, np.dtype(dtype).name)]
    assert counts["ran"] > 0, f"{name}: every case is excluded; an entry that runs nothing proves nothing"
    assert not failures, (f"{len(failures)} of {counts['ran']} torch samples of {name} differ:\n"
                          + "\n".join(f[:800] for f in failures[:8]))


def test_every_scratch_layer_and_optimizer_meets_torchs_samples():
    """The entries are found by name, so a layer scratch gains is picked up; these must be."""
    names = {name for _, name, _ in ENTRIES}
    for expected in ("nn.Linear", "nn.Conv2d", "nn.ConvTranspose2d", "nn.MaxPool2d", "nn.ReLU", "nn.BCELoss",
                     "nn.functional.conv2d", "nn.functional.max_pool2d", "nn.functional.binary_cross_entropy_with_logits",
                     "nn.BatchNorm1d", "nn.BatchNorm2d", "nn.LayerNorm", "nn.GroupNorm", "nn.GELU", "nn.SiLU", "nn.ELU",
                     "nn.Softplus", "nn.functional.batch_norm", "nn.functional.dropout", "nn.functional.dropout2d",
                     "nn.functional.interpolate.bilinear", "nn.functional.interpolate.nearest",
                     "SGD", "Adam", "AdamW"):
        assert expected in names, f"{expected} is not among the torch entries found: {sorted(names)}"
