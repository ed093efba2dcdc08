"""Likelihood evaluation for the variational autoencoders: per-image −ELBO, importance-sampled
log p(x) (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders"), the KL of each
latent dimension, and the count of active units.

Every function takes a scratch VAE (``model.encode(flat) -> (mean, logvar)``, ``model.decode(z)
-> probabilities``) and NumPy arrays in the model's dtype; images are (N, D) or (N, C, H, W).
Log densities are in nats. The decoder's Bernoulli log-likelihood clamps each log at −100 exactly
as the BCE loss does (torch's convention), so −ELBO here is the training loss, image by image.

The importance-sampled estimate, with z_k ~ q(z|x) = N(μ(x), diag e^{lv(x)}) and K samples,

    log p̂_K(x) = log (1/K) Σ_k w_k,   log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x),

is a lower bound in expectation that tightens with K: E[log p̂_1] = ELBO ≤ E[log p̂_K] ≤
E[log p̂_{K+1}] ≤ log p(x). log w_k is typically −100 to −10⁴ nats, so the weights themselves
underflow; the sum is a log-sum-exp, accumulated across chunks of samples in float64.

These functions run the model's layers forward, which overwrites the activations the layers
keep for a backward pass: do not call them between a ``loss`` and its ``backward``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from scratch import functional as F
from scratch.kernels.losses import BCE_LOG_CLAMP
from scratch.models.vae import _Variational
from scratch.validate import check_integer

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------- log densities


def log_bernoulli(x: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """log p(x | p) = Σ_pixels [x log p + (1 − x) log(1 − p)], each log clamped at −100.

    The clamp is the BCE loss's (and torch's ``binary_cross_entropy``'s): a pixel the decoder
    gets certainly wrong (p rounded to exactly 0 or 1) costs 100 nats instead of ∞, so
    ``-log_bernoulli(x, p).sum()`` equals ``BCELoss(reduction="sum")(p, x)`` (up to the order
    of summation).

    Parameters
    ----------
    x : (..., D)
        Targets in [0, 1] (binary, or grey values as the loss allows).
    probabilities : (..., D)
        Bernoulli means; broadcast against ``x`` (e.g. (K, N, D) against (N, D)).

    Returns
    -------
    (...,) array in the inputs' dtype: the sum over the last axis.
    """
    dtype = np.result_type(x, probabilities)
    clamp = dtype.type(BCE_LOG_CLAMP)
    with np.errstate(divide="ignore"):  # log(0) = −inf, clamped just below
        log_p = np.maximum(np.log(probabilities), clamp)
        log_1mp = np.maximum(np.log1p(-probabilities), clamp)  # log1p: exact for small p
    return (x * log_p + (1 - x) * log_1mp).sum(axis=-1)


def log_normal(z: np.ndarray, mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """log N(z; μ, diag e^{lv}) = −½ Σ_latent [(z − μ)² e^{−lv} + lv + log 2π].

    Written with e^{−lv} multiplying the square rather than dividing by e^{lv}: the only
    exponential is of −lv, and nothing is exponentiated then logged back, so no large number
    is formed that the log would have to undo.

    Parameters
    ----------
    z : (..., L)
    mean, logvar : (..., L)
        Broadcast against ``z`` (e.g. (N, L) against samples (K, N, L)).

    Returns
    -------
    (...,) array: the sum over the latent (last) axis.
    """
    deviation = z - mean
    return -0.5 * (deviation * deviation * np.exp(-logvar) + logvar + LOG_2PI).sum(axis=-1)


def log_standard_normal(z: np.ndarray) -> np.ndarray:
    """log N(z; 0, I) = −½ Σ_latent (z² + log 2π).

    Parameters
    ----------
    z : (..., L)

    Returns
    -------
    (...,) array: the sum over the last axis.
    """
    return -0.5 * (z * z + LOG_2PI).sum(axis=-1)


def _log_q_of_reparameterized(eps: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """log q(z|x) at z = μ + e^{½lv} ε, from ε: −½ Σ (ε² + lv + log 2π).

    Equal to ``log_normal(z, mean, logvar)`` in exact arithmetic, since (z − μ)² e^{−lv} = ε²;
    but z − μ recovers σε only to ~u|μ|/σ relative, which a small σ turns into a large error.
    """
    return -0.5 * (eps * eps + logvar + LOG_2PI).sum(axis=-1)


# ---------------------------------------------------------------------------- helpers


def _positive_int(owner: str, **values) -> None:
    for label, value in values.items():
        check_integer(value, owner, label, minimum=1)


def _flatten(model, images: np.ndarray, owner: str) -> np.ndarray:
    """(N, D) view of (N, D) or (N, C, H, W) images, checked against the model's input shape."""
    if not isinstance(model, _Variational):  # encode must give (mean, logvar), decode probabilities
        raise TypeError(f"{owner}: model must be a scratch VAE (vae, seed-vae, beta-vae, conv-vae), "
                        f"got {type(model).__name__}")
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{owner}: images must be a NumPy array, got {type(images).__name__}")
    if images.ndim not in (2, 4) or images.shape[0] == 0:
        raise ValueError(f"{owner}: images must be (N, D) or (N, C, H, W) with N >= 1, got shape {images.shape}")
    if images.dtype != model.dtype:
        raise TypeError(f"{owner}: images have dtype {images.dtype} but the model is {model.dtype}; "
                        f"convert with images.astype(np.{model.dtype.name})")
    return model._flatten_input(images, name="images")  # D, and a conv model's (C, H, W)


def _check_noise(eps, shape, dtype, owner: str) -> np.ndarray:
    if not isinstance(eps, np.ndarray):
        raise TypeError(f"{owner}: eps must be a NumPy array, got {type(eps).__name__}")
    if eps.dtype != dtype:
        raise TypeError(f"{owner}: eps has dtype {eps.dtype} but the model is {dtype}")
    if eps.shape != tuple(shape):
        raise ValueError(f"{owner}: eps must have shape {tuple(shape)}, got {eps.shape}")
    return eps


def _reparameterize(mean: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """z = μ + e^{½lv} ε through the model's own kernel, so z is bit-for-bit the loss's z.

    mean, logvar: (N, L); eps: (..., N, L) -> z (..., N, L).
    """
    shape = eps.shape
    mean = np.broadcast_to(mean, shape).reshape(-1, shape[-1])
    logvar = np.broadcast_to(logvar, shape).reshape(-1, shape[-1])
    z, _ = F.reparameterize_forward(mean, logvar, eps.reshape(-1, shape[-1]))
    return z.reshape(shape)


# ---------------------------------------------------------------------------- ELBO and KL


def negative_elbo(model, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Per-image −ELBO in nats: BCE(x̂, x) summed over pixels + KL(q(z|x) ‖ N(0, I)) summed over
    latents, with x̂ = decode(μ + e^{½lv} ε) — one sample, the training objective's.

    ``negative_elbo(model, x, eps).sum()`` equals ``model.loss(x, noise=eps)["recon"] + ["kl"]``
    (β does not enter: this is the ELBO, not the β-weighted objective).

    Parameters
    ----------
    model : a scratch VAE
    x : (N, D) or (N, C, H, W), in the model's dtype, values in [0, 1]
    eps : (N, latent_dim) standard normal noise, the model's dtype

    Returns
    -------
    (N,) array in the model's dtype.
    """
    owner = "negative_elbo"
    flat = _flatten(model, x, owner)
    eps = _check_noise(eps, (flat.shape[0], model.config["latent_dim"]), model.dtype, owner)
    mean, logvar = model.encode(flat)
    probabilities = model.decode(_reparameterize(mean, logvar, eps))
    kl = F.gaussian_kl_forward(mean, logvar, "none")[0].sum(axis=1)  # the loss's KL kernel
    return -log_bernoulli(flat, probabilities) + kl


def _encoded_batches(model, flat: np.ndarray, batch_size: int):
    """Yield (start, batch, mean, logvar) over flat (N, D) images in batches of ``batch_size``."""
    for start in range(0, flat.shape[0], batch_size):
        batch = flat[start:start + batch_size]
        mean, logvar = model.encode(batch)
        yield start, batch, mean, logvar


def kl_per_dimension(model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The KL term of each latent dimension, ½(μ_u² + e^{lv_u} − 1 − lv_u), averaged over images.

    Sums to the mean KL per image; dimensions near 0 nats carry no information about x
    (posterior collapse).

    Parameters
    ----------
    model : a scratch VAE
    images : (N, D) or (N, C, H, W), the model's dtype
    batch_size : images encoded at a time (bounds memory)

    Returns
    -------
    (latent_dim,) float64 array, in nats per image.
    """
    owner = "kl_per_dimension"
    _positive_int(owner, batch_size=batch_size)
    flat = _flatten(model, images, owner)
    total = np.zeros(model.config["latent_dim"], dtype=np.float64)
    count = 0
    for _, batch, mean, logvar in _encoded_batches(model, flat, batch_size):
        terms = F.gaussian_kl_forward(mean, logvar, "none")[0]  # (batch, L)
        total += terms.sum(axis=0, dtype=np.float64)  # float64: N can be 10⁴ and more
        count += batch.shape[0]
    return total / count


def active_units(model, images: np.ndarray, threshold: float = 0.01, batch_size: int = 500):
    """Active latent units (Burda et al. 2016, §5.2): unit u is active when
    A_u = Var_x(E_{q(z|x)}[z_u]) = Var over images of μ_u(x) exceeds ``threshold``.

    A unit whose posterior mean does not move with x is ignored by the decoder in effect: its
    KL term is pushed to 0 and it encodes nothing.

    Parameters
    ----------
    model : a scratch VAE
    images : (N, D) or (N, C, H, W), the model's dtype
    threshold : activity threshold (Burda et al. use 10⁻²)
    batch_size : images encoded at a time (bounds the encoder's memory)

    Returns
    -------
    (count, variances): the number of active units (int) and A_u for each unit,
    (latent_dim,) float64 — the population variance (ddof = 0) over the N images.
    """
    # The means themselves are small (N × L); keeping them lets np.var take its two-pass,
    # cancellation-free route rather than a one-pass E[μ²] − E[μ]² accumulated over batches.
    owner = "active_units"
    _positive_int(owner, batch_size=batch_size)
    flat = _flatten(model, images, owner)
    means = [mean.astype(np.float64) for _, _, mean, _ in _encoded_batches(model, flat, batch_size)]
    variances = np.var(np.concatenate(means, axis=0), axis=0)
    return int(np.count_nonzero(variances > threshold)), variances


# ---------------------------------------------------------------------------- importance sampling


def importance_sampled_log_likelihood(model, images: np.ndarray, samples: int | None = None, *, rng=None,
                                      batch_size: int = 100, chunk: int = 100,
                                      eps: np.ndarray | None = None) -> np.ndarray:
    """log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), for each image.

    Images are processed ``batch_size`` at a time and each batch's K samples ``chunk`` at a time,
    so at most batch_size × chunk latent codes are decoded at once (memory: that many rows of
    D probabilities). Across chunks a running log-sum-exp is kept in float64: the maximum m of
    the log-weights seen so far and s = Σ exp(log w − m); a new chunk with maximum m' rescales s
    by exp(m − m') ≤ 1. No weight is ever exponentiated un-shifted, so log-weights of −10⁴
    nats (which underflow exp) give a finite result.

    Parameters
    ----------
    model : a scratch VAE
    images : (N, D) or (N, C, H, W), the model's dtype
    samples : K, the number of importance samples per image; defaults to ``eps.shape[0]`` when
        ``eps`` is given, else 5000 (Burda et al.'s choice)
    rng : numpy Generator, int seed or None; draws ε when ``eps`` is not given. The draws are
        taken per (batch, chunk), so with drawn noise the estimate's *value* depends on
        batch_size and chunk (its distribution does not); pass ``eps`` for a fixed result.
    batch_size : images per batch
    chunk : samples per chunk
    eps : optional (K, N, latent_dim) standard normal noise in the model's dtype; sample k of
        image n is z = μ(x_n) + e^{½lv(x_n)} ε[k, n]

    Returns
    -------
    (N,) float64 array of log p̂_K(x) in nats. For K = 1 it is the one-sample ELBO
    log p(x|z) + log p(z) − log q(z|x): ``negative_elbo`` for the same ε shares its
    reconstruction term but uses the analytic KL (as the loss does), so the two agree only in
    expectation over ε; they differ, image by image, by KL − [log q(z|x) − log p(z)].
    """
    owner = "importance_sampled_log_likelihood"
    _positive_int(owner, batch_size=batch_size, chunk=chunk)
    flat = _flatten(model, images, owner)
    n, latent = flat.shape[0], model.config["latent_dim"]
    if eps is not None:
        if not isinstance(eps, np.ndarray) or eps.ndim != 3:
            raise ValueError(f"{owner}: eps must be a (K, N, latent_dim) NumPy array, got "
                             f"{getattr(eps, 'shape', type(eps).__name__)}")
        samples = eps.shape[0] if samples is None else samples
        _positive_int(owner, samples=samples)
        eps = _check_noise(eps, (samples, n, latent), model.dtype, owner)
    else:
        samples = 5000 if samples is None else samples
        _positive_int(owner, samples=samples)
        rng = np.random.default_rng(rng)
    result = np.empty(n, dtype=np.float64)
    for start, batch, mean, logvar in _encoded_batches(model, flat, batch_size):
        rows = slice(start, start + batch.shape[0])
        running_max = np.full(batch.shape[0], -np.inf)  # m, float64
        running_sum = np.zeros(batch.shape[0])  # s = Σ exp(log w − m), float64
        for first in range(0, samples, chunk):
            count = min(chunk, samples - first)
            if eps is None:
                noise = rng.standard_normal((count, batch.shape[0], latent)).astype(model.dtype)
            else:
                noise = eps[first:first + count, rows]
            z = _reparameterize(mean, logvar, noise)  # (count, batch, L)
            probabilities = model.decode(z.reshape(-1, latent)).reshape(count, batch.shape[0], -1)
            # Each term in float64 before adding: in float32 the sum of terms of ~10³ nats would
            # lose ~10⁻⁴ nats, which is then exponentiated relative to the others.
            log_weights = (log_bernoulli(batch, probabilities).astype(np.float64)
                           + log_standard_normal(z).astype(np.float64)
                           - _log_q_of_reparameterized(noise, logvar).astype(np.float64))  # (count, batch)
            new_max = np.maximum(running_max, log_weights.max(axis=0))
            # exp(−inf − finite) = 0 discards the empty initial sum on the first chunk
            running_sum = running_sum * np.exp(running_max - new_max) + np.exp(log_weights - new_max).sum(axis=0)
            running_max = new_max
        result[rows] = running_max + np.log(running_sum) - math.log(samples)
    return result


class NLLEstimate(NamedTuple):
    """Mean −log p̂_K(x) over images, in nats, and its standard error across images."""

    nll: float
    standard_error: float


def importance_sampled_nll(model, images: np.ndarray, samples: int | None = None, *, rng=None,
                           batch_size: int = 100, chunk: int = 100, eps: np.ndarray | None = None) -> NLLEstimate:
    """The test-set negative log-likelihood: mean over images of −log p̂_K(x), in nats.

    Arguments as ``importance_sampled_log_likelihood``. The standard error is the sample
    standard deviation (ddof = 1) of −log p̂_K(x) over the N images divided by √N: it measures
    the spread across images (plus the estimator's own noise), not the bound's bias; NaN for
    N = 1.

    Returns
    -------
    NLLEstimate(nll, standard_error), two floats (a tuple: ``nll, se = ...`` unpacks it).
    """
    nll = -importance_sampled_log_likelihood(model, images, samples, rng=rng, batch_size=batch_size,
                                             chunk=chunk, eps=eps)
    error = float(np.std(nll, ddof=1) / math.sqrt(nll.size)) if nll.size > 1 else float("nan")
    return NLLEstimate(float(nll.mean()), error)


__all__ = ["NLLEstimate", "active_units", "importance_sampled_log_likelihood", "importance_sampled_nll",
           "kl_per_dimension", "log_bernoulli", "log_normal", "log_standard_normal", "negative_elbo"]
