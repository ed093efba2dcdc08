"""The reparameterisation z = μ + exp(½ lv)·ε (docs/vae.md).

The three oracles of docs/README.md, for ``scratch/functional/vae.py`` and ``scratch/kernels/vae.py``
(no ``scratch.nn`` layer: the VAE models call the functional pair):

1. torch parity: z, dμ and d lv against torch autograd through ``mean + torch.exp(0.5 * logvar) * eps``
   (the twins' line in ``torch_impl/models/vae.py``), log-variance up to ±80;
2. central differences of the functional pair, for μ and lv (ε is an input held fixed, as in training);
3. the kernels against their NumPy references.

The VAE models built on it: ``parity_tests/test_models.py``; the Gaussian KL: ``test_losses.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import functional as F
from scratch.gradcheck import gradcheck
from scratch.kernels import vae as V

# ---------------------------------------------------------------------------- oracle 1: torch


@given(batch=S.batch_sizes, latent=S.features, dtype=S.dtypes, seed=S.seeds,
       logvar_scale=st.sampled_from([1.0, 10.0, 80.0]))
def test_reparameterize_matches_torch(batch, latent, dtype, seed, logvar_scale):
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal((batch, latent)).astype(dtype)
    logvar = np.clip(logvar_scale * rng.standard_normal((batch, latent)), -80, 80).astype(dtype)
    eps = rng.standard_normal((batch, latent)).astype(dtype)
    z, cache = F.reparameterize_forward(mean, logvar, eps)
    grad_z = rng.standard_normal(z.shape).astype(dtype)
    grad_mean, grad_logvar = F.reparameterize_backward(grad_z, cache)
    tmean, tlogvar = torch.tensor(mean, requires_grad=True), torch.tensor(logvar, requires_grad=True)
    tz = tmean + torch.exp(0.5 * tlogvar) * torch.from_numpy(eps)
    tz.backward(torch.from_numpy(grad_z))
    assert np.all(np.isfinite(z))
    assert_close(z, tz, "torch", dtype, "z", scale=np.abs(mean) + np.abs(np.exp(0.5 * logvar.astype(np.float64)) * eps))
    assert_close(grad_mean, tmean.grad, "torch", dtype, "dmean")
    assert_close(grad_logvar, tlogvar.grad, "torch", dtype, "dlogvar", scale=np.abs(tlogvar.grad.numpy()))


# ---------------------------------------------------------------------------- oracle 2: central differences


@given(batch=S.batch_sizes, latent=S.features, seed=S.seeds)
def test_reparameterize(batch, latent, seed):
    """z = μ + exp(½ lv)·ε: gradients for μ and lv (ε is an input held fixed, as in training)."""
    rng = np.random.default_rng(seed)
    mean, logvar, eps = (rng.standard_normal((batch, latent)) for _ in range(3))
    result = gradcheck((F.reparameterize_forward, F.reparameterize_backward), mean, logvar, eps, wrt=[0, 1],
                       rng=rng, **GRADCHECK)
    assert result.elements_checked == 2 * mean.size


# ---------------------------------------------------------------------------- oracle 3: kernels


@given(n=st.integers(1, 300), dtype=S.dtypes, seed=S.seeds)
def test_reparameterize_kernels(n, dtype, seed):
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(n).astype(dtype)
    logvar = np.clip(20 * rng.standard_normal(n), -80, 80).astype(dtype)
    eps = rng.standard_normal(n).astype(dtype)
    z, std = np.empty_like(mean), np.empty_like(mean)
    V.reparameterize_forward(mean, logvar, eps, z, std)
    expected_z, expected_std = V.reparameterize_forward_reference(mean, logvar, eps)
    assert np.all(np.isfinite(z))
    assert_close(std, expected_std, "kernel", dtype, "reparameterize std", scale=np.abs(expected_std))
    assert_close(z, expected_z, "kernel", dtype, "reparameterize z", scale=np.abs(mean) + np.abs(expected_std * eps))
    grad_z = rng.standard_normal(n).astype(dtype)
    grad_mean, grad_logvar = np.empty_like(mean), np.empty_like(mean)
    V.reparameterize_backward(grad_z, eps, std, grad_mean, grad_logvar)
    expected_mean, expected_logvar = V.reparameterize_backward_reference(grad_z, eps, std)
    np.testing.assert_array_equal(grad_mean, expected_mean)
    assert_close(grad_logvar, expected_logvar, "kernel", dtype, "reparameterize dlogvar", scale=np.abs(expected_logvar))
