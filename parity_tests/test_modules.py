"""Module plumbing: state_dict round trips with torch, refusals that change nothing, clear errors."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from scratch import nn
from scratch.models import build
from torch_impl.models import build as torch_build


def _model():
    return nn.Sequential(nn.Linear(3, 4, rng=0, dtype=np.float64), nn.ReLU(), nn.Linear(4, 2, rng=1, dtype=np.float64))


def test_state_dict_moves_both_ways_with_torch():
    model = build("mlp-ae", dtype=np.float64, rng=0)
    twin = torch_build("mlp-ae", dtype=torch.float64)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    fresh = build("mlp-ae", dtype=np.float64, rng=1)
    fresh.load_state_dict(twin.state_dict())  # torch tensors accepted
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)


def test_load_casts_to_the_parameter_dtype_in_place():
    layer = nn.Linear(2, 2, dtype=np.float32)
    buffer = layer.weight.data
    layer.load_state_dict({"weight": np.ones((2, 2)), "bias": torch.zeros(2, dtype=torch.float64)})
    assert layer.weight.data is buffer and buffer.dtype == np.float32 and np.all(buffer == 1)


def test_state_dict_returns_copies():
    layer = nn.Linear(2, 2, dtype=np.float64)
    layer.state_dict()["weight"][...] = 99
    assert not np.any(layer.weight.data == 99)


@pytest.mark.parametrize("mutate, message", [
    (lambda sd: sd.pop("0.bias"), r"missing keys \['0.bias'\]"),
    (lambda sd: sd.update({"5.weight": np.zeros(1)}), r"unexpected keys \['5.weight'\]"),
    (lambda sd: sd.update({"2.weight": np.zeros((4, 2))}), r"'2.weight': expected shape \(2, 4\), got \(4, 2\)"),
    (lambda sd: sd.update({"2.weight": [[0.0] * 4] * 2}), "expected a NumPy array or torch tensor, got list"),
])
def test_bad_state_dict_is_refused_and_changes_nothing(mutate, message):
    model = _model()
    before = model.state_dict()
    state = {k: np.full_like(v, 5.0) for k, v in before.items()}
    mutate(state)
    with pytest.raises((ValueError, TypeError), match=message):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_non_strict_load_ignores_missing_and_extra_but_not_shapes():
    model = _model()
    model.load_state_dict({"0.weight": np.zeros((4, 3)), "extra": np.zeros(1)}, strict=False)
    assert not model[0].weight.data.any()
    with pytest.raises(ValueError, match="shape mismatch"):
        model.load_state_dict({"0.weight": np.zeros((3, 3))}, strict=False)


@pytest.mark.parametrize("call, error, message", [
    (lambda: nn.Linear(3, 2)(np.zeros((2, 4), dtype=np.float32)), ValueError, r"Linear\(3, 2\): input's last dimension must be 3, got shape \(2, 4\)"),
    (lambda: nn.Linear(3, 2)(np.zeros((2, 3))), TypeError, "float64 but the layer's parameters are float32"),
    (lambda: nn.Linear(3, 2)(np.zeros((2, 3), dtype=np.int64)), TypeError, "float32 or float64, got int64"),
    (lambda: nn.Linear(-1, 2), ValueError, r"in_features must be an int >= 0, got -1"),
    (lambda: nn.Linear(2, 2, device="cuda"), ValueError, r"^Linear: device must be None or 'cpu' .*, got 'cuda'$"),
    (lambda: nn.ReLU(inplace="yes"), TypeError, r"^ReLU: inplace must be True or False, got 'yes' \(str\)$"),
    (lambda: nn.LeakyReLU("0.1"), TypeError, r"^LeakyReLU: negative_slope must be a number, got '0\.1' \(str\)$"),
    (lambda: nn.ReLU(inplace=True)(np.broadcast_to(np.zeros(3), (2, 3))), ValueError,
     r"^ReLU: inplace=True writes the result into the input, which is read-only"),
    (lambda: nn.Sequential(OrderedDict(forward=nn.ReLU())), KeyError, "the attribute already exists"),
    (lambda: nn.Sequential(OrderedDict([("a.b", nn.ReLU())])), KeyError, "without '.'"),
    (lambda: nn.Linear(2, 2, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (lambda: nn.ReLU()("abc"), TypeError, "ReLU: input must be a NumPy array, got str"),
    (lambda: nn.Sigmoid().backward(np.zeros(2)), RuntimeError, "Sigmoid.backward called before forward"),
    (lambda: nn.Flatten(2)(np.zeros((2, 3))), ValueError, "dim 2 out of range"),
    (lambda: nn.Unflatten(1, (2, 2))(np.zeros((2, 5))), ValueError, r"cannot be split into \(2, 2\)"),
    (lambda: nn.BCELoss()(np.full(3, 1.5), np.zeros(3)), ValueError, r"probabilities in \[0, 1\]"),
    (lambda: nn.MSELoss()(np.zeros(3), np.zeros(4)), ValueError, "same shape"),
    (lambda: nn.MSELoss()(np.zeros(3), np.zeros(3, dtype=np.float32)), TypeError, "target has dtype float32"),
    (lambda: nn.MSELoss(reduction="avg"), ValueError, "reduction must be one of"),
    (lambda: nn.MSELoss().backward(), RuntimeError, "before the loss was computed"),
    (lambda: nn.Sequential(nn.ReLU(), "x"), TypeError, "item 1 is a str"),
])
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_checks_the_gradient_it_gets():
    layer = nn.Linear(3, 2, dtype=np.float64)
    layer(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"forward output's shape \(4, 2\), got \(4, 3\)"):
        layer.backward(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="forward ran in float64"):
        layer.backward(np.zeros((4, 2), dtype=np.float32))
    assert not layer.weight.grad.any()  # nothing accumulated by the refused calls


def test_none_reduction_needs_an_upstream_gradient():
    loss = nn.MSELoss(reduction="none")
    loss(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"array of shape \(2, 3\)"):
        loss.backward()


def test_scratch_never_imports_torch():
    code = ("import sys, scratch, scratch.nn, scratch.optim, scratch.functional, scratch.gradcheck, "
            "scratch.models, autoencoders.cli, autoencoders.training, autoencoders.compare, autoencoders.convert, autoencoders.data, "
            "autoencoders.plots, autoencoders.runs.checkpoint, scratch.kernels.conv; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_gradcheck_demo_and_errors(tmp_path):
    from parity_tests.test_train import cli

    def run(*args):  # through autoencoders.cli.main in this process
        return cli(*args, cwd=tmp_path)

    ok = run("gradcheck", "mlp-ae")
    assert ok.returncode == 0, ok.stderr
    assert "gradcheck passed" in ok.stdout and "encoder.0.weight" in ok.stdout
    ok = run("gradcheck", "beta-vae")
    assert ok.returncode == 0 and "gradcheck passed" in ok.stdout and "fc22.weight" in ok.stdout, ok.stderr
    ok = run("gradcheck", "contractive-ae", "--hidden-dim", "3")
    assert ok.returncode == 0 and "gradcheck passed: 115 elements in 4 arrays" in ok.stdout, ok.stdout + ok.stderr
    assert run("--help").returncode == 0 and "gradcheck" in run("--help").stdout
    bad = run("gradcheck", "no-such-model")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
    bad = run("gradcheck", "mlp-ae", "--batch-size", "0")
    assert bad.returncode == 2 and "--batch-size: expected a positive integer, got 0" in bad.stderr


def test_reassigning_a_submodule_keeps_its_place_like_torch():
    model = _model()
    setattr(model, "1", nn.Tanh())
    assert [type(m).__name__ for m in model] == ["Linear", "Tanh", "Linear"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("bad", [[0.5, np.nan], [1.5, 0.2], [-0.1, 0.3]])
def test_bce_refuses_what_is_not_a_probability(bad):
    with pytest.raises(ValueError, match=r"BCELoss: input must be probabilities in \[0, 1\]"):
        nn.BCELoss()(np.array(bad, np.float32), np.array([0, 1], np.float32))


def test_a_0d_parameter_stays_0d_like_torchs():
    """torch.nn.Parameter(torch.tensor(2.0)) is 0-d; so is scratch's (ascontiguousarray made it (1,))."""
    from scratch.nn.module import Parameter

    parameter = Parameter(np.array(2.0))
    assert parameter.data.shape == parameter.grad.shape == () and float(parameter.data) == 2.0


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Linear(3, 2, rng=0, dtype=np.float64), (4, 3)),
    (lambda: nn.ReLU(), (4, 3)), (lambda: nn.LeakyReLU(0.2), (4, 3)), (lambda: nn.Sigmoid(), (4, 3)),
    (lambda: nn.Tanh(), (4, 3)), (lambda: nn.Flatten(), (2, 3, 4)), (lambda: nn.Unflatten(1, (2, 2)), (3, 4)),
    (lambda: nn.Sequential(nn.Linear(3, 2, rng=0, dtype=np.float64), nn.ReLU()), (4, 3)),
    (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), (1, 2, 5, 5)),
    (lambda: nn.ConvTranspose2d(2, 3, 3, rng=0, dtype=np.float64), (1, 2, 5, 5)),
    (lambda: nn.MaxPool2d(2), (1, 2, 4, 4)), (lambda: nn.AvgPool2d(2), (1, 2, 4, 4)),
], ids=["Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Unflatten", "Sequential", "Conv2d",
        "ConvTranspose2d", "MaxPool2d", "AvgPool2d"])
def test_forward_takes_torchs_keyword_input(make, shape):
    """torch's modules name forward's argument ``input``: layer(input=x) is layer(x)."""
    x = np.random.default_rng(0).standard_normal(shape)
    np.testing.assert_array_equal(make()(input=x), make()(x))


def test_max_unpool2d_forward_takes_torchs_keywords():
    """torch's MaxUnpool2d.forward(input, indices, output_size=None), by keyword too."""
    values, indices = nn.MaxPool2d(2, return_indices=True)(np.random.default_rng(0).standard_normal((1, 2, 5, 4)))
    np.testing.assert_array_equal(nn.MaxUnpool2d(2)(input=values, indices=indices, output_size=(5, 4)),
                                  nn.MaxUnpool2d(2)(values, indices, (5, 4)))


# ---------------------------------------------------------------------------- buffers


class _Counted(nn.Module):
    """A module with a parameter, two persistent buffers (one int64), a non-persistent one and a None."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(3))
        self.register_buffer("mean", np.zeros(3))
        self.register_buffer("steps", np.array(0, dtype=np.int64))
        self.register_buffer("scratchpad", np.zeros(2), persistent=False)
        self.register_buffer("unused", None)


class _TorchCounted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(3, dtype=torch.float64))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("scratchpad", torch.zeros(2, dtype=torch.float64), persistent=False)
        self.register_buffer("unused", None)


def _nested(make):
    return (nn.Sequential if make is _Counted else torch.nn.Sequential)(make(), make())


def test_buffers_are_in_state_dict_in_torchs_order_keys_and_dtypes():
    ours, theirs = _nested(_Counted).state_dict(), _nested(_TorchCounted).state_dict()
    assert list(ours) == list(theirs) == ["0.scale", "0.mean", "0.steps", "1.scale", "1.mean", "1.steps"]
    for key, value in theirs.items():
        assert ours[key].dtype == value.numpy().dtype and ours[key].shape == tuple(value.shape), key
    assert [name for name, _ in _nested(_Counted).named_buffers()] == [
        "0.mean", "0.steps", "0.scratchpad", "1.mean", "1.steps", "1.scratchpad"]


def test_buffers_move_both_ways_with_torch_strictly_in_place():
    model, twin = _nested(_Counted), _nested(_TorchCounted)
    twin[1].mean.copy_(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    twin[1].steps.fill_(7)
    held = model[1].mean
    model.load_state_dict(twin.state_dict(), strict=True)
    assert model[1].mean is held and list(held) == [1.0, 2.0, 3.0]
    assert model[1].steps.dtype == np.int64 and int(model[1].steps) == 7
    model[0].steps[...] = 3
    back = _nested(_TorchCounted)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    assert int(back[0].steps) == 3 and back[1].mean.tolist() == [1.0, 2.0, 3.0]


def test_a_missing_buffer_is_refused_and_changes_nothing():
    model = _nested(_Counted)
    state = model.state_dict()
    state["0.mean"] = np.full(3, 9.0)
    del state["1.steps"]
    with pytest.raises(ValueError, match=r"missing keys \['1.steps'\]"):
        model.load_state_dict(state)
    assert not np.any(model[0].mean == 9.0)


def test_reassigning_a_buffer_keeps_it_a_buffer_and_other_values_unregister_it():
    module = _Counted()
    module.mean = np.full(3, 2.0)
    assert list(module.state_dict()["mean"]) == [2.0, 2.0, 2.0]
    module.mean = "not an array"
    assert "mean" not in module.state_dict() and "mean" not in dict(module.named_buffers())


@pytest.mark.parametrize("name, array, error, message", [
    ("a.b", np.zeros(1), ValueError, "without '.'"),
    ("b", [0.0], TypeError, "expected a NumPy array or None, got list"),
    ("scale", np.zeros(1), KeyError, "already a parameter"),
])
def test_register_buffer_refuses_bad_arguments(name, array, error, message):
    with pytest.raises(error, match=message):
        _Counted().register_buffer(name, array)


def test_train_and_eval_set_every_submodule_like_torch():
    model = _nested(_Counted)
    assert model.eval() is model and not any(m.training for _, m in model.named_modules())
    model[1].train()
    assert [m.training for _, m in model.named_modules()] == [False, False, True]


def test_a_refused_pass_leaves_running_statistics_and_generators_as_they_were():
    """A later child refusing its input undoes the earlier children's training-mode updates (torch
    keeps them; scratch's refused call changes nothing)."""
    model = nn.Sequential(nn.BatchNorm1d(3, dtype=np.float64), nn.Dropout(0.5, rng=0), nn.Linear(4, 2, dtype=np.float64))
    before = model.state_dict()
    generator = model[1].generator.bit_generator.state
    with pytest.raises(ValueError):
        model(np.random.default_rng(0).standard_normal((5, 3)))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert model[1].generator.bit_generator.state == generator
    setattr(model, "2", nn.Linear(3, 2, dtype=np.float64))
    model(np.random.default_rng(0).standard_normal((5, 3)))  # accepted: now the updates stay
    assert int(model[0].num_batches_tracked) == 1 and model[1].generator.bit_generator.state != generator
