"""The methods a user reaches for, on every registered model and its torch twin, in evaluation mode:
encode, decode, reconstruct, interpolate, and sample where ``REGISTRY[name].generative``.

(1) which methods exist on each backend; (2) scratch against the twin (same weights, explicit
noise) at the "torch" tolerance; (3) interpolate's endpoints, shapes and a middle point by hand;
(4) sample's shape, range, generator and explicit noise; (5) refusals that name the model and
change nothing (a pending backward still differentiates the last loss, no draw, no buffer moved).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity_tests.tolerances import assert_close, to_numpy
from parity_tests.twins import twin_of
from scratch.models import REGISTRY, build, draw_noise

NAMES = sorted(REGISTRY)
DTYPE = np.float64
SMALL = {"conv-ae": dict(channels=(2, 2)), "conv-vae": dict(channels=(2, 2), latent_dim=3),
         "deep-conv-vae": dict(hidden_dims=(2, 3), latent_dim=3),
         "vq-vae": dict(channels=(2, 3), embedding_dim=3, num_embeddings=8)}
BACKENDS = ("scratch", "torch")
USER_METHODS = ("encode", "decode", "reconstruct", "interpolate")


def _config(name: str) -> dict:
    """A small configuration on 28x28 inputs (784 features for the flat models)."""
    if name in SMALL:
        return SMALL[name]
    options = REGISTRY[name].options
    config = {"hidden_dims": (5,)} if "hidden_dims" in options else {"hidden_dim": 5}
    return {**config, "latent_dim": 3} if "latent_dim" in options else config


def _spread_codebook(model) -> None:
    """vq-vae: codebook vectors drawn around the encoder's outputs. The initial ones, uniform in
    ±1/K, lie so far from z_e that every position picks the same code and every path is flat."""
    rows = model.encode(_images(4, seed=9)).transpose(0, 2, 3, 1).reshape(-1, model.config["embedding_dim"])
    noise = np.random.default_rng(0).standard_normal(model.codebook.weight.data.shape)
    model.codebook.weight.data[...] = rows.mean(axis=0) + rows.std(axis=0) * noise


def _pair(name: str):
    """(scratch model, its twin), float64, in evaluation mode; the twin with its own generator."""
    model = build(name, dtype=DTYPE, rng=0, **_config(name)).eval()
    if REGISTRY[name].family == "quantized":
        _spread_codebook(model)
    twin = twin_of(model, torch.float64).eval()
    twin.generator = torch.Generator().manual_seed(0)
    return model, twin


class Backend:
    """One backend's methods on NumPy arrays (tensors in and out for the twin), with the labels
    placed where a conditional model takes them and ignored elsewhere."""

    def __init__(self, name: str, model, kind: str):
        self.spec, self.model, self.torch = REGISTRY[name], model, kind == "torch"

    def call(self, method, *args, **kwargs):
        convert = lambda v: torch.from_numpy(v) if self.torch and isinstance(v, np.ndarray) else v  # noqa: E731
        with torch.no_grad():
            out = getattr(self.model, method)(*map(convert, args), **{k: convert(v) for k, v in kwargs.items()})
        return tuple(map(to_numpy, out)) if isinstance(out, tuple) else to_numpy(out)

    def _positional(self, labels) -> tuple:
        return (labels,) if self.spec.conditional else ()

    def encode(self, x, labels):
        return self.call("encode", x, *self._positional(labels))

    def code(self, x, labels):
        """The deterministic code interpolate mixes: the posterior mean, z_e (vq-vae), or the code."""
        out = self.encode(x, labels)
        return out[0] if isinstance(out, tuple) else out

    def decode(self, z, labels):
        return self.call("decode", z, *self._positional(labels))

    def decode_code(self, z, labels):
        """What interpolate decodes a code with: decode, after quantize for vq-vae."""
        if self.spec.family == "quantized":
            z = self.call("quantize", z)[0]
        return self.decode(z, labels)

    def reconstruct(self, x, noise, labels):
        return self.call("reconstruct", x, noise, **self.spec.label_arguments(labels))

    def interpolate(self, x1, x2, steps, labels):
        return self.call("interpolate", x1, x2, steps, **self.spec.label_arguments(labels))

    def sample(self, n, noise=None, labels=None):
        """n samples; a conditional model's are one per label (the first n)."""
        return self.call("sample", labels[:n], noise) if self.spec.conditional else self.call("sample", n, noise)


def _backends(name):
    model, twin = _pair(name)
    return Backend(name, model, "scratch"), Backend(name, twin, "torch")


def _images(n, seed=1):
    return np.random.default_rng(seed).random((n, 1, 28, 28))


def _labels(n):
    return np.arange(n, dtype=np.int64) % 10


def _state(backend) -> dict:
    return {key: to_numpy(value).copy() for key, value in backend.model.state_dict().items()}


def _assert_same_state(backend, before):
    for key, value in _state(backend).items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{key} moved")


# -- (1) which methods exist -----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_both_backends_have_the_user_methods_and_sample_exactly_where_generative(name):
    model, twin = _pair(name)
    for backend in (model, twin):
        for method in USER_METHODS:
            assert callable(getattr(backend, method, None)), f"{type(backend).__module__}: {name} lacks {method}"
        assert hasattr(backend, "sample") == REGISTRY[name].generative, f"{type(backend).__module__}: {name}.sample"


# -- (2) against the twin ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_method_matches_the_twin(name):
    mine, theirs = _backends(name)
    x, labels = _images(3), _labels(3)
    noise = draw_noise(name, mine.model.config, x.shape, np.random.default_rng(2), DTYPE)
    codes = mine.code(x, labels)
    assert_close(codes, theirs.code(x, labels), "torch", DTYPE, f"{name} code")
    encoded, twin_encoded = (out if isinstance(out, tuple) else (out,) for out in (mine.encode(x, labels),
                                                                               theirs.encode(x, labels)))
    assert len(encoded) == len(twin_encoded) == (2 if mine.spec.family in ("variational", "conditional") else 1)
    for index, (a, b) in enumerate(zip(encoded, twin_encoded)):  # (μ, logvar), or the one code
        assert_close(a, b, "torch", DTYPE, f"{name} encode (output {index})")
    assert_close(mine.decode(codes, labels), theirs.decode(codes, labels), "torch", DTYPE, f"{name} decode")
    assert_close(mine.reconstruct(x, noise, labels), theirs.reconstruct(x, noise, labels), "torch", DTYPE,
                 f"{name} reconstruct")
    assert_close(mine.interpolate(x, _images(3, seed=3), 4, labels), theirs.interpolate(x, _images(3, seed=3), 4, labels),
                 "torch", DTYPE, f"{name} interpolate")
    if mine.spec.generative:
        z = np.random.default_rng(4).standard_normal((3, mine.model.config["latent_dim"]))
        assert_close(mine.sample(3, z, labels), theirs.sample(3, z, labels), "torch", DTYPE, f"{name} sample")


# -- (3) interpolate -----------------------------------------------------------------------------


def _single_shapes(name):
    """One example's shapes the model takes: (C, H, W), and (D,) for a flat model."""
    return [(1, 28, 28)] + ([(784,)] if REGISTRY[name].input_kind == "flat" else [])


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_interpolate_runs_from_the_decode_of_x1s_code_to_x2s_through_the_linear_mix(name, kind):
    backend = dict(zip(BACKENDS, _backends(name)))[kind]
    before = _state(backend)
    x1, x2 = _images(2, seed=5), _images(2, seed=6)
    labels = _labels(2)
    path = backend.interpolate(x1, x2, 4, labels)
    assert path.shape == (4, *x1.shape)
    assert np.all((path >= 0) & (path <= 1)) and not np.allclose(path[0], path[-1])  # a path that goes somewhere
    z1, z2 = backend.code(x1, labels), backend.code(x2, labels)
    assert_close(path[0], backend.decode_code(z1, labels).reshape(x1.shape), "kernel", DTYPE, "t = 0: x1's code")
    assert_close(path[-1], backend.decode_code(z2, labels).reshape(x1.shape), "kernel", DTYPE, "t = 1: x2's code")
    by_hand = backend.decode_code(2 / 3 * z1 + 1 / 3 * z2, labels).reshape(x1.shape)  # t = 1/3
    assert_close(path[1], by_hand, "kernel", DTYPE, "t = 1/3")
    for shape in _single_shapes(name):  # one example each: (steps, *example shape), pair 0's path
        single = backend.interpolate(x1[0].reshape(shape), x2[0].reshape(shape), 4, labels[:1])
        assert single.shape == (4, *shape)
        assert_close(single.reshape(4, -1), path[:, 0].reshape(4, -1), "kernel", DTYPE, f"single {shape}")
    _assert_same_state(backend, before)  # evaluation mode: no running statistic, codebook or weight moved


# -- (4) sample ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("name", [name for name in NAMES if REGISTRY[name].generative])
def test_sample_draws_from_the_models_generator_and_decodes_given_noise(name, kind):
    backend = dict(zip(BACKENDS, _backends(name)))[kind]
    model, before = backend.model, _state(backend)
    labels = _labels(5)
    generator = model.generator if backend.torch else model.rng
    saved = generator.get_state() if backend.torch else generator.bit_generator.state
    global_state = torch.get_rng_state()
    images = backend.sample(5, labels=labels)
    assert images.shape == (5, model.config["input_dim"])  # the input layout of these (flat) models
    assert np.all((images >= 0) & (images <= 1))
    assert not np.array_equal(backend.sample(5, labels=labels), images)  # the generator moved on
    if backend.torch:
        generator.set_state(saved)
        assert torch.equal(torch.get_rng_state(), global_state)  # torch's global generator untouched
    else:
        generator.bit_generator.state = saved
    np.testing.assert_array_equal(backend.sample(5, labels=labels), images)  # the same draws again
    z = np.random.default_rng(7).standard_normal((5, model.config["latent_dim"]))
    np.testing.assert_array_equal(backend.sample(5, z, labels), backend.decode(z, labels))
    _assert_same_state(backend, before)


# -- (5) refusals ------------------------------------------------------------------------------


BAD_STEPS = (1, 0, -3, 2.0, 3.5, "4", True, None, np.float64(5))
BAD_PAIRS = {"shapes differ": ((1, 28, 28), (784,)), "batches differ": ((2, 784), (3, 784)),
             "not an example": ((783,), (783,)), "five axes": ((1, 1, 1, 28, 28), (1, 1, 1, 28, 28))}


def _pending(backend, x, labels):
    """Run the loss, so that a backward is pending (scratch refuses it if any layer ran since)."""
    noise = draw_noise(backend.spec.name, backend.model.config, x.shape, np.random.default_rng(8), DTYPE)
    backend.model.loss(x, noise, **backend.spec.label_arguments(labels))


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_bad_steps_and_mismatched_inputs_are_refused_naming_the_model_before_anything_runs(name, kind):
    backend = dict(zip(BACKENDS, _backends(name)))[kind]
    model, owner = backend.model, f"{type(backend.model).__name__}({name})"
    x, labels = _images(2), _labels(2)
    if not backend.torch:
        _pending(backend, x, labels)
        rng_state = model.rng.bit_generator.state
    before = _state(backend)
    refusals = [((x, x, steps), "steps must be an int >= 2") for steps in BAD_STEPS]
    refusals += [((np.zeros(a), np.zeros(b), 3), "x1") for a, b in BAD_PAIRS.values()]
    for arguments, message in refusals:
        with pytest.raises(ValueError, match=message) as raised:
            backend.interpolate(*arguments, labels[:1] if arguments[0].ndim in (1, 3) else labels)
        assert owner in str(raised.value), str(raised.value)
    if backend.spec.generative and not backend.spec.conditional:
        with pytest.raises(ValueError, match=r"\bn must be a positive int") as raised:
            backend.sample(0)
        assert owner in str(raised.value)
    _assert_same_state(backend, before)
    if not backend.torch:
        assert model.rng.bit_generator.state == rng_state  # nothing drawn
        model.backward()  # still the last loss's: no layer ran
