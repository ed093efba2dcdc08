"""The argument checks every layer, optimizer and model uses, in one place.

Every public boundary of ``scratch`` (a layer's constructor and forward, an optimizer's
hyper-parameters and ``load_state_dict``, a model's configuration, ``gradcheck``'s settings)
checks its arguments with these helpers, so that one kind of mistake gets one kind of error:

- a value of the wrong kind (a float where an int belongs, a bool where a number belongs, a
  list where an array belongs) is a ``TypeError``, as torch raises;
- a value of the right kind outside its range (``in_features=0``, a negative ``lr``, an
  array of the wrong shape) is a ``ValueError``.

(Two boundaries keep the ``ValueError`` they have always raised for either: ``gradcheck``'s
settings and the layout of a state ``Optimizer.load_state_dict`` is given.)

Each message starts with its owner (who is checking: ``"Linear"``, ``"Adam: invalid
learning rate"``), then names the argument, what was expected and what was received:
``"Conv2d: in_channels must be a positive int, got True (bool)"``. Every check runs before
its caller has changed any state, so a refused call leaves everything as it was.

Integers: ``bool`` is a subclass of ``int`` in Python, and torch takes ``True`` as a size in
places (``torch.nn.Linear(True, 2)`` builds a 1-input layer); ``scratch`` refuses it
everywhere (``is_integer``, ``check_integer``), since a flag passed as a size is a mistake.
"""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: dtype kinds a parameter or optimizer buffer can be loaded from (cast on copy, as torch does):
#: bool, signed and unsigned integers, floats. Complex, strings and objects have no real value.
REAL_KINDS = "biuf"


def check_float_dtype(dtype, owner: str) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise naming ``owner``."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dtype!r}") from error
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {resolved}")
    return resolved


def is_torch_tensor(value) -> bool:
    """True for a torch.Tensor, decided without importing torch."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def as_numpy_array(value, owner: str) -> np.ndarray:
    """A NumPy view or copy of an ndarray or torch tensor; anything else is refused.

    A tensor of a dtype NumPy lacks (bfloat16) comes back as float32, which holds it exactly.
    """
    if is_torch_tensor(value):
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:  # "Got unsupported ScalarType BFloat16"
            return value.float().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{owner}: expected a NumPy array or torch tensor, got {type(value).__name__}")


def check_real_array(array: np.ndarray, owner: str) -> np.ndarray:
    """Refuse an array with no real value to copy into a float buffer (complex, str, object)."""
    if array.dtype.kind not in REAL_KINDS:
        raise TypeError(f"{owner}: expected real numbers (bool, int or float), got dtype {array.dtype}")
    return array


def _dimensions(count: int) -> str:
    return f"{count} dimension" + ("" if count == 1 else "s")


def check_array(
    x,
    owner: str,
    *,
    dtype: np.dtype | None = None,
    ndim: int | tuple[int, ...] | None = None,
    min_ndim: int | None = None,
    name: str = "input",
    dtype_source: str = "the layer's parameters are",
    allow_empty: bool = True,
) -> np.ndarray:
    """Check that ``x`` is a float ndarray (of ``dtype``, with ``ndim`` axes); return it.

    Parameters
    ----------
    x : the value to check
    owner : who is checking, as the message's first words (``"Linear(3, 2)"``)
    dtype : the dtype ``x`` must have, if any; ``dtype_source`` says where it comes from
        (the message reads "input has dtype float32 but {dtype_source} float64")
    ndim, min_ndim : the allowed number of dimensions, or the least
    name : what ``x`` is, in the message
    allow_empty : False refuses an array with no elements (an empty batch)

    Raises ``TypeError``/``ValueError`` that name ``owner``, what it expected and what it got.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: {name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: {name} must be float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: {name} has dtype {x.dtype} but {dtype_source} {np.dtype(dtype)}; "
            f"convert with x.astype(np.{np.dtype(dtype).name})"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            expected = " or ".join(str(n) for n in allowed)
            raise ValueError(
                f"{owner}: {name} must have {expected} dimensions, got shape {x.shape}"
            )
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(
            f"{owner}: {name} must have at least {_dimensions(min_ndim)}, got shape {x.shape}"
        )
    if not allow_empty and x.size == 0:
        raise ValueError(f"{owner}: {name} is empty (shape {x.shape}); expected at least one element")
    return x


def check_same_shape(a: np.ndarray, b: np.ndarray, owner: str, names=("input", "target")) -> None:
    """Refuse two arrays of different shapes (``ValueError``), naming them by ``names``."""
    if a.shape != b.shape:
        raise ValueError(
            f"{owner}: {names[0]} and {names[1]} must have the same shape, "
            f"got {a.shape} and {b.shape}"
        )


def check_reduction(reduction: str, owner: str, allowed=("mean", "sum", "none")) -> str:
    """``reduction`` if it is one of ``allowed``, else a ``ValueError`` listing them."""
    if reduction not in allowed:
        raise ValueError(f"{owner}: reduction must be one of {allowed}, got {reduction!r}")
    return reduction


def is_real_number(value) -> bool:
    """A real scalar: a Python or NumPy int or float, or a 0-d real array; never a bool or str."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iuf"
    return isinstance(value, numbers.Real)


def check_real_number(value, owner: str, name: str, *, minimum: float | None = None,
                      below: float | None = None, allow_inf: bool = False) -> float:
    """``value`` as a float, if it is a real number (not NaN; finite unless ``allow_inf``) that is
    ``>= minimum`` and ``< below``; otherwise a ``TypeError``/``ValueError`` naming ``owner``,
    ``name``, the allowed range and the value received."""
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
    if below is not None:
        bounds.append(f"< {below:g}")
    expected = "a " + ("" if allow_inf else "finite ") + "number" + (f" {' and '.join(bounds)}" if bounds else "")
    if not is_real_number(value):
        raise TypeError(f"{owner}: {name} must be {expected}, got {value!r} ({type(value).__name__})")
    number = float(value)
    if (number != number or (not allow_inf and abs(number) == float("inf"))
            or (minimum is not None and number < minimum) or (below is not None and number >= below)):
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return number


def is_integer(value) -> bool:
    """A Python or NumPy integer (``3``, ``np.int64(3)``); never a bool, a float (not even
    ``3.0``), a 0-d array or a string."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _integer_range(minimum: int | None) -> str:
    if minimum is None:
        return "an int"
    if minimum == 1:
        return "a positive int"
    return f"an int >= {minimum}"


def check_integer(value, owner: str, name: str, *, minimum: int | None = None,
                  expected: str | None = None) -> int:
    """``value`` as a Python int, if it is an integer (``is_integer``) that is ``>= minimum``.

    Otherwise an error that names ``owner`` and ``name``, says what was expected and shows the
    value received: a ``TypeError`` for anything that is not an integer, bools included
    (``"Conv2d: in_channels must be a positive int, got True (bool)"``), a ``ValueError`` for
    an integer below ``minimum`` (``"... got 0"``). ``expected`` replaces the description of
    what is allowed (default ``"an int"``, ``"a positive int"`` for ``minimum=1``, else
    ``"an int >= {minimum}"``), for an argument that may also be something else
    (``"an int >= 1 or a pair of them"``).
    """
    expected = _integer_range(minimum) if expected is None else expected
    if not is_integer(value):
        raise TypeError(f"{owner}: {name} must be {expected}, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return int(value)


def resolve_rng(rng, owner: str) -> np.random.Generator:
    """The ``numpy.random.Generator`` behind a layer's or model's ``rng=`` argument.

    Accepts ``None`` (a fresh Generator seeded from the operating system's entropy), a
    ``numpy.random.Generator`` (returned as is, so the caller's stream advances) or a
    non-negative integer seed (``is_integer``: a Python or NumPy int; ``default_rng(seed)``).
    Anything else is refused with a ``TypeError`` naming ``owner``: a bool, a negative or
    non-integral number, a legacy ``np.random.RandomState``, a ``SeedSequence`` or a bit
    generator.
    """
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if is_integer(rng) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"{owner}: rng must be a numpy.random.Generator, a non-negative int seed or None, "
                    f"got {rng!r} ({type(rng).__name__})")
