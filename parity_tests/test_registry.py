"""The one model registry (scratch.models.REGISTRY) against the twins, the parity families and
what each model actually does: a model added to the registry without a twin, outside the parity
tests, or registered under the wrong family, input kind or noise kind fails here."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from parity_tests import test_cvae, test_models, test_regularized, test_vq_vae, test_wae
from scratch.models import REGISTRY, ModelSpec, build, draw_noise, model_names, spec
from torch_impl.models import MODELS as TWINS
from torch_impl.models import build as torch_build

NAMES = list(REGISTRY)


def test_the_twins_are_keyed_by_the_same_names():
    assert list(TWINS) == NAMES, "torch_impl.models.MODELS and scratch.models.REGISTRY disagree"


@pytest.mark.parametrize("name", NAMES)
def test_each_twin_takes_the_same_configuration_keys_and_has_the_same_state_dict(name):
    twin_keys = {key for key in inspect.signature(TWINS[name].__init__).parameters if key not in ("self", "generator")}
    assert twin_keys == set(REGISTRY[name].options)
    model = build(name, dtype=np.float64, rng=0)
    twin = torch_build(name, **model.config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in twin.state_dict().items()} == expected


def _parametrized(function, argument: str) -> list:
    """The values ``@pytest.mark.parametrize(argument, ...)`` gives ``function``."""
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == argument:
            return list(mark.args[1])
    raise AssertionError(f"{function.__name__} is not parametrized over {argument!r}")


# each parity family's file, its list of models, and its torch and finite-difference tests
FAMILY_FILES = (
    (test_models, test_models.MODEL_NAMES,
     ("test_loss_and_every_gradient_match_torch", "test_model_gradients_match_finite_differences")),
    (test_regularized, test_regularized.NAMES,
     ("test_loss_parts_and_every_gradient_match_torch", "test_whole_loss_matches_finite_differences")),
    (test_wae, test_wae.NAMES, ("test_loss_parts_and_every_gradient_match_torch", "test_whole_loss_matches_finite_differences")),
    (test_cvae, test_cvae.NAMES, ("test_loss_parts_every_gradient_and_dx_match_torch",
                                  "test_loss_gradients_match_central_differences")),
    (test_vq_vae, test_vq_vae.NAMES,
     ("test_loss_parts_codes_every_gradient_and_buffers_match_torch",
      "test_decoder_and_codebook_gradients_match_finite_differences_of_the_loss")),
)


def test_every_registered_model_is_in_each_parity_family():
    """Loss and every gradient against torch, finite differences, the 30-step training run: the
    models of test_models.py, test_regularized.py, test_cvae.py, test_wae.py and test_vq_vae.py
    together are the registry, each once."""
    families = [set(names) for _, names, _ in FAMILY_FILES]
    assert sum(len(family) for family in families) == len(set().union(*families)), "a model is in two families"
    assert set().union(*families) == set(NAMES)
    # the training runs are parametrized by name; the torch and finite-difference checks draw
    # their cases from the same lists (test_models.model_cases, strategies.regularized_model_cases)
    trained = [name for module, _, _ in FAMILY_FILES
               for name in _parametrized(module.test_adam_training_run_tracks_torch, "name")]
    assert sorted(set(trained)) == sorted(NAMES)
    for module, _, tests in FAMILY_FILES:
        for test in tests:
            assert callable(getattr(module, test)), f"{module.__name__}.{test} is gone"


SMALL = {"conv-ae": {"channels": (2, 2)}, "conv-vae": {"channels": (2, 2), "latent_dim": 3}}


def _small(name: str) -> dict:
    options = REGISTRY[name].options
    config = {"input_dim": 784} if "input_dim" in options and name not in SMALL else {}
    config.update({"hidden_dims": (5,)} if "hidden_dims" in options else {"hidden_dim": 5} if "hidden_dim" in options else {})
    if "latent_dim" in options and name not in SMALL:
        config["latent_dim"] = 3
    return {**config, **SMALL.get(name, {})}


@pytest.mark.parametrize("name", NAMES)
def test_the_registered_kinds_are_what_the_model_does(name):
    """noise kind: what draw_noise returns; input kind: the shapes loss accepts; family: the
    model's loss parts and code."""
    entry = REGISTRY[name]
    model = build(name, dtype=np.float64, rng=0, **_small(name))
    rng = np.random.default_rng(1)
    images = rng.random((2, 1, 28, 28))
    noise = draw_noise(name, model.config, images.shape, rng, np.float64)
    if entry.noise_kind == "none":
        assert noise is None
    elif entry.noise_kind == "corruption":
        assert noise is not None and noise.shape[0] == 2 and noise.size == images.size
    elif entry.noise_kind == "prior":
        assert noise.shape == (2, model.config["latent_dim"])
    elif entry.noise_kind == "gaussian-samples":
        assert noise.shape == (2, model.config["num_samples"], model.config["latent_dim"])
    else:
        assert noise.shape == (2, model.config["latent_dim"])
    flat = images.reshape(2, -1)
    labels = entry.label_arguments(np.array([3, 8]))  # a conditional model's classes: required there
    if entry.conditional:
        with pytest.raises(TypeError, match="labels"):
            model.loss(flat, noise=draw_noise(name, model.config, flat.shape, rng, np.float64))
    if entry.input_kind == "flat":
        noise = draw_noise(name, model.config, flat.shape, rng, np.float64)
        parts = model.loss(flat, noise=noise, **labels)
        model.loss(images, noise=draw_noise(name, model.config, images.shape, rng, np.float64), **labels)  # images too
    else:
        parts = model.loss(images, noise=noise, **labels)
        with pytest.raises(ValueError):
            model.loss(flat, noise=noise, **labels)
    assert ("kl" in parts) == (entry.variational or entry.conditional)
    assert "penalty" not in parts or entry.family == "regularized"  # tied-ae's is a constraint, not a term
    assert hasattr(model, "corrupt") == (entry.family == "denoising")


def test_model_names_filters_and_refuses_unknown_kinds():
    assert model_names() == tuple(NAMES)
    assert set(model_names(family="variational")) == {n for n in NAMES if REGISTRY[n].family == "variational"}
    assert all("latent_dim" in REGISTRY[n].options for n in model_names(option="latent_dim"))
    with pytest.raises(ValueError, match="family must be one of"):
        model_names(family="recurrent")
    with pytest.raises(ValueError, match="unknown model 'gan'"):
        spec("gan")


def test_a_spec_refuses_a_wrong_family_or_a_class_of_another_name():
    with pytest.raises(ValueError, match="family must be one of"):
        ModelSpec("mlp-ae", REGISTRY["mlp-ae"].cls, family="mlp", input_kind="flat", noise_kind="none")
    with pytest.raises(ValueError, match="name is 'mlp-ae'"):
        ModelSpec("vae", REGISTRY["mlp-ae"].cls, family="variational", input_kind="flat", noise_kind="gaussian")
