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
        group = _make(settings, [Parameter(np.zeros(1, dtype))], "scratch").param_groups[0]  # with its defaults
        if settings["name"] == "SGD":
            args = (*optim.sgd_scalars(group, dtype), step == 1)
            K.sgd_step(fast[0], grad, fast[1], *args)
            K.sgd_step_reference(slow[0], grad, slow[1], *args)
        else:  # Adam's L2 or (AdamW, decoupled_weight_decay=True) decoupled decay, from the group
            args = optim.adam_scalars(group, step, dtype)
            decoupled = settings["name"] == "AdamW" or settings.get("decoupled_weight_decay", False)
            assert args[9] == (K.NO_DECAY if not group["weight_decay"] else K.DECOUPLED_DECAY if decoupled
                               else K.L2_DECAY)
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


# -- named parameters, torch's switches, decoupled weight decay (issue 15) ---------------------


def _twins(seed=0, dtype=np.float64):
    """A scratch Sequential and its torch twin holding the same weights."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(3, 4, rng=rng, dtype=dtype), nn.Tanh(), nn.Linear(4, 2, rng=rng, dtype=dtype))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    twin.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return model, twin


def _step_models(model, twin, opt, topt, rng, steps=5):
    for _ in range(steps):
        for (name, p), t in zip(model.named_parameters(), twin.parameters()):
            grad = rng.standard_normal(p.shape).astype(p.dtype)
            p.grad[...] = grad
            t.grad = torch.tensor(grad)
        opt.step()
        topt.step()
    for (name, p), t in zip(model.named_parameters(), twin.parameters()):
        assert_close(p.data, t, "optim", p.dtype, f"{type(opt).__name__} {name}")


def _groups_without_params(state_dict):
    return [{k: v for k, v in group.items()} for group in state_dict["param_groups"]]


NAMED_SETTINGS = [("SGD", dict(lr=0.1, momentum=0.9, foreach=True)), ("Adam", dict(lr=1e-2, amsgrad=True)),
                  ("AdamW", dict(lr=1e-2, maximize=True, foreach=False)),
                  ("Adam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, fused=False))]


@pytest.mark.parametrize("name, settings", NAMED_SETTINGS, ids=[f"{n}-{s}" for n, s in NAMED_SETTINGS])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_named_parameters_track_torch_and_record_their_names(name, settings, grouped, dtype):
    """``model.named_parameters()``, or groups of its (name, Parameter) pairs: the same steps as
    torch's, and the state_dict's groups equal torch's, 'param_names' included."""
    model, twin = _twins(0, dtype)

    def params(m):
        named = list(m.named_parameters())
        return [{"params": named[:2], "lr": 0.05}, {"params": named[2:]}] if grouped else m.named_parameters()

    opt = getattr(optim, name)(params(model), **settings)
    topt = getattr(torch.optim, name)(params(twin), **settings)
    _step_models(model, twin, opt, topt, np.random.default_rng(1))
    assert _groups_without_params(opt.state_dict()) == _groups_without_params(topt.state_dict())
    assert opt.state_dict()["param_groups"][-1]["param_names"][-2:] == ["2.weight", "2.bias"]
    saved = opt.state_dict()
    fresh = getattr(optim, name)(params(model), **settings)
    fresh.load_state_dict(saved)  # the names do not steer the loading (torch's rule), the positions do
    assert _groups_without_params(fresh.state_dict()) == _groups_without_params(saved)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("extra", [{}, dict(foreach=True), dict(foreach=False, fused=False), dict(maximize=True)])
def test_param_groups_hold_what_torchs_hold(name, extra):
    model, twin = _twins()
    opt, topt = getattr(optim, name)(model.parameters(), **extra), getattr(torch.optim, name)(twin.parameters(), **extra)
    assert opt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]
    assert opt.defaults == topt.defaults


def test_loading_names_follows_torch():
    """A saved state's names replace the optimizer's; a state without names leaves them; an
    optimizer without names takes the saved ones. As torch.optim does, step for step."""
    def both(named):
        model, twin = _twins()
        return (optim.Adam(model.named_parameters() if named else model.parameters()),
                torch.optim.Adam(twin.named_parameters() if named else twin.parameters()))

    for target_named, source_named in [(True, False), (False, True), (True, True)]:
        (opt, topt), (source, tsource) = both(target_named), both(source_named)
        saved, tsaved = source.state_dict(), tsource.state_dict()
        if source_named:  # names the optimizer did not have: they are recorded, unchecked
            saved["param_groups"][0]["param_names"] = tsaved["param_groups"][0]["param_names"] = list("abcd")
        opt.load_state_dict(saved)
        topt.load_state_dict(tsaved)
        assert opt.param_groups[0].get("param_names") == topt.param_groups[0].get("param_names")
        assert _groups_without_params(opt.state_dict()) == _groups_without_params(topt.state_dict())


@pytest.mark.parametrize("make, error", [
    (lambda ps: [("a", ps[0]), ps[1]], ValueError),
    (lambda ps: [{"params": [("a", ps[0])]}, {"params": [ps[1]]}], ValueError),
    (lambda ps: [{"params": [ps[0]]}, {"params": [("b", ps[1])]}], ValueError),
    (lambda ps: [{"params": {ps[0]}}], TypeError),
])
def test_named_parameter_mistakes_are_refused_as_torch_refuses_them(make, error):
    model, twin = _twins()
    with pytest.raises(error):
        optim.SGD(make(model.parameters()))
    with pytest.raises(error):
        torch.optim.SGD(make(list(twin.parameters())))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("switches, error, message", [
    (dict(fused=True, foreach=True), RuntimeError, r"`fused` and `foreach` cannot be `True` together"),
    (dict(fused=True, differentiable=True), RuntimeError, r"`fused` does not support `differentiable`"),
])
def test_switch_combinations_torch_refuses_are_refused(name, switches, error, message):
    model, twin = _twins()
    with pytest.raises(error, match=rf"^{name}: {message}"):
        getattr(optim, name)(model.parameters(), **switches)
    with pytest.raises(error, match=message):
        getattr(torch.optim, name)(twin.parameters(), **switches)


REFUSED_SWITCHES = [  # (optimizers, arguments, error, message after "<name>: ")
    ("SGD Adam AdamW", dict(fused=True), NotImplementedError, r"fused=True is not implemented: torch's fused CPU kernel"),
    ("SGD Adam AdamW", dict(differentiable=True), NotImplementedError, r"differentiable=True is not implemented"),
    ("SGD Adam AdamW", dict(lr=torch.tensor(0.01)), TypeError, r"lr is a torch Tensor"),
    ("Adam AdamW", dict(capturable=True), ValueError, r"capturable=True is for CUDA-graph capture"),
    ("Adam AdamW", dict(betas=(torch.tensor(0.9), torch.tensor(0.99))), TypeError, r"betas is a torch Tensor"),
]


@pytest.mark.parametrize("name, switches, error, message", [
    (name, *case) for names, *case in REFUSED_SWITCHES for name in names.split()])
def test_switches_that_would_change_the_numbers_are_refused(name, switches, error, message):
    """What scratch cannot give torch's numbers for (or, for capturable, what torch refuses on
    the CPU at step) is refused at construction, saying why."""
    with pytest.raises(error, match=rf"^{name}: {message}"):
        getattr(optim, name)(_twins()[0].parameters(), **switches)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_true_changes_torchs_numbers_which_is_why_it_is_refused(dtype):
    """The reason given above, measured: torch's fused CPU Adam and single-tensor Adam differ."""
    differs = False
    for seed in range(5):
        model, twin = _twins(seed, dtype)
        _, other = _twins(seed, dtype)
        topt = torch.optim.Adam(twin.parameters(), lr=1e-2, betas=(0.3, 0.5))
        fused = torch.optim.Adam(other.parameters(), lr=1e-2, betas=(0.3, 0.5), fused=True)
        rng = np.random.default_rng(seed)
        for _ in range(5):
            for a, b in zip(twin.parameters(), other.parameters()):
                a.grad = torch.tensor(rng.standard_normal(a.shape).astype(dtype))
                b.grad = a.grad.clone()
            topt.step()
            fused.step()
        differs |= any(not torch.equal(a, b) for a, b in zip(twin.parameters(), other.parameters()))
    assert differs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_adam_with_decoupled_weight_decay_is_adamw_bit_for_bit_and_torchs(dtype, amsgrad, maximize):
    settings = dict(lr=1e-2, weight_decay=0.1, amsgrad=amsgrad, maximize=maximize)
    model, twin = _twins(3, dtype)
    adamw_model, _ = _twins(3, dtype)
    opt = optim.Adam(model.parameters(), decoupled_weight_decay=True, **settings)
    adamw = optim.AdamW(adamw_model.parameters(), **settings)
    topt = torch.optim.Adam(twin.parameters(), decoupled_weight_decay=True, **settings)
    rng = np.random.default_rng(4)
    for _ in range(6):
        for p, q, t in zip(model.parameters(), adamw_model.parameters(), twin.parameters()):
            grad = rng.standard_normal(p.shape).astype(dtype)
            p.grad[...] = q.grad[...] = grad
            t.grad = torch.tensor(grad)
        opt.step()
        adamw.step()
        topt.step()
    for p, q, t in zip(model.parameters(), adamw_model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert_close(p.data, t, "optim", dtype, "Adam(decoupled_weight_decay=True)")


def test_adamw_keeps_a_groups_decoupled_flag_and_restores_it_on_load_as_torch():
    """torch's AdamW honours a group's decoupled_weight_decay=False (then it is Adam), and its
    load_state_dict sets the flag back to True."""
    model, twin = _twins()
    groups = lambda m: [{"params": list(m.parameters())[:2], "decoupled_weight_decay": False},  # noqa: E731
                        {"params": list(m.parameters())[2:]}]
    opt, topt = optim.AdamW(groups(model), lr=1e-2, weight_decay=0.5), torch.optim.AdamW(groups(twin), lr=1e-2,
                                                                                           weight_decay=0.5)
    _step_models(model, twin, opt, topt, np.random.default_rng(5))
    opt.load_state_dict(opt.state_dict())
    topt.load_state_dict(topt.state_dict())
    assert [g["decoupled_weight_decay"] for g in opt.param_groups] == [True, True]
    assert [g["decoupled_weight_decay"] for g in topt.param_groups] == [True, True]
    _step_models(model, twin, opt, topt, np.random.default_rng(6))


def test_step_takes_a_closure_and_add_param_group_as_torch():
    model, twin = _twins()
    first, tfirst = list(model.parameters())[:2], list(twin.parameters())[:2]
    opt, topt = optim.SGD(first, lr=0.1, momentum=0.9), torch.optim.SGD(tfirst, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": list(model.parameters())[2:], "lr": 0.01})
    topt.add_param_group({"params": list(twin.parameters())[2:], "lr": 0.01})
    x = np.random.default_rng(7).standard_normal((5, 3))

    def closure():
        model.zero_grad()
        y = model(x)
        model.backward(2 * y)  # the gradient of Σ y²
        return float(np.sum(y * y))

    def tclosure():
        topt.zero_grad()
        loss = (twin(torch.tensor(x)) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        assert_close(np.array(opt.step(closure)), topt.step(tclosure).detach(), "torch", np.float64, "closure's loss")
    for p, t in zip(model.parameters(), twin.parameters()):
        assert_close(p.data, t, "optim", np.float64, "SGD with a closure and an added group")
    assert opt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]
    with pytest.raises(ValueError, match=r"^SGD: a parameter appears in more than one group$"):
        opt.add_param_group({"params": first[:1]})
    assert len(opt.param_groups) == 2
