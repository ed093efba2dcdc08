"""Numba kernels for the losses' element-wise terms and gradients, beside NumPy references.

Each forward kernel writes the *unreduced* per-element loss into ``out``; the reduction (sum or
mean) happens one level up in NumPy, whose pairwise summation is more accurate than a serial
loop. Each backward kernel takes ``grad_output`` as a flat array of either one element (the
upstream gradient of a reduced loss, already divided by N for ``"mean"``) or one per element
(``reduction="none"``), and writes ``grad_input``. The weighted kernels take ``weight`` (and
``pos_weight``) the same way: one element, the same for every ``i``, or one per element (the
functional layer broadcasts a weight to the input's shape before; the kernels never see a shape).
The unweighted kernels are kept as they are, so the unweighted losses compute what they always did.

Loop nest everywhere: one loop over the flat index ``i``; iteration ``i`` writes only element
``i`` of each output. Serial on purpose, arithmetic in the arrays' dtype except inside the
transcendental calls, ``error_model="numpy"`` (all three: see ``scratch.kernels.activations``).
Compiled once per dtype, cached on disk.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# torch's constants: each BCE log term is clamped at -100; its backward clamps the
# denominator p (1 - p) from below at EPSILON = 1e-12, declared in ATen as a C++ float, so its
# value is float32(1e-12) = 9.9999996e-13 in float64 arithmetic too (checked against torch).
BCE_LOG_CLAMP = -100.0
BCE_GRAD_EPSILON = float(np.float32(1e-12))


# ---------------------------------------------------------------------------- BCE


@njit(cache=True, error_model="numpy")
def bce_forward(p, y, log_p, log_1mp, out):
    """out[i] = -(y log p + (1 - y) log(1 - p)), each log clamped at -100 (torch's convention).

    ``log_p`` = log(p) and ``log_1mp`` = log1p(-p) come in precomputed (NumPy evaluates them with
    SIMD, ten times faster than a scalar loop can); this loop clamps and combines, branch-free.
    Loop: one pass over i.
    """
    one, clamp = p.dtype.type(1), p.dtype.type(BCE_LOG_CLAMP)
    for i in range(p.shape[0]):
        out[i] = (y[i] - one) * max(log_1mp[i], clamp) - y[i] * max(log_p[i], clamp)


@njit(cache=True, error_model="numpy")
def bce_backward(grad_output, p, y, grad_input):
    """grad_input[i] = g * (p - y) / max(p (1 - p), 1e-12), torch's clamped denominator."""
    scalar = grad_output.shape[0] == 1
    one, epsilon = p.dtype.type(1), p.dtype.type(BCE_GRAD_EPSILON)
    for i in range(p.shape[0]):
        g = grad_output[0] if scalar else grad_output[i]
        grad_input[i] = g * (p[i] - y[i]) / max((one - p[i]) * p[i], epsilon)


@njit(cache=True, error_model="numpy")
def sigmoid_bce_backward(grad_output, p, y, grad_logits):
    """grad_logits[i] = dp·(1 - p)·p with dp = g·(p - y) / max(p(1 - p), 1e-12), p = σ(logits).

    BCE's backward and then the Sigmoid's in one pass, op for op what ``bce_backward`` followed
    by ``activations.sigmoid_backward`` compute (dp rounded to the dtype in between), so the fused
    path gives the same bits as the two. It is deliberately *not* simplified to p - y: that
    differs where p(1 - p) falls under torch's clamp (a saturated output, p = 1 in float32 when
    the logit passes ~17), where torch's gradient is 0.
    """
    scalar = grad_output.shape[0] == 1
    one, epsilon = p.dtype.type(1), p.dtype.type(BCE_GRAD_EPSILON)
    for i in range(p.shape[0]):
        g = grad_output[0] if scalar else grad_output[i]
        dp = g * (p[i] - y[i]) / max((one - p[i]) * p[i], epsilon)
        grad_logits[i] = dp * (one - p[i]) * p[i]


@njit(cache=True, error_model="numpy")
def bce_weighted_forward(p, y, log_p, log_1mp, weight, out):
    """out[i] = w·(-(y log p + (1 - y) log(1 - p))), each log clamped at -100; w = weight[0] or weight[i].

    ``bce_forward``'s term, then the weight, in torch's order (ATen forms the loss, then
    ``loss.mul_(weight)``). Loop: one pass over i.
    """
    scalar = weight.shape[0] == 1
    one, clamp = p.dtype.type(1), p.dtype.type(BCE_LOG_CLAMP)
    for i in range(p.shape[0]):
        w = weight[0] if scalar else weight[i]
        out[i] = ((y[i] - one) * max(log_1mp[i], clamp) - y[i] * max(log_p[i], clamp)) * w


@njit(cache=True, error_model="numpy")
def bce_weighted_backward(grad_output, p, y, weight, grad_input):
    """grad_input[i] = g·(p - y) / max(p (1 - p), 1e-12)·w: ``bce_backward``'s quotient, then the weight.

    ``grad_output`` and ``weight`` each hold one element or one per element. Loop: one pass over i.
    """
    scalar, scalar_weight = grad_output.shape[0] == 1, weight.shape[0] == 1
    one, epsilon = p.dtype.type(1), p.dtype.type(BCE_GRAD_EPSILON)
    for i in range(p.shape[0]):
        g = grad_output[0] if scalar else grad_output[i]
        w = weight[0] if scalar_weight else weight[i]
        grad_input[i] = g * (p[i] - y[i]) / max((one - p[i]) * p[i], epsilon) * w


def bce_forward_reference(p, y):
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), BCE_LOG_CLAMP)
        log_1mp = np.maximum(np.log1p(-p), BCE_LOG_CLAMP)
    return ((y - 1) * log_1mp - y * log_p).astype(p.dtype)


def bce_backward_reference(grad_output, p, y):
    denominator = np.maximum((1 - p) * p, p.dtype.type(BCE_GRAD_EPSILON))
    return (grad_output * (p - y) / denominator).astype(p.dtype)


def sigmoid_bce_backward_reference(grad_output, p, y):
    return (bce_backward_reference(grad_output, p, y) * (1 - p) * p).astype(p.dtype)


def bce_weighted_forward_reference(p, y, weight):
    """Weighted BCE as torch's decomposition writes it: the clamped terms, times the broadcast weight."""
    return (bce_forward_reference(p, y) * np.broadcast_to(weight, p.shape)).astype(p.dtype)


def bce_weighted_backward_reference(grad_output, p, y, weight):
    return (bce_backward_reference(grad_output, p, y) * np.broadcast_to(weight, p.shape)).astype(p.dtype)


# ---------------------------------------------------------------------------- BCE with logits


@njit(cache=True, error_model="numpy")
def bce_with_logits_forward(x, y, log1p_exp_neg_abs, out):
    """out[i] = (1 - y) x + softplus(-x), with softplus(-x) = max(-x, 0) + log1p(exp(-|x|)).

    Equals -(y log σ(x) + (1 - y) log(1 - σ(x))) without ever forming σ(x) or exp of a positive
    number: finite for any finite x. ``log1p_exp_neg_abs`` = log1p(exp(-|x|)) comes in
    precomputed by NumPy's SIMD loops (scalar ``exp``/``log1p`` here were 13x slower than torch);
    this loop combines, in the dtype. Loop: one pass over i.
    """
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = (one - y[i]) * v + max(-v, zero) + log1p_exp_neg_abs[i]


@njit(cache=True, error_model="numpy")
def bce_with_logits_backward(grad_output, x, y, exp_neg_abs, grad_input):
    """grad_input[i] = g * (σ(x) - y): the sigmoid's and the BCE's derivatives cancel.

    σ(x) = 1 / (1 + e) for x >= 0, e / (1 + e) otherwise, from e = exp(-|x|) precomputed (never
    overflows). Loop: one pass over i.
    """
    scalar = grad_output.shape[0] == 1
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.shape[0]):
        g = grad_output[0] if scalar else grad_output[i]
        e = exp_neg_abs[i]
        s = one / (one + e) if x[i] >= zero else e / (one + e)
        grad_input[i] = g * (s - y[i])


@njit(cache=True, error_model="numpy")
def bce_with_logits_weighted_forward(x, y, log1p_exp_neg_abs, weight, pos_weight, out):
    """out[i] = w·((1 - y)·softplus(x) + pw·y·softplus(-x)), softplus(±x) = max(±x, 0) + log1p(e^{-|x|}).

    torch's ``(1 - y) x + (1 + (pw - 1) y)·softplus(-x)``, times w, in the symmetric form
    (docs/losses.md): for a hard target one of the two terms is 0 and the other has no
    cancellation, so a confident right answer keeps full relative accuracy, and every term is at
    most max(1, |pw|)·(|x| + log 2): finite for logits of ±1e4. w = weight[0] or weight[i], pw
    likewise; ``log1p_exp_neg_abs`` comes in precomputed by NumPy's SIMD loops. Loop: one pass over i.
    """
    scalar_weight, scalar_pos_weight = weight.shape[0] == 1, pos_weight.shape[0] == 1
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.shape[0]):
        v, tail = x[i], log1p_exp_neg_abs[i]
        w = weight[0] if scalar_weight else weight[i]
        pw = pos_weight[0] if scalar_pos_weight else pos_weight[i]
        out[i] = w * ((one - y[i]) * (max(v, zero) + tail) + pw * y[i] * (max(-v, zero) + tail))


@njit(cache=True, error_model="numpy")
def bce_with_logits_weighted_backward(grad_output, x, y, exp_neg_abs, weight, pos_weight, grad_input):
    """grad_input[i] = g·w·((1 - y)·σ(x) - pw·y·σ(-x)), the derivative of the forward above.

    σ(x) and σ(-x) = 1 - σ(x) are the two quotients 1 / (1 + e) and e / (1 + e) of
    e = exp(-|x|) (precomputed; never overflows), assigned by the sign of x, so neither is formed
    as a difference. With pw = 1 the bracket is σ(x) - y. ``grad_output``, ``weight`` and
    ``pos_weight`` each hold one element or one per element. Loop: one pass over i.
    """
    scalar, scalar_weight, scalar_pos_weight = (grad_output.shape[0] == 1, weight.shape[0] == 1,
                                                pos_weight.shape[0] == 1)
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(x.shape[0]):
        g = grad_output[0] if scalar else grad_output[i]
        w = weight[0] if scalar_weight else weight[i]
        pw = pos_weight[0] if scalar_pos_weight else pos_weight[i]
        e = exp_neg_abs[i]
        near, far = one / (one + e), e / (one + e)  # σ(|x|) and σ(-|x|)
        s, s_neg = (near, far) if x[i] >= zero else (far, near)
        grad_input[i] = g * w * ((one - y[i]) * s - pw * y[i] * s_neg)


def bce_with_logits_forward_reference(x, y):
    return ((1 - y) * x + np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


def bce_with_logits_backward_reference(grad_output, x, y):
    e = np.exp(-np.abs(x))
    sigmoid = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return (grad_output * (sigmoid - y)).astype(x.dtype)


def bce_with_logits_weighted_forward_reference(x, y, weight, pos_weight):
    """torch's decomposition: (1 - y) x - (1 + (pw - 1) y)·logsigmoid(x), times w (weights broadcast)."""
    log_weight = (np.broadcast_to(pos_weight, x.shape) - 1) * y + 1
    log_sigmoid = -(np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x))))
    return (((1 - y) * x - log_weight * log_sigmoid) * np.broadcast_to(weight, x.shape)).astype(x.dtype)


def bce_with_logits_weighted_backward_reference(grad_output, x, y, weight, pos_weight):
    """torch's autograd formula: g·w·((pw·y + 1 - y)·σ(x) - pw·y)."""
    e = np.exp(-np.abs(x))
    sigmoid = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    t = np.broadcast_to(pos_weight, x.shape) * y
    return (grad_output * np.broadcast_to(weight, x.shape) * ((t + 1 - y) * sigmoid - t)).astype(x.dtype)


# ---------------------------------------------------------------------------- MSE


@njit(cache=True, error_model="numpy")
def mse_forward(p, y, out):
    """out[i] = (p[i] - y[i])^2. Loop: one pass over i."""
    for i in range(p.shape[0]):
        d = p[i] - y[i]
        out[i] = d * d


@njit(cache=True, error_model="numpy")
def mse_backward(grad_output, p, y, grad_input):
    """grad_input[i] = 2 g (p[i] - y[i]). Loop: one pass over i."""
    scalar = grad_output.shape[0] == 1
    two = p.dtype.type(2)
    for i in range(p.shape[0]):
        g = grad_output[0] if scalar else grad_output[i]
        grad_input[i] = two * g * (p[i] - y[i])


def mse_forward_reference(p, y):
    return (p - y) ** 2


def mse_backward_reference(grad_output, p, y):
    return (2 * grad_output * (p - y)).astype(p.dtype)


# ---------------------------------------------------------------------------- Gaussian KL


@njit(cache=True, error_model="numpy")
def gaussian_kl_forward(mean, logvar, out):
    """out[i] = ½ (μ² + exp(lv) - 1 - lv), written ½ (μ² + expm1(lv) - lv).

    KL(N(μ, e^lv) ‖ N(0, 1)) per latent element. ``expm1`` avoids the cancellation of
    exp(lv) - 1 near lv = 0; finite for lv in [-80, 80] in float32 and float64.
    """
    for i in range(mean.shape[0]):
        out[i] = 0.5 * (mean[i] * mean[i] + math.expm1(logvar[i]) - logvar[i])


@njit(cache=True, error_model="numpy")
def gaussian_kl_backward(grad_output, mean, logvar, grad_mean, grad_logvar):
    """grad_mean[i] = g μ;  grad_logvar[i] = g ½ expm1(lv) = g ½ (σ² - 1)."""
    scalar = grad_output.shape[0] == 1
    for i in range(mean.shape[0]):
        g = grad_output[0] if scalar else grad_output[i]
        grad_mean[i] = g * mean[i]
        grad_logvar[i] = g * 0.5 * math.expm1(logvar[i])


def gaussian_kl_forward_reference(mean, logvar):
    return (0.5 * (mean * mean + np.exp(logvar) - 1 - logvar)).astype(mean.dtype)


def gaussian_kl_backward_reference(grad_output, mean, logvar):
    return (
        (grad_output * mean).astype(mean.dtype),
        (grad_output * 0.5 * (np.exp(logvar) - 1)).astype(mean.dtype),
    )
