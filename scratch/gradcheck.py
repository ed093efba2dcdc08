"""Check hand-written backward passes against float64 central differences.

Three entry points, one report:

- ``gradcheck(module, *inputs)``: a scratch Module (or loss) with ``forward`` and ``backward``;
  checks the gradient of the first input (or of every input, when ``backward`` returns a tuple)
  and of every parameter.
- ``gradcheck((forward, backward), *inputs)``: a pure pair from ``scratch.functional``,
  ``forward(*inputs) -> (out, cache)``, ``backward(dout, cache) -> grad or tuple of grads``.
- ``gradcheck_model(model, x, noise=...)``: a model's scalar ``loss`` against ``backward()``.

A tensor-valued output is reduced to a scalar with a *random* cotangent c, L = Σ c ⊙ out, so that
each output element contributes with its own weight (an all-ones cotangent hides errors that
cancel when summed). Every element of every checked array is perturbed, ±eps, unless
``max_elements`` caps the count per array, in which case a random subset is checked.

Element j passes when |analytic - numeric| <= atol + rtol · |numeric| + floor, where
floor = 16 u S / eps is the rounding noise of the difference quotient itself: L is a sum whose
terms have total magnitude S = Σ |c ⊙ out|, each evaluation of it errs by a few u·S (u = 2^-53),
and the quotient divides that error by 2 eps. No gradient smaller than the floor can be resolved
by central differences; the report states it. The report gives the
worst absolute and relative error, each with the array and index where it occurred; a failure
raises ``GradcheckError`` carrying the report.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from scratch.validate import is_integer, is_real_number

__all__ = ["GradcheckError", "GradcheckResult", "gradcheck", "gradcheck_model"]

DEFAULT_EPS = 1e-6
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-8


@dataclass
class GradcheckResult:
    """The outcome of one check: worst errors, where they occurred, and how much was checked."""

    passed: bool
    max_abs_error: float
    max_abs_where: str
    max_rel_error: float
    max_rel_where: str
    worst_ratio: float  # max over elements of |error| / (atol + rtol |numeric|); <= 1 passes
    worst_where: str
    elements_checked: int
    rounding_floor: float  # the smallest gradient error central differences can resolve here
    arrays: list = field(default_factory=list)  # (name, shape, elements checked)

    def __bool__(self) -> bool:
        """True when every element passed: ``assert gradcheck(...)`` fails on a wrong gradient, as in torch."""
        return self.passed

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"gradcheck {verdict}: {self.elements_checked} elements in "
            f"{len(self.arrays)} arrays; max abs error {self.max_abs_error:.3e} at {self.max_abs_where}; "
            f"max rel error {self.max_rel_error:.3e} at {self.max_rel_where}; "
            f"worst error/tolerance {self.worst_ratio:.3g} at {self.worst_where} "
            f"(rounding floor {self.rounding_floor:.1e})"
        )


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with central differences."""

    def __init__(self, result: GradcheckResult):
        super().__init__(str(result))
        self.result = result


def _require_float64(array, name: str) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"gradcheck: {name} must be a NumPy array, got {type(array).__name__}")
    if array.dtype != np.float64:
        raise TypeError(
            f"gradcheck: {name} is {array.dtype}; central differences need float64 "
            f"(build the layer or model with dtype=np.float64)"
        )


def _check_settings(eps, rtol, atol, max_elements) -> None:
    """Refuse a step or tolerance that would make the comparison meaningless (eps = 0 divides
    by zero; a negative tolerance fails everything), before anything is run."""
    if not (is_real_number(eps) and 0 < eps < np.inf):
        raise ValueError(f"gradcheck: eps must be a finite number > 0, got {eps!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (is_real_number(value) and 0 <= value < np.inf):
            raise ValueError(f"gradcheck: {name} must be a finite number >= 0, got {value!r}")
    if max_elements is not None and not (is_integer(max_elements) and max_elements >= 1):
        raise ValueError(f"gradcheck: max_elements must be a positive int or None, got {max_elements!r}")


def _generator(rng) -> np.random.Generator:
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise TypeError(f"gradcheck: rng must be a numpy.random.Generator, a non-negative int seed or None, "
                        f"got {rng!r}") from None


def _check_cotangent(cotangent, out, where: str) -> None:
    """The cotangent must match the output it weights: an array of out's shape (a tuple of them
    for a tuple output), or a real number for a scalar output."""
    if isinstance(out, tuple):
        if not (isinstance(cotangent, tuple) and len(cotangent) == len(out)):
            raise ValueError(f"gradcheck: {where} is a tuple of {len(out)} arrays, so cotangent must be too, "
                             f"got {type(cotangent).__name__}")
        for index, (c, o) in enumerate(zip(cotangent, out)):
            _check_cotangent(c, o, f"{where}[{index}]")
        return
    if np.ndim(out) == 0:
        if not is_real_number(cotangent):
            raise ValueError(f"gradcheck: {where} is a scalar, so cotangent must be a real number, got {cotangent!r}")
        return
    if not isinstance(cotangent, np.ndarray) or cotangent.shape != np.shape(out):
        got = f"shape {cotangent.shape}" if isinstance(cotangent, np.ndarray) else type(cotangent).__name__
        raise ValueError(f"gradcheck: cotangent must be an array of {where}'s shape {np.shape(out)}, got {got}")


ROUNDING_FACTOR = 16
UNIT_ROUNDOFF = 2.0**-53


def _term_magnitude(out, cotangent) -> float:
    """S = Σ |c ⊙ out|: the size of the terms whose sum is L."""
    if isinstance(out, tuple):
        return sum(_term_magnitude(o, c) for o, c in zip(out, cotangent))
    return float(np.sum(np.abs(np.asarray(out, dtype=np.float64) * cotangent)))


def _scalarize(out, cotangent) -> float:
    """L = Σ c ⊙ out, accumulated in float64."""
    if isinstance(out, tuple):
        return sum(_scalarize(o, c) for o, c in zip(out, cotangent))
    return float(np.sum(np.asarray(out, dtype=np.float64) * cotangent))


def _draw_cotangent(out, rng):
    if isinstance(out, tuple):
        return tuple(_draw_cotangent(o, rng) for o in out)
    if np.ndim(out) == 0:
        return float(rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0]))
    return rng.standard_normal(np.shape(out))


class _Comparison:
    """Accumulates per-element errors over several arrays."""

    def __init__(self, rtol: float, atol: float, floor: float):
        self.rtol, self.atol, self.floor = rtol, atol, floor
        self.abs = (-1.0, "")
        self.rel = (-1.0, "")
        self.ratio = (-1.0, "")
        self.count = 0
        self.arrays = []

    def add(self, name, shape, indices, analytic, numeric):
        self.arrays.append((name, tuple(shape), len(indices)))
        for flat_index, a, n in zip(indices, analytic, numeric):
            where = f"{name}[{', '.join(str(i) for i in np.unravel_index(flat_index, shape))}]"
            error = abs(a - n)
            scale = max(abs(a), abs(n))
            rel = error / scale if scale > 0 else 0.0
            ratio = error / (self.atol + self.rtol * abs(n) + self.floor)
            if not np.isfinite(a):  # a NaN or inf analytic gradient always fails
                error, rel, ratio = np.inf, np.inf, np.inf
            if error > self.abs[0]:
                self.abs = (error, where)
            if rel > self.rel[0]:
                self.rel = (rel, where)
            if ratio > self.ratio[0]:
                self.ratio = (ratio, where)
            self.count += 1

    def compare(self, name, array, analytic, loss_of, eps, max_elements, rng) -> None:
        """Central differences of ``loss_of`` w.r.t. ``array`` (all or a subset) vs ``analytic``."""
        indices = _indices(array.size, max_elements, rng)
        numeric = _numeric_gradient(loss_of, array, indices, eps)
        self.add(name, array.shape, indices, analytic.reshape(-1)[indices], numeric)

    def finish(self, raise_on_failure: bool) -> GradcheckResult:
        result = self.result()
        if raise_on_failure and not result.passed:
            raise GradcheckError(result)
        return result

    def result(self) -> GradcheckResult:
        # plain Python bools, floats and ints: a result reads cleanly and serialises as JSON
        return GradcheckResult(
            passed=bool(self.ratio[0] <= 1.0),
            max_abs_error=float(max(self.abs[0], 0.0)), max_abs_where=self.abs[1],
            max_rel_error=float(max(self.rel[0], 0.0)), max_rel_where=self.rel[1],
            worst_ratio=float(max(self.ratio[0], 0.0)), worst_where=self.ratio[1],
            elements_checked=int(self.count), rounding_floor=float(self.floor),
            arrays=[(name, tuple(int(n) for n in shape), int(count)) for name, shape, count in self.arrays],
        )


def _numeric_gradient(loss_of, array: np.ndarray, indices, eps: float) -> np.ndarray:
    """Central differences of ``loss_of()`` w.r.t. ``array.flat[indices]``, perturbing in place."""
    flat = array.reshape(-1)  # a view: array is C-contiguous
    gradient = np.empty(len(indices))
    for k, j in enumerate(indices):
        original = flat[j]
        try:
            flat[j] = original + eps
            plus = loss_of()
            flat[j] = original - eps
            minus = loss_of()
        finally:
            flat[j] = original  # restored exactly, even when loss_of raises
        gradient[k] = (plus - minus) / (2 * eps)
    return gradient


def _indices(size: int, max_elements, rng) -> np.ndarray:
    if max_elements is None or size <= max_elements:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_elements, replace=False))


class _Target:
    """What ``gradcheck`` differentiates, a Module/loss or a ``(forward, backward)`` pair, behind
    one interface: a forward over the inputs, a backward, and the parameters to check."""

    def __init__(self, target, inputs: tuple, check_parameters: bool):
        self.target, self.inputs = target, inputs
        self.is_pair = isinstance(target, tuple)
        if self.is_pair:
            if len(target) != 2 or not all(callable(f) for f in target):
                raise TypeError("gradcheck: a function target must be a (forward, backward) pair")
            self.parameters = []
            return
        if not (callable(target) and hasattr(target, "backward")):
            raise TypeError(
                f"gradcheck: target must be a scratch Module/loss or a (forward, backward) pair, "
                f"got {type(target).__name__}"
            )
        self.parameters = list(target.named_parameters()) if (check_parameters and hasattr(target, "named_parameters")) else []

    def forward(self) -> tuple:
        """``(output, cache)`` of one forward pass over the inputs; a Module keeps its own cache (None)."""
        if self.is_pair:
            return self.target[0](*self.inputs)
        return self.target(*self.inputs), None

    def backward(self, cotangent, cache) -> tuple:
        """The gradients backward returns for ``cotangent``, as a tuple (of one for a single array)."""
        grads = self.target[1](cotangent, cache) if self.is_pair else self.target.backward(cotangent)
        return grads if isinstance(grads, tuple) else (grads,)

    def gradients_by_input(self, grads: tuple, array_positions: list) -> dict:
        """Input position -> gradient: a pair's backward gives one per array input, a Module's one per input."""
        if self.is_pair:
            return dict(zip(array_positions, grads))
        return dict(enumerate(grads))


def _check_arrays(inputs: tuple, parameters: list) -> list:
    """The positions of the array inputs, once each is float64 and C-contiguous and every parameter float64."""
    array_positions = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
    for i in array_positions:
        _require_float64(inputs[i], f"input {i}")
        if not inputs[i].flags.c_contiguous:
            raise ValueError(f"gradcheck: input {i} must be C-contiguous")
    for name, parameter in parameters:
        _require_float64(parameter.data, f"parameter {name!r}")
    return array_positions


def _check_wrt(wrt, array_positions: list) -> list | None:
    """``wrt`` as a list of array-input positions (one int is a list of one); None stays None."""
    if wrt is None:
        return None
    wrt = list(wrt) if hasattr(wrt, "__iter__") else [wrt]
    for i in wrt:
        if not is_integer(i) or i not in array_positions:
            raise ValueError(f"gradcheck: wrt must name array inputs (positions {array_positions}), got {i!r}")
    return wrt


@contextmanager
def _caller_grads_kept(parameters: list):
    """Give every parameter's ``.grad`` back as it was on leaving, also when the body raises."""
    saved_grads = [parameter.grad.copy() for _, parameter in parameters]
    try:
        yield
    finally:
        for (_, parameter), saved in zip(parameters, saved_grads):
            parameter.grad[...] = saved


def _analytic_pass(target: _Target, cotangent, rng) -> tuple:
    """One forward and backward: ``(out, cotangent, input gradients, parameter gradients)``, the
    cotangent drawn if not given, the parameter gradients accumulated from zero."""
    with _caller_grads_kept(target.parameters):  # even when the target refuses its input
        for _, parameter in target.parameters:
            parameter.grad.fill(0)
        out, cache = target.forward()
        if cotangent is None:
            cotangent = _draw_cotangent(out, rng)
        _check_cotangent(cotangent, out, "the output")
        grads = target.backward(cotangent, cache)
        parameter_grads = [parameter.grad.copy() for _, parameter in target.parameters]
    return out, cotangent, grads, parameter_grads


def _input_gradient(grad_of: dict, i: int, array: np.ndarray) -> np.ndarray:
    """The analytic gradient of input ``i`` in float64, refused if missing or of another shape."""
    if grad_of.get(i) is None:
        raise ValueError(f"gradcheck: backward returned no gradient for input {i}")
    analytic = np.asarray(grad_of[i], dtype=np.float64)
    if analytic.shape != array.shape:
        raise ValueError(f"gradcheck: gradient of input {i} has shape {analytic.shape}, input has {array.shape}")
    return analytic


def _rounding_floor(magnitude: float, eps: float) -> float:
    """16 u S / eps: the rounding noise of a central difference of a sum of terms of total size S."""
    return ROUNDING_FACTOR * UNIT_ROUNDOFF * magnitude / eps


def gradcheck(
    target,
    *inputs,
    cotangent=None,
    wrt=None,
    check_parameters: bool = True,
    eps: float = DEFAULT_EPS,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_elements: int | None = None,
    rng=None,
    raise_on_failure: bool = True,
) -> GradcheckResult:
    """Compare a backward pass with central differences of its forward pass.

    Parameters
    ----------
    target : a scratch Module or loss, or a ``(forward, backward)`` pair of functions
    *inputs : float64 arrays (other positional arguments, e.g. a slope, are passed through)
    cotangent : array (or float for a scalar output); drawn from ``rng`` when omitted
    wrt : indices of the inputs to check; default: every input that backward returns a
        gradient for (for a Module whose backward returns one array: input 0)
    check_parameters : also check every parameter's ``.grad`` (Modules only)
    eps, rtol, atol : step and tolerances (see the module docstring)
    max_elements : cap on the elements checked per array (a random subset); None checks all

    Returns
    -------
    GradcheckResult. Raises GradcheckError on failure when ``raise_on_failure``.
    Inputs and parameters are restored exactly; parameter ``.grad`` is left as it was, also when
    the target raises.
    """
    _check_settings(eps, rtol, atol, max_elements)
    rng = _generator(rng)
    if not inputs:
        raise ValueError("gradcheck: no inputs given; pass the arrays the target is called with")
    checked = _Target(target, inputs, check_parameters)
    array_positions = _check_arrays(inputs, checked.parameters)
    wrt = _check_wrt(wrt, array_positions)
    out, cotangent, grads, parameter_grads = _analytic_pass(checked, cotangent, rng)
    grad_of = checked.gradients_by_input(grads, array_positions)
    if wrt is None:  # every array input that backward returned a gradient for
        wrt = [i for i in array_positions if grad_of.get(i) is not None]

    def loss_of():
        value, _ = checked.forward()
        return _scalarize(value, cotangent)

    comparison = _Comparison(rtol, atol, _rounding_floor(_term_magnitude(out, cotangent), eps))
    for i in wrt:
        analytic = _input_gradient(grad_of, i, inputs[i])
        comparison.compare(f"input{i}", inputs[i], analytic, loss_of, eps, max_elements, rng)
    for (name, parameter), analytic in zip(checked.parameters, parameter_grads):
        comparison.compare(name, parameter.data, analytic, loss_of, eps, max_elements, rng)
    return comparison.finish(raise_on_failure)


def gradcheck_model(
    model,
    x: np.ndarray,
    noise=None,
    *,
    eps: float = DEFAULT_EPS,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_elements: int | None = None,
    rng=None,
    raise_on_failure: bool = True,
) -> GradcheckResult:
    """Check ``model.backward()`` against central differences of ``model.loss(x, noise)["loss"]``.

    ``noise`` must be given (or the model deterministic) so that every evaluation sees the
    same corruption or ε; pass the arrays the model would otherwise draw (a model that draws
    noise is refused without it). Parameter ``.grad`` is left as it was, also when the model
    refuses ``x`` or ``noise``.
    """
    _check_settings(eps, rtol, atol, max_elements)
    rng = _generator(rng)
    if not all(callable(getattr(model, name, None)) for name in ("loss", "backward", "named_parameters")):
        raise TypeError(f"gradcheck_model: model must be a scratch model (with loss, backward and "
                        f"named_parameters), got {type(model).__name__}; for a layer use gradcheck")
    _require_float64(x, "x")
    parameters = list(model.named_parameters())
    for name, parameter in parameters:
        _require_float64(parameter.data, f"parameter {name!r}")
    noise_for, config = getattr(model, "noise_for", None), getattr(model, "config", None)
    if noise is None and callable(noise_for) and isinstance(config, dict):
        if noise_for(config, x.shape, np.random.default_rng(0), x.dtype) is not None:
            raise ValueError(f"gradcheck_model: {type(model).__name__} draws noise on every loss, so central "
                             f"differences would see a different loss each time; pass noise=model.draw_noise(x.shape)")
    with _caller_grads_kept(parameters):  # even when the model refuses its input
        model.zero_grad()
        base_loss = float(model.loss(x, noise=noise)["loss"])
        model.backward()
        analytic = [parameter.grad.copy() for _, parameter in parameters]

    def loss_of():
        return float(model.loss(x, noise=noise)["loss"])

    # The loss's terms are not visible from outside; |L| is the best available measure of S.
    comparison = _Comparison(rtol, atol, _rounding_floor(abs(base_loss), eps))
    for (name, parameter), gradient in zip(parameters, analytic):
        comparison.compare(name, parameter.data, gradient, loss_of, eps, max_elements, rng)
    return comparison.finish(raise_on_failure)
