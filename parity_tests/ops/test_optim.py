"""Optimizers: SGD, Adam, AdamW (docs/optim.md).

The oracles of docs/README.md that apply, for ``scratch/optim.py`` and ``scratch/kernels/optim.py``:

1. torch parity (``torch.optim.SGD`` / ``Adam`` / ``AdamW``): 30 steps from identical weights and
   gradients track torch.optim, every dispatch branch and parameter groups; state_dict
   round-trips, and loads torch's;
2. central differences do not apply: an update rule has no backward pass to check;
3. the update kernels against their NumPy references.

Plus Adam over one flat parameter buffer held bit for bit to Adam per parameter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.tolerances import assert_close
from scratch import nn, optim
from scratch.kernels import optim as K
from scratch.models import MODELS, build
from scratch.nn import Parameter
from scratch.nn.module import flat_layout

STEPS = 30
SHAPES = [(3, 4), (4,), (2, 1, 3)]


def _make(settings, params, backend):
    options = {k: v for k, v in settings.items() if k != "name"}
    module = optim if backend == "scratch" else torch.optim
    return getattr(module, settings["name"])(params, **options)


def _pair(settings, dtype, rng):
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    params = [Parameter(a.copy()) for a in arrays]
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return params, tensors, _make(settings, params, "scratch"), _make(settings, tensors, "torch")


def _step_both(params, tensors, opt, topt, rng, dtype, scale=1.0):
    for p, t in zip(params, tensors):
        grad = (scale * rng.standard_normal(p.shape)).astype(dtype)
        p.grad[...] = grad
        t.grad = torch.tensor(grad)
    opt.step()
    topt.step()


# Every branch of the optimizers' dispatch, named rather than drawn: AMSGrad with and without each
# kind of weight decay, SGD's momentum at 0, between, and exactly 1 (where its first step is 2g if
# "momentum != 0" is mistyped), dampening and Nesterov. Hypothesis may not draw all of them.
ENUMERATED_SETTINGS = [
    *({"name": name, "lr": 1e-2, "amsgrad": amsgrad, "weight_decay": decay}
      for name in ("Adam", "AdamW") for amsgrad in (False, True) for decay in (0.0, 0.1)),
    *({"name": "SGD", "lr": 1e-2, "momentum": momentum, "dampening": dampening, "weight_decay": decay}
      for momentum in (0.0, 0.5, 1.0) for dampening in (0.0, 0.3) for decay in (0.0, 0.1)),
    {"name": "SGD", "lr": 1e-2, "momentum": 0.9, "nesterov": True},
    {"name": "SGD", "lr": 1e-2, "momentum": 1.0, "nesterov": True, "weight_decay": 0.1},
]


@pytest.mark.parametrize("settings", ENUMERATED_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_every_dispatch_branch_tracks_torch(settings):
    rng = np.random.default_rng(7)
    params, tensors, opt, topt = _pair(settings, np.float64, rng)
    for step in range(5):
        _step_both(params, tensors, opt, topt, rng, np.float64)
        for index, (p, t) in enumerate(zip(params, tensors)):
            assert_close(p.data, t, "optim", np.float64, f"{settings} param {index} after step {step + 1}")


@given(settings=S.optimizer_settings, dtype=S.dtypes, seed=S.seeds)
def test_optimizer_tracks_torch(settings, dtype, seed):
    rng = np.random.default_rng(seed)
    params, tensors, opt, topt = _pair(settings, dtype, rng)
    for step in range(STEPS):
        _step_both(params, tensors, opt, topt, rng, dtype, scale=10.0 ** rng.uniform(-3, 1))
        for index, (p, t) in enumerate(zip(params, tensors)):
            assert_close(p.data, t, "optim", dtype, f"{settings['name']} param {index} after step {step + 1}")
    for index, (p, t) in enumerate(zip(params, tensors)):
        for name, value in opt.state[id(p)].items():
            expected = topt.state[t][name]
            if name == "step":
                assert value == float(expected)
            else:
                assert_close(value, expected, "optim", dtype, f"{settings['name']} state {name}")


def test_parameter_groups_track_torch():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 2)), rng.standard_normal(5)]
    params = [Parameter(a.copy()) for a in arrays]
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    groups = lambda ps: [{"params": [ps[0]], "lr": 0.1}, {"params": [ps[1]], "weight_decay": 0.5}]  # noqa: E731
    opt = optim.Adam(groups(params), lr=1e-2)
    topt = torch.optim.Adam(groups(tensors), lr=1e-2)
    for _ in range(STEPS):
        _step_both(params, tensors, opt, topt, rng, np.float64)
    for p, t in zip(params, tensors):
        assert_close(p.data, t, "optim", np.float64, "grouped Adam")


@given(settings=S.optimizer_settings, dtype=S.dtypes, seed=S.seeds, n=st.integers(1, 200))
def test_optimizer_kernels_match_reference(settings, dtype, seed, n):
    """Each step kernel against its NumPy reference. Over a few steps so the state is exercised,
    but each step starts both from the kernel's state: a comparison measures one step's rounding,
    not five steps' worth (accumulation over many steps is what the torch tests above check)."""
    rng = np.random.default_rng(seed)
    fast = [rng.standard_normal(n).astype(dtype) for _ in range(4)]  # param, m, v, v̂ (or buffer)
    fast[2] = np.abs(fast[2])
    fast[3] = np.abs(fast[3])
    for step in range(1, 6):
        grad = rng.standard_normal(n).astype(dtype)
        slow = [a.copy() for a in fast]
        # the magnitude of the terms any of these update formulas combines, element-wise
        scale = 1 + np.abs(grad).astype(np.float64) + sum(np.abs(a).astype(np.float64) for a in slow)
        group = {k: v for k, v in settings.items() if k != "name"}
        if settings["name"] == "SGD":
            args = (*optim.sgd_scalars(group, dtype), step == 1)
            K.sgd_step(fast[0], grad, fast[1], *args)
            K.sgd_step_reference(slow[0], grad, slow[1], *args)
        else:
            args = optim.adam_scalars(group, step, dtype, decoupled=settings["name"] == "AdamW")
            K.adam_step(fast[0], grad, fast[1], fast[2], fast[3], *args)
            K.adam_step_reference(slow[0], grad, slow[1], slow[2], slow[3], *args)
        for name, a, b in zip(("param", "buffer 1", "buffer 2", "buffer 3"), fast, slow):
            assert_close(a, b, "kernel", dtype, f"{settings['name']} kernel {name}, step {step}", scale=scale)


@given(settings=S.optimizer_settings, seed=S.seeds, split=st.integers(1, 10))
def test_state_dict_round_trip_resumes_exactly(settings, seed, split):
    """Save after ``split`` steps, load into a fresh optimizer, continue: bit-identical to no break."""
    rng = np.random.default_rng(seed)
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(12)]
    start = [rng.standard_normal(s) for s in SHAPES]

    def run(break_at):
        params = [Parameter(a.copy()) for a in start]
        opt = _make(settings, params, "scratch")
        for step, step_grads in enumerate(grads):
            if step == break_at:
                saved = opt.state_dict()
                opt = _make(settings, params, "scratch")
                opt.load_state_dict(saved)
            for p, g in zip(params, step_grads):
                p.grad[...] = g
            opt.step()
        return [p.data for p in params]

    for a, b in zip(run(None), run(split)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_loads_torch_optimizer_state(name):
    """torch.optim's state_dict (tensors, torch's extra flags) loads and the runs stay together."""
    settings = {"name": name, "lr": 1e-2}
    settings.update({"momentum": 0.9} if name == "SGD" else {"amsgrad": True, "weight_decay": 1e-2})
    rng = np.random.default_rng(1)
    params, tensors, opt, topt = _pair(settings, np.float64, rng)
    for _ in range(5):
        _step_both(params, tensors, opt, topt, rng, np.float64)
    fresh = _make(settings, params, "scratch")
    fresh.load_state_dict(topt.state_dict())
    for _ in range(5):
        _step_both(params, tensors, fresh, topt, rng, np.float64)
    for p, t in zip(params, tensors):
        assert_close(p.data, t, "optim", np.float64, f"{name} after loading torch's state")


def test_bad_state_dict_is_refused_and_changes_nothing():
    params = [Parameter(np.zeros((2, 2))), Parameter(np.zeros(3))]
    opt = optim.Adam(params)
    for p in params:
        p.grad[...] = 1.0
    opt.step()
    before = opt.state_dict()
    bad = opt.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"state 0/'exp_avg' has shape \(3, 3\)"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="exactly 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
    after = opt.state_dict()
    for key in before["state"]:
        for name, value in before["state"][key].items():
            np.testing.assert_array_equal(value, after["state"][key][name])


@pytest.mark.parametrize("make, message", [
    (lambda ps: optim.SGD(ps, lr=-1.0), "invalid learning rate"),
    (lambda ps: optim.SGD(ps, nesterov=True), "Nesterov"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.9)), "betas"),
    (lambda ps: optim.Adam(ps, eps=-1.0), "eps"),
    (lambda ps: optim.AdamW(ps, weight_decay=-0.1), "weight_decay"),
    (lambda ps: optim.Adam([]), "empty parameter list"),
    (lambda ps: optim.Adam(ps[0]), "single Parameter"),
    (lambda ps: optim.Adam([np.zeros(3)]), "expected scratch Parameters"),
    (lambda ps: optim.Adam(ps, foo=1), "unexpected keyword"),
])
def test_invalid_hyperparameters_are_refused(make, message):
    params = [Parameter(np.zeros(3))]
    with pytest.raises((ValueError, TypeError), match=message):
        make(params)


def test_zero_grad_zeroes_in_place():
    p = Parameter(np.ones(4))
    grad_buffer = p.grad
    p.grad[...] = 3.0
    optim.SGD([p]).zero_grad()
    assert p.grad is grad_buffer and not p.grad.any()


# -- Adam over a flat parameter buffer ---------------------------------------------------------
# The fast path held *bit for bit* to the per-parameter path it replaces (same ops, same order).


def test_flatten_parameters_keeps_values_and_makes_views():
    model = build("mlp-ae", dtype=np.float64, rng=0)  # build() flattens
    plain = MODELS["mlp-ae"](rng=0, dtype=np.float64)
    for (key, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=key)
    data, grad = flat_layout(model.parameters())
    assert data.size == grad.size == model.num_parameters()
    assert flat_layout(plain.parameters()) is None
    model.parameters()[0].data[0, 0] = 123.0
    assert data[0] == 123.0, "a parameter is a view of the flat buffer"
    with pytest.raises(ValueError, match="several dtypes"):
        nn.Sequential(nn.Linear(2, 2, dtype=np.float32), nn.Linear(2, 2, dtype=np.float64)).flatten_parameters()


def _train(model, optimizer, steps, seed, break_at=None, make_optimizer=None):
    rng = np.random.default_rng(seed)
    for step in range(steps):
        if step == break_at:
            saved = optimizer.state_dict()
            optimizer = make_optimizer(model)
            optimizer.load_state_dict(saved)
        for parameter in model.parameters():
            parameter.grad[...] = rng.standard_normal(parameter.shape).astype(parameter.dtype)
        optimizer.step()
    return optimizer


@given(dtype=S.dtypes, seed=S.seeds, name=st.sampled_from(["Adam", "AdamW"]), amsgrad=st.booleans(),
       weight_decay=st.sampled_from([0.0, 1e-2]))
def test_flat_adam_equals_adam_per_parameter(dtype, seed, name, amsgrad, weight_decay):
    """One kernel call over the flat buffer, bit for bit the per-parameter calls; same state_dict."""
    flat = build("mlp-ae", dtype=dtype, rng=0, hidden_dims=(6,), latent_dim=3, input_dim=5)
    plain = MODELS["mlp-ae"](rng=0, dtype=dtype, hidden_dims=(6,), latent_dim=3, input_dim=5)
    settings = dict(lr=1e-2, amsgrad=amsgrad, weight_decay=weight_decay)
    flat_optimizer = getattr(optim, name)(flat.parameters(), **settings)
    plain_optimizer = getattr(optim, name)(plain.parameters(), **settings)
    _train(flat, flat_optimizer, 5, seed)
    _train(plain, plain_optimizer, 5, seed)
    assert flat_optimizer._flat_cache[0][1] is not None, "the flat path ran"
    assert plain_optimizer._flat_cache[0][1] is None
    for (key, a), (_, b) in zip(flat.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=key)
    flat_state, plain_state = flat_optimizer.state_dict(), plain_optimizer.state_dict()
    assert flat_state["param_groups"] == plain_state["param_groups"]
    for index, entries in plain_state["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(flat_state["state"][index][key], value, err_msg=f"{index} {key}")


@given(seed=S.seeds, break_at=st.integers(1, 5))
def test_flat_adam_resumes_exactly_from_a_state_dict(seed, break_at):
    def make(model):
        return optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)

    straight, resumed = (build("mlp-ae", dtype=np.float64, rng=0, hidden_dims=(6,), latent_dim=3, input_dim=5)
                         for _ in range(2))
    _train(straight, make(straight), 6, seed)
    optimizer = _train(resumed, make(resumed), 6, seed, break_at=break_at, make_optimizer=make)
    assert optimizer._flat_cache[0][1] is not None, "the loaded state moved into flat buffers"
    for (key, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=key)


def test_flat_adam_falls_back_when_a_parameter_is_rebound():
    """Rebinding ``.data`` breaks the flat layout: the optimizer notices and updates the new array."""
    model = build("mlp-ae", dtype=np.float64, rng=0, hidden_dims=(6,), latent_dim=3, input_dim=5)
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    _train(model, optimizer, 2, 0)
    parameter = model.parameters()[0]
    parameter.data = parameter.data.copy()  # no longer a view of the flat buffer
    before = parameter.data.copy()
    _train(model, optimizer, 1, 1)
    assert optimizer._flat_cache[0][1] is None
    assert not np.array_equal(parameter.data, before), "the rebound parameter was updated"
    assert optimizer.state[id(parameter)]["step"] == 3.0
