"""Every hypothesis strategy of the suite. Values valid by construction, never filtered.

Strategies draw *descriptions* (shapes, options, a seed); arrays are then generated from a NumPy
generator seeded by the draw, so examples shrink to small shapes and simple seeds. The strategies
for shapes and layer geometries are public, in ``scratch.testing`` (users check their own layers
with them), and re-exported here with the rest.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from scratch.models.registry import model_names
from scratch.testing import (  # noqa: F401 - re-exported: the tests take every strategy from here
    avg_pool2d_cases,
    broadcastable_shapes,
    conv2d_cases,
    conv_transpose2d_cases,
    conv_transpose2d_output_size_cases,
    flatten_cases,
    layer_arguments,
    linear_cases,
    loss_cases,
    max_pool2d_cases,
    max_unpool2d_cases,
    max_unpool2d_scatter_cases,
    mse_broadcast_cases,
    shapes,
    unflatten_cases,
)

dtypes = st.sampled_from([np.float64, np.float32])
seeds = st.integers(min_value=0, max_value=2**32 - 1)
batch_sizes = st.integers(min_value=1, max_value=5)
features = st.integers(min_value=1, max_value=9)
reductions = st.sampled_from(["mean", "sum", "none"])
kl_reductions = st.sampled_from(["sum", "batchmean", "mean", "none"])


negative_slopes = st.sampled_from([0.01, 0.2, 1.5, -0.3, 0.0])
non_negative_slopes = st.sampled_from([0.01, 0.2, 1.5, 0.0])  # where the output has the input's sign
rows = st.integers(min_value=1, max_value=40)  # a batch's rows, for the fused Linear kernels


def away_from_zero(rng: np.random.Generator, shape, margin: float = 0.05) -> np.ndarray:
    """Normal-ish values with |x| >= margin: central differences never straddle a kink at 0."""
    magnitude = margin + np.abs(rng.standard_normal(shape))
    return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)


def probabilities(rng: np.random.Generator, shape, low: float = 0.02) -> np.ndarray:
    """Values in [low, 1 - low]: BCE's gradient is smooth there and its clamps inactive."""
    return low + (1 - 2 * low) * rng.random(shape)


def binary_targets(rng: np.random.Generator, shape, soft: bool) -> np.ndarray:
    """0/1 targets, or soft targets in [0, 1] (BCE allows both)."""
    return rng.random(shape) if soft else (rng.random(shape) < 0.5).astype(np.float64)


optimizer_settings = st.one_of(
    st.fixed_dictionaries({
        "name": st.just("SGD"),
        "lr": st.sampled_from([1e-2, 0.1]),
        "momentum": st.sampled_from([0.0, 0.9]),
        "dampening": st.sampled_from([0.0, 0.3]),
        "weight_decay": st.sampled_from([0.0, 1e-2]),
        "nesterov": st.booleans(),
        "maximize": st.booleans(),
    }, optional={"foreach": st.sampled_from([None, False, True]), "fused": st.sampled_from([None, False])})
      .map(lambda s: {**s, "dampening": 0.0} if s["nesterov"] else s)
      .map(lambda s: {**s, "momentum": 0.9} if s["nesterov"] else s),
    st.fixed_dictionaries({
        "name": st.sampled_from(["Adam", "AdamW"]),
        "lr": st.sampled_from([1e-3, 1e-2]),
        "betas": st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]),
        "eps": st.sampled_from([1e-8, 1e-3]),
        "weight_decay": st.sampled_from([0.0, 1e-5, 0.1]),
        "amsgrad": st.booleans(),
        "maximize": st.booleans(),
    }, optional={"foreach": st.sampled_from([None, False, True]), "fused": st.sampled_from([None, False]),
                 "decoupled_weight_decay": st.booleans()})
      # AdamW takes no decoupled_weight_decay (it is always on), in torch as here
      .map(lambda s: {k: v for k, v in s.items() if not (k == "decoupled_weight_decay" and s["name"] == "AdamW")}),
)


# ---------------------------------------------------------------------------- penalised autoencoders

REGULARIZED_MODELS = model_names(family="regularized")
SMOOTH_TIED_ACTIVATIONS = ("sigmoid", "tanh")  # no kink: central differences are unambiguous
TIED_ACTIVATIONS = (*SMOOTH_TIED_ACTIVATIONS, "relu", "leaky_relu")


@st.composite
def regularized_model_cases(draw, smooth: bool = False):
    """(name, config, input shape) of a small sparse, contractive or tied autoencoder with any of
    its options; image-shaped (N, C, H, W) or flat (N, D) input, batch 1 and one hidden unit
    included. ``smooth``: the tied model's activation without a kink (for finite differences)."""
    name = draw(st.sampled_from(REGULARIZED_MODELS))
    side, channels = draw(st.integers(1, 4)), draw(st.integers(1, 2))
    config = dict(input_dim=channels * side * side, hidden_dim=draw(st.integers(1, 8)))
    if name == "sparse-ae":
        config["penalty"] = draw(st.sampled_from(["kl", "l1"]))
        config["sparsity_target"] = draw(st.sampled_from([0.05, 0.3, 0.9]))
        config["sparsity_weight"] = draw(st.sampled_from([None, 0.0, 0.5, 3.0]))
    elif name == "contractive-ae":
        config["contraction_weight"] = draw(st.sampled_from([0.0, 0.1, 5.0]))
    else:
        config["activation"] = draw(st.sampled_from(SMOOTH_TIED_ACTIVATIONS if smooth else TIED_ACTIVATIONS))
    batch = draw(batch_sizes)
    shape = (batch, channels, side, side) if draw(st.booleans()) else (batch, config["input_dim"])
    return name, config, shape


@st.composite
def hidden_codes(draw):
    """(N, H, D): a batch of hidden codes h (N, H) and the width D of the input they encode."""
    return draw(batch_sizes), draw(st.integers(1, 8)), draw(st.integers(1, 9))


sparsity_targets = st.sampled_from([0.01, 0.05, 0.5, 0.95])
penalty_weights = st.sampled_from([0.1, 1.0, 3.0])


# ---------------------------------------------------------------------------- damaged files

MUTATION_KINDS = ("flip", "truncate", "insert", "delete", "overwrite")
positions = st.integers(-(2**20), 2**20)  # where an edit lands: see byte_mutations


@st.composite
def byte_mutations(draw, max_edits: int = 3):
    """1..max_edits edits of a file's bytes, each ``(kind, position, argument)``.

    ``position`` is taken modulo the length when applied (``apply_mutations``), so one draw fits
    any file; a negative one counts from the end (where the payloads are), and it shrinks towards
    the first byte (where the headers are). ``argument``: the bit to flip, the number of bytes to
    delete, or the bytes to insert or write over the file's.
    """
    edits = []
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(MUTATION_KINDS))
        position = draw(positions)
        if kind == "flip":
            argument = draw(st.integers(0, 7))
        elif kind == "delete":
            argument = draw(st.integers(1, 16))
        elif kind in ("insert", "overwrite"):
            argument = draw(st.binary(min_size=1, max_size=16))
        else:
            argument = None
        edits.append((kind, position, argument))
    return edits


@st.composite
def byte_flips(draw, max_edits: int = 3):
    """1..max_edits bit flips: edits that keep the length, so that a damaged payload often still
    parses and the readers' checks beyond the framing are reached."""
    return [("flip", draw(positions), draw(st.integers(0, 7)))
            for _ in range(draw(st.integers(1, max_edits)))]


def apply_mutations(data: bytes, mutations) -> bytes:
    """``data`` with each edit of ``byte_mutations`` applied in turn."""
    data = bytearray(data)
    for kind, position, argument in mutations:
        at = position % (len(data) + 1)  # Python's modulo: -1 is the end of the file
        if kind == "flip":
            if data:
                data[position % len(data)] ^= 1 << argument  # -1 is the last byte
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = argument
        elif kind == "delete":
            del data[at:at + argument]
        else:
            data[at:at + len(argument)] = argument
    return bytes(data)


# An IDX header field and a value for it: the magic's bytes (two zeros, type code, ndim) or one
# declared side; sides include 0, 1 and the huge (a header claiming 10**12 elements and more).
idx_header_edits = st.one_of(
    st.tuples(st.sampled_from(["zero0", "zero1", "type", "ndim"]), st.just(0), st.integers(0, 255)),
    st.tuples(st.just("side"), st.integers(0, 7),
              st.one_of(st.sampled_from([0, 1, 2, 10**6, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))),
)


@st.composite
def idx_headers(draw):
    """(type code, sides) of an IDX header as a damaged file could declare it: any of the six
    types or an unknown code; 1 to 3 dimensions, or around NumPy's limit of 64, or IDX's 255;
    sides 0, small, or 2**32 - 1 (so that a side of 0 sits beside sides whose product overflows)."""
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A]))
    ndim = draw(st.sampled_from([1, 1, 2, 2, 3, 3, 63, 64, 65, 255]))
    side = st.sampled_from([1, 1, 1, 0, 2, 3, 6, 2**32 - 1])
    return code, [draw(side) for _ in range(ndim)]


# ---------------------------------------------------------------------------- extreme inputs

extreme_magnitudes = st.floats(min_value=2.0, max_value=4.0).map(lambda exponent: 10.0 ** exponent)  # 1e2..1e4
target_kinds = st.sampled_from(["zeros", "ones", "halves", "binary", "soft"])


def extreme_values(rng: np.random.Generator, shape, low: float = 1e2, high: float = 1e4) -> np.ndarray:
    """Magnitudes log-uniform in [low, high], each of either sign (float64; the caller casts)."""
    magnitude = np.exp(rng.uniform(np.log(low), np.log(high), shape))
    return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)


def targets(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    """BCE targets of one ``target_kinds`` kind: all 0, all 1, all ½, a 0/1 mix, or soft in [0, 1]."""
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    if kind == "halves":
        return np.full(shape, 0.5)
    return binary_targets(rng, shape, soft=kind == "soft")


def saturating_probabilities(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Probabilities where BCE's clamps act, in ``dtype``: exactly 0 and 1, the smallest
    subnormal, the smallest normal, 1e-30, 1 - ε/2 (the largest number below 1), 1 - ε, mixed
    with ordinary values in (0, 1)."""
    info = np.finfo(dtype)
    special = np.array([0.0, 1.0, float(info.smallest_subnormal), float(info.tiny), 1e-30,
                        1.0 - float(info.eps) / 2, 1.0 - float(info.eps)], dtype=dtype)
    ordinary = rng.random(shape).astype(dtype)
    return np.where(rng.random(shape) < 0.6, special[rng.integers(0, special.size, shape)], ordinary).astype(dtype)


# ---------------------------------------------------------------------------- refused inputs


@st.composite
def wrong_gradient_shapes(draw, shape):
    """(shape, dtype) of an upstream gradient that cannot fit a float64 forward output of
    ``shape``: one axis resized (to 0 as well), an axis added or dropped (float64), or the right
    shape in another dtype (float32, float16, int64)."""
    shape = tuple(shape)
    kind = draw(st.sampled_from(["resize", "add", "drop", "dtype"]))
    if kind == "dtype":
        return shape, draw(st.sampled_from([np.float32, np.float16, np.int64]))
    if kind == "add":
        position = draw(st.integers(0, len(shape)))
        return shape[:position] + (draw(st.integers(1, 3)),) + shape[position:], np.float64
    axis = draw(st.integers(0, len(shape) - 1))
    if kind == "drop":
        return shape[:axis] + shape[axis + 1:], np.float64
    size = draw(st.integers(0, 7))
    size += size >= shape[axis]  # any size but the right one
    return shape[:axis] + (size,) + shape[axis + 1:], np.float64
