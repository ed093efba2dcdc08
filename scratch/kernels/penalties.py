"""Numba kernels for the sparse and contractive autoencoders' penalties, beside NumPy references.

- ``kl_sparsity_forward``   out[j] = ρ log(ρ/r_j) + (1 - ρ) log((1 - ρ)/(1 - r_j))
- ``kl_sparsity_backward``  out[j] = scale·(-ρ/r_j + (1 - ρ)/(1 - r_j)) where lower ≤ ρ̂_j ≤ upper, else 0
- ``contractive_forward``   out[n] = Σ_j (h_nj (1 - h_nj))² s_j, the squared Frobenius norm of a
  sigmoid encoder's Jacobian for example n (s_j = Σ_i W_ji², precomputed)
- ``contractive_backward``  dh[n, j] = scale·2 s_j a_nj (1 - 2 h_nj);  column_sums[j] = Σ_n a_nj²,
  with a = h (1 - h)

r is ρ̂ clamped into [lower, upper] by the caller; the bounds and every scalar come in from one
level up (kernels hold no policy). Derivations: docs/penalties.md. Conventions as in
``scratch.kernels.activations``: arithmetic in the arrays' dtype (constants are
``dtype.type(...)``), ``error_model="numpy"``, serial, cached on disk. Loop nests: one pass over j
for the KL kernels (a row of hidden units); for the contractive kernels rows n outside, units j
inside and contiguous, so LLVM vectorizes the inner loop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# ---------------------------------------------------------------------------- KL sparsity


@njit(cache=True, error_model="numpy")
def kl_sparsity_forward(rho_hat, rho, out):
    """out[j] = KL(Bernoulli(ρ) ‖ Bernoulli(r_j)), r = ``rho_hat`` already clamped into (0, 1).

    ``rho`` is a 0 < ρ < 1 scalar of the arrays' dtype. Loop: one pass over j.
    """
    one = rho_hat.dtype.type(1)
    for j in range(rho_hat.shape[0]):
        r = rho_hat[j]
        out[j] = rho * math.log(rho / r) + (one - rho) * math.log((one - rho) / (one - r))


@njit(cache=True, error_model="numpy")
def kl_sparsity_backward(rho_hat, rho, lower, upper, scale, out):
    """out[j] = scale·(-ρ/r + (1 - ρ)/(1 - r)), r = clamp(ρ̂_j, lower, upper); 0 outside the bounds.

    ``rho_hat`` is the *unclamped* batch mean: the clamp passes the gradient where
    lower ≤ ρ̂_j ≤ upper (bounds included, as torch's ``clamp``) and stops it outside.
    Loop: one pass over j.
    """
    zero, one = rho_hat.dtype.type(0), rho_hat.dtype.type(1)
    for j in range(rho_hat.shape[0]):
        r = rho_hat[j]
        if r < lower or r > upper:
            out[j] = zero
        else:
            out[j] = scale * (-rho / r + (one - rho) / (one - r))


def kl_sparsity_forward_reference(rho_hat, rho):
    return (rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))).astype(rho_hat.dtype)


def kl_sparsity_backward_reference(rho_hat, rho, lower, upper, scale):
    inside = (rho_hat >= lower) & (rho_hat <= upper)
    clamped = np.clip(rho_hat, lower, upper)
    return np.where(inside, scale * (-rho / clamped + (1 - rho) / (1 - clamped)), 0).astype(rho_hat.dtype)


# ---------------------------------------------------------------------------- contractive


@njit(cache=True, error_model="numpy")
def contractive_forward(hidden, row_norms_sq, out):
    """out[n] = Σ_j (h_nj (1 - h_nj))² s_j = ‖∂h_n/∂x_n‖²_F for h = σ(W x + b).

    hidden (N, H), row_norms_sq (H,) = Σ_i W_ji², out (N,). Loop: n, then j (summed in order).
    """
    one = hidden.dtype.type(1)
    for n in range(hidden.shape[0]):
        total = hidden.dtype.type(0)
        for j in range(hidden.shape[1]):
            h = hidden[n, j]
            a = h * (one - h)
            total += a * a * row_norms_sq[j]
        out[n] = total


@njit(cache=True, error_model="numpy")
def contractive_backward(hidden, row_norms_sq, scale, grad_hidden, column_sums):
    """grad_hidden[n, j] = scale·2 s_j a (1 - 2h) and column_sums[j] = Σ_n a², a = h_nj (1 - h_nj).

    grad_hidden is dP/dh for P = scale·Σ_n Σ_j a² s_j (the path through h); column_sums gives
    the direct path dP/dW_j = 2·scale·column_sums[j]·W_j one level up. hidden, grad_hidden
    (N, H); row_norms_sq, column_sums (H,), column_sums overwritten. Loop: n, then j.
    """
    one, two = hidden.dtype.type(1), hidden.dtype.type(2)
    for j in range(hidden.shape[1]):
        column_sums[j] = hidden.dtype.type(0)
    for n in range(hidden.shape[0]):
        for j in range(hidden.shape[1]):
            h = hidden[n, j]
            a = h * (one - h)
            grad_hidden[n, j] = scale * two * row_norms_sq[j] * a * (one - two * h)
            column_sums[j] += a * a


def contractive_forward_reference(hidden, row_norms_sq):
    a = hidden * (1 - hidden)
    return ((a * a) @ row_norms_sq).astype(hidden.dtype)


def contractive_backward_reference(hidden, row_norms_sq, scale):
    a = hidden * (1 - hidden)
    grad_hidden = scale * 2 * row_norms_sq * a * (1 - 2 * hidden)
    return grad_hidden.astype(hidden.dtype), (a * a).sum(axis=0).astype(hidden.dtype)
