"""Input checks the models share, and the bookkeeping that lets ``backward`` refuse to run on
caches that no longer belong to the pass it differentiates."""

from __future__ import annotations

import math

import numpy as np

from scratch.nn.losses import _Loss
from scratch.nn.module import Module
from scratch.validate import check_array, is_real_number

MODEL_DTYPE = "the model's parameters are"  # check_array's dtype_source for a model's inputs


def _owner(model) -> str:
    return f"{type(model).__name__}({model.name})"


def flatten_input(model, x, name: str = "x") -> np.ndarray:
    """(N, D) or (N, C, H, W) with C·H·W = D = ``model.config["input_dim"]`` -> (N, D), a view.

    Refuses a non-array, the wrong dtype or rank, another D and an empty batch, naming the model.
    """
    owner = _owner(model)
    input_dim = model._config["input_dim"]
    check_array(x, owner, dtype=model.dtype, ndim=(2, 4), name=name, dtype_source=MODEL_DTYPE)
    features = math.prod(x.shape[1:])
    if features != input_dim or x.shape[0] == 0:
        raise ValueError(f"{owner}: {name} must be (N, {input_dim}) or (N, C, H, W) with "
                         f"C·H·W = {input_dim} and N >= 1, got shape {x.shape}")
    return x.reshape(x.shape[0], features)


class FlatInputModel(Module):
    """Base of the models that take (N, D) or (N, C, H, W) images flattened to D = ``input_dim``:
    their ``config``, ``config_for_images`` and input check, written once."""

    @property
    def config(self) -> dict:
        """The constructor's keyword arguments, JSON-serialisable."""
        return dict(self._config)

    @staticmethod
    def config_for_images(image_shape) -> dict:
        """Configuration that fits images of shape (C, H, W): the flattened input size."""
        return {"input_dim": int(np.prod(image_shape))}

    def _flatten_input(self, x, name="x"):
        return flatten_input(self, x, name)


def flatten_image_input(model, x, image_shape, name: str = "x") -> np.ndarray:
    """Like ``flatten_input`` for a model built for images of ``image_shape`` (C, H, W): an
    (N, C', H', W') input must be exactly (N, C, H, W), not merely hold C·H·W values per image
    (a convolution would read another channel count as a different image)."""
    owner = _owner(model)
    check_array(x, owner, dtype=model.dtype, ndim=(2, 4), name=name, dtype_source=MODEL_DTYPE)
    input_dim = math.prod(image_shape)
    fits = x.shape[1:] == (input_dim,) if x.ndim == 2 else x.shape[1:] == tuple(image_shape)
    if not fits or x.shape[0] == 0:
        raise ValueError(f"{owner}: {name} must be (N, {input_dim}) or (N, {', '.join(map(str, image_shape))}) "
                         f"with N >= 1, got shape {x.shape}")
    return x.reshape(x.shape[0], input_dim)


def check_model_array(model, value, name: str, shape) -> np.ndarray:
    """``value`` must be an array of ``shape`` in the model's dtype (noise, an upstream gradient)."""
    owner = _owner(model)
    check_array(value, owner, dtype=model.dtype, name=name, dtype_source=MODEL_DTYPE)
    if value.shape != tuple(shape):
        raise ValueError(f"{owner}: {name} must have shape {tuple(shape)}, got {value.shape}")
    return value


def check_loss_scale(model, grad_output) -> float:
    """dL/d(loss) for a model whose ``backward`` differentiates its scalar loss: a real number."""
    if not is_real_number(grad_output):
        got = f"an array of shape {grad_output.shape}" if isinstance(grad_output, np.ndarray) else repr(grad_output)
        raise ValueError(f"{type(model).__name__}.backward: grad_output is dL/d(loss), a real number "
                         f"(default 1), got {got}")
    return float(grad_output)


# -- which pass backward differentiates ----------------------------------------------------


def _caches(model) -> tuple:
    """Every forward cache the model's layers and losses hold now (the objects, not copies)."""
    layers = tuple(module._cache for module in model._caching_modules())
    losses = tuple(value._cache for value in vars(model).values() if isinstance(value, _Loss))
    return layers + losses


def mark_pass(model, from_loss: bool) -> None:
    """Record that a ``forward`` (or, ``from_loss``, a ``loss``) has just completed."""
    object.__setattr__(model, "_pass", (from_loss, _caches(model)))


def check_backward_ready(model, needs_loss: bool, hint: str = "") -> None:
    """Refuse a backward pass with nothing (or the wrong thing) to differentiate, before it
    accumulates anything: ``needs_loss`` when it starts from the loss rather than a given
    grad_output; either way the layers' caches must still be those the last pass left."""
    owner = f"{type(model).__name__}.backward"
    record = vars(model).get("_pass")
    if record is None:
        raise RuntimeError(f"{owner} called before {'loss' if needs_loss else 'forward or loss'}")
    from_loss, caches = record
    if needs_loss and not from_loss:
        raise RuntimeError(f"{owner}() differentiates the last loss, but forward ran after it; "
                           f"call loss(x) again{hint}")
    now = _caches(model)
    if len(now) != len(caches) or any(a is not b for a, b in zip(caches, now)):
        last = "loss" if from_loss else "forward"
        raise RuntimeError(f"{owner}: the layers ran again after the last {last} (encode, decode or a layer "
                           f"called directly), so their caches belong to another input; call {last} again")
