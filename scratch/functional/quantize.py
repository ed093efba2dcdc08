"""Vector quantisation (the VQ-VAE's bottleneck, van den Oord et al. 2017) as pure functions.

Derivations: docs/vq-vae.md. Rows, not images: the model hands over z_e (N, D, h, w) as
M = N·h·w rows of D numbers (channels last) and takes z_q back the same way. Symbols:

- z_e (M, D): the encoder's outputs, one row per latent position;
- e, the codebook (K, D): K vectors of D numbers (torch's ``nn.Embedding(K, D).weight``);
- codes (M,) int64: c_m = argmin_k ‖z_m − e_k‖², ties to the FIRST index (torch.argmin's rule);
- z_q (M, D): z_q,m = e_{c_m}.

The loss around the quantiser, with sg the stop-gradient (identity forward, zero derivative):

    L = f(z_e + sg[z_q − z_e]) + a·mean‖sg[z_e] − z_q‖² + b·mean‖z_e − sg[z_q]‖²

(f: the decoder and the reconstruction loss; a = 1 for the codebook term, 0 when the codebook
follows exponential moving averages instead; b = β for the commitment term; means over the M·D
elements). ``vector_quantize_backward`` returns the gradients of that surrogate: the
straight-through copy of dL/dz_q into dL/dz_e, the codebook gradient as a per-code scatter-add,
and the commitment gradient, which reaches z_e only. Shapes are checked one level up
(``scratch.models.vq``); here they are taken as valid.
"""

from __future__ import annotations

import math

import numpy as np


def _scalar(value, dtype) -> np.generic:
    return np.dtype(dtype).type(value)


def squared_distances(z_e: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """‖z_m − e_k‖² expanded as ‖z_m‖² − 2 z_m·e_k + ‖e_k‖², the formula torch users write (and the
    twin evaluates), in the inputs' dtype. z_e (M, D), codebook (K, D) -> (M, K).

    The expansion costs one (M, D)x(D, K) product instead of an (M, K, D) difference array; it
    rounds differently from the direct form (it cancels when z_m is close to e_k), which moves
    the argmin only between codes whose distances agree to rounding, and both backends round it
    alike.
    """
    squared_rows = np.einsum("md,md->m", z_e, z_e)  # (M,) ‖z_m‖²
    squared_codes = np.einsum("kd,kd->k", codebook, codebook)  # (K,) ‖e_k‖²
    products = z_e @ codebook.T  # (M, K) z_m·e_k
    return (squared_rows[:, None] - _scalar(2, z_e.dtype) * products) + squared_codes[None, :]  # (M, K)


def vector_quantize_forward(z_e: np.ndarray, codebook: np.ndarray):
    """Each row of z_e replaced by its nearest codebook vector.

    Parameters
    ----------
    z_e : (M, D), the encoder's outputs as rows
    codebook : (K, D), of z_e's dtype

    Returns
    -------
    z_q : (M, D), z_q,m = e_{c_m} (a new array: the codebook may change afterwards, as the EMA
        update changes it, without changing z_q)
    codes : (M,) int64, c_m = argmin_k ‖z_m − e_k‖², the first such k on a tie
    cache : what ``vector_quantize_backward`` and ``quantization_error`` need: (z_e, z_q, codes, K)
    """
    distances = squared_distances(z_e, codebook)  # (M, K)
    codes = np.argmin(distances, axis=1).astype(np.int64, copy=False)  # (M,) NumPy's argmin: first minimum
    z_q = codebook[codes]  # (M, D) a gather: a copy
    return z_q, codes, (z_e, z_q, codes, codebook.shape[0])


def quantization_error(cache) -> np.ndarray:
    """mean over the M·D elements of (z_q − z_e)², a 0-d array in z_e's dtype.

    The value of both the codebook loss mean‖sg[z_e] − z_q‖² and the commitment loss
    mean‖z_e − sg[z_q]‖²: the stop-gradients change which side receives a gradient, not the value.
    Sonnet's VectorQuantizer reduces them the same way (a mean over every element)."""
    z_e, z_q, _, _ = cache
    difference = z_q - z_e  # (M, D)
    return np.mean(difference * difference, dtype=z_e.dtype)


def _per_code_sums(rows: np.ndarray, codes: np.ndarray, num_embeddings: int) -> np.ndarray:
    """S_k = Σ_{m: c_m = k} rows_m, (K, D), in rows' dtype (accumulated in float64).

    One ``bincount`` over the flat index c_m·D + d: a scatter-add without a Python loop over D.
    A code no row chose gets a zero row."""
    count, width = rows.shape
    index = (codes[:, None] * width + np.arange(width)).reshape(-1)  # (M·D,) where each element goes
    sums = np.bincount(index, weights=rows.reshape(-1), minlength=num_embeddings * width)  # (K·D,) float64
    return sums.reshape(num_embeddings, width).astype(rows.dtype, copy=False)


def vector_quantize_backward(grad_z_q, cache, codebook_weight: float = 1.0, commitment_weight: float = 0.25):
    """The gradients of the straight-through surrogate (module docstring) at the forward's point.

        dL/dz_e = dL/dz_q + b·(2/(M·D))·(z_e − z_q)                  (straight-through + commitment)
        dL/de_k = a·(2/(M·D))·Σ_{m: c_m = k} (e_k − z_m)              (codebook; 0 for unused codes)

    Parameters
    ----------
    grad_z_q : (M, D), dL/dz_q from the decoder (its f only, not the two quantisation terms)
    cache : from ``vector_quantize_forward``
    codebook_weight : a, dL/d(codebook loss): 1, or 0 when the codebook learns by EMA
    commitment_weight : b, dL/d(commitment loss) = β

    Returns
    -------
    grad_z_e : (M, D)
    grad_codebook : (K, D). Only the codebook term reaches the codebook: the reconstruction's
        gradient stops at sg[z_q − z_e] and the commitment's at sg[z_q].
    """
    z_e, z_q, codes, num_embeddings = cache
    dtype = z_e.dtype
    difference = z_q - z_e  # (M, D) z_q − z_e; exactly 0 in no row, in general
    step = _scalar(2.0 / max(z_e.size, 1), dtype)  # 2/(M·D), the derivative of the mean of squares
    grad_z_e = np.asarray(grad_z_q, dtype=dtype) - (_scalar(commitment_weight, dtype) * step) * difference  # (M, D)
    grad_codebook = (_scalar(codebook_weight, dtype) * step) * _per_code_sums(difference, codes, num_embeddings)  # (K, D)
    return grad_z_e, grad_codebook


def codebook_ema_update(z_e, codes, codebook, cluster_size, ema_weight, decay: float, epsilon: float) -> None:
    """The codebook's exponential-moving-average update (the paper's appendix; Sonnet's
    VectorQuantizerEMA), in place:

        N_k ← γ·N_k + (1 − γ)·n_k                n_k = #{m: c_m = k}
        m_k ← γ·m_k + (1 − γ)·Σ_{m: c_m = k} z_m
        Ñ_k = (N_k + ε) / (n + K·ε) · n           n = Σ_k N_k (Laplace smoothing: Ñ_k > 0, Σ Ñ_k = n)
        e_k = m_k / Ñ_k

    Parameters
    ----------
    z_e : (M, D), the rows the codes were chosen for
    codes : (M,) int64
    codebook : (K, D), e, overwritten
    cluster_size : (K,), N, updated
    ema_weight : (K, D), m, updated
    decay : γ in [0, 1)
    epsilon : ε > 0
    """
    dtype = codebook.dtype
    num_embeddings = codebook.shape[0]
    counts = np.bincount(codes, minlength=num_embeddings).astype(dtype)  # (K,) n_k, exact integers
    sums = _per_code_sums(z_e, codes, num_embeddings)  # (K, D) Σ z_m per code
    gamma, rest = _scalar(decay, dtype), _scalar(1.0 - decay, dtype)
    cluster_size *= gamma
    cluster_size += rest * counts  # (K,) N
    ema_weight *= gamma
    ema_weight += rest * sums  # (K, D) m
    total = cluster_size.sum(dtype=dtype)  # n
    eps = _scalar(epsilon, dtype)
    smoothed = (cluster_size + eps) / (total + _scalar(num_embeddings, dtype) * eps) * total  # (K,) Ñ
    np.divide(ema_weight, smoothed[:, None], out=codebook)  # (K, D) e = m / Ñ


def code_counts(codes: np.ndarray, num_embeddings: int) -> np.ndarray:
    """How many positions chose each code: (K,) int64 (codes of any shape, values in [0, K))."""
    return np.bincount(np.asarray(codes).reshape(-1), minlength=num_embeddings).astype(np.int64, copy=False)


def perplexity(codes: np.ndarray, num_embeddings: int) -> float:
    """exp(H) of the codes' frequencies p_k = n_k / Σ n: exp(−Σ_k p_k log p_k), with 0·log 0 = 0.

    1 when every position chose one code, K when all K codes were chosen equally often: the
    effective number of codes in use. NaN for no codes at all (0/0)."""
    counts = code_counts(codes, num_embeddings).astype(np.float64)  # (K,)
    total = counts.sum()
    if total == 0:
        return math.nan
    p = counts[counts > 0] / total  # the codes in use; the others add 0·log 0 = 0
    return float(np.exp(-np.sum(p * np.log(p))))
