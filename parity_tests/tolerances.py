"""The one tolerance table for the whole suite, and the comparison every test uses.

``assert_close(actual, expected, check, dtype)`` passes when, element-wise,

    |actual - expected| <= rtol · |expected| + atol · max|expected|

The absolute part is scaled by the array's largest magnitude: rounding errors of a sum scale with
the size of the terms summed, not with the (possibly cancelled) result, so a fixed atol would be
either meaningless for large arrays or impossible for small ones.

Justifications (u = unit roundoff: 1.1e-16 in float64, 6.0e-8 in float32):
- torch, float64: both sides evaluate the same formulas in a different order (BLAS blocking,
  pairwise vs vectorised sums). Reductions here are at most ~10^3 terms, so differences are
  ≲ 10^3 u ≈ 1e-13; 1e-10 leaves three orders of margin and still catches any formula error.
- torch, float32: the same reasoning at u = 6e-8 gives ≲ 6e-5 for 10^3-term sums; our kernels
  also carry some intermediates in float64 where torch rounds to float32 each op.
  rtol = atol = 2e-4 is the bound; a wrong formula is off by far more.
- kernel vs NumPy reference: same formula, same dtype, different evaluation order and
  math-library calls (Numba's libm vs NumPy's SIMD loops, float64 literals promoting float32
  intermediates): a few ulp (4e-7 ≈ 7 float32 ulp) of the formula's *terms*; tests pass the
  terms' magnitude as ``scale`` where a formula cancels.
- optimizer steps (25+ steps): per-step rounding differences compound mildly; Adam divides by
  √v̂ + ε, which amplifies differences where v̂ ~ ε², hence the looser float32 entry.
- training runs (30 Adam steps of a whole model on MNIST): measured agreement is ~2e-16 (float64)
  and ~1e-7 (float32) in every loss; the bounds leave room for 1-ulp differences that a ReLU
  boundary or Adam's 1/(√v̂ + ε) amplifies over 30 steps. float32 weights are compared per
  tensor by the relative norm of the difference (``assert_close_in_norm``), leaving out the units
  whose ReLU flipped: a hidden unit whose pre-activation sits within float32 rounding of 0 in
  one example is active in one backend and not in the other; Adam's second moment remembers the
  different gradient, so that unit's weights drift apart by up to percents over the run (beta-vae,
  fc1 row 115: 2.6e-2) while every other row stays within ~1e-4. The test finds flips by
  comparing the two backends' ReLU masks at every step and allows at most three.
  float64 weights are compared element by element, and no flip is allowed.
- gradcheck: central differences with eps = 1e-6 in float64 have truncation error
  O(eps²) ≈ 1e-12 and rounding error O(u·|L|/eps) ≈ 1e-10·|L|; rtol 1e-5 and atol 1e-8
  leave margin while a wrong backward (off by a term or a factor) fails by orders of magnitude.
"""

from __future__ import annotations

import numpy as np

TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {
    # (check, dtype): (rtol, atol relative to max|expected|)
    ("torch", "float64"): (1e-10, 1e-10),
    ("torch", "float32"): (2e-4, 2e-4),
    ("kernel", "float64"): (1e-13, 1e-14),
    ("kernel", "float32"): (4e-7, 4e-7),
    ("optim", "float64"): (1e-10, 1e-10),
    ("optim", "float32"): (1e-4, 1e-5),
    ("training", "float64"): (1e-9, 1e-9),
    ("training", "float32"): (1e-4, 1e-4),
}

# scratch.gradcheck's arguments for every finite-difference test.
GRADCHECK = dict(eps=1e-6, rtol=1e-5, atol=1e-8)


def tolerance(check: str, dtype) -> tuple[float, float]:
    return TOLERANCES[(check, np.dtype(dtype).name)]


def to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def assert_close(actual, expected, check: str, dtype, what: str = "", scale=None) -> None:
    """Compare under TOLERANCES[(check, dtype)]; the message names ``what`` and the worst element.

    ``scale`` (scalar or element-wise array) replaces max|expected| as the magnitude the absolute
    part is relative to: pass the magnitude of the *terms* of a formula whose result cancels
    (e.g. σ(x) - y), since rounding errors are relative to those, not to the small difference.
    """
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    rtol, atol = tolerance(check, dtype)
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    scale = np.asarray(scale, dtype=np.float64)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    error = np.abs(a - e)
    allowed = rtol * np.abs(e) + atol * scale
    bad = ~(error <= allowed) | (np.isnan(a) != np.isnan(e))
    bad &= ~((a == e) | (np.isnan(a) & np.isnan(e)))  # equal infinities and NaN pairs agree
    if np.any(bad):
        ratio = np.where(bad, error / np.where(allowed > 0, allowed, np.inf), -np.inf)
        ratio = np.where(np.isnan(ratio) | (bad & (allowed == 0)), np.inf, ratio)
        worst = np.unravel_index(int(np.argmax(ratio)), a.shape) if a.ndim else ()
        raise AssertionError(
            f"{what} [{check}, {np.dtype(dtype).name}: rtol={rtol:g}, atol={atol:g}·scale]: "
            f"{int(bad.sum())} of {a.size} elements differ; worst at {worst}: actual {a[worst]!r}, "
            f"expected {e[worst]!r}, |error| {error[worst]:.3e} > allowed {np.broadcast_to(allowed, a.shape)[worst]:.3e}"
        )


def activation_backward_terms(name: str, grad_output, out) -> np.ndarray:
    """Element-wise magnitude of the terms an activation's backward formula combines.

    dx = g·(1 - y²) for tanh and g·(1 - y)·y for sigmoid cancel where |y| → 1: a 1-ulp
    difference in y (two libms' tanh) becomes a large *relative* difference in dx, but stays
    a few ulp of these terms. Pass the result as ``assert_close(..., scale=...)``.
    """
    g, y = np.abs(to_numpy(grad_output).astype(np.float64)), to_numpy(out).astype(np.float64)
    if name.lower() == "tanh":
        return g * (1 + y * y)
    if name.lower() == "sigmoid":
        return g * (np.abs(y) + y * y)
    return g * (1 + np.abs(y))


def loss_forward_terms(name: str, a, b) -> np.ndarray:
    """Element-wise magnitude of the terms each loss formula adds (see activation_backward_terms).

    For BCE-with-logits, (1 - y)·x + max(-x, 0) + log1p(e^{-|x|}) cancels to ~e^{-|x|} when y
    matches the sign of x; torch evaluates log(1 + e^{-|x|}), which rounds 1 + e^{-|x|} and so
    is off by ~u in absolute terms there (ours keeps full relative accuracy: see
    test_bce_with_logits_is_accurate_in_the_tail). Both agree to a few u of these terms.
    """
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    if name == "bce":
        with np.errstate(divide="ignore"):
            return np.abs(b - 1) * np.minimum(-np.log1p(-a), 100) + np.abs(b) * np.minimum(-np.log(a), 100)
    if name == "bce_with_logits":
        return np.abs(1 - b) * np.abs(a) + np.abs(a) + 1
    if name == "mse":
        return (np.abs(a) + np.abs(b)) ** 2
    if name == "gaussian_kl":
        return 0.5 * (a * a + np.exp(b) + 1 + np.abs(b))
    raise KeyError(name)


def reduce_terms(terms: np.ndarray, reduction: str) -> np.ndarray:
    """The terms' magnitude after a loss reduction: summed, averaged, or as they are."""
    if reduction == "sum":
        return np.sum(terms)
    if reduction == "mean":
        return np.mean(terms)
    if reduction == "batchmean":
        return np.sum(terms) / terms.shape[0]
    return terms


def assert_close_in_norm(actual, expected, check: str, dtype, what: str = "") -> None:
    """‖actual - expected‖₂ <= rtol · ‖expected‖₂ over the whole array (rtol from the table)."""
    actual, expected = to_numpy(actual).astype(np.float64), to_numpy(expected).astype(np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    rtol, _ = tolerance(check, dtype)
    difference, size = float(np.linalg.norm(actual - expected)), float(np.linalg.norm(expected))
    if not difference <= rtol * size:
        raise AssertionError(f"{what} [{check}, {np.dtype(dtype).name}: ‖Δ‖ <= {rtol:g}·‖expected‖]: "
                             f"‖Δ‖ = {difference:.3e}, ‖expected‖ = {size:.3e}, ratio {difference / size:.3e}")
