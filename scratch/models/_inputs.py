"""Input checks the flat-input (MLP-style) models share."""

from __future__ import annotations

import math

import numpy as np

from scratch._validate import check_array


def flatten_input(model, x, name: str = "x") -> np.ndarray:
    """(N, D) or (N, C, H, W) with C·H·W = D = ``model.config["input_dim"]`` -> (N, D), a view.

    Refuses a non-array, the wrong dtype or rank, another D and an empty batch, naming the model.
    """
    owner = f"{type(model).__name__}({model.name})"
    input_dim = model._config["input_dim"]
    check_array(x, owner, dtype=model.dtype, ndim=(2, 4), name=name)
    features = math.prod(x.shape[1:])
    if features != input_dim or x.shape[0] == 0:
        raise ValueError(f"{owner}: {name} must be (N, {input_dim}) or (N, C, H, W) with "
                         f"C·H·W = {input_dim} and N >= 1, got shape {x.shape}")
    return x.reshape(x.shape[0], features)
