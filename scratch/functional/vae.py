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
