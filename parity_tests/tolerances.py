"""The suite's error models for formulas that cancel; the tolerance table lives in scratch.testing.

``TOLERANCES``, ``GRADCHECK``, ``tolerance``, ``assert_close``, ``assert_close_in_norm`` and
``to_numpy`` are ``scratch.testing``'s (the one table, with the justification of every entry),
re-exported here so that the tests import everything numeric from one place. What is defined
here is test-specific: the magnitude of the *terms* a formula combines, to pass as
``assert_close(..., scale=...)`` where the result cancels.
"""

from __future__ import annotations

import numpy as np

from scratch.testing import (  # noqa: F401 - re-exported for the tests
    GRADCHECK,
    TOLERANCES,
    assert_close,
    assert_close_in_norm,
    to_numpy,
    tolerance,
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
