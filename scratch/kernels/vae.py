"""Numba kernels for the VAE's reparameterisation z = μ + σ·ε, σ = exp(½·logvar), each beside
its plain NumPy reference; ``scratch.functional.vae`` calls them.

They follow the conventions of ``scratch.kernels.activations`` (flat C-contiguous arrays,
outputs preallocated by the caller, one serial loop over the flat index, cached on disk,
``error_model="numpy"``), with one exception: the arithmetic keeps float64 intermediates (a bare
``0.5``), since ``exp`` has no float32 SIMD path here anyway. Derivation: docs/vae.md.

The ``*_reference`` functions compute the same op with whole-array NumPy expressions; tests hold
each kernel against its reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def reparameterize_forward(mean, logvar, eps, z, std):
    """std[i] = exp(½ logvar[i]); z[i] = mean[i] + std[i] · eps[i]. Loop: one pass over i.

    σ = exp(½ lv), not exp(lv): lv is the log of the *variance*. Finite for lv in [-80, 80].
    """
    for i in range(mean.shape[0]):
        s = np.exp(0.5 * logvar[i])
        std[i] = s
        z[i] = mean[i] + s * eps[i]


@njit(cache=True, error_model="numpy")
def reparameterize_backward(grad_z, eps, std, grad_mean, grad_logvar):
    """dmean = dz;  dlogvar = dz · ε · ½σ (since dz/dlv = ε · dσ/dlv = ε · ½σ). One pass over i."""
    for i in range(grad_z.shape[0]):
        grad_mean[i] = grad_z[i]
        grad_logvar[i] = grad_z[i] * eps[i] * 0.5 * std[i]


def reparameterize_forward_reference(mean, logvar, eps):
    std = np.exp(logvar / 2)
    return mean + std * eps, std


def reparameterize_backward_reference(grad_z, eps, std):
    return grad_z.copy(), (grad_z * eps * std / 2).astype(grad_z.dtype)
