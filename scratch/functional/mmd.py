"""The maximum mean discrepancy of WAE-MMD (Tolstikhin et al. 2018) as a forward/backward pair.
Derivation: docs/wae.md.

``mmd_forward(z_q, z_p, kernel, scales, prior_variance) -> (mmd², cache)`` with mmd² a 0-d array
in the inputs' dtype; ``mmd_backward(grad_output, cache) -> (grad_z_q, grad_z_p)``, the gradient
of ``grad_output · mmd²`` with respect to *both* sample sets.

The estimator is the unbiased U-statistic of the paper (Algorithm 2), for n encoder codes q_i and
m prior samples p_j (the paper has m = n):

    MMD² = 1/(m(m−1)) Σ_{i≠j} k(p_i, p_j) + 1/(n(n−1)) Σ_{i≠j} k(q_i, q_j) − 2/(nm) Σ_{i,j} k(q_i, p_j)

Kernels, with the base bandwidth C = 2·d·σ² (d the latent size, σ² the prior's variance, 1 for
N(0, I); the authors' released code, ``wae.py``: ``Cbase = 2. * opts['zdim'] * sigma2_p``, which is
E‖x − y‖² for x, y ~ N(0, σ²I)):

- ``"imq"``: k(x, y) = Σ_s C_s / (C_s + ‖x − y‖²), C_s = s·C for s in ``IMQ_SCALES``
  (0.1, 0.2, 0.5, 1, 2, 5, 10), the sum over scales the authors' code takes.
- ``"rbf"``: k(x, y) = Σ_s exp(−‖x − y‖² / C_s), by default one scale, s = 1. (The authors' code
  sets the RBF bandwidth by a median heuristic on the batch; a fixed C keeps the kernel a fixed
  function, so its gradient has no path through the bandwidth. Documented in docs/wae.md.)

Squared distances are formed as Σ_k (x_k − y_k)², from the difference, not as
‖x‖² − 2 x·y + ‖y‖²: the expanded form subtracts numbers of size ‖x‖² to get a distance that may
be far smaller, so near-coincident codes get a distance with a large relative error (even a
negative one) and coincident ones not exactly 0, and the gradient's Σ_j w_ij (x_i − y_j) written
as x_i Σ_j w_ij − (W y)_i cancels the same way. The direct form is exact at d = 0 (x − x = 0) and
accurate near it; with N up to a few hundred codes of d ≈ 8 dimensions the (N, N, d) differences
are a few MB, cheaper than the model's first matmul, so NumPy does it (no Numba kernel).
"""

from __future__ import annotations

import math

import numpy as np

KERNELS = ("imq", "rbf")
#: the IMQ kernel's bandwidth multipliers in the authors' code (tolstikhin/wae, ``mmd_penalty``)
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: the RBF kernel's: a single bandwidth C
RBF_SCALES = (1.0,)


def _scalar(value, dtype) -> np.generic:
    return np.dtype(dtype).type(value)


def default_scales(kernel: str) -> tuple[float, ...]:
    """The bandwidth multipliers s of ``kernel`` when none are given."""
    return IMQ_SCALES if kernel == "imq" else RBF_SCALES


def kernel_bandwidths(kernel: str, latent_dim: int, scales=None, prior_variance: float = 1.0) -> tuple[float, ...]:
    """(C_s,) = s · 2·d·σ² for each multiplier s: Python floats, rounded to the dtype where used."""
    base = 2.0 * latent_dim * prior_variance
    return tuple(base * float(s) for s in (default_scales(kernel) if scales is None else scales))


def _check(z_q, z_p, kernel, scales, prior_variance) -> None:
    owner = "mmd_forward"
    if kernel not in KERNELS:
        raise ValueError(f"{owner}: kernel must be one of {KERNELS}, got {kernel!r}")
    for name, z in (("z_q", z_q), ("z_p", z_p)):
        if not isinstance(z, np.ndarray) or z.dtype not in (np.float32, np.float64):
            got = z.dtype if isinstance(z, np.ndarray) else type(z).__name__
            raise TypeError(f"{owner}: {name} must be a float32 or float64 NumPy array, got {got}")
        if z.ndim != 2:
            raise ValueError(f"{owner}: {name} must be (samples, latent_dim), got shape {z.shape}")
        if z.shape[0] < 2:
            raise ValueError(f"{owner}: the unbiased MMD estimator needs at least 2 samples in each set "
                             f"(it averages over pairs i ≠ j), got {name} with shape {z.shape}")
    if z_q.dtype != z_p.dtype:
        raise TypeError(f"{owner}: z_q and z_p must share a dtype, got {z_q.dtype} and {z_p.dtype}")
    if z_q.shape[1] != z_p.shape[1] or z_q.shape[1] == 0:
        raise ValueError(f"{owner}: z_q and z_p must have the same latent_dim >= 1, got shapes {z_q.shape} and {z_p.shape}")
    if scales is not None:
        scales = tuple(scales)
        if not scales or not all(isinstance(s, (int, float, np.integer, np.floating)) and not isinstance(s, bool)
                                 and math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"{owner}: scales must be a non-empty sequence of finite numbers > 0, got {scales!r}")
    if isinstance(prior_variance, bool) or not isinstance(prior_variance, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(prior_variance) and prior_variance > 0):
        raise ValueError(f"{owner}: prior_variance (σ²) must be a finite number > 0, got {prior_variance!r}")


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """D_ij = Σ_k (a_ik − b_jk)², from the differences (exactly 0 where a_i = b_j)."""
    diff = a[:, None, :] - b[None, :, :]  # (n, m, d) a_i − b_j
    return np.einsum("ijk,ijk->ij", diff, diff)  # (n, m)


def _kernel(squared: np.ndarray, kernel: str, bandwidths) -> tuple[np.ndarray, np.ndarray]:
    """(k(D), dk/dD), each of D's shape, summed over the bandwidths C_s.

    imq: k = Σ C/(C + D), dk/dD = −Σ C/(C + D)² = −Σ r²/C with r = C/(C + D);
    rbf: k = Σ exp(−D/C),  dk/dD = −Σ exp(−D/C)/C.
    """
    dtype = squared.dtype
    value = np.zeros_like(squared)  # (n, m) k
    slope = np.zeros_like(squared)  # (n, m) dk/dD
    for bandwidth in bandwidths:
        c = _scalar(bandwidth, dtype)
        if kernel == "imq":
            r = c / (c + squared)  # (n, m), in (0, 1]
            value += r
            slope -= r * r / c
        else:
            e = np.exp(-squared / c)  # (n, m), in (0, 1]
            value += e
            slope -= e / c
    return value, slope


def mmd_forward(z_q: np.ndarray, z_p: np.ndarray, kernel: str = "imq", scales=None, prior_variance: float = 1.0):
    """The unbiased estimate of MMD²(Q_Z, P_Z) from codes ``z_q`` and prior samples ``z_p``.

    Parameters
    ----------
    z_q : (n, d), the encoder's codes, n >= 2
    z_p : (m, d), samples of the prior P_Z, m >= 2, same dtype
    kernel : "imq" (default) or "rbf"
    scales : bandwidth multipliers s (C_s = s·C); None: ``IMQ_SCALES`` for imq, (1,) for rbf
    prior_variance : σ² of the prior N(0, σ²I), which sets C = 2·d·σ² (default 1)

    Returns
    -------
    (mmd², cache): mmd² a 0-d array of the inputs' dtype (it can be slightly negative: the
    estimator is unbiased, not non-negative); cache for ``mmd_backward``.
    """
    _check(z_q, z_p, kernel, scales, prior_variance)
    dtype = z_q.dtype
    n, m = z_q.shape[0], z_p.shape[0]
    bandwidths = kernel_bandwidths(kernel, z_q.shape[1], scales, prior_variance)
    k_qq, s_qq = _kernel(_squared_distances(z_q, z_q), kernel, bandwidths)  # (n, n) each
    k_pp, s_pp = _kernel(_squared_distances(z_p, z_p), kernel, bandwidths)  # (m, m) each
    k_qp, s_qp = _kernel(_squared_distances(z_q, z_p), kernel, bandwidths)  # (n, m) each
    # the U-statistic leaves out i = j (k(x, x) would bias the estimate upwards): zero the
    # diagonals rather than subtract n·k(0) from the full sum, which would cancel
    for matrix in (k_qq, s_qq, k_pp, s_pp):
        np.fill_diagonal(matrix, 0)
    weight_q = 1.0 / (n * (n - 1))  # 1/(n(n−1))
    weight_p = 1.0 / (m * (m - 1))  # 1/(m(m−1))
    weight_qp = 2.0 / (n * m)  # 2/(nm)
    within = (_scalar(weight_q, dtype) * k_qq.sum(dtype=dtype)
              + _scalar(weight_p, dtype) * k_pp.sum(dtype=dtype))  # () the two same-set means
    value = within - _scalar(weight_qp, dtype) * k_qp.sum(dtype=dtype)  # ()
    cache = (z_q, z_p, s_qq, s_pp, s_qp, weight_q, weight_p, weight_qp)
    return np.asarray(value, dtype=dtype), cache


def _weighted_differences(slope: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """G_i = Σ_j w_ij (a_i − b_j), (n, d), from the differences themselves (see the module docstring)."""
    diff = a[:, None, :] - b[None, :, :]  # (n, m, d) a_i − b_j, recomputed: as in the forward, bit for bit
    return np.einsum("ij,ijk->ik", slope, diff)  # (n, d)


def mmd_backward(grad_output, cache) -> tuple[np.ndarray, np.ndarray]:
    """(dL/dz_q, dL/dz_p) for L = grad_output · MMD², shapes (n, d) and (m, d).

    With k' = dk/dD and ∂‖x − y‖²/∂x = 2(x − y) (docs/wae.md):

        dL/dq_i = g·[ 4/(n(n−1)) Σ_{j≠i} k'(q_i, q_j)(q_i − q_j) − 4/(nm) Σ_j k'(q_i, p_j)(q_i − p_j) ]
        dL/dp_j = g·[ 4/(m(m−1)) Σ_{i≠j} k'(p_j, p_i)(p_j − p_i) + 4/(nm) Σ_i k'(q_i, p_j)(q_i − p_j) ]

    (same-set terms: 4 = 2·2, each pair counted as (i, j) and (j, i), times ∂D/∂x's 2; cross terms:
    4/(nm) = the estimator's 2/(nm) times ∂D/∂x's 2.) ``grad_output`` is a real number.
    """
    z_q, z_p, s_qq, s_pp, s_qp, weight_q, weight_p, weight_qp = cache
    dtype = z_q.dtype
    g = float(grad_output)
    diff_qp = z_q[:, None, :] - z_p[None, :, :]  # (n, m, d) q_i − p_j, as in the forward
    cross_q = np.einsum("ij,ijk->ik", s_qp, diff_qp)  # (n, d) Σ_j k'_ij (q_i − p_j)
    cross_p = np.einsum("ij,ijk->jk", s_qp, diff_qp)  # (m, d) Σ_i k'_ij (q_i − p_j)
    grad_q = (_scalar(2 * g * 2 * weight_q, dtype) * _weighted_differences(s_qq, z_q, z_q)
              - _scalar(2 * g * weight_qp, dtype) * cross_q)  # (n, d)
    grad_p = (_scalar(2 * g * 2 * weight_p, dtype) * _weighted_differences(s_pp, z_p, z_p)
              + _scalar(2 * g * weight_qp, dtype) * cross_p)  # (m, d)
    return grad_q, grad_p
