"""Numba kernels for one optimizer step over a flat buffer, beside NumPy references.

Each kernel updates flat, C-contiguous arrays in place: parameters and their state buffers, for
one parameter or for a whole model whose parameters share one flat buffer
(``Module.flatten_parameters``). Every floating-point scalar argument comes in already cast to
the arrays' dtype, and every operation stays in that dtype: torch.optim computes its per-step
scalars (bias corrections, step size) in Python float64 and casts each to the tensor's dtype
where an op uses it, and so do we, one level up (``scratch.optim``). A float64 scalar in a
float32 loop would promote the loop to float64 and halve its SIMD width.

Loop nest: one loop over the flat index ``i``; iteration ``i`` reads and writes only element
``i`` of each buffer, so a step is one fused pass with no temporaries (torch's single-tensor
Adam makes seven passes). Serial on purpose (see ``scratch.kernels.activations``): the loop is
memory-bound and vectorizes, and runs in about 0.2 ns per float32 element. Optimisations it
relies on:

- ``error_model="numpy"``: a float division by zero gives inf/NaN, as in NumPy and torch; the
  default Python error model tests every divisor and raises, which also stops LLVM from
  vectorizing any loop that divides.
- branch-free loop bodies: each option (maximize, the kind of weight decay, AMSGrad, the side of
  torch's lerp) is a compile-time constant in the loop body that the dispatcher picks once per
  call (``inline="always"`` copies the body per call site, so LLVM folds the constants away).

The references reproduce torch.optim's single-tensor code line by line with NumPy operations.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NO_DECAY, L2_DECAY, DECOUPLED_DECAY = 0, 1, 2  # Adam's weight decay; AdamW's is DECOUPLED_DECAY


@njit(cache=True, error_model="numpy")
def sgd_step(param, grad, momentum_buffer, negative_lr, momentum, one_minus_dampening, weight_decay,
             nesterov, maximize, first_step):
    """p ← p + (−lr)·d, with d = g + wd·p; with momentum b = μ·b + (1 − τ)·d (b = d on the first
    step), then d = d + μ·b (Nesterov) or d = b. ``momentum_buffer`` is ignored when μ == 0."""
    for i in range(param.shape[0]):
        d = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            d = d + weight_decay * param[i]
        if momentum != 0:
            if first_step:
                b = d
            else:
                b = momentum_buffer[i] * momentum + one_minus_dampening * d
            momentum_buffer[i] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        param[i] = param[i] + negative_lr * d


@njit(inline="always", error_model="numpy")
def _adam_loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, weight_decay, decay_factor,
               beta1_weight, beta1_keep, beta2, one_minus_beta2, eps, negative_step_size,
               bias_correction2_sqrt, maximize, decay, amsgrad, lerp_from_start):
    for i in range(param.shape[0]):
        g = -grad[i] if maximize else grad[i]
        p = param[i]
        if decay == DECOUPLED_DECAY:
            p = p * decay_factor
        elif decay == L2_DECAY:
            g = g + weight_decay * p
        m = exp_avg[i]
        if lerp_from_start:
            m = m + beta1_weight * (g - m)
        else:
            m = g - (g - m) * beta1_keep
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
        exp_avg_sq[i] = v
        if amsgrad:
            if v > max_exp_avg_sq[i]:
                max_exp_avg_sq[i] = v
            v = max_exp_avg_sq[i]
        denom = np.sqrt(v) / bias_correction2_sqrt + eps
        param[i] = p + negative_step_size * m / denom


@njit(cache=True, error_model="numpy")
def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, weight_decay, decay_factor,
              beta1_weight, beta1_keep, beta2, one_minus_beta2, eps, negative_step_size,
              bias_correction2_sqrt, decay, amsgrad, maximize):
    """One Adam/AdamW step, torch's single-tensor rule, every op in the arrays' dtype.

    decay: ``DECOUPLED_DECAY`` (AdamW, or Adam with ``decoupled_weight_decay=True``)
    p ← p·(1 − lr·wd) = p·decay_factor; ``L2_DECAY`` (Adam) g ← g + wd·p; ``NO_DECAY``.
    ``maximize``: g ← −g first, before either decay (torch's order). Then
    m ← lerp(m, g, w), w = 1 − β1;  v ← β2·v + (1 − β2)·g²;  (AMSGrad: v̂ ← max(v̂, v), used for v)
    p ← p + (−step_size)·m / (√v / √(1 − β2^t) + ε),  step_size = lr / (1 − β1^t).
    ``lerp`` follows torch: m + w·(g − m) for w < ½, else g − (g − m)·(1 − w), with
    ``beta1_keep`` = 1 − w computed in the dtype. ``max_exp_avg_sq`` is ignored without AMSGrad.
    """
    from_start = beta1_weight < 0.5
    # The common cases get a loop whose options are constants; the rest share a generic loop.
    if not maximize and not amsgrad and from_start and decay == L2_DECAY:
        _adam_loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, weight_decay, decay_factor,
                   beta1_weight, beta1_keep, beta2, one_minus_beta2, eps, negative_step_size,
                   bias_correction2_sqrt, False, L2_DECAY, False, True)
    elif not maximize and not amsgrad and from_start and decay == DECOUPLED_DECAY:
        _adam_loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, weight_decay, decay_factor,
                   beta1_weight, beta1_keep, beta2, one_minus_beta2, eps, negative_step_size,
                   bias_correction2_sqrt, False, DECOUPLED_DECAY, False, True)
    elif not maximize and not amsgrad and from_start and decay == NO_DECAY:
        _adam_loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, weight_decay, decay_factor,
                   beta1_weight, beta1_keep, beta2, one_minus_beta2, eps, negative_step_size,
                   bias_correction2_sqrt, False, NO_DECAY, False, True)
    else:
        _adam_loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, weight_decay, decay_factor,
                   beta1_weight, beta1_keep, beta2, one_minus_beta2, eps, negative_step_size,
                   bias_correction2_sqrt, maximize, decay, amsgrad, from_start)


def sgd_step_reference(param, grad, momentum_buffer, negative_lr, momentum, one_minus_dampening, weight_decay,
                       nesterov, maximize, first_step):
    d = -grad if maximize else grad.copy()
    if weight_decay != 0:
        d = d + weight_decay * param
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = d
        else:
            momentum_buffer *= momentum
            momentum_buffer += one_minus_dampening * d
        d = d + momentum * momentum_buffer if nesterov else momentum_buffer
    param += negative_lr * d


def adam_step_reference(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, weight_decay, decay_factor,
                        beta1_weight, beta1_keep, beta2, one_minus_beta2, eps, negative_step_size,
                        bias_correction2_sqrt, decay, amsgrad, maximize):
    g = -grad if maximize else grad
    if decay == DECOUPLED_DECAY:
        param *= decay_factor
    elif decay == L2_DECAY:
        g = g + weight_decay * param
    exp_avg += beta1_weight * (g - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += one_minus_beta2 * g * g
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    denom = np.sqrt(v) / bias_correction2_sqrt + eps
    param += negative_step_size * exp_avg / denom
