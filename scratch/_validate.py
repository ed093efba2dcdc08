"""Input checks shared by every public boundary. Each error names who raised it."""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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
    """A NumPy view or copy of an ndarray or torch tensor; anything else is refused."""
    if is_torch_tensor(value):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{owner}: expected a NumPy array or torch tensor, got {type(value).__name__}")


def check_array(
    x,
    owner: str,
    *,
    dtype: np.dtype | None = None,
    ndim: int | tuple[int, ...] | None = None,
    min_ndim: int | None = None,
    name: str = "input",
) -> np.ndarray:
    """Check that ``x`` is a float ndarray (of ``dtype``, with ``ndim`` axes); return it.

    Raises ``TypeError``/``ValueError`` that name ``owner``, what it expected and what it got.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: {name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: {name} must be float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{owner}: {name} has dtype {x.dtype} but the layer's parameters are {dtype}; "
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
            f"{owner}: {name} must have at least {min_ndim} dimensions, got shape {x.shape}"
        )
    return x


def check_same_shape(a: np.ndarray, b: np.ndarray, owner: str, names=("input", "target")) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{owner}: {names[0]} and {names[1]} must have the same shape, "
            f"got {a.shape} and {b.shape}"
        )


def check_reduction(reduction: str, owner: str, allowed=("mean", "sum", "none")) -> str:
    if reduction not in allowed:
        raise ValueError(f"{owner}: reduction must be one of {allowed}, got {reduction!r}")
    return reduction
