"""A scratch model's torch twin holding the same weights: the one place tests build it."""

from __future__ import annotations

import torch

from torch_impl.models import build as torch_build


def twin_of(model, dtype) -> torch.nn.Module:
    """``torch_impl.models.build(model.name, **model.config)`` in ``dtype`` with the model's weights (strict)."""
    twin = torch_build(model.name, dtype=dtype, **model.config)
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}, strict=True)
    return twin
