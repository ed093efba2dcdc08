"""``scratch.validate``: every integer argument refuses a bool and a float with an error that
names its owner and the argument, and takes a NumPy integer; ``resolve_rng``'s contract.

torch takes ``True`` as a size in places (``torch.nn.Linear(True, 2)`` builds a 1-input layer,
since bool is an int subclass) and refuses a float with a ``TypeError``; scratch refuses both,
with a ``TypeError``, everywhere an integer is expected.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from scratch import evaluation as E
from scratch import nn
from scratch.gradcheck import gradcheck
from scratch.models import build
from scratch.optim import SGD
from scratch.validate import check_integer, is_integer, resolve_rng

# -- every integer constructor argument ---------------------------------------------------------
# (owner, argument, make): make(value) builds with ``value`` as that argument and every other
# argument valid; ``value`` = GOOD[argument id] gives a valid build.

SMALL_VAE = dict(input_dim=12, hidden_dim=5, latent_dim=3)
SMALL_MLP = dict(input_dim=12, hidden_dims=(5,), latent_dim=3)
SMALL_SHALLOW = dict(input_dim=12, hidden_dim=5)
SMALL_CONV = dict(channels=(2, 3))


def _with(config: dict, key: str, value) -> dict:
    return {**config, key: value}


def _with_item(config: dict, key: str, index: int, value) -> dict:
    items = list(config[key])
    items[index] = value
    return {**config, key: tuple(items)}


CASES = [
    # layers
    ("Linear", "in_features", lambda v: nn.Linear(v, 2), 3),
    ("Linear", "out_features", lambda v: nn.Linear(3, v), 2),
    ("Conv2d", "in_channels", lambda v: nn.Conv2d(v, 2, 3), 1),
    ("Conv2d", "out_channels", lambda v: nn.Conv2d(1, v, 3), 2),
    ("Conv2d", "kernel_size", lambda v: nn.Conv2d(1, 2, v), 3),
    ("Conv2d", "kernel_size[1]", lambda v: nn.Conv2d(1, 2, (3, v)), 3),
    ("Conv2d", "stride", lambda v: nn.Conv2d(1, 2, 3, stride=v), 2),
    ("Conv2d", "stride[0]", lambda v: nn.Conv2d(1, 2, 3, stride=(v, 1)), 2),
    ("Conv2d", "padding", lambda v: nn.Conv2d(1, 2, 3, padding=v), 1),
    ("Conv2d", "dilation", lambda v: nn.Conv2d(1, 2, 3, dilation=v), 2),
    ("Conv2d", "groups", lambda v: nn.Conv2d(2, 4, 3, groups=v), 2),
    ("ConvTranspose2d", "in_channels", lambda v: nn.ConvTranspose2d(v, 2, 3), 1),
    ("ConvTranspose2d", "out_channels", lambda v: nn.ConvTranspose2d(1, v, 3), 2),
    ("ConvTranspose2d", "kernel_size", lambda v: nn.ConvTranspose2d(1, 2, v), 3),
    ("ConvTranspose2d", "stride", lambda v: nn.ConvTranspose2d(1, 2, 3, stride=v), 2),
    ("ConvTranspose2d", "padding", lambda v: nn.ConvTranspose2d(1, 2, 3, padding=v), 1),
    ("ConvTranspose2d", "output_padding", lambda v: nn.ConvTranspose2d(1, 2, 3, stride=2, output_padding=v), 1),
    ("ConvTranspose2d", "dilation", lambda v: nn.ConvTranspose2d(1, 2, 3, dilation=v), 2),
    ("ConvTranspose2d", "groups", lambda v: nn.ConvTranspose2d(2, 4, 3, groups=v), 2),
    ("MaxPool2d", "kernel_size", lambda v: nn.MaxPool2d(v), 2),
    ("MaxPool2d", "stride", lambda v: nn.MaxPool2d(2, stride=v), 1),
    ("MaxPool2d", "padding", lambda v: nn.MaxPool2d(2, padding=v), 1),
    ("MaxPool2d", "dilation", lambda v: nn.MaxPool2d(2, dilation=v), 2),
    ("MaxPool2d", "kernel_size[1]", lambda v: nn.MaxPool2d((2, v)), 2),
    ("MaxPool2d", "stride[0]", lambda v: nn.MaxPool2d(2, stride=(v,)), 1),
    ("AvgPool2d", "kernel_size", lambda v: nn.AvgPool2d(v), 2),
    ("AvgPool2d", "stride", lambda v: nn.AvgPool2d(2, stride=v), 1),
    ("AvgPool2d", "padding", lambda v: nn.AvgPool2d(2, padding=v), 1),
    ("AvgPool2d", "divisor_override", lambda v: nn.AvgPool2d(2, divisor_override=v), 3),
    ("MaxUnpool2d", "kernel_size", lambda v: nn.MaxUnpool2d(v), 2),
    ("MaxUnpool2d", "stride", lambda v: nn.MaxUnpool2d(2, stride=v), 1),
    ("MaxUnpool2d", "padding[0]", lambda v: nn.MaxUnpool2d(2, padding=(v, 0)), 1),
    ("Flatten", "start_dim", lambda v: nn.Flatten(v), 1),
    ("Flatten", "end_dim", lambda v: nn.Flatten(1, v), -1),
    ("Unflatten", "dim", lambda v: nn.Unflatten(v, (2, 2)), 1),
    ("Unflatten", "unflattened_size[0]", lambda v: nn.Unflatten(1, (v, 2)), 2),
    # models, through build
    *[("MLPAutoencoder", key, lambda v, key=key: build("mlp-ae", rng=0, **_with(SMALL_MLP, key, v)), good)
      for key, good in (("input_dim", 12), ("latent_dim", 3))],
    ("MLPAutoencoder", "hidden_dims[0]", lambda v: build("mlp-ae", rng=0, **_with_item(SMALL_MLP, "hidden_dims", 0, v)), 5),
    ("DenoisingAutoencoder", "latent_dim", lambda v: build("denoising-ae", rng=0, **_with(SMALL_MLP, "latent_dim", v)), 3),
    *[(owner, key, lambda v, name=name, key=key: build(name, rng=0, **_with(SMALL_VAE, key, v)), good)
      for name, owner in (("vae", "VariationalAutoencoder"), ("seed-vae", "SeedVAE"), ("beta-vae", "BetaVAE"))
      for key, good in (("input_dim", 12), ("hidden_dim", 5), ("latent_dim", 3))],
    ("BetaVAE", "capacity_steps", lambda v: build("beta-vae", rng=0, capacity_steps=v, **SMALL_VAE), 100),
    *[(owner, key, lambda v, name=name, key=key: build(name, rng=0, **_with(SMALL_SHALLOW, key, v)), good)
      for name, owner in (("sparse-ae", "SparseAutoencoder"), ("contractive-ae", "ContractiveAutoencoder"),
                          ("tied-ae", "TiedAutoencoder"))
      for key, good in (("input_dim", 12), ("hidden_dim", 5))],
    *[(owner, key, lambda v, name=name, key=key: build(name, rng=0, **_with(SMALL_CONV, key, v)), good)
      for name, owner in (("conv-ae", "ConvAutoencoder"), ("conv-vae", "ConvVAE"))
      for key, good in (("in_channels", 1), ("image_size", 28))],
    *[(owner, f"channels[{index}]", lambda v, name=name, index=index: build(name, rng=0, **_with_item(SMALL_CONV, "channels", index, v)), good)
      for name, owner in (("conv-ae", "ConvAutoencoder"), ("conv-vae", "ConvVAE"))
      for index, good in ((0, 2), (1, 3))],
    ("ConvVAE", "latent_dim", lambda v: build("conv-vae", rng=0, latent_dim=v, **SMALL_CONV), 3),
    ("ConvVAE", "input_dim", lambda v: build("conv-vae", rng=0, input_dim=v, **SMALL_CONV), 784),
]
IDS = [f"{owner}.{argument}" for owner, argument, _, _ in CASES]


def _message(owner: str, argument: str) -> str:
    """The start of the error: the owner and the argument, e.g. ``Linear: in_features must be``."""
    return re.escape(f"{owner}: {argument} must be")


@pytest.mark.parametrize("owner, argument, make, good", CASES, ids=IDS)
@pytest.mark.parametrize("bad", [True, False, 2.5, np.bool_(True)], ids=["True", "False", "2.5", "np.True_"])
def test_an_integer_argument_refuses_bools_and_floats_naming_itself(owner, argument, make, good, bad):
    with pytest.raises(TypeError, match=_message(owner, argument) + r" .*, got " + re.escape(repr(bad))):
        make(bad)


@pytest.mark.parametrize("owner, argument, make, good", CASES, ids=IDS)
def test_an_integer_argument_takes_a_numpy_integer(owner, argument, make, good):
    made = make(np.int64(good))
    assert made is not None


@pytest.mark.parametrize("make, argument", [
    (lambda v: nn.Linear(v, 2), "in_features"),
    (lambda v: nn.Conv2d(1, 2, v), "kernel_size"),
    (lambda v: nn.Conv2d(1, 2, 3, padding=v), "padding"),
    (lambda v: build("vae", rng=0, **_with(SMALL_VAE, "latent_dim", v)), "latent_dim"),
])
def test_an_integer_below_its_minimum_is_a_value_error(make, argument):
    with pytest.raises(ValueError, match=rf"{argument} must be .*, got -1$"):
        make(-1)


def test_the_integer_a_layer_keeps_is_a_python_int():
    layer = nn.Linear(np.int64(3), np.int32(2))
    assert type(layer.in_features) is int and type(layer.out_features) is int
    conv = nn.Conv2d(np.int64(1), 2, (np.int64(3), 2), stride=np.uint8(2))
    assert conv.kernel_size == (3, 2) and all(type(k) is int for k in conv.kernel_size + conv.stride)
    assert type(nn.Unflatten(np.int64(1), (np.int64(2), 2)).unflattened_size[0]) is int
    assert type(nn.Flatten(np.int64(1)).start_dim) is int


def test_tied_linear_takes_its_sizes_from_a_checked_linear():
    """TiedLinear has no integer argument of its own: its sizes are its source Linear's."""
    tied = nn.TiedLinear(nn.Linear(np.int64(3), np.int64(2), rng=0))
    assert (tied.in_features, tied.out_features) == (2, 3) and type(tied.in_features) is int
    with pytest.raises(TypeError, match=r"^TiedLinear: source must be a scratch nn\.Linear, got int$"):
        nn.TiedLinear(3)


def test_unflattened_size_must_be_a_sequence():
    with pytest.raises(TypeError, match=r"^Unflatten: unflattened_size must be a tuple of ints, got 4 \(int\)$"):
        nn.Unflatten(1, 4)


# -- the other integer arguments: evaluation, Sequential.backward, gradcheck, load_state_dict -----


@pytest.fixture(scope="module")
def small_vae():
    model = build("vae", rng=0, dtype=np.float64, **SMALL_VAE)
    images = np.random.default_rng(0).uniform(size=(4, 12))
    return model, images


@pytest.mark.parametrize("argument, call", [
    ("batch_size", lambda model, x, v: E.active_units(model, x, batch_size=v)),
    ("batch_size", lambda model, x, v: E.kl_per_dimension(model, x, batch_size=v)),
    ("chunk", lambda model, x, v: E.importance_sampled_log_likelihood(model, x, 3, rng=0, chunk=v)),
    ("samples", lambda model, x, v: E.importance_sampled_log_likelihood(model, x, v, rng=0)),
])
def test_evaluation_integer_arguments(small_vae, argument, call):
    model, images = small_vae
    for bad in (True, 2.5):
        with pytest.raises(TypeError, match=rf": {argument} must be a positive int, got {re.escape(repr(bad))}"):
            call(model, images, bad)
    call(model, images, np.int64(2))


def test_sequential_backward_start_refuses_a_bool():
    net = nn.Sequential(nn.Linear(3, 2, rng=0, dtype=np.float64), nn.ReLU())
    out = net(np.ones((4, 3)))
    for bad in (True, 2.5):
        with pytest.raises(TypeError, match=rf"^Sequential\.backward: start must be an int index, got {re.escape(repr(bad))}$"):
            net.backward(np.ones_like(out), start=bad)
    net.backward(np.ones_like(out), start=np.int64(1))


def test_gradcheck_integer_settings_refuse_bools():
    """gradcheck keeps the ValueError it has always raised for any bad setting."""
    layer = nn.Linear(3, 2, rng=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((4, 3))
    for bad in (True, 2.5):
        with pytest.raises(ValueError, match=rf"^gradcheck: max_elements must be a positive int or None, got {bad}$"):
            gradcheck(layer, x, max_elements=bad, rng=0)
        # True == 1 would have named input 1; there is only input 0 here, so check both spellings
        with pytest.raises(ValueError, match=rf"^gradcheck: wrt must name array inputs \(positions \[0\]\), got {bad}$"):
            gradcheck(layer, x, wrt=[bad], rng=0)
    assert gradcheck(layer, x, max_elements=np.int64(3), wrt=np.int64(0), rng=0)


def test_gradcheck_wrt_refuses_true_for_input_1():
    """``True == 1``: before, ``wrt=True`` quietly checked input 1."""
    def forward(a, b):
        return a * b, (a, b)

    def backward(grad, cache):
        a, b = cache
        return grad * b, grad * a

    a, b = np.random.default_rng(1).standard_normal((2, 3))
    with pytest.raises(ValueError, match=r"wrt must name array inputs \(positions \[0, 1\]\), got True$"):
        gradcheck((forward, backward), a, b, wrt=True, rng=0)
    assert gradcheck((forward, backward), a, b, wrt=np.int64(1), rng=0).arrays == [("input1", (3,), 3)]


def test_load_state_dict_refuses_a_bool_parameter_index():
    parameter = nn.Linear(3, 2, bias=False, rng=0).weight
    optimizer = SGD([parameter], lr=0.1)
    state = optimizer.state_dict()
    state["param_groups"][0]["params"] = [True]
    with pytest.raises(ValueError, match=r"parameter indices in 'param_groups' must be ints, got True$"):
        optimizer.load_state_dict(state)
    state["param_groups"][0]["params"] = [np.int64(0)]
    optimizer.load_state_dict(state)


# -- check_integer, is_integer ----------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 7, -3, np.int8(5), np.uint64(2), np.int64(-1)])
def test_is_integer_takes_python_and_numpy_integers(value):
    assert is_integer(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(False), 2.0, 2.5, np.float64(2), "2", None, np.array(2), [2]])
def test_is_integer_refuses_everything_else(value):
    assert not is_integer(value)


def test_check_integer_messages():
    assert check_integer(np.int64(3), "Owner", "size", minimum=1) == 3
    assert type(check_integer(np.int64(3), "Owner", "size")) is int
    with pytest.raises(TypeError, match=r"^Owner: size must be a positive int, got True \(bool\)$"):
        check_integer(True, "Owner", "size", minimum=1)
    with pytest.raises(TypeError, match=r"^Owner: size must be an int, got '3' \(str\)$"):
        check_integer("3", "Owner", "size")
    with pytest.raises(ValueError, match=r"^Owner: size must be an int >= 0, got -1$"):
        check_integer(-1, "Owner", "size", minimum=0)
    with pytest.raises(ValueError, match=r"^Owner: size must be an int or a pair, got 0$"):
        check_integer(0, "Owner", "size", minimum=1, expected="an int or a pair")


# -- resolve_rng --------------------------------------------------------------------------------


def test_resolve_rng_accepts_none_a_seed_and_a_generator():
    generator = np.random.default_rng(5)
    assert resolve_rng(generator, "Owner") is generator
    assert isinstance(resolve_rng(None, "Owner"), np.random.Generator)
    for seed in (0, 7, np.int64(7)):
        assert resolve_rng(seed, "Owner").random() == np.random.default_rng(int(seed)).random()


@pytest.mark.parametrize("rng", [True, False, -1, 2.5, "0", np.random.RandomState(0), np.random.SeedSequence(0),
                                 np.random.PCG64(0)],
                         ids=["True", "False", "-1", "2.5", "str", "RandomState", "SeedSequence", "PCG64"])
def test_resolve_rng_refuses_the_rest_naming_its_owner(rng):
    with pytest.raises(TypeError, match=r"(?s)^Linear: rng must be a numpy\.random\.Generator, a non-negative int "
                                        r"seed or None, got .* \(\w+\)$"):
        resolve_rng(rng, "Linear")
    with pytest.raises(TypeError, match=r"^Linear: rng must be"):
        nn.Linear(2, 2, rng=rng)
