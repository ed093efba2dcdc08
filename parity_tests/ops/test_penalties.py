"""The penalties of the regularized autoencoders: Ng's KL sparsity, L1 activity, the contractive
penalty (docs/penalties.md).

Of the three oracles of docs/README.md, this file holds the third for ``scratch/kernels/penalties.py``:

3. each penalty kernel against its NumPy reference, in both dtypes, the KL sparsity clamp's lower
   and upper bounds included (a clamped unit passes no gradient; the bounds themselves do).
   L1 activity has no kernel (its functional form is one NumPy expression each way).

The other two, for ``scratch/functional/penalties.py`` and the sparse-ae, contractive-ae and
tied-ae built on it, are in ``parity_tests/test_regularized.py``, at model level:
(1) torch parity of the loss, its parts and every gradient against the twins
(``torch_impl/models/regularized.py``: the contractive penalty as autograd's Jacobian);
(2) central differences of each penalty alone, of the whole loss and of dL/dx; plus the tied
weights' gradient as the sum of both uses (``TiedLinear``).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import assert_close
from scratch.kernels import penalties as P

# ---------------------------------------------------------------------------- oracle 3: kernels


@given(units=st.integers(1, 40), target=S.sparsity_targets, dtype=S.dtypes, seed=S.seeds)
def test_kl_sparsity_kernels(units, target, dtype, seed):
    rng = np.random.default_rng(seed)
    rho, scale = np.dtype(dtype).type(target), np.dtype(dtype).type(rng.standard_normal())
    lower, upper = (np.dtype(dtype).type(b) for b in (0.01, 0.99))
    rho_hat = rng.random(units).astype(dtype)
    rho_hat[rng.random(units) < 0.2] = lower  # the bounds themselves pass the gradient
    rho_hat[rng.random(units) < 0.2] = upper
    rho_hat[[0, -1]] = lower, upper  # both bounds in every draw, even of one unit (the last wins)
    rho_hat[rng.random(units) < 0.1] = 0  # outside: none
    clamped = np.clip(rho_hat, lower, upper)
    out = np.empty_like(rho_hat)
    P.kl_sparsity_forward(clamped, rho, out)
    assert_close(out, P.kl_sparsity_forward_reference(clamped, rho), "kernel", dtype, "kl_sparsity_forward",
                 scale=np.abs(rho * np.log(rho / clamped)) + np.abs((1 - rho) * np.log((1 - rho) / (1 - clamped))))
    P.kl_sparsity_backward(rho_hat, rho, lower, upper, scale, out)
    expected = P.kl_sparsity_backward_reference(rho_hat, rho, lower, upper, scale)
    assert_close(out, expected, "kernel", dtype, "kl_sparsity_backward",
                 scale=np.abs(scale) * (rho / clamped + (1 - rho) / (1 - clamped)))
    assert not out[(rho_hat < lower) | (rho_hat > upper)].any()


@given(rows=S.rows, units=st.integers(1, 40), dtype=S.dtypes, seed=S.seeds)
def test_contractive_kernels(rows, units, dtype, seed):
    rng = np.random.default_rng(seed)
    hidden = rng.random((rows, units)).astype(dtype)
    hidden[rng.random((rows, units)) < 0.1] = 1  # saturated units: a = 0
    row_norms_sq = (rng.random(units) * 3).astype(dtype)
    scale = np.dtype(dtype).type(rng.standard_normal())
    per_example = np.empty(rows, dtype=dtype)
    P.contractive_forward(hidden, row_norms_sq, per_example)
    assert_close(per_example, P.contractive_forward_reference(hidden, row_norms_sq), "kernel", dtype,
                 "contractive_forward")
    grad_hidden, column_sums = np.empty_like(hidden), np.full(units, np.nan, dtype=dtype)  # overwritten
    P.contractive_backward(hidden, row_norms_sq, scale, grad_hidden, column_sums)
    expected_grad, expected_sums = P.contractive_backward_reference(hidden, row_norms_sq, scale)
    a = hidden.astype(np.float64) * (1 - hidden)
    assert_close(grad_hidden, expected_grad, "kernel", dtype, "contractive_backward dh",
                 scale=2 * abs(float(scale)) * row_norms_sq * a * (1 + 2 * hidden))
    assert_close(column_sums, expected_sums, "kernel", dtype, "contractive_backward column sums")
