"""Numba kernels for one optimizer step on one parameter, beside NumPy references.

Each kernel updates flat, C-contiguous arrays in place: the parameter and its state buffers.
Scalars that depend only on the step count (bias corrections, step size) are computed once per
step one level up, in Python float64, exactly as torch.optim does. Loop nest: one loop over the
flat index ``i``; iteration ``i`` reads and writes only element ``i`` of each buffer, so the
update is one fused pass with no temporaries (serial on purpose: see
``scratch.kernels.elementwise``). Cached per dtype.

The references reproduce torch.optim's single-tensor code line by line with NumPy operations.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def sgd_step(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    """p -= lr · d, with d = g + wd·p, and with momentum b = μ b + (1 - τ) d (b = d on the first step),
    then d = d + μ b (Nesterov) or d = b. ``momentum_buffer`` is ignored when momentum == 0."""
    for i in range(param.shape[0]):
        d = -grad[i] if maximize else grad[i]
        if weight_decay != 0:
            d = d + weight_decay * param[i]
        if momentum != 0:
            if first_step:
                b = d
            else:
                b = momentum * momentum_buffer[i] + (1 - dampening) * d
            momentum_buffer[i] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        param[i] = param[i] - lr * d


@njit(cache=True)
def adam_step(
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
    lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize, step_size, bias_correction2_sqrt,
):
    """One Adam/AdamW step, torch's single-tensor rule.

    AdamW (decoupled): p ← p (1 - lr·wd); Adam: g ← g + wd·p. Then
    m ← lerp(m, g, 1 - β1);  v ← β2 v + (1 - β2) g²;  (AMSGrad: v̂ ← max(v̂, v), used for v)
    p ← p - step_size · m / (√v / √(1 - β2^t) + ε),  step_size = lr / (1 - β1^t).
    ``lerp`` follows torch: a + w (b - a) for w < ½, else b - (b - a)(1 - w).
    """
    weight = 1 - beta1
    for i in range(param.shape[0]):
        g = -grad[i] if maximize else grad[i]
        p = param[i]
        if weight_decay != 0:
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
        m = exp_avg[i]
        if weight < 0.5:
            m = m + weight * (g - m)
        else:
            m = g - (g - m) * (1 - weight)
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + (1 - beta2) * g * g
        exp_avg_sq[i] = v
        if amsgrad:
            if v > max_exp_avg_sq[i]:
                max_exp_avg_sq[i] = v
            v = max_exp_avg_sq[i]
        denom = np.sqrt(v) / bias_correction2_sqrt + eps
        param[i] = p + (-step_size) * m / denom  # torch: addcdiv_(m, denom, value=-step_size)


def sgd_step_reference(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    d = -grad if maximize else grad.copy()
    if weight_decay != 0:
        d = d + weight_decay * param
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = d
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * d
        d = d + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * d


def adam_step_reference(
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
    lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize, step_size, bias_correction2_sqrt,
):
    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * param
    exp_avg += (1 - beta1) * (g - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    denom = np.sqrt(v) / bias_correction2_sqrt + eps
    param -= step_size * exp_avg / denom
