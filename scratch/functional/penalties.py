"""The autoencoders' penalties as forward/backward pairs. Derivations: docs/penalties.md.

Each penalty is a scalar of a batch of hidden activations h (N, H), *averaged over the batch*
like the reconstruction it is added to (per-image sums, then the batch mean). ``*_forward``
returns ``(penalty, cache)`` with the penalty a 0-d array; ``*_backward(grad_output, cache)``
returns the gradient of ``grad_output · penalty`` with respect to each array input.
"""

from __future__ import annotations

import math

import numpy as np

from scratch.kernels import penalties as kernels


def _scalar(value, dtype) -> np.generic:
    return np.dtype(dtype).type(value)


def clamp_bounds(dtype) -> tuple[float, float]:
    """[√tiny, 1 - ε/2]: where ρ̂ is clamped before its logs and quotients.

    1 - ε/2 is the largest number below 1 in the dtype, so the upper bound only catches ρ̂ = 1;
    √tiny (1.1e-19 in float32) keeps ρ/ρ̂ and β/N·ρ/ρ̂ far from overflow while a nearly dead unit
    (z ≈ -40 on every example) still gets the gradient that revives it. Python floats, so that
    both backends round the same numbers to the dtype.
    """
    info = np.finfo(dtype)
    return math.sqrt(float(info.tiny)), 1.0 - float(info.eps) / 2


def kl_sparsity_forward(hidden: np.ndarray, target: float, weight: float):
    """P = β Σ_j KL(ρ ‖ ρ̂_j) with ρ̂_j = (1/N) Σ_n h_nj, the batch mean of unit j (Ng's sparsity).

    Parameters
    ----------
    hidden : (N, H), activations in [0, 1] (a sigmoid layer's output)
    target : ρ, 0 < ρ < 1, the wanted mean activation
    weight : β ≥ 0

    ρ̂ is clamped into [√tiny, 1 - ε/2] (``clamp_bounds``) before its logs, so a unit at exactly
    0 or 1 over the whole batch gives a large, finite penalty instead of inf (and no gradient).
    """
    dtype = hidden.dtype
    rho_hat = hidden.mean(axis=0)  # (H,)
    lower, upper = clamp_bounds(dtype)
    clamped = np.clip(rho_hat, _scalar(lower, dtype), _scalar(upper, dtype))  # (H,)
    terms = np.empty_like(rho_hat)  # (H,) KL of each unit
    kernels.kl_sparsity_forward(clamped, _scalar(target, dtype), terms)
    penalty = _scalar(weight, dtype) * terms.sum(dtype=dtype)
    return penalty, (hidden.shape, rho_hat, target, weight)


def kl_sparsity_backward(grad_output, cache) -> np.ndarray:
    """dP/dh_nj = (β/N)·(-ρ/ρ̂_j + (1 - ρ)/(1 - ρ̂_j)): the same for every example n of the batch,
    since each one moves ρ̂_j by 1/N. Returns (N, H)."""
    shape, rho_hat, target, weight = cache
    dtype = rho_hat.dtype
    lower, upper = clamp_bounds(dtype)
    row = np.empty_like(rho_hat)  # (H,) dP/dρ̂ / N
    scale = _scalar(float(grad_output) * weight / shape[0], dtype)
    kernels.kl_sparsity_backward(rho_hat, _scalar(target, dtype), _scalar(lower, dtype), _scalar(upper, dtype),
                                 scale, row)
    return np.broadcast_to(row, shape).copy()  # (N, H): one row per example


def l1_activity_forward(hidden: np.ndarray, weight: float):
    """P = (λ/N) Σ_n Σ_j |h_nj|, the L1 activity penalty. hidden (N, H)."""
    dtype = hidden.dtype
    penalty = _scalar(weight, dtype) * (np.abs(hidden).sum(dtype=dtype) / _scalar(hidden.shape[0], dtype))
    return penalty, (hidden, weight)


def l1_activity_backward(grad_output, cache) -> np.ndarray:
    """dP/dh = (λ/N)·sign(h), 0 at h = 0 (torch's ``abs`` convention). Returns (N, H)."""
    hidden, weight = cache
    return np.sign(hidden) * _scalar(float(grad_output) * weight / hidden.shape[0], hidden.dtype)


def contractive_forward(hidden: np.ndarray, weight_matrix: np.ndarray, strength: float):
    """P = (λ/N) Σ_n ‖∂h_n/∂x_n‖²_F for a sigmoid encoder h = σ(x Wᵀ + b) (Rifai et al. 2011).

    ∂h_nj/∂x_ni = h_nj (1 - h_nj) W_ji, so ‖J_n‖²_F = Σ_j (h_nj (1 - h_nj))² Σ_i W_ji².

    Parameters
    ----------
    hidden : (N, H), the encoder's sigmoid output
    weight_matrix : (H, D), the encoder's weight W
    strength : λ ≥ 0
    """
    dtype = hidden.dtype
    row_norms_sq = np.einsum("ji,ji->j", weight_matrix, weight_matrix)  # (H,) s_j = Σ_i W_ji²
    per_example = np.empty(hidden.shape[0], dtype=dtype)  # (N,) ‖J_n‖²_F
    kernels.contractive_forward(np.ascontiguousarray(hidden), row_norms_sq, per_example)
    penalty = _scalar(strength, dtype) * (per_example.sum(dtype=dtype) / _scalar(hidden.shape[0], dtype))
    return penalty, (np.ascontiguousarray(hidden), weight_matrix, row_norms_sq, strength)


def contractive_backward(grad_output, cache) -> tuple[np.ndarray, np.ndarray]:
    """(dP/dh, dP/dW): the path through h, dP/dh_nj = (λ/N)·2 s_j a_nj (1 - 2 h_nj), and the
    direct one, dP/dW_ji = (λ/N)·2 W_ji Σ_n a_nj², with a = h (1 - h). Returns (N, H), (H, D)."""
    hidden, weight_matrix, row_norms_sq, strength = cache
    dtype = hidden.dtype
    scale = _scalar(float(grad_output) * strength / hidden.shape[0], dtype)
    grad_hidden = np.empty_like(hidden)  # (N, H)
    column_sums = np.empty_like(row_norms_sq)  # (H,) Σ_n a_nj²
    kernels.contractive_backward(hidden, row_norms_sq, scale, grad_hidden, column_sums)
    grad_weight = (_scalar(2, dtype) * scale * column_sums)[:, None] * weight_matrix  # (H, D)
    return grad_hidden, grad_weight
