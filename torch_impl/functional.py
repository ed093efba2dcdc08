"""Torch-side pieces with no torch.nn equivalent, written as plain autograd expressions."""

from __future__ import annotations

import numpy as np
import torch


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(N(μ, diag e^{lv}) ‖ N(0, I)) = -½ Σ (1 + lv - μ² - e^{lv}), the textbook form.

    reduction: "sum", "batchmean" (sum / N), "mean" (over elements) or "none".
    """
    terms = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp())
    if reduction == "none":
        return terms
    if reduction == "sum":
        return terms.sum()
    if reduction == "batchmean":
        return terms.sum() / mean.shape[0]
    if reduction == "mean":
        return terms.mean()
    raise ValueError(f"gaussian_kl: unknown reduction {reduction!r}")


def resolve_dtype(dtype) -> torch.dtype:
    """Accept torch dtypes and NumPy float dtypes alike."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    resolved = np.dtype(dtype)
    if resolved == np.float32:
        return torch.float32
    if resolved == np.float64:
        return torch.float64
    raise TypeError(f"dtype must be float32 or float64, got {resolved}")


def as_tensor(value, like: torch.Tensor, owner: str, name: str) -> torch.Tensor:
    """A NumPy array or tensor as a tensor of ``like``'s dtype and shape (checked)."""
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if tensor.shape != like.shape:
        raise ValueError(f"{owner}: {name} must have shape {tuple(like.shape)}, got {tuple(tensor.shape)}")
    return tensor
