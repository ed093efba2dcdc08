"""Fault injection at every public boundary of scratch: layers, losses, backward passes,
``load_state_dict``, optimizers, models and the gradient checker.

Each case feeds one bad input and asserts three things:

(a) the exception type;
(b) a message that names the raiser (layer, loss, model, optimizer) and says both what it
    expected and what it got (each ``match=`` pattern holds both, so a vague message fails);
(c) that nothing changed: parameters, ``.grad``, every forward cache, the losses' caches, the
    models' bookkeeping (``_pass``, ``_state``, the beta-VAE's step, the generator) and the
    optimizer's state, compared before and after the refused call (``Snapshot``).
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from hypothesis import given

from parity_tests import strategies as S
from scratch import nn, optim
from scratch.gradcheck import gradcheck, gradcheck_model
from scratch.models import MODELS, REGISTRY, build, model_names
from scratch.nn import Parameter
from scratch.nn.losses import _Loss

F64 = np.float64


# ---------------------------------------------------------------------------- the snapshot


def _arrays_equal(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def _copy(value):
    """A deep copy whose arrays are copies: a value to compare by equality."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return copy.deepcopy(value)


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and _arrays_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b or (a != a and b != b)


class Snapshot:
    """Everything a refused call must leave alone, for any mix of modules, losses and optimizers.

    Values (parameters, ``.grad``, optimizer state, the generator's state) are copied and compared
    by equality; references (forward caches, the losses' caches, a model's ``_pass``/``_state``,
    workspaces) are kept and compared by identity, so even a cache overwritten with equal values
    counts as a change.
    """

    def __init__(self, *objects):
        self.values, self.references = {}, {}
        for number, target in enumerate(objects):
            self._take(f"{number}:{type(target).__name__}", target)

    def _take(self, prefix, target):
        if isinstance(target, nn.Module):
            for name, parameter in target.named_parameters():
                self.values[f"{prefix} {name}.data"] = parameter.data.copy()
                self.values[f"{prefix} {name}.grad"] = _copy(parameter.grad)
                self.references[f"{prefix} {name} buffers"] = (parameter.data, parameter.grad)
            for name, module in target.named_modules():
                if module._CACHE_ATTRIBUTES:
                    self.references[f"{prefix} {name or 'self'} cache"] = module._forward_state()
                if "_workspace" in vars(module):
                    self.references[f"{prefix} {name} workspace"] = dict(module._workspace._arrays)
            for attribute, value in vars(target).items():
                if isinstance(value, _Loss):
                    self._take(f"{prefix}.{attribute}", value)
                elif attribute in ("_pass", "_state", "_kl_weight", "step") or (
                        attribute == "_input_shape" and not target._CACHE_ATTRIBUTES):  # a model's
                    self.references[f"{prefix} {attribute}"] = value
            if isinstance(getattr(target, "rng", None), np.random.Generator):
                self.values[f"{prefix} rng"] = copy.deepcopy(target.rng.bit_generator.state)
        elif isinstance(target, _Loss):
            self.references[f"{prefix} loss cache"] = (target._cache, target._shape, target._dtype)
            if hasattr(target, "_workspace"):
                self.references[f"{prefix} loss workspace"] = dict(target._workspace._arrays)
        elif isinstance(target, Parameter):
            self.values[f"{prefix} data"] = target.data.copy()
            self.values[f"{prefix} grad"] = _copy(target.grad)
        elif isinstance(target, optim.Optimizer):
            self.values[f"{prefix} state_dict"] = _copy(target.state_dict())
            self.references[f"{prefix} param_groups"] = [dict(group) for group in target.param_groups]
            self.references[f"{prefix} state"] = {k: dict(v) for k, v in target.state.items()}
            for index, parameter in target._indexed_params():
                self.values[f"{prefix} param {index}.data"] = parameter.data.copy()
                self.values[f"{prefix} param {index}.grad"] = _copy(parameter.grad)
        else:
            raise TypeError(f"Snapshot: cannot snapshot a {type(target).__name__}")

    def changes(self, other: "Snapshot") -> list[str]:
        changed = [key for key in self.values if not _equal(self.values[key], other.values.get(key))]
        for key, value in self.references.items():
            now = other.references.get(key)
            if isinstance(value, dict) and not isinstance(value, np.ndarray):
                same = isinstance(now, dict) and value.keys() == now.keys() and all(
                    _identical(value[k], now[k]) for k in value)
            else:
                same = _identical(value, now)
            if not same:
                changed.append(key)
        return changed + [key for key in set(other.values) | set(other.references)
                          if key not in self.values and key not in self.references]


def _identical(a, b) -> bool:
    if isinstance(a, (list, tuple)) and not isinstance(a, np.ndarray):
        return type(a) is type(b) and len(a) == len(b) and all(map(_identical, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    return a is b


def refused(call, error, message, *state):
    """Run ``call``, which must raise ``error`` matching ``message`` and leave ``state`` alone."""
    before = Snapshot(*state)
    with pytest.raises(error, match=message):
        call()
    changes = before.changes(Snapshot(*state))
    assert not changes, f"the refused call changed {changes}"


def test_the_snapshot_sees_every_kind_of_change():
    """The helper itself: each change a refused call could make is reported."""
    layer, loss = nn.Linear(3, 2, rng=0, dtype=F64), nn.MSELoss()
    x = np.ones((4, 3))
    loss(layer(x), np.zeros((4, 2)))
    layer.backward(loss.backward())
    opt = optim.Adam(layer.parameters())
    opt.step()
    mutations = {
        "weight": lambda: layer.weight.data.__setitem__((0, 0), 5.0),
        "grad": lambda: layer.bias.grad.__setitem__(0, 5.0),
        "cache (equal values, new objects)": lambda: layer(x),
        "loss cache": lambda: loss(np.zeros((4, 2)), np.zeros((4, 2))),
        "optimizer state": lambda: opt.state[id(layer.bias)]["exp_avg"].__setitem__(0, 9.0),
        "optimizer step": lambda: opt.step(),
    }
    for label, mutate in mutations.items():
        before = Snapshot(layer, loss, opt)
        mutate()
        assert before.changes(Snapshot(layer, loss, opt)), f"the snapshot missed a change of the {label}"


# ---------------------------------------------------------------------------- layers: forward


def _rng():
    return np.random.default_rng(0)


# name: (factory, a good float64 input); each factory builds a float64 layer
LAYERS = {
    "Linear": (lambda: nn.Linear(3, 2, rng=0, dtype=F64), (4, 3)),
    "TiedLinear": (lambda: nn.TiedLinear(nn.Linear(3, 2, rng=0, dtype=F64)), (4, 2)),
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=F64), (2, 2, 5, 5)),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, rng=0, dtype=F64), (2, 2, 3, 3)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 2, 4, 4)),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), (2, 2, 4, 4)),
    "ReLU": (nn.ReLU, (4, 3)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), (4, 3)),
    "Sigmoid": (nn.Sigmoid, (4, 3)),
    "Tanh": (nn.Tanh, (4, 3)),
    "Flatten": (nn.Flatten, (2, 3, 4)),
    "Unflatten": (lambda: nn.Unflatten(1, (2, 3)), (4, 6)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), nn.ReLU(),
                                         nn.Linear(4, 2, rng=1, dtype=F64)), (4, 3)),
}
WITH_PARAMETERS = ("Linear", "TiedLinear", "Conv2d", "ConvTranspose2d", "Sequential")
# the name each layer's messages start with (its repr for the convolutions, with the geometry)
OWNER = {
    "Linear": r"Linear\(3, 2\)", "TiedLinear": r"TiedLinear\(2, 3\)", "Conv2d": r"Conv2d\(2, 3, kernel_size",
    "ConvTranspose2d": r"ConvTranspose2d\(2, 3, kernel_size", "MaxPool2d": r"MaxPool2d\(kernel_size",
    "AvgPool2d": r"AvgPool2d\(kernel_size",
    "Sequential": r"Linear\(3, 4\)",  # the first child checks the Sequential's input
}


def _ready(name):
    """A layer after one good forward and backward: caches set, gradients non-zero."""
    factory, shape = LAYERS[name]
    layer = factory()
    x = _rng().standard_normal(shape)
    y = layer(x)
    layer.backward(_rng().standard_normal(y.shape))
    return layer, x, y


def _forward_faults(name):
    """(fault, bad input from the good one, error, message) for one layer."""
    owner = OWNER.get(name, name)
    faults = [
        ("not an array", lambda x: x.tolist(), TypeError, rf"^{owner}.*: input must be a NumPy array, got list$"),
        ("integer dtype", lambda x: x.astype(np.int64), TypeError,
         rf"^{owner}.*: input must be float32 or float64, got int64$"),
        ("float16", lambda x: x.astype(np.float16), TypeError,
         rf"^{owner}.*: input must be float32 or float64, got float16$"),
    ]
    if name in WITH_PARAMETERS:
        faults.append(("float32 into float64", lambda x: x.astype(np.float32), TypeError,
                       rf"^{owner}.*: input has dtype float32 but the layer's parameters are float64"))
    if name in ("Linear", "TiedLinear", "Sequential"):
        features = {"Linear": 3, "TiedLinear": 2, "Sequential": 3}[name]
        faults += [
            ("0-d", lambda x: np.array(1.0), ValueError,
             rf"^{owner}: input must have at least 1 dimension, got shape \(\)$"),
            ("wrong features", lambda x: np.ones((4, features + 2)), ValueError,
             rf"^{owner}: input's last dimension must be {features}, got shape \(4, {features + 2}\)$"),
        ]
    if name in ("MaxPool2d", "AvgPool2d"):  # (C, H, W) is unbatched and N = 0 passes, as in torch
        faults += [
            ("rank 2", lambda x: x[0, 0], ValueError, rf"^{owner}.*: input must have 3 or 4 dimensions, got shape \(\d, \d\)$"),
            ("rank 5", lambda x: x[None], ValueError,
             rf"^{owner}.*: input must have 3 or 4 dimensions, got shape \(1, 2, 2, \d, \d\)$"),
            ("empty image", lambda x: x[:, :, :0], ValueError,  # torch refuses every empty axis but the batch
             rf"^{owner}.*: input has an empty channel, row or column axis \(shape \(2, 2, 0, \d\)\); expected C, H, W >= 1"),
            ("no channels", lambda x: x[:, :0], ValueError,
             rf"^{owner}.*: input has an empty channel, row or column axis \(shape \(2, 0, \d, \d\)\)"),
        ]
    if name in ("Conv2d", "ConvTranspose2d"):  # (C, H, W) is an unbatched image, as in torch
        faults += [
            ("rank 2", lambda x: x[0, 0], ValueError, rf"^{owner}.*: input must have 3 or 4 dimensions, got shape \(\d, \d\)$"),
            ("rank 5", lambda x: x[None], ValueError,
             rf"^{owner}.*: input must have 3 or 4 dimensions, got shape \(1, 2, 2, \d, \d\)$"),
            ("empty image", lambda x: x[:, :, :0], ValueError,  # only an empty batch may have one
             rf"^{owner}.*: input has an empty image \(shape \(2, 2, 0, \d\)\); expected H, W >= 1 "),
            ("wrong channels", lambda x: np.ones((2, 5, 5, 5)), ValueError,
             rf"^{owner}.*: expected input \(N, 2, H, W\), got shape \(2, 5, 5, 5\)$"),
            ("wrong channels, unbatched", lambda x: np.ones((5, 5, 5)), ValueError,
             rf"^{owner}.*: expected input \(2, H, W\) \(unbatched\), got shape \(5, 5, 5\)$"),
        ]
    if name in ("Conv2d", "MaxPool2d", "AvgPool2d"):
        faults.append(("image too small", lambda x: np.ones((2, 2, 1, 1)), ValueError,
                       rf"^{owner}.*: input (of spatial size|of shape) .* too small for this (kernel|window)"))
    if name == "Flatten":  # torch wraps a 0-d input's dims as one dimension's: start_dim 1 is out of range
        faults.append(("0-d", lambda x: np.array(1.0), ValueError,
                       r"^Flatten: start_dim 1 out of range for an input of shape \(\) \(expected a dim in \[-1, 0\]"))
    if name == "Unflatten":
        faults.append(("size does not split", lambda x: np.ones((4, 5)), ValueError,
                       r"^Unflatten: dimension 1 of shape \(4, 5\) cannot be split into \(2, 3\)$"))
    return faults


FORWARD_CASES = [pytest.param(name, *fault, id=f"{name}-{fault[0]}") for name in LAYERS
                 for fault in _forward_faults(name)]


@pytest.mark.parametrize("name, fault, corrupt, error, message", FORWARD_CASES)
def test_layer_forward_refuses_bad_input_and_changes_nothing(name, fault, corrupt, error, message):
    layer, x, _ = _ready(name)
    refused(lambda: layer(corrupt(x)), error, message, layer)


def test_fused_linear_relu_refuses_like_the_plain_pair():
    """Linear then ReLU run as one fused pair inside a Sequential: the same check, first."""
    net = nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), nn.ReLU())
    net(np.ones((2, 3)))
    assert net[0].fuses_with(net[1])
    refused(lambda: net(np.ones((2, 5))), ValueError,
            r"^Linear\(3, 4\): input's last dimension must be 3, got shape \(2, 5\)$", net)


INPLACE_FAULTS = [
    ("integer dtype", lambda x: x.astype(np.int64), TypeError, r"input must be float32 or float64, got int64$"),
    ("not an array", lambda x: x.tolist(), TypeError, r"input must be a NumPy array, got list$"),
    ("read-only", lambda x: np.broadcast_to(x, x.shape), ValueError,
     r"inplace=True writes the result into the input, which is read-only; pass a writeable array \(e\.g\. x\.copy\(\)\) "
     r"or use inplace=False$"),
]


@pytest.mark.parametrize("make", [lambda: nn.ReLU(inplace=True), lambda: nn.LeakyReLU(0.1, inplace=True)],
                         ids=["ReLU", "LeakyReLU"])
@pytest.mark.parametrize("fault, corrupt, error, message", INPLACE_FAULTS, ids=[f[0] for f in INPLACE_FAULTS])
def test_an_inplace_layer_refuses_bad_input_before_writing_into_it(make, fault, corrupt, error, message):
    """``inplace=True`` writes into the input: a refused call must leave that array alone too."""
    layer = make()
    x = _rng().standard_normal((4, 3))
    layer.backward(np.ones((4, 3)) + 0 * layer(x.copy()))
    bad = corrupt(x)
    before = copy.deepcopy(bad)
    refused(lambda: layer(bad), error, rf"^{type(layer).__name__}: " + message, layer)
    np.testing.assert_array_equal(np.asarray(bad), np.asarray(before))


def test_sequential_failing_in_a_later_child_leaves_every_cache_as_it_was():
    """The input passes the first convolution but is too small for the third: the children that
    ran before the failure get their caches back."""
    rng = _rng()
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng, dtype=F64), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(2, 2, 3, rng=rng, dtype=F64))
    net(rng.standard_normal((1, 1, 10, 10)))
    refused(lambda: net(rng.standard_normal((1, 1, 6, 6))), ValueError,
            r"^Conv2d\(2, 2, .*: input of spatial size \(2, 2\) is too small for this kernel "
            r"\(output would be \(0, 0\)\)$", net)
    nested = nn.Sequential(nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), nn.Tanh()), nn.Linear(5, 2, dtype=F64))
    refused(lambda: nested(np.ones((2, 3))), ValueError,
            r"^Linear\(5, 2\): input's last dimension must be 5, got shape \(2, 4\)$", nested)


# ---------------------------------------------------------------------------- layers: backward


def _backward_faults(name):
    owner = {"Sequential": "Linear"}.get(name, name)  # the last child takes the Sequential's gradient
    return [
        ("not an array", lambda y: y.tolist(), TypeError,
         rf"^{owner}\.backward: grad_output must be a NumPy array, got list$"),
        ("integer dtype", lambda y: y.astype(np.int64), TypeError,
         rf"^{owner}\.backward: grad_output must be float32 or float64, got int64$"),
        ("float32 after a float64 forward", lambda y: y.astype(np.float32), TypeError,
         rf"^{owner}\.backward: grad_output has dtype float32, the forward ran in float64$"),
        ("one row short", lambda y: y[:-1], ValueError,
         rf"^{owner}\.backward: grad_output must have the forward output's shape \(\d[\d, ]*\), got \(\d[\d, ]*\)$"),
        ("an extra axis", lambda y: y[..., None], ValueError,
         rf"^{owner}\.backward: grad_output must have the forward output's shape \(\d[\d, ]*\), got \(\d[\d, ]*, 1\)$"),
    ]


BACKWARD_CASES = [pytest.param(name, *fault, id=f"{name}-{fault[0]}") for name in LAYERS
                  for fault in _backward_faults(name)]


@pytest.mark.parametrize("name, fault, corrupt, error, message", BACKWARD_CASES)
def test_layer_backward_refuses_a_bad_gradient_and_accumulates_nothing(name, fault, corrupt, error, message):
    layer, _, y = _ready(name)
    refused(lambda: layer.backward(corrupt(np.ones_like(y))), error, message, layer)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backward_before_forward_is_refused(name):
    layer = LAYERS[name][0]()
    shape = LAYERS[name][1]
    message = (r"^Sequential\.backward called before forward: child 0 \(Linear\) has no forward cache$"
               if name == "Sequential" else rf"^{name}\.backward called before forward$")
    refused(lambda: layer.backward(np.ones(shape)), RuntimeError, message, layer)


@given(case=S.wrong_gradient_shapes((4, 2)))
def test_linear_backward_refuses_any_other_shape(case):
    """Every shape but the forward output's, and every dtype but its own, is refused unaccumulated."""
    shape, dtype = case
    layer, _, _ = _ready("Linear")
    if dtype in (np.float16, np.int64):
        error, message = TypeError, rf"must be float32 or float64, got {np.dtype(dtype)}$"
    elif dtype == np.float32:
        error, message = TypeError, r"has dtype float32, the forward ran in float64$"
    else:
        error, message = ValueError, rf"must have the forward output's shape \(4, 2\), got {re.escape(str(shape))}$"
    refused(lambda: layer.backward(np.ones(shape, dtype=dtype)), error, r"^Linear\.backward: grad_output " + message,
            layer)


def test_sequential_backward_over_caches_of_different_passes_accumulates_nothing():
    """A child re-run alone on another batch: the Sequential finds out before any child's
    backward runs, instead of failing at that child with the later children's .grad updated."""
    net = LAYERS["Sequential"][0]()
    net(np.ones((4, 3)))
    net[0](np.ones((5, 3)))
    refused(lambda: net.backward(np.ones((4, 2))), RuntimeError,
            r"^Sequential\.backward: child 0 \(Linear\) last gave \(5, 4\) float64 but child 1 \(ReLU\) last "
            r"took \(4, 4\) float64: their caches come from different forward passes", net)
    refused(lambda: net.backward(np.ones((4, 2)), start="last"), TypeError,
            r"^Sequential\.backward: start must be an int index, got 'last'$", net)
    refused(lambda: net.backward(np.ones((4, 2)), start=3), ValueError,
            r"^Sequential\.backward: start must lie in \[-1, 2\], got 3$", net)


# ---------------------------------------------------------------------------- losses

LOSSES = {
    "BCELoss": (nn.BCELoss, "input", "target"),
    "BCEWithLogitsLoss": (nn.BCEWithLogitsLoss, "input", "target"),
    "MSELoss": (nn.MSELoss, "input", "target"),
    "GaussianKL": (nn.GaussianKL, "mean", "logvar"),
}


def _loss_ready(name, reduction=None):
    make, _, _ = LOSSES[name]
    loss = make() if reduction is None else make(reduction=reduction)
    a = np.full((2, 3), 0.25)
    loss(a, np.full((2, 3), 0.5))
    return loss, a


def _loss_faults(name):
    _, first, second = LOSSES[name]
    a = np.full((2, 3), 0.25)
    faults = [
        ("first not an array", (a.tolist(), a), TypeError, rf"^{name}: {first} must be a NumPy array, got list$"),
        ("second not an array", (a, 0.5), TypeError, rf"^{name}: {second} must be a NumPy array, got float$"),
        ("integer dtype", (a.astype(np.int64), a), TypeError, rf"^{name}: {first} must be float32 or float64, got int64$"),
        ("dtypes differ", (a, a.astype(np.float32)), TypeError,
         rf"^{name}: {second} has dtype float32 but {first} is float64"),
    ]
    if name == "MSELoss":  # torch's MSELoss broadcasts a target of another shape (with a warning)
        faults.append(("shapes do not broadcast", (a, a[:, :2]), ValueError,
                       r"^MSELoss: input and target must have the same shape, or shapes that broadcast "
                       r"\(torch's rules\), got \(2, 3\) and \(2, 2\)$"))
    else:
        faults.append(("shapes differ", (a, a[:1]), ValueError,
                       rf"^{name}: {first} and {second} must have the same shape, got \(2, 3\) and \(1, 3\)$"))
    if name == "GaussianKL":  # not a torch op: it keeps refusing an empty batch (torch's losses take one)
        faults.append(("empty", (a[:0], a[:0]), ValueError,
                       rf"^{name}: {first} is empty \(shape \(0, 3\)\); expected at least one element$"))
    if name == "BCELoss":
        faults.append(("not probabilities", (a + 1, a), ValueError,
                       r"^BCELoss: input must be probabilities in \[0, 1\], got values in \[1\.25, 1\.25\]"))
    if name == "GaussianKL":
        faults.append(("0-d", (np.array(0.5), np.array(0.5)), ValueError,
                       r"^GaussianKL: mean must have at least 1 dimension, got shape \(\)$"))
    return faults


LOSS_CASES = [pytest.param(name, *fault, id=f"{name}-{fault[0]}") for name in LOSSES for fault in _loss_faults(name)]


@pytest.mark.parametrize("name, fault, arguments, error, message", LOSS_CASES)
def test_loss_refuses_bad_input_and_keeps_its_cache(name, fault, arguments, error, message):
    loss, _ = _loss_ready(name)
    refused(lambda: loss(*arguments), error, message, loss)


WEIGHT_FAULTS = [  # (loss, its weights: they fit the (2, 3) input it ran on, not the (2, 4) one it is given)
    ("BCELoss", dict(weight=np.ones(3)), "weight", r"\(3,\)"),
    ("BCEWithLogitsLoss", dict(weight=np.ones((1, 2, 3))[0]), "weight", r"\(2, 3\)"),
    ("BCEWithLogitsLoss", dict(pos_weight=np.ones(3)), "pos_weight", r"\(3,\)"),
]


@pytest.mark.parametrize("name, weights, what, shape", WEIGHT_FAULTS, ids=[f"{f[0]}-{f[2]}" for f in WEIGHT_FAULTS])
def test_loss_refuses_a_weight_that_does_not_broadcast_and_keeps_its_cache(name, weights, what, shape):
    """torch refuses a weight or pos_weight that does not broadcast to the input's shape."""
    loss = LOSSES[name][0](**weights)
    loss(np.full((2, 3), 0.25), np.full((2, 3), 0.5))
    x = np.full((2, 4), 0.25)
    refused(lambda: loss(x, x), ValueError,
            rf"^{name}: {what} must broadcast to the input's shape \(2, 4\) \(torch's rules.*got shape {shape}", loss)


LOSS_BACKWARD_CASES = [
    ("sum", "abc", ValueError, r"\.backward: grad_output of a reduced loss must be a real number, got 'abc'$"),
    ("sum", None, ValueError, r"\.backward: grad_output of a reduced loss must be a real number, got None$"),
    ("mean", np.ones(1), ValueError, r"\.backward: grad_output of a reduced loss must be a real number, got shape \(1,\)$"),
    ("mean", True, ValueError, r"\.backward: grad_output of a reduced loss must be a real number, got True$"),
    ("none", 1.0, ValueError, r"\(reduction='none'\)\.backward: grad_output must be an array of shape \(2, 3\), got float$"),
    ("none", np.ones((3, 2)), ValueError, r"\(reduction='none'\)\.backward: grad_output must be an array of shape \(2, 3\), got \(3, 2\)$"),
    ("none", np.ones((2, 3), np.float32), TypeError,
     r"\(reduction='none'\)\.backward: grad_output must have the input's dtype float64, got float32$"),
    ("none", np.ones((2, 3), np.int64), TypeError,
     r"\(reduction='none'\)\.backward: grad_output must have the input's dtype float64, got int64$"),
]


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction, grad_output, error, message", LOSS_BACKWARD_CASES)
def test_loss_backward_refuses_a_bad_upstream_gradient(name, reduction, grad_output, error, message):
    loss, _ = _loss_ready(name, reduction)
    refused(lambda: loss.backward(grad_output), error, f"^{name}" + message, loss)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_backward_before_forward_is_refused(name):
    loss = LOSSES[name][0]()
    refused(loss.backward, RuntimeError, rf"^{name}\.backward called before the loss was computed$", loss)


def test_bce_through_a_sigmoid_that_ran_again_is_refused():
    """The loss's input is not the Sigmoid's last output (a different batch): a clear error, not
    NumPy's "cannot reshape"."""
    sigmoid, loss = nn.Sigmoid(), nn.BCELoss()
    loss(sigmoid(np.zeros((4, 3))), np.ones((4, 3)))
    sigmoid(np.zeros((2, 3)))
    refused(lambda: loss.backward_through_sigmoid(sigmoid), ValueError,
            r"^BCELoss\.backward_through_sigmoid: the loss's input \(4, 3\) is not the Sigmoid's last output "
            r"\(2, 3\)", sigmoid, loss)


# ---------------------------------------------------------------------------- Module.load_state_dict


def _net():
    return nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), nn.ReLU(), nn.Linear(4, 2, rng=1, dtype=F64))


STATE_DICT_FAULTS = [
    ("missing key", lambda sd: sd.pop("0.bias"), ValueError, r"^Sequential\.load_state_dict: missing keys \['0\.bias'\]$"),
    ("unexpected key", lambda sd: sd.update({"9.weight": np.zeros(1)}), ValueError,
     r"^Sequential\.load_state_dict: unexpected keys \['9\.weight'\]$"),
    ("wrong shape", lambda sd: sd.update({"2.weight": np.zeros((4, 2))}), ValueError,
     r"^Sequential\.load_state_dict: shape mismatch '2\.weight': expected shape \(2, 4\), got \(4, 2\)$"),
    ("every problem at once", lambda sd: (sd.pop("0.bias"), sd.update({"x": np.ones(1), "2.bias": np.ones(3)})),
     ValueError, r"^Sequential\.load_state_dict: missing keys \['0\.bias'\]; unexpected keys \['x'\]; "
                 r"shape mismatch '2\.bias': expected shape \(2,\), got \(3,\)$"),
    ("a list", lambda sd: sd.update({"2.bias": [0.0, 0.0]}), TypeError,
     r"^Sequential\.load_state_dict\['2\.bias'\]: expected a NumPy array or torch tensor, got list$"),
    ("a float", lambda sd: sd.update({"2.bias": 0.0}), TypeError,
     r"^Sequential\.load_state_dict\['2\.bias'\]: expected a NumPy array or torch tensor, got float$"),
    # the last key written first would show a partial load: these come after valid ones
    ("strings", lambda sd: sd.update({"2.bias": np.array(["a", "b"])}), TypeError,
     r"^Sequential\.load_state_dict\['2\.bias'\]: expected real numbers \(bool, int or float\), got dtype <U1$"),
    ("complex", lambda sd: sd.update({"2.bias": np.ones(2, complex)}), TypeError,
     r"^Sequential\.load_state_dict\['2\.bias'\]: expected real numbers \(bool, int or float\), got dtype complex128$"),
    ("objects", lambda sd: sd.update({"2.bias": np.array([None, 1.0])}), TypeError,
     r"^Sequential\.load_state_dict\['2\.bias'\]: expected real numbers \(bool, int or float\), got dtype object$"),
]


@pytest.mark.parametrize("fault, mutate, error, message", STATE_DICT_FAULTS, ids=[f[0] for f in STATE_DICT_FAULTS])
def test_load_state_dict_refuses_and_writes_nothing(fault, mutate, error, message):
    net = _net()
    net(np.ones((2, 3)))
    state = {key: np.full_like(value, 5.0) for key, value in net.state_dict().items()}
    mutate(state)
    refused(lambda: net.load_state_dict(state), error, message, net)


@pytest.mark.parametrize("value", [None, [("0.weight", np.zeros((4, 3)))], "weights"])
def test_load_state_dict_refuses_what_is_not_a_mapping(value):
    net = _net()
    refused(lambda: net.load_state_dict(value), TypeError,
            rf"^Sequential\.load_state_dict: expected a mapping of names to arrays, got {type(value).__name__}$", net)


def test_load_state_dict_takes_nan_bfloat16_and_integers_as_torch_does():
    """A decision, pinned: NaN and inf load as they are (torch's load_state_dict does; a diverged
    run's weights stay inspectable); a bfloat16 tensor, which NumPy cannot hold, loads through
    float32; integer and bool arrays are cast."""
    net = _net()
    state = {key: np.full_like(value, np.nan) for key, value in net.state_dict().items()}
    state["2.bias"] = torch.ones(2, dtype=torch.bfloat16)
    state["0.bias"] = np.arange(4)
    state["2.weight"] = np.ones((2, 4), bool)
    net.load_state_dict(state)
    assert np.isnan(net[0].weight.data).all()
    np.testing.assert_array_equal(net[2].bias.data, [1.0, 1.0])
    np.testing.assert_array_equal(net[0].bias.data, [0.0, 1.0, 2.0, 3.0])
    assert net[2].weight.data.all()


# ---------------------------------------------------------------------------- optimizers

OPTIMIZERS = {
    "SGD": lambda params, **kw: optim.SGD(params, **{"lr": 0.1, "momentum": 0.9, **kw}),
    "Adam": lambda params, **kw: optim.Adam(params, **{"lr": 0.1, **kw}),
    "AdamW": lambda params, **kw: optim.AdamW(params, **{"lr": 0.1, **kw}),
}


def _params():
    return [Parameter(np.zeros((2, 2))), Parameter(np.zeros(3))]


HYPERPARAMETER_FAULTS = [
    # (optimizers, keyword arguments, error, message after "<Optimizer>: ")
    ("SGD Adam AdamW", {"lr": "fast"}, TypeError, r"invalid learning rate: lr must be a number >= 0, got 'fast' \(str\)$"),
    ("SGD Adam AdamW", {"lr": None}, TypeError, r"invalid learning rate: lr must be a number >= 0, got None \(NoneType\)$"),
    ("SGD Adam AdamW", {"lr": -0.1}, ValueError, r"invalid learning rate: lr must be a number >= 0, got -0\.1$"),
    ("SGD Adam AdamW", {"lr": float("nan")}, ValueError, r"invalid learning rate: lr must be a number >= 0, got nan$"),
    ("SGD Adam AdamW", {"lr": True}, TypeError, r"invalid learning rate: lr must be a number >= 0, got True \(bool\)$"),
    ("SGD Adam AdamW", {"lr": np.array([0.1, 0.2])}, TypeError, r"invalid learning rate: lr must be a number >= 0, got array"),
    ("SGD Adam AdamW", {"weight_decay": "0.1"}, TypeError,
     r"invalid weight_decay: weight_decay must be a finite number >= 0, got '0\.1' \(str\)$"),
    ("SGD Adam AdamW", {"weight_decay": -1.0}, ValueError,
     r"invalid weight_decay: weight_decay must be a finite number >= 0, got -1\.0$"),
    ("SGD Adam AdamW", {"maximize": "yes"}, TypeError, r"maximize must be True or False, got 'yes'$"),
    ("SGD", {"momentum": "high"}, TypeError, r"invalid momentum: momentum must be a finite number >= 0, got 'high' \(str\)$"),
    ("SGD", {"momentum": -0.5}, ValueError, r"invalid momentum: momentum must be a finite number >= 0, got -0\.5$"),
    ("SGD", {"dampening": None}, TypeError, r"invalid dampening: dampening must be a finite number, got None \(NoneType\)$"),
    ("SGD", {"nesterov": True, "dampening": 0.5}, ValueError,
     r"Nesterov momentum requires a momentum > 0 and zero dampening, got momentum 0\.9 and dampening 0\.5$"),
    ("Adam AdamW", {"betas": (0.9,)}, TypeError, r"betas must be a pair of numbers in \[0, 1\), got \(0\.9,\)$"),
    ("Adam AdamW", {"betas": 0.9}, TypeError, r"betas must be a pair of numbers in \[0, 1\), got 0\.9$"),
    ("Adam AdamW", {"betas": ("a", 0.9)}, TypeError, r"betas must be a pair of numbers in \[0, 1\), got \('a', 0\.9\)$"),
    ("Adam AdamW", {"betas": (1.0, 0.9)}, ValueError, r"betas must lie in \[0, 1\), got \(1\.0, 0\.9\)$"),
    ("Adam AdamW", {"eps": None}, TypeError, r"invalid eps: eps must be a finite number >= 0, got None \(NoneType\)$"),
    ("Adam AdamW", {"eps": -1e-8}, ValueError, r"invalid eps: eps must be a finite number >= 0, got -1e-08$"),
    ("Adam AdamW", {"amsgrad": "no"}, TypeError, r"amsgrad must be True or False, got 'no'$"),
    # torch's implementation switches and Tensor-valued hyper-parameters (scratch.optim's docstring)
    ("SGD Adam AdamW", {"foreach": "yes"}, TypeError, r"foreach must be True, False or None, got 'yes'$"),
    ("SGD Adam AdamW", {"fused": True}, NotImplementedError, r"fused=True is not implemented: torch's fused CPU kernel "),
    ("SGD Adam AdamW", {"fused": True, "foreach": True}, RuntimeError,
     r"`fused` and `foreach` cannot be `True` together \(torch refuses them too\); got fused=True, foreach=True$"),
    ("SGD Adam AdamW", {"differentiable": True}, NotImplementedError, r"differentiable=True is not implemented: "),
    ("SGD Adam AdamW", {"lr": torch.tensor(0.1)}, TypeError,
     r"lr is a torch Tensor \(tensor\(0\.1000\)\); scratch takes Python numbers \(it has no tensors\): pass float\(lr\)"),
    ("Adam AdamW", {"capturable": True}, ValueError, r"capturable=True is for CUDA-graph capture on an accelerator "),
    ("Adam", {"decoupled_weight_decay": "on"}, TypeError, r"decoupled_weight_decay must be True or False, got 'on'$"),
]


@pytest.mark.parametrize("name, kwargs, error, message", [
    pytest.param(name, kwargs, error, message, id=f"{name}-{next(iter(kwargs))}={kwargs[next(iter(kwargs))]!r}")
    for names, kwargs, error, message in HYPERPARAMETER_FAULTS for name in names.split()])
def test_bad_hyperparameters_are_refused(name, kwargs, error, message):
    params = _params()
    refused(lambda: OPTIMIZERS[name](params, **kwargs), error, rf"^{name}: " + message, *params)


PARAMS_FAULTS = [
    ("a number", lambda ps: 5, TypeError, r"params must be an iterable of Parameters, got int$"),
    ("None", lambda ps: None, TypeError, r"params must be an iterable of Parameters, got NoneType$"),
    ("a model", lambda ps: build("mlp-ae", hidden_dims=[2], latent_dim=2, input_dim=4), TypeError,
     r"params must be an iterable of Parameters, got a MLPAutoencoder \(a Module\): pass its \.parameters\(\)$"),
    ("a Sequential", lambda ps: nn.Sequential(nn.Linear(2, 2)), TypeError,
     r"params must be an iterable of Parameters, got a Sequential \(a Module\): pass its \.parameters\(\)$"),
    ("a single Parameter", lambda ps: ps[0], TypeError, r"params must be an iterable of Parameters, got a single Parameter$"),
    ("an empty list", lambda ps: [], ValueError, r"got an empty parameter list$"),
    ("an empty generator", lambda ps: (p for p in []), ValueError, r"got an empty parameter list$"),
    ("arrays", lambda ps: [p.data for p in ps], TypeError, r"expected scratch Parameters, got ndarray$"),
    ("tensors", lambda ps: [torch.zeros(2)], TypeError, r"expected scratch Parameters, got Tensor$"),
    ("a group without params", lambda ps: [{"lr": 0.1}], TypeError,
     r"parameter groups must be dicts with a 'params' entry, got dict at position 0$"),
    ("a group of a number", lambda ps: [{"params": 3}], TypeError,
     r"group 0's 'params' must be an iterable of Parameters, got int$"),
    ("a parameter twice", lambda ps: [{"params": [ps[0]]}, {"params": [ps[0]]}], ValueError,
     r"a parameter appears in more than one group$"),
    ("an unknown hyper-parameter in a group", lambda ps: [{"params": ps, "speed": 1}], ValueError,
     r"unknown hyper-parameters \['speed'\]$"),
    ("a parameter twice in a group", lambda ps: [ps[0], ps[1], ps[0]], ValueError,
     r"a parameter appears twice in group 0 \(torch warns, then updates it twice per step\); list each parameter once$"),
    ("named and unnamed parameters", lambda ps: [("a", ps[0]), ps[1]], ValueError,
     r"all optimizer params should be with/without names\. Some param names are missing: group 0 names 1 of its 2 "
     r"parameters$"),
    ("a named group and an unnamed one", lambda ps: [{"params": [("a", ps[0])]}, {"params": [ps[1]]}], ValueError,
     r"all optimizer param groups should be with/without names\. cannot add param group without names to the "
     r"optimizer \(group 1\)$"),
    ("a named parameter of three parts", lambda ps: [("a", ps[0], 1)], TypeError,
     r"a named parameter is a \(name, Parameter\) pair, got a tuple of 3 in group 0$"),
    ("param_names of another length", lambda ps: [{"params": ps, "param_names": ["a"]}], ValueError,
     r"group 0: 'param_names' must be a list of one name per parameter \(2\), got 1 names$"),
    ("a set of parameters in a group", lambda ps: [{"params": set(ps)}], TypeError,
     r"optimizer parameters need to be organized in ordered collections, .* group 0's 'params' is a set: pass a list$"),
]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("fault, make, error, message", PARAMS_FAULTS, ids=[f[0] for f in PARAMS_FAULTS])
def test_what_is_not_a_parameter_list_is_refused(name, fault, make, error, message):
    params = _params()
    refused(lambda: OPTIMIZERS[name](make(params)), error, rf"^{name}: " + message, *params)


def test_a_group_may_hold_one_parameter_as_torch_allows():
    p = Parameter(np.ones(2))
    p.grad[...] = 1.0
    optim.SGD([{"params": p}], lr=0.5).step()
    np.testing.assert_array_equal(p.data, [0.5, 0.5])


def _stepped(name, flat=False, **kwargs):
    """An optimizer after one step (so it has state), over loose or flattened parameters."""
    if flat:
        model = build("mlp-ae", dtype=F64, rng=0, input_dim=4, hidden_dims=[3], latent_dim=2)
        params = model.parameters()
    else:
        params = _params()
    opt = OPTIMIZERS[name](params, **kwargs)
    for p in params:
        p.grad[...] = 1.0
    opt.step()
    return opt, params


STEP_FAULTS = [
    ("grad None", lambda p: setattr(p, "grad", None), r"got NoneType$"),
    ("grad a list", lambda p: setattr(p, "grad", p.grad.tolist()), r"got list$"),
    ("grad another shape", lambda p: setattr(p, "grad", np.ones(p.size + 1)), r"got shape \(\d+,\), float64$"),
    ("grad float32", lambda p: setattr(p, "grad", np.ones(p.shape, np.float32)), r"got shape \([\d, ]+\), float32$"),
]


@pytest.mark.parametrize("flat", [False, True], ids=["loose", "flattened"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("fault, damage, message", STEP_FAULTS, ids=[f[0] for f in STEP_FAULTS])
def test_step_with_a_bad_gradient_moves_no_parameter(name, flat, fault, damage, message):
    """The last parameter's .grad is bad: without the check before the step, the parameters
    before it would be updated and their state advanced."""
    opt, params = _stepped(name, flat)
    damage(params[-1])
    index = len(params) - 1
    refused(opt.step, ValueError,
            rf"^{name}\.step: parameter {index}'s \.grad must be an array of its shape \([\d, ]+\) and dtype "
            rf"float64, " + message, opt)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_step_on_strided_data_is_refused(name):
    """A parameter whose .data was rebound to a strided view would be updated through a copy."""
    opt, params = _stepped(name)
    params[0].data = np.zeros((2, 4))[:, ::2]
    refused(opt.step, ValueError, rf"^{name}\.step: parameter 0's \.data \(shape \(2, 2\)\) must be C-contiguous", opt)


def _buffer(name):
    return "momentum_buffer" if name == "SGD" else "exp_avg"


OPTIMIZER_STATE_FAULTS = [
    # (fault, mutate(state_dict, buffer name), error, message after "<Optimizer>.load_state_dict: ")
    ("not a dict", lambda sd, b: [sd], ValueError, r"expected a dict with exactly 'state' and 'param_groups', got list$"),
    ("an extra key", lambda sd, b: {**sd, "extra": 1}, ValueError,
     r"expected a dict with exactly 'state' and 'param_groups', got \['extra', 'param_groups', 'state'\]$"),
    ("param_groups not a list", lambda sd, b: {**sd, "param_groups": 5}, ValueError,
     r"'param_groups' must be a list of dicts, got int$"),
    ("a group without params", lambda sd, b: (sd["param_groups"][0].pop("params"), sd)[1], ValueError,
     r"saved parameter group 0 must be a dict with a 'params' list, got keys \["),
    ("a group that is not a dict", lambda sd, b: {**sd, "param_groups": [3]}, ValueError,
     r"saved parameter group 0 must be a dict with a 'params' list, got int$"),
    ("two groups saved", lambda sd, b: {**sd, "param_groups": sd["param_groups"] * 2}, ValueError,
     r"2 parameter groups saved, optimizer has 1$"),
    ("fewer parameters", lambda sd, b: sd["param_groups"][0].update(params=[0]) or sd, ValueError,
     r"a saved group has 1 parameters, the optimizer's has 2$"),
    ("an index twice", lambda sd, b: sd["param_groups"][0].update(params=[0, 0]) or sd, ValueError,
     r"parameter index 0 appears twice in 'param_groups'$"),
    ("an index that is not an int", lambda sd, b: sd["param_groups"][0].update(params=[0, "1"]) or sd, ValueError,
     r"parameter indices in 'param_groups' must be ints, got '1'$"),
    ("state not a dict", lambda sd, b: {**sd, "state": [1]}, ValueError,
     r"'state' must be a dict of parameter index to dict, got list$"),
    ("a state key that is no index", lambda sd, b: sd["state"].update({"first": {}}) or sd, ValueError,
     r"'state' keys must be parameter indices, got 'first'$"),
    ("a state for no parameter", lambda sd, b: sd["state"].update({7: {}}) or sd, ValueError,
     r"state for unknown parameter index 7$"),
    ("a state that is not a dict", lambda sd, b: sd["state"].update({1: 5}) or sd, ValueError,
     r"state 1 must be a dict of buffers, got int$"),
    ("an unknown buffer", lambda sd, b: sd["state"][1].update(velocity=np.zeros(3)) or sd, ValueError,
     r"state 1 has unknown entries \['velocity'\]; \w+ keeps \["),
    ("a buffer of another shape", lambda sd, b: sd["state"][1].update({b: np.zeros((2, 2))}) or sd, ValueError,
     r"state 1/'\w+' has shape \(2, 2\), its parameter has \(3,\)$"),
    ("a buffer of strings", lambda sd, b: sd["state"][1].update({b: np.array(["a"] * 3)}) or sd, TypeError,
     r"state 1/'\w+': expected real numbers \(bool, int or float\), got dtype <U1$"),
    ("a buffer that is a list", lambda sd, b: sd["state"][1].update({b: [0.0] * 3}) or sd, TypeError,
     r"state 1/'\w+': expected a NumPy array or torch tensor, got list$"),
    ("a saved lr that is text", lambda sd, b: sd["param_groups"][0].update(lr="0.1") or sd, TypeError,
     r"saved parameter group 0: \w+: invalid learning rate: lr must be a number >= 0, got '0\.1' \(str\)$"),
    ("a saved fused=True", lambda sd, b: sd["param_groups"][0].update(fused=True) or sd, NotImplementedError,
     r"saved parameter group 0: \w+: fused=True is not implemented"),
    ("saved param_names of another length", lambda sd, b: sd["param_groups"][0].update(param_names=["a"]) or sd,
     ValueError, r"saved parameter group 0: 'param_names' must be a list of one name per parameter \(2\), got 1 names$"),
]
ADAM_STATE_FAULTS = [
    ("a step that is text", lambda sd, b: sd["state"][1].update(step="3") or sd, TypeError,
     r"state 1/'step': the step count must be a finite number >= 0, got '3' \(str\)$"),
    ("a step of three values", lambda sd, b: sd["state"][1].update(step=np.ones(3)) or sd, TypeError,
     r"state 1/'step': the step count must be a finite number >= 0, got array"),
    ("a negative step", lambda sd, b: sd["state"][1].update(step=-1.0) or sd, ValueError,
     r"state 1/'step': the step count must be a finite number >= 0, got -1\.0$"),
    ("exp_avg_sq missing", lambda sd, b: (sd["state"][1].pop("exp_avg_sq"), sd)[1], ValueError,
     r"state 1: \w+ state needs \['exp_avg', 'exp_avg_sq', 'step'\], got \['exp_avg', 'step'\]$"),
    ("saved betas of one value", lambda sd, b: sd["param_groups"][0].update(betas=[0.9]) or sd, TypeError,
     r"saved parameter group 0: \w+: betas must be a pair of numbers in \[0, 1\), got \(0\.9,\)$"),
]


@pytest.mark.parametrize("name, fault, mutate, error, message", [
    pytest.param(name, *fault, id=f"{name}-{fault[0]}") for name in sorted(OPTIMIZERS)
    for fault in OPTIMIZER_STATE_FAULTS + (ADAM_STATE_FAULTS if name != "SGD" else [])])
def test_optimizer_load_state_dict_refuses_and_keeps_its_state(name, fault, mutate, error, message):
    opt, params = _stepped(name)
    bad = mutate(opt.state_dict(), _buffer(name))
    refused(lambda: opt.load_state_dict(bad), error, rf"^{name}\.load_state_dict: " + message, opt, *params)


def test_optimizer_state_from_json_keys_and_torch_tensors_still_loads():
    """What the stricter checks must still accept: text keys (a state that went through JSON),
    torch's 0-d tensor step and list betas."""
    opt, params = _stepped("Adam")
    saved = opt.state_dict()
    twin = optim.Adam(_params(), lr=0.1)
    saved["state"] = {str(k): {**v, "step": torch.tensor(v["step"])} for k, v in saved["state"].items()}
    saved["param_groups"][0]["betas"] = list(saved["param_groups"][0]["betas"])
    twin.load_state_dict(saved)
    assert twin.state_dict()["state"][1]["step"] == 1.0 and twin.param_groups[0]["betas"] == (0.9, 0.999)


# ---------------------------------------------------------------------------- models

SMALL = {  # small enough to build and run in milliseconds; every input is (N, 1, 28, 28) or (N, 784)
    "mlp-ae": {"hidden_dims": [6], "latent_dim": 3},
    "denoising-ae": {"hidden_dims": [6], "latent_dim": 3},
    "conv-ae": {"channels": [2, 2]},
    "vae": {"hidden_dim": 6, "latent_dim": 3},
    "seed-vae": {"hidden_dim": 6, "latent_dim": 3},
    "beta-vae": {"hidden_dim": 6, "latent_dim": 3, "capacity_max": 5.0},
    "conv-vae": {"channels": [2, 2], "latent_dim": 3},
    "deep-conv-vae": {"hidden_dims": [2, 2], "latent_dim": 3},
    "iwae": {"hidden_dims": [6], "latent_dim": 3, "num_samples": 2},
    "cvae": {"hidden_dim": 6, "latent_dim": 3},
    "wae-mmd": {"hidden_dim": 6, "latent_dim": 3},
    "vq-vae": {"channels": [2, 2], "embedding_dim": 2, "num_embeddings": 4},
    "sparse-ae": {"hidden_dim": 6},
    "contractive-ae": {"hidden_dim": 6},
    "tied-ae": {"hidden_dim": 6},
}
assert set(SMALL) == set(MODELS), "a model was added: give it a small configuration here"
NOISY = tuple(name for name in REGISTRY if REGISTRY[name].noise_kind != "none")
CONV = ("conv-ae", "conv-vae")


def _model(name, loss=True):
    """A float64 model after one loss and backward (caches, .grad, the beta-VAE's step all set)."""
    model = build(name, dtype=F64, rng=0, **SMALL[name])
    x = (_rng().random((2, 1, 28, 28)) < 0.3).astype(F64)
    noise = model.draw_noise(x.shape) if name in NOISY else None
    if loss:
        model.loss(x, noise=noise, **_conditions(name, len(x)))
        model.backward()
    return model, x, noise


def _conditions(name, n):
    """A conditional model's ``labels=`` for a batch of n (classes 0, 1, ...); {} for the others."""
    return REGISTRY[name].label_arguments(np.arange(n, dtype=np.int64) % 10)


def _owner(name):
    return rf"{MODELS[name].__name__}\({name}\)"


def _run(model, method, x, noise):
    """``model.<method>(x)``, with the noise the method takes: reconstruct always does, forward
    for the variational models (the denoising model's forward is the plain net)."""
    conditions = _conditions(model.name, len(x))
    if method == "encode":  # cvae's encode(x, labels) takes them positionally, as decode(z, labels)
        return model.encode(x, *conditions.values())
    if method == "reconstruct" or (method == "forward" and model.name in NOISY and model.name != "denoising-ae"):
        return getattr(model, method)(x, noise, **conditions)
    return getattr(model, method)(x, **conditions)


def _input_faults(name):
    owner = _owner(name)
    shape = r"\(N, 1, 28, 28\)" if name == "conv-ae" else r"\(N, 784\) or \(N, "
    faults = [
        ("a list", lambda x: x.tolist(), TypeError, rf"^{owner}: x must be a NumPy array, got list$"),
        ("a torch tensor", lambda x: torch.from_numpy(x), TypeError, rf"^{owner}: x must be a NumPy array, got Tensor$"),
        ("integers", lambda x: x.astype(np.int64), TypeError, rf"^{owner}: x must be float32 or float64, got int64$"),
        ("float32 into float64", lambda x: x.astype(np.float32), TypeError,
         rf"^{owner}: x has dtype float32 but the model's parameters are float64; convert with x\.astype\(np\.float64\)$"),
        ("rank 3", lambda x: x[:, 0], ValueError,
         rf"^{owner}: x must have {'4' if name == 'conv-ae' else '2 or 4'} dimensions, got shape \(2, 28, 28\)$"),
        ("three channels", lambda x: np.ones((2, 3, 28, 28)), ValueError, rf"^{owner}: x must be {shape}.*got shape \(2, 3, 28, 28\)$"),
        ("an empty batch", lambda x: x[:0], ValueError, rf"^{owner}: x must be {shape}.*N >= 1, got shape \(0, 1, 28, 28\)$"),
    ]
    if name != "conv-ae":
        faults.append(("783 features", lambda x: np.ones((2, 783)), ValueError,
                       rf"^{owner}: x must be \(N, 784\) or \(N, .*got shape \(2, 783\)$"))
    if name in CONV:  # 4·14·14 = 784 values per image, but not the image a convolution reads
        faults.append(("another image shape", lambda x: np.ones((2, 4, 14, 14)), ValueError,
                       rf"^{owner}: x must be {shape}.*got shape \(2, 4, 14, 14\)$"))
    return faults


MODEL_INPUT_CASES = [pytest.param(name, *fault, id=f"{name}-{fault[0]}") for name in sorted(MODELS)
                     for fault in _input_faults(name)]


@pytest.mark.parametrize("name, fault, corrupt, error, message", MODEL_INPUT_CASES)
def test_model_loss_refuses_bad_input_before_anything_changes(name, fault, corrupt, error, message):
    model, x, noise = _model(name)
    model.train()  # the beta-VAE counts its steps in training mode: a refused loss must not
    refused(lambda: model.loss(corrupt(x), noise=noise, **_conditions(name, len(x))), error, message, model)


@pytest.mark.parametrize("method", ["forward", "reconstruct", "encode"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_entry_point_checks_x(name, method):
    model, x, noise = _model(name)
    refused(lambda: _run(model, method, x[:, :, :27], noise), ValueError,
            rf"^{_owner(name)}: x must be .*got shape \(2, 1, 27, 28\)$", model)


def _noise_faults(name):
    owner = _owner(name)
    label = {"denoising-ae": r"noise \(x's shape\)", "wae-mmd": r"noise \(z_p, the prior samples\)"}.get(name, r"noise \(ε\)")
    expected = {"denoising-ae": r"\(2, 1, 28, 28\)", "iwae": r"\(2, 2, 3\)"}.get(name, r"\(2, 3\)")  # iwae: K = 2
    return [
        ("one row short", lambda n: n[:1], ValueError, rf"^{owner}: {label} must have shape {expected}, got \(1, "),
        ("flattened", lambda n: n.reshape(-1), ValueError, rf"^{owner}: {label} must have shape {expected}, got \(\d+,\)$"),
        ("float32", lambda n: n.astype(np.float32), TypeError,
         rf"^{owner}: {label} has dtype float32 but the model's parameters are float64"),
        ("integers", lambda n: n.astype(np.int64), TypeError, rf"^{owner}: {label} must be float32 or float64, got int64$"),
        ("a list", lambda n: n.tolist(), TypeError, rf"^{owner}: {label} must be a NumPy array, got list$"),
    ]


NOISE_CASES = [pytest.param(name, *fault, id=f"{name}-{fault[0]}") for name in NOISY for fault in _noise_faults(name)]


@pytest.mark.parametrize("name, fault, corrupt, error, message", NOISE_CASES)
def test_bad_noise_is_refused_before_any_layer_runs(name, fault, corrupt, error, message):
    """The VAEs checked ε only after the encoder had run and overwritten its caches."""
    model, x, noise = _model(name)
    conditions = _conditions(name, len(x))
    refused(lambda: model.loss(x, noise=corrupt(noise), **conditions), error, message, model)
    refused(lambda: model.reconstruct(x, noise=corrupt(noise), **conditions), error, message, model)


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if n not in NOISY])
def test_deterministic_models_refuse_noise(name):
    model, x, _ = _model(name)
    refused(lambda: model.loss(x, noise=np.zeros_like(x)), ValueError,
            rf"^\w+: {name} is deterministic and takes no noise, got ndarray$", model)


def test_denoising_corrupt_checks_x():
    model, x, noise = _model("denoising-ae")
    refused(lambda: model.corrupt(x.tolist(), noise), TypeError,
            r"^DenoisingAutoencoder\(denoising-ae\): x must be a NumPy array, got list$", model)
    refused(lambda: model.corrupt(np.ones((2, 5)), None), ValueError,
            r"^DenoisingAutoencoder\(denoising-ae\): x must be \(N, 784\) .*got shape \(2, 5\)$", model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_backward_before_loss_is_refused(name):
    model, _, _ = _model(name, loss=False)
    refused(model.backward, RuntimeError, rf"^{type(model).__name__}\.backward called before loss$", model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_backward_after_a_forward_is_refused(name):
    """backward() differentiates the last loss; after a forward on another batch that loss's
    caches are gone (before the fix: NumPy's "cannot reshape" from inside the BCE, or a wrong
    gradient from the old loss and the new caches)."""
    model, x, noise = _model(name)
    x3 = np.concatenate([x, x[:1]])
    _run(model, "forward", x3, model.draw_noise(x3.shape) if name in NOISY else None)
    refused(model.backward, RuntimeError,
            rf"^{type(model).__name__}\.backward\(\) differentiates the last loss, but forward ran after it; "
            rf"call loss\(x\) again", model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_backward_after_the_layers_ran_again_is_refused(name):
    model, x, noise = _model(name)
    _run(model, "encode", x[:1], noise)
    refused(model.backward, RuntimeError,
            rf"^{type(model).__name__}\.backward: the layers ran again after the last loss", model)


GRAD_OUTPUT_FAULTS = [
    ("a list", lambda x: x.tolist(), TypeError, r"grad_output \(dL/dx̂\) must be a NumPy array, got list$"),
    ("a string", lambda x: "1", TypeError, r"grad_output \(dL/dx̂\) must be a NumPy array, got str$"),
    ("flattened", lambda x: np.ones((2, 784)), ValueError, r"grad_output \(dL/dx̂\) must have shape \(2, 1, 28, 28\), got \(2, 784\)$"),
    ("float32", lambda x: x.astype(np.float32), TypeError,
     r"grad_output \(dL/dx̂\) has dtype float32 but the model's parameters are float64"),
]


# the models whose forward(x) returns x̂ and whose backward starts from dL/dx̂
RECONSTRUCTING = model_names(family="plain") + model_names(family="denoising") + model_names(family="conv")


@pytest.mark.parametrize("name", RECONSTRUCTING)
@pytest.mark.parametrize("fault, make, error, message", GRAD_OUTPUT_FAULTS, ids=[f[0] for f in GRAD_OUTPUT_FAULTS])
def test_model_backward_refuses_a_bad_grad_output(name, fault, make, error, message):
    model, x, _ = _model(name)
    model.forward(x)
    refused(lambda: model.backward(make(x)), error, rf"^{_owner(name)}: " + message, model)


@pytest.mark.parametrize("grad_output, got", [(np.ones((2, 784)), r"an array of shape \(2, 784\)"), ("1", "'1'"),
                                              ([1.0], r"\[1\.0\]")])
@pytest.mark.parametrize("name", ["sparse-ae", "contractive-ae", "tied-ae"])
def test_penalised_model_backward_takes_a_number(name, grad_output, got):
    model, _, _ = _model(name)
    refused(lambda: model.backward(grad_output), ValueError,
            rf"^{type(model).__name__}\.backward: grad_output is dL/d\(loss\), a real number \(default 1\), got {got}$",
            model)


@pytest.mark.parametrize("name", ["vae", "seed-vae", "beta-vae", "conv-vae"])
def test_vae_backward_takes_no_gradient(name):
    model, x, _ = _model(name)
    refused(lambda: model.backward(np.ones_like(x)), ValueError,
            rf"^{type(model).__name__}\.backward takes no gradient: it differentiates the last loss; got grad_output ndarray$",
            model)


@pytest.mark.parametrize("name, message", [
    (["vae"], r"^unknown model \['vae'\]; choose one of \['beta-vae'"),
    ("VAE", r"^unknown model 'VAE'; choose one of \['beta-vae'"),
])
def test_build_refuses_unknown_names(name, message):
    with pytest.raises(ValueError, match=message):
        build(name)


@pytest.mark.parametrize("rng", ["seed", -1, True, 1.5])
def test_build_refuses_a_bad_generator(rng):
    with pytest.raises(TypeError, match=rf"^build\('vae'\): VariationalAutoencoder: rng must be a numpy\.random\.Generator, "
                                        rf"a non-negative int seed or None, got {rng!r}"):
        build("vae", rng=rng)


# ---------------------------------------------------------------------------- gradcheck


def _checked_layer():
    layer = nn.Linear(3, 2, rng=0, dtype=F64)
    layer.weight.grad[...] = 7.0  # the caller's gradient, which gradcheck must give back
    return layer, _rng().standard_normal((4, 3))


GRADCHECK_FAULTS = [
    ("eps 0", dict(eps=0), ValueError, r"^gradcheck: eps must be a finite number > 0, got 0$"),
    ("eps text", dict(eps="1e-6"), ValueError, r"^gradcheck: eps must be a finite number > 0, got '1e-6'$"),
    ("rtol negative", dict(rtol=-1e-5), ValueError, r"^gradcheck: rtol must be a finite number >= 0, got -1e-05$"),
    ("atol inf", dict(atol=np.inf), ValueError, r"^gradcheck: atol must be a finite number >= 0, got inf$"),
    ("max_elements 0", dict(max_elements=0), ValueError, r"^gradcheck: max_elements must be a positive int or None, got 0$"),
    ("max_elements 2.5", dict(max_elements=2.5), ValueError,
     r"^gradcheck: max_elements must be a positive int or None, got 2\.5$"),
    ("rng text", dict(rng="seed"), TypeError,
     r"^gradcheck: rng must be a numpy\.random\.Generator, a non-negative int seed or None, got 'seed'$"),
    ("wrt out of range", dict(wrt=[3]), ValueError, r"^gradcheck: wrt must name array inputs \(positions \[0\]\), got 3$"),
    ("cotangent of the input's shape", dict(cotangent=np.ones((4, 3))), ValueError,
     r"^gradcheck: cotangent must be an array of the output's shape \(4, 2\), got shape \(4, 3\)$"),
    ("cotangent a list", dict(cotangent=[1.0]), ValueError,
     r"^gradcheck: cotangent must be an array of the output's shape \(4, 2\), got list$"),
]


# gradcheck runs its target, so the target's forward caches are not part of its promise; its
# parameters' values and .grad are.


@pytest.mark.parametrize("fault, kwargs, error, message", GRADCHECK_FAULTS, ids=[f[0] for f in GRADCHECK_FAULTS])
def test_gradcheck_refuses_bad_settings_and_gives_the_gradient_back(fault, kwargs, error, message):
    layer, x = _checked_layer()
    refused(lambda: gradcheck(layer, x, **kwargs), error, message, *layer.parameters())


@pytest.mark.parametrize("call, error, message", [
    (lambda layer, x: gradcheck(layer), ValueError, r"^gradcheck: no inputs given"),
    (lambda layer, x: gradcheck("layer", x), TypeError,
     r"^gradcheck: target must be a scratch Module/loss or a \(forward, backward\) pair, got str$"),
    (lambda layer, x: gradcheck(layer, x.astype(np.float32)), TypeError,
     r"^gradcheck: input 0 is float32; central differences need float64"),
    # the layer refuses x inside the analytic pass, after gradcheck zeroed .grad: it must come back
    (lambda layer, x: gradcheck(layer, np.ones((4, 5))), ValueError,
     r"^Linear\(3, 2\): input's last dimension must be 3, got shape \(4, 5\)$"),
    (lambda layer, x: gradcheck_model(layer, x), TypeError,
     r"^gradcheck_model: model must be a scratch model \(with loss, backward and named_parameters\), got Linear"),
])
def test_gradcheck_entry_points_refuse_and_leave_the_gradient(call, error, message):
    layer, x = _checked_layer()
    refused(lambda: call(layer, x), error, message, *layer.parameters())


def test_gradcheck_model_gives_the_gradient_back_when_the_model_refuses():
    model = build("mlp-ae", dtype=F64, rng=0, input_dim=4, hidden_dims=[3], latent_dim=2)
    for parameter in model.parameters():
        parameter.grad[...] = 5.0
    refused(lambda: gradcheck_model(model, np.ones((2, 5))), ValueError,
            r"^MLPAutoencoder\(mlp-ae\): x must be \(N, 4\) .*got shape \(2, 5\)$", *model.parameters())


def test_gradcheck_model_refuses_a_noisy_model_without_noise():
    """Fresh noise on every loss evaluation made central differences fail with a misleading report."""
    model = build("vae", dtype=F64, rng=0, input_dim=4, hidden_dim=3, latent_dim=2)
    refused(lambda: gradcheck_model(model, np.full((2, 4), 0.5)), ValueError,
            r"^gradcheck_model: VariationalAutoencoder draws noise on every loss.*pass noise=model\.draw_noise\(x\.shape\)$",
            model)
