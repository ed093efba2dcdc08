"""The reparameterisation z = μ + σ·ε, σ = exp(½·logvar), as a forward/backward pair.

Derivation: docs/vae.md. Shapes: mean, logvar, eps, z all (N, D).
"""

from __future__ import annotations

import numpy as np

from scratch.kernels import vae as kernels


def reparameterize_forward(mean, logvar, eps):
    """z = μ + exp(½ lv) ⊙ ε. Returns (z (N, D), cache)."""
    mean, logvar, eps = (np.ascontiguousarray(a) for a in (mean, logvar, eps))
    z, std = np.empty_like(mean), np.empty_like(mean)
    kernels.reparameterize_forward(mean.reshape(-1), logvar.reshape(-1), eps.reshape(-1), z.reshape(-1), std.reshape(-1))
    return z, (eps, std)


def reparameterize_backward(grad_z, cache):
    """dμ = dz;  dlv = ½ dz ⊙ ε ⊙ σ. Returns (dmean, dlogvar), each (N, D)."""
    eps, std = cache
    grad_z = np.ascontiguousarray(grad_z)
    grad_mean, grad_logvar = np.empty_like(grad_z), np.empty_like(grad_z)
    kernels.reparameterize_backward(grad_z.reshape(-1), eps.reshape(-1), std.reshape(-1),
                                    grad_mean.reshape(-1), grad_logvar.reshape(-1))
    return grad_mean, grad_logvar


def importance_weighted_bound_forward(log_weights):
    """L_K = log (1/K) Σ_k exp(log w_k) per row, a log-sum-exp shifted by the row's maximum so that
    log weights of −10⁴ nats (which underflow as weights) give the exact finite bound.

    Parameters
    ----------
    log_weights : (N, K)
        log w_nk = log p(x_n|z_nk) + log p(z_nk) − log q(z_nk|x_n).

    Returns
    -------
    bound : (N,)
    cache : w̃ (N, K), the normalized importance weights softmax_k(log w_nk)
    """
    log_weights = np.asarray(log_weights)
    top = log_weights.max(axis=1, keepdims=True)  # (N, 1)
    shifted = np.exp(log_weights - top)  # (N, K), each in (0, 1], the largest exactly 1
    total = shifted.sum(axis=1, keepdims=True)  # (N, 1), in [1, K]
    log_k = log_weights.dtype.type(np.log(log_weights.shape[1]))  # in the input's dtype (NEP 50)
    bound = (top + np.log(total))[:, 0] - log_k  # (N,)
    return bound, shifted / total


def importance_weighted_bound_backward(grad_bound, cache):
    """dL/dlog w_nk = dL/dL_K(n) · w̃_nk: the bound's gradient is the softmax-weighted sum of the
    samples' gradients (docs/iwae.md). Returns (N, K)."""
    return np.asarray(grad_bound)[:, None] * cache
