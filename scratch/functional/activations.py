"""Element-wise activations as pure forward/backward pairs over the Numba kernels.

Each ``*_forward(x) -> (out, cache)`` and ``*_backward(grad_output, cache) -> grad_input``;
shapes are preserved, ``(*) -> (*)``, 0-d and empty arrays included (no kernel runs on an empty
one). ``relu_forward``, ``leaky_relu_forward``, ``silu_forward`` and ``elu_forward`` also run in
place (``inplace=True``, torch's ``relu_``/``leaky_relu_``/``silu_``/``elu_``): the result is
written into ``x``, which is returned. Transcendentals come from NumPy's SIMD ufuncs (exp, expm1,
log1p, tanh) between kernels wherever NumPy has them; erf, which it lacks, is ``math.erf`` inside a
kernel (a scalar call: this Numba build has no vector math library). Derivations:
docs/activations.md.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from scratch.kernels import activations as kernels


def _flat(a: np.ndarray) -> np.ndarray:
    # Kernels take flat contiguous arrays; ravel copies only when ``a`` is not contiguous.
    return np.asarray(a, order="C").reshape(-1)


def _apply(kernel, *arrays):
    """Run ``kernel(*flat arrays, flat result)`` into a new array of the first array's shape."""
    result = np.empty(arrays[0].shape, dtype=arrays[-1].dtype)
    if result.size:
        kernel(*(_flat(a) for a in arrays), result.reshape(-1))
    return result


def _in_place(kernel, x, *arguments):
    """Run ``kernel(flat x, *arguments, flat result)`` with the result written into ``x``; returns
    ``x``. Each kernel here reads element i before it writes element i, so input and output may
    be one array; a strided ``x`` is computed into a contiguous array and copied back."""
    if x.size == 0:
        return x
    if x.flags.c_contiguous:
        flat = x.reshape(-1)  # a view: the kernel writes x itself
        kernel(flat, *arguments, flat)
    else:
        out = np.empty(x.shape, dtype=x.dtype)
        kernel(_flat(x), *arguments, out.reshape(-1))
        np.copyto(x, out)
    return x


def relu_forward(x, inplace=False):
    """out = max(x, 0); ``inplace``: written into ``x`` (then out is x), as torch's ``relu_``.

    The cache is the output either way: the backward reads its sign."""
    out = _in_place(kernels.relu_forward, x) if inplace else _apply(kernels.relu_forward, x)
    return out, out


def relu_backward(grad_output, cache):
    """dx = dy · 1[out > 0]  (0 at x = 0, as torch)."""
    return _apply(kernels.relu_backward, grad_output, cache)


def leaky_relu_forward(x, negative_slope=0.01, inplace=False):
    """out = x if x > 0 else negative_slope · x; ``inplace``: written into ``x`` (then out is x),
    as torch's ``leaky_relu_``.

    The cache is ``(a, slope)`` with ``a`` the array whose sign the backward reads: the input,
    or in place the output, whose sign is the input's for a slope >= 0. In place with a negative
    slope (or NaN) it is ``(None, slope)``: the input is gone and the output's sign is not its
    sign, so ``leaky_relu_backward`` refuses, as torch's backward does."""
    slope = x.dtype.type(negative_slope)  # torch multiplies in the tensor's dtype
    if inplace:
        _in_place(kernels.leaky_relu_forward, x, slope)
        return x, (x if slope >= 0 else None, slope)
    out = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernels.leaky_relu_forward(_flat(x), slope, out.reshape(-1))
    return out, (np.asarray(x, order="C"), slope)


def leaky_relu_backward(grad_output, cache):
    """dx = dy · (1 if x > 0 else negative_slope), with x the input (or, after an in-place
    forward, the output: the same sign for slope >= 0)."""
    x, slope = cache
    if x is None:
        raise RuntimeError(
            f"leaky_relu_backward: the forward ran in place with the negative slope {slope}, so the input is "
            f"gone and the output's sign is not the input's (torch refuses this backward too); run the "
            f"forward with inplace=False")
    grad_input = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernels.leaky_relu_backward(_flat(grad_output), x.reshape(-1), slope, grad_input.reshape(-1))
    return grad_input


@functools.lru_cache(maxsize=None)
def sigmoid_zero_below(dtype) -> np.generic:
    """-L, L the largest value of ``dtype`` whose exponential is finite (88.72283 in float32,
    709.78271289338 in float64): σ(x) is exactly 0 below it, as in torch.

    torch evaluates σ(x) = 1 / (1 + e^{-x}); for x < -L, e^{-x} overflows to inf and σ(x) to 0,
    where the overflow-free e / (1 + e) would give a subnormal (3.8e-44 at x = -100 in float32).
    The convention matters downstream: BCE clamps log σ(x) at -100, so torch's loss there is 100
    where log(subnormal) would give |x| (89 to 100 nats per element in float32).
    """
    dtype = np.dtype(dtype)
    log_max = math.log(float(np.finfo(dtype).max))  # ln(max) in float64, accurate to 1e-16
    bound = dtype.type(log_max)
    if float(bound) > log_max:  # rounded up (float32: 88.72284 overflows exp): step down one value
        bound = np.nextafter(bound, dtype.type(0))
    return -bound


def sigmoid_forward(x, workspace=None):
    """out = σ(x) = 1 / (1 + e^{-x}), overflow-free for any x; 0 below ``sigmoid_zero_below``.

    ``workspace`` (a ``scratch.workspace.Workspace``): where e^{-|x|} is computed, reused from
    call to call; it never leaves this function.
    """
    if x.size == 0:  # nothing to compute (and no workspace to give up for it)
        out = np.empty(x.shape, dtype=x.dtype)
        return out, out
    exp_neg_abs = np.empty(x.shape, x.dtype) if workspace is None else workspace.get("exp_neg_abs", x.shape, x.dtype)
    np.abs(x, out=exp_neg_abs)  # (*); then in place: every exponent <= 0
    np.negative(exp_neg_abs, out=exp_neg_abs)
    np.exp(exp_neg_abs, out=exp_neg_abs)
    out = np.empty(x.shape, dtype=x.dtype)
    kernels.sigmoid_forward(_flat(x), _flat(exp_neg_abs), out.reshape(-1), sigmoid_zero_below(x.dtype))
    return out, out


def sigmoid_backward(grad_output, cache):
    """dx = dy · σ(x)(1 - σ(x)), from the cached output."""
    return _apply(kernels.sigmoid_backward, grad_output, cache)


def tanh_forward(x):
    """out = tanh(x), by NumPy's vectorized tanh (a scalar Numba loop calling ``math.tanh`` was
    12x slower than torch: this Numba build has no vector math library)."""
    out = np.tanh(x)
    return out, out


def tanh_backward(grad_output, cache):
    """dx = dy · (1 - tanh(x)²), from the cached output."""
    return _apply(kernels.tanh_backward, grad_output, cache)


GELU_APPROXIMATIONS = ("none", "tanh")


def gelu_forward(x, approximate="none"):
    """out = x · Φ(x), Φ(x) = ½(1 + erf(x/√2)) the standard normal CDF (``approximate="none"``),
    or out = ½x(1 + tanh(√(2/π)(x + 0.044715x³))) (``approximate="tanh"``): torch's two forms.

    The cache is ``(x, aux, approximate)``: the input, and the transcendental the backward would
    otherwise evaluate again, Φ(x) or tanh(√(2/π)(x + 0.044715x³)) (private arrays). The erf form
    calls ``math.erf`` per element in the kernel (NumPy has no erf, and this Numba build no vector
    math library); the tanh form takes NumPy's SIMD tanh between two kernels."""
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"gelu_forward: approximate must be 'none' or 'tanh' (torch's two forms), got {approximate!r}")
    x = np.asarray(x, order="C")  # kept for the backward: copied once if strided
    out = np.empty(x.shape, dtype=x.dtype)
    aux = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        flat_x, flat_aux = x.reshape(-1), aux.reshape(-1)
        if approximate == "tanh":
            kernels.gelu_tanh_inner(flat_x, flat_aux)
            np.tanh(aux, out=aux)
            kernels.gelu_tanh_forward(flat_x, flat_aux, out.reshape(-1))
        else:
            kernels.gelu_forward(flat_x, flat_aux, out.reshape(-1))
    return out, (x, aux, approximate)


def gelu_backward(grad_output, cache):
    """dx = dy · (Φ(x) + x φ(x)), φ(x) = e^{-x²/2}/√(2π) (erf form), or, with t the forward's tanh
    and u = √(2/π)(x + 0.044715x³), dx = dy · (½(1 + t) + ½x(1 - t²) · √(2/π)(1 + 3 · 0.044715x²))
    (tanh form); from the input and the forward's Φ(x) or t."""
    x, aux, approximate = cache
    kernel = kernels.gelu_tanh_backward if approximate == "tanh" else kernels.gelu_backward
    grad_input = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernel(_flat(grad_output), x.reshape(-1), aux.reshape(-1), grad_input.reshape(-1))
    return grad_input


def _exp_neg_abs(x) -> np.ndarray:
    """e^{-|x|} into a new contiguous array: every exponent <= 0, NumPy's SIMD exp."""
    e = np.empty(x.shape, dtype=x.dtype)
    np.abs(x, out=e)
    np.negative(e, out=e)
    np.exp(e, out=e)
    return e


def silu_forward(x, inplace=False):
    """out = x · σ(x), overflow-free for any x (σ as ``sigmoid_forward``: 0 below
    ``sigmoid_zero_below``, where torch's x / (1 + e^{-x}) is -0); ``inplace``: written into ``x``
    (then out is x), as torch's ``silu_``.

    The cache is ``(x, σ(x))``, σ(x) a private array; in place, x is a copy taken before the
    write (torch's in-place silu keeps a copy of its input too)."""
    sigmoid = _exp_neg_abs(x)  # e^{-|x|}, overwritten with σ(x) by the kernel
    if x.size == 0:
        return (x if inplace else np.empty(x.shape, dtype=x.dtype)), (np.asarray(x, order="C"), sigmoid)
    zero_below = sigmoid_zero_below(x.dtype)
    flat_sigmoid = sigmoid.reshape(-1)
    if inplace:
        kept = np.array(x, order="C")  # the input, before the write
        _in_place(kernels.silu_forward, x, flat_sigmoid, zero_below, flat_sigmoid)
        return x, (kept, sigmoid)
    x = np.asarray(x, order="C")  # kept for the backward: copied once if strided
    out = np.empty(x.shape, dtype=x.dtype)
    kernels.silu_forward(x.reshape(-1), flat_sigmoid, zero_below, flat_sigmoid, out.reshape(-1))
    return out, (x, sigmoid)


def silu_backward(grad_output, cache):
    """dx = dy · σ(x)(1 + x(1 - σ(x))), from the input and the forward's σ(x)."""
    x, sigmoid = cache
    return _apply(kernels.silu_backward, grad_output, x, sigmoid)


def _nonpositive(x) -> np.ndarray:
    """min(x, 0) (NaN stays NaN) into a new contiguous array, for an exp/expm1 that cannot overflow
    (into ``out=``: a ufunc returns a 0-d input's result as a scalar otherwise)."""
    result = np.empty(x.shape, dtype=x.dtype)
    np.minimum(x, x.dtype.type(0), out=result)
    return result


def elu_forward(x, alpha=1.0, inplace=False):
    """out = x for x > 0, alpha · (e^x - 1) for x <= 0, with e^x - 1 as expm1(x) (no cancellation
    near 0); ``inplace``: written into ``x`` (then out is x), as torch's ``elu_``.

    The cache is ``(a, alpha, from_output)``: the input (torch's backward reads it), or in place
    the output, from which the backward gets alpha · e^x as out + alpha (torch's in-place backward
    does the same); the output's sign is the input's only for alpha >= 0, so in place with a
    negative alpha (or NaN) the cache is ``(None, alpha, True)`` and ``elu_backward`` refuses,
    as torch's backward does."""
    alpha = x.dtype.type(alpha)  # torch multiplies in the tensor's dtype
    expm1 = _nonpositive(x)
    np.expm1(expm1, out=expm1)
    if inplace:
        _in_place(kernels.elu_forward, x, expm1.reshape(-1), alpha)
        return x, (x if alpha >= 0 else None, alpha, True)
    x = np.asarray(x, order="C")  # kept for the backward: copied once if strided
    out = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernels.elu_forward(x.reshape(-1), expm1.reshape(-1), alpha, out.reshape(-1))
    return out, (x, alpha, False)


def elu_backward(grad_output, cache):
    """dx = dy for x > 0; dy · alpha · e^x for x <= 0, from the input, or after an in-place forward
    dy · (out + alpha) from the output (out <= 0 exactly where x <= 0, for alpha >= 0)."""
    a, alpha, from_output = cache
    if a is None:
        raise RuntimeError(
            f"elu_backward: the forward ran in place with the negative alpha {alpha}, so the input is gone and "
            f"the output does not tell which branch each element took (torch refuses this backward too); run "
            f"the forward with inplace=False")
    grad_input = np.empty(a.shape, dtype=a.dtype)
    if a.size == 0:
        return grad_input
    if from_output:
        kernels.elu_backward_from_output(_flat(grad_output), a.reshape(-1), alpha, grad_input.reshape(-1))
        return grad_input
    exp = _nonpositive(a)
    np.exp(exp, out=exp)
    kernels.elu_backward(_flat(grad_output), a.reshape(-1), exp.reshape(-1), alpha, grad_input.reshape(-1))
    return grad_input


def softplus_forward(x, beta=1.0, threshold=20.0):
    """out = x where beta · x > threshold, else log(1 + e^{βx}) / beta, evaluated as
    (max(βx, 0) + log1p(e^{-|βx|})) / beta: no exponential of a positive number, so finite for
    any threshold (torch's log1p(exp(βx)) overflows once βx passes ~88.7 in float32, ~709.8 in
    float64, which only a threshold above those reaches).

    The cache is ``(x, e^{-|βx|}, beta, threshold)``; beta and threshold in the input's dtype, as
    torch converts them."""
    beta, threshold = x.dtype.type(beta), x.dtype.type(threshold)
    x = np.asarray(x, order="C")  # kept for the backward: copied once if strided
    exp_neg_abs = np.empty(x.shape, dtype=x.dtype)
    out = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        flat_x, flat_e = x.reshape(-1), exp_neg_abs.reshape(-1)
        kernels.softplus_exponent(flat_x, beta, flat_e)  # -|βx| (in the kernel: no NumPy overflow check)
        np.exp(exp_neg_abs, out=exp_neg_abs)
        np.log1p(exp_neg_abs, out=out)
        kernels.softplus_forward(flat_x, beta, threshold, out.reshape(-1), out.reshape(-1))
    return out, (x, exp_neg_abs, beta, threshold)


def softplus_backward(grad_output, cache):
    """dx = dy where beta · x > threshold, else dy · σ(βx), σ from the forward's e^{-|βx|}."""
    x, exp_neg_abs, beta, threshold = cache
    grad_input = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        kernels.softplus_backward(_flat(grad_output), x.reshape(-1), beta, threshold, exp_neg_abs.reshape(-1),
                                  grad_input.reshape(-1))
    return grad_input
