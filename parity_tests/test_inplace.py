"""In-place edits between forward and backward (scratch.nn.inplace): refused at backward, as torch
refuses them, wherever the edit would change the gradient; and never a wrong number.

Each layer keeps some arrays for its backward. An edit of one of those that the caller can reach
(its input, its output, a view of either) must make ``backward`` raise ``InplaceModificationError``
(a RuntimeError) naming the layer and the array, before anything changes (``Snapshot``). An edit
of an array the layer does not keep (its output for Linear, a convolution's input copied to the
batch-last layout, MaxPool2d's input) cannot change its gradient: backward runs and gives the
unedited numbers. Containers fingerprint only what crosses their boundary (counted below).
The fingerprint kernel is held to its NumPy reference, and to catching every single-byte change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.test_reliability_inputs import refused
from scratch import nn, optim
from scratch.kernels import fingerprint as K
from scratch.models import MODELS, REGISTRY, build, model_names
from scratch.nn import inplace
from scratch.nn.inplace import InplaceModificationError

F64 = np.float64
EDITED = "was modified in place after forward"


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------- the two reproducers


def test_reproducer_linear_input_scaled_after_forward():
    """Issue item 4: `x *= 10` after `y = lin(x)`, then `lin.backward(dy)`: the weight gradient
    would silently be that of 10·x. torch raises; so does scratch, and .grad stays zero."""
    lin = nn.Linear(3, 2, rng=0, dtype=F64)
    x = np.array([[-1.0, 2.0, 3.0]])
    y = lin(x)
    dy = np.ones_like(y)
    x *= 10
    with pytest.raises(InplaceModificationError, match=r"^Linear\.backward: its input was modified in place after "
                                                        r"forward \(the gradient would be wrong; torch raises here too\)"):
        lin.backward(dy)
    assert not lin.weight.grad.any() and not lin.bias.grad.any()
    assert issubclass(InplaceModificationError, RuntimeError)

    tlin = torch.nn.Linear(3, 2).double()
    tx = torch.tensor([[-1.0, 2.0, 3.0]], dtype=torch.float64)
    ty = tlin(tx)
    tx *= 10
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward(torch.ones_like(ty))


def test_reproducer_relu_output_zeroed_after_forward():
    """Issue item 4: `y = relu(x); y[:] = 0; relu.backward(dy)` gave dx [[0, 0, 0]] instead of
    [[0, 1, 1]]. Now it raises, as torch does; without the edit it gives [[0, 1, 1]]."""
    x = np.array([[-1.0, 2.0, 3.0]])
    relu = nn.ReLU()
    y = relu(x)
    y[:] = 0
    with pytest.raises(InplaceModificationError, match=r"^ReLU\.backward: its output " + EDITED):
        relu.backward(np.ones_like(y))
    y = relu(x)
    np.testing.assert_array_equal(relu.backward(np.ones_like(y)), [[0.0, 1.0, 1.0]])

    tx = torch.tensor([[-1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    ty = torch.relu(tx)
    with torch.no_grad():
        ty[:] = 0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward(torch.ones_like(ty))


# ---------------------------------------------------------------------------- every layer


# name: (factory, float64 input shape, does backward read the input?, does it read the output?)
# "reads" means: keeps that array (or a view of it) for backward.
LAYERS = {
    "Linear": (lambda: nn.Linear(3, 2, rng=0, dtype=F64), (4, 3), True, False),
    "Linear 3-d input": (lambda: nn.Linear(3, 2, rng=0, dtype=F64), (2, 4, 3), True, False),
    "TiedLinear": (lambda: nn.TiedLinear(nn.Linear(3, 2, rng=0, dtype=F64)), (4, 2), True, False),
    "ReLU": (nn.ReLU, (4, 3), False, True),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), (4, 3), True, False),
    "Sigmoid": (nn.Sigmoid, (4, 3), False, True),
    "Tanh": (nn.Tanh, (4, 3), False, True),
    # a convolution keeps its input batch-last: a copy, except for a batch of one (a view then)
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=F64), (2, 2, 5, 5), False, False),
    "Conv2d batch 1": (lambda: nn.Conv2d(2, 3, 3, rng=0, dtype=F64), (1, 2, 5, 5), True, False),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, rng=0, dtype=F64), (2, 2, 3, 3), False, False),
    "ConvTranspose2d batch 1": (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, rng=0, dtype=F64), (1, 2, 3, 3),
                                True, False),
    # MaxPool2d keeps the argmax positions only, AvgPool2d its geometry; Flatten and Unflatten the input's shape
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 2, 4, 4), False, False),
    "MaxPool2d unbatched, ceil_mode": (lambda: nn.MaxPool2d(3, 2, ceil_mode=True), (2, 4, 4), False, False),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True), (2, 2, 4, 4), False, False),
    "Flatten": (nn.Flatten, (2, 3, 4), False, False),
    "Unflatten": (lambda: nn.Unflatten(1, (2, 3)), (4, 6), False, False),
}


def _forward(name, seed=0):
    factory, shape, _, _ = LAYERS[name]
    layer = factory()
    rng = _rng(seed)
    x = rng.standard_normal(shape)
    y = layer(x)
    return layer, x, y, rng.standard_normal(y.shape)


def _gradients(layer, dy):
    dx = layer.backward(dy)
    return [dx] + [p.grad.copy() for p in layer.parameters()]


@pytest.mark.parametrize("edited", ["input", "output"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_layer_refuses_an_edited_array_it_reads_and_ignores_one_it_does_not(name, edited):
    _, _, reads_input, reads_output = LAYERS[name]
    reference, *_ = _forward(name)
    _, _, _, dy = _forward(name)
    expected = _gradients(reference, dy)

    layer, x, y, dy = _forward(name)
    array = x if edited == "input" else y
    array *= 3.0
    array += 0.25
    owner = type(layer).__name__
    if reads_input if edited == "input" else reads_output:
        refused(lambda: layer.backward(dy), InplaceModificationError,
                rf"^{owner}\.backward: its {edited} {EDITED} \(the gradient would be wrong; torch raises here too\); "
                r"pass a copy, or run forward again$", layer)
    else:  # the layer keeps no view of it: the gradient is the unedited one, bit for bit
        for got, want in zip(_gradients(layer, dy), expected):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", [name for name, case in LAYERS.items() if case[2] or case[3]])
def test_a_refused_backward_can_be_retried_after_forward_again(name):
    """The refusal leaves the layer usable: a new forward on unedited data, then backward, gives
    the gradients of a fresh layer."""
    layer, x, y, dy = _forward(name)
    x += 1.0
    y -= 1.0
    with pytest.raises(InplaceModificationError):
        layer.backward(dy)
    fresh, x2, _, _ = _forward(name)
    layer(x2)
    for got, want in zip(_gradients(layer, dy), _gradients(fresh, dy)):
        np.testing.assert_array_equal(got, want)


def test_an_edit_restoring_the_same_bytes_is_not_an_error():
    """Detection compares contents, not write counts: an edit undone before backward changes
    nothing, so backward runs (torch, counting writes, would raise)."""
    lin, fresh = nn.Linear(3, 2, rng=0, dtype=F64), nn.Linear(3, 2, rng=0, dtype=F64)
    x = _rng().standard_normal((4, 3))
    dy = _rng(1).standard_normal((4, 2))
    fresh(x.copy())
    fresh.backward(dy)
    lin(x)
    saved = x.copy()
    x[:] = 0
    x[:] = saved
    lin.backward(dy)
    np.testing.assert_array_equal(lin.weight.grad, fresh.weight.grad)


@pytest.mark.parametrize("view", ["row", "column", "transposed"])
def test_an_edit_through_another_view_of_a_strided_input_is_caught(view):
    """The input is a strided view of a bigger array; editing the bigger array at an element the
    view covers is caught, whatever the strides."""
    base = _rng().standard_normal((6, 8))
    x = {"row": base[::2, :3], "column": base[:4, ::3], "transposed": base[:3, :4].T}[view]
    lin = nn.Linear(x.shape[1], 2, rng=0, dtype=F64)
    y = lin(x)
    index = np.unravel_index(x.size - 1, x.shape)
    x[index] += 1.0  # through the view: the one element in base it covers
    with pytest.raises(InplaceModificationError, match=r"^Linear\.backward: its input"):
        lin.backward(np.ones_like(y))


def test_float32_and_a_one_element_edit_anywhere_in_a_batch():
    """A float32 MNIST-sized batch: the smallest change (one ulp, one element) is caught at the
    first, a middle and the last element, in the words, the partial block and the tail."""
    x = _rng().random((3, 787)).astype(np.float32)  # 9,444 bytes: 1,180 words (18 blocks + 28) + 4 bytes
    lin = nn.Linear(787, 5, rng=0)
    for flat in (0, x.size // 2, x.size - 2, x.size - 1):
        y = lin(x)
        position = np.unravel_index(flat, x.shape)
        original = x[position]
        x[position] = np.nextafter(original, np.float32(2))
        with pytest.raises(InplaceModificationError):
            lin.backward(np.ones_like(y))
        x[position] = original
        lin.backward(np.ones_like(y))


# ---------------------------------------------------------------------------- fused paths


@pytest.mark.parametrize("activation", [nn.ReLU, lambda: nn.LeakyReLU(0.2)])
@pytest.mark.parametrize("edited", ["input", "output"])
def test_the_fused_linear_activation_pair_refuses_edits(activation, edited):
    """``forward_fused``/``backward_fused`` called directly, as a model does: the Linear reads
    its input, the activation (fused, for LeakyReLU too) its output."""
    lin, act = nn.Linear(3, 4, rng=0, dtype=F64), activation()
    x = _rng().standard_normal((5, 3))
    out = lin.forward_fused(x, act)
    (x if edited == "input" else out)[...] *= -2.0
    owner = "Linear" if edited == "input" else type(act).__name__
    refused(lambda: lin.backward_fused(np.ones_like(out), act), InplaceModificationError,
            rf"^{owner}\.backward: its {edited} {EDITED}", lin, act)


# ---------------------------------------------------------------------------- Sequential


def _mlp(seed=0):
    return nn.Sequential(nn.Linear(3, 5, rng=seed, dtype=F64), nn.ReLU(), nn.Linear(5, 4, rng=seed + 1, dtype=F64),
                         nn.Tanh(), nn.Linear(4, 2, rng=seed + 2, dtype=F64), nn.Sigmoid())


@pytest.mark.parametrize("edited, child", [("input", r"child 0 \(Linear\)'s input"),
                                           ("output", r"child 5 \(Sigmoid\)'s output")])
def test_sequential_refuses_an_edited_input_or_output_naming_the_child(edited, child):
    model = _mlp()
    x = _rng().standard_normal((4, 3))
    y = model(x)
    (x if edited == "input" else y)[0, 0] += 0.5
    refused(lambda: model.backward(np.ones_like(y)), InplaceModificationError,
            rf"^Sequential\.backward: {child} {EDITED}", model)


def test_sequential_fingerprints_only_its_boundary(monkeypatch):
    """The activations between the children cannot be reached by the caller: of the six
    children, only the first (its input) and the last (its output) hold a fingerprint, and a
    forward plus backward hashes exactly four arrays: two at forward, the same two at backward."""
    model = _mlp()
    x = _rng().standard_normal((4, 3))
    hashed = []
    real = inplace.fingerprint
    monkeypatch.setattr(inplace, "fingerprint", lambda array: hashed.append(array.shape) or real(array))
    y = model(x)
    assert [len(child._watches) for child in model] == [1, 0, 0, 0, 0, 1]
    model.backward(np.ones_like(y))
    assert hashed == [(4, 3), (4, 2), (4, 3), (4, 2)]


def test_views_through_flatten_and_unflatten_stay_watched():
    """Flatten/Unflatten return views, so the Linear after a Flatten keeps a view of the
    Sequential's input, and the ReLU before an Unflatten keeps the memory it returns: both are
    on the boundary and both are watched."""
    seq = nn.Sequential(nn.Flatten(), nn.Linear(6, 4, rng=0, dtype=F64), nn.ReLU(), nn.Unflatten(1, (2, 2)))
    x = _rng().standard_normal((3, 2, 3))
    y = seq(x)
    x[1, 1, 1] = 7.0
    refused(lambda: seq.backward(np.ones_like(y)), InplaceModificationError,
            rf"^Sequential\.backward: child 1 \(Linear\)'s input {EDITED}", seq)
    x = _rng().standard_normal((3, 2, 3))
    y = seq(x)
    y[2, 1, 0] = -1.0
    refused(lambda: seq.backward(np.ones_like(y)), InplaceModificationError,
            rf"^Sequential\.backward: child 2 \(ReLU\)'s output {EDITED}", seq)


class _Stash(nn.Module):
    """A user-defined module that keeps an array its Tanh reads where its caller can reach it,
    and returns a scaled copy."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3, rng=0, dtype=F64)
        self.act = nn.Tanh()

    def forward(self, x):
        self.hidden = self.act(self.lin(x))
        return 2.0 * self.hidden

    def backward(self, grad):
        return self.lin.backward(self.act.backward(2.0 * grad))


def test_a_user_module_inside_a_sequential_is_not_vouched_for():
    """A Sequential cannot know what a user-defined child exposes, so that child runs outside
    its pass: an edit of the array the child stashed is caught by the layer that keeps it."""
    seq = nn.Sequential(nn.Linear(3, 3, rng=1, dtype=F64), nn.ReLU(), _Stash(), nn.Sigmoid())
    x = _rng().standard_normal((4, 3))
    y = seq(x)
    seq[2].hidden[...] = 0.0
    refused(lambda: seq.backward(np.ones_like(y)), InplaceModificationError,
            rf"^Sequential\.backward: child 2\.act \(Tanh\)'s output {EDITED}", seq)


def test_a_failed_forward_keeps_the_last_pass_watched():
    """A Sequential forward that a later child refuses restores every cache, fingerprints
    included: an edit of the last good pass's input is still caught."""
    seq = nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), nn.ReLU(), nn.Unflatten(1, (2, 2)), nn.MaxPool2d(3))
    x = _rng().standard_normal((2, 3))
    with pytest.raises(ValueError):
        seq(x)  # a 2x2 image is too small for the 3x3 window
    short = nn.Sequential(*list(seq)[:2])
    y = short(x)
    with pytest.raises(ValueError):
        seq(_rng(1).standard_normal((2, 3)))
    x[0, 0] += 1.0
    with pytest.raises(InplaceModificationError, match=r"child 0 \(Linear\)'s input"):
        short.backward(np.ones_like(y))
    assert inplace._state.open_pass is None and not inplace._state.verified


# ---------------------------------------------------------------------------- layers that run in place (inplace=True)
# torch bumps the version of the array an in-place layer writes; a layer that saved it for its
# backward then refuses. scratch compares contents: a layer that kept an array the write changed
# refuses at its backward (inside a Sequential's pass too), and an in-place layer's own output
# is watched like any other.


@pytest.mark.parametrize("writer", ["ReLU", "LeakyReLU"])
@pytest.mark.parametrize("between", ["nothing", "Flatten", "Unflatten"])
def test_an_inplace_write_into_an_array_an_earlier_child_kept_is_refused_like_torch(between, writer):
    """Tanh keeps its output for backward; an in-place ReLU / LeakyReLU after it overwrites that
    output (through a Flatten's or Unflatten's view too): the backward refuses, naming the child
    that kept it, and changes nothing. torch refuses the same backward."""
    def layers(m):
        middle = {"nothing": [], "Flatten": [m.Flatten(0)], "Unflatten": [m.Unflatten(1, (2, 2))]}[between]
        write = m.ReLU(inplace=True) if writer == "ReLU" else m.LeakyReLU(0.2, inplace=True)
        return [m.Linear(3, 4, **({"rng": 0, "dtype": F64} if m is nn else {})), m.Tanh(), *middle, write]

    seq, twin = nn.Sequential(*layers(nn)), torch.nn.Sequential(*layers(torch.nn)).double()
    x = _rng().standard_normal((5, 3))
    y = seq(x)
    refused(lambda: seq.backward(np.ones_like(y)), InplaceModificationError,
            rf"^Sequential\.backward: child 1 \(Tanh\)'s output {EDITED}", seq)
    ty = twin(torch.tensor(x))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward(torch.ones_like(ty))


def test_an_inplace_write_after_a_layer_ran_on_its_own_is_caught_too():
    """Outside a container the kept output was fingerprinted at forward: the write shows."""
    tanh, relu = nn.Tanh(), nn.ReLU(inplace=True)
    x = _rng().standard_normal((4, 3))
    t = tanh(x)
    assert relu(t) is t
    refused(lambda: tanh.backward(np.ones_like(t)), InplaceModificationError, rf"^Tanh\.backward: its output {EDITED}",
            tanh)
    np.testing.assert_array_equal(relu.backward(np.ones_like(t)), (t > 0).astype(F64))


@pytest.mark.parametrize("make", [lambda: nn.ReLU(inplace=True), lambda: nn.LeakyReLU(0.2, inplace=True)])
def test_an_inplace_layers_own_output_is_watched(make):
    """Its input is its output; the fingerprint is taken after its own write, so only a later
    edit is refused."""
    layer = make()
    x = _rng().standard_normal((4, 3))
    y = layer(x)
    layer.backward(np.ones_like(y))  # its own write is not an edit
    y = layer(x)
    x[0, 0] += 0.5
    refused(lambda: layer.backward(np.ones_like(y)), InplaceModificationError,
            rf"^{type(layer).__name__}\.backward: its output {EDITED}", layer)


def test_an_inplace_write_that_changes_no_byte_is_not_an_error():
    """ReLU(inplace=True) after a ReLU rewrites the same bytes: the earlier ReLU's gradient is
    unchanged, so the backward runs (torch, counting writes, refuses)."""
    seq, plain = (nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), nn.Tanh(), nn.ReLU(), nn.ReLU(inplace=inplace))
                  for inplace in (True, False))
    x = _rng().standard_normal((5, 3))
    for model in (seq, plain):
        model.backward(np.ones_like(model(x)))
    for a, b in zip(seq.parameters(), plain.parameters()):
        np.testing.assert_array_equal(a.grad, b.grad)


def test_a_sequential_with_an_inplace_leaky_relu_of_negative_slope_refuses_before_any_child_runs():
    """torch refuses that LeakyReLU's backward; scratch refuses before the children after it
    have added their gradients."""
    seq = nn.Sequential(nn.Linear(3, 4, rng=0, dtype=F64), nn.LeakyReLU(-0.5, inplace=True),
                        nn.Linear(4, 2, rng=1, dtype=F64))
    y = seq(_rng().standard_normal((5, 3)))
    refused(lambda: seq.backward(np.ones_like(y)), RuntimeError,
            r"^Sequential\.backward: child 1 \(LeakyReLU\): LeakyReLU\(negative_slope=-0\.5, inplace=True\) ran its "
            r"forward in place with a negative slope", seq)
    seq.backward(np.ones((5, 4)), start=0)  # entering at the first Linear, the LeakyReLU is not crossed: allowed


# ---------------------------------------------------------------------------- losses


LOSSES = {
    "BCELoss": (nn.BCELoss, ("input", "target")),
    "MSELoss": (nn.MSELoss, ("input", "target")),
    "BCEWithLogitsLoss": (nn.BCEWithLogitsLoss, ("input", "target")),
    "GaussianKL": (nn.GaussianKL, ("mean", "logvar")),
}


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_refuse_an_edited_input_or_target(name, which, reduction):
    factory, names = LOSSES[name]
    loss_fn = factory(reduction=reduction)
    rng = _rng()
    pred, target = rng.uniform(0.1, 0.9, (4, 3)), rng.uniform(0.1, 0.9, (4, 3))
    loss = loss_fn(pred, target)
    upstream = np.ones_like(pred) if reduction == "none" else 1.0
    (pred, target)[which][1, 2] = 0.5 if (pred, target)[which][1, 2] != 0.5 else 0.25
    refused(lambda: loss_fn.backward(upstream), InplaceModificationError,
            rf"^{name}\.backward: its {names[which]} {EDITED}", loss_fn)
    del loss


def test_the_bce_through_sigmoid_refuses_an_edit_of_the_probabilities():
    """``BCELoss.backward_through_sigmoid`` reads the loss's cache only: an edit of the Sigmoid's
    output (the loss's input, the same memory) is caught there."""
    sigmoid, bce = nn.Sigmoid(), nn.BCELoss()
    rng = _rng()
    p = sigmoid(rng.standard_normal((4, 3)))
    bce(p, rng.random((4, 3)))
    p[0] = 0.5
    refused(lambda: bce.backward_through_sigmoid(sigmoid), InplaceModificationError,
            rf"^BCELoss\.backward: its input {EDITED}", sigmoid, bce)


# ---------------------------------------------------------------------------- models


def _model_case(name, batch=3, seed=0):
    model = build(name, dtype=F64, rng=seed)
    x = _rng(seed).random((batch, 1, 28, 28) if name in ("conv-ae", "conv-vae") else (batch, 784))
    noise = model.draw_noise(x.shape) if hasattr(model, "draw_noise") else None
    return model, x, noise


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_refuses_a_batch_edited_between_loss_and_backward(name):
    """model.loss(x), then x edited in place, then model.backward(): refused before any layer
    runs (no .grad, cache or bookkeeping changed), naming the layer or loss that keeps x."""
    model, x, noise = _model_case(name)
    model.loss(x, noise, **REGISTRY[name].label_arguments(np.arange(len(x)) % 10))
    x[0, ...] = 1.0 - x[0, ...]
    refused(lambda: model.backward(), InplaceModificationError,
            rf"^{type(model).__name__}\.backward: \S+ \(\w+\)'s (input|target) {EDITED}", model)
    # nothing was accumulated: .grad is still all zeros
    assert all(not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("name", ["vae", "beta-vae", "seed-vae", "conv-vae"])
def test_the_vaes_refuse_noise_edited_between_loss_and_backward(name):
    """dlogvar = ½ dz ε σ reads the ε passed in: editing it is caught (torch saves ε too)."""
    model, x, noise = _model_case(name)
    model.loss(x, noise, **REGISTRY[name].label_arguments(np.arange(len(x)) % 10))
    noise *= 2.0
    refused(lambda: model.backward(), InplaceModificationError,
            rf"^{type(model).__name__}\.backward: its noise \(ε\) {EDITED}", model)


# the models whose forward(x) returns x̂ and whose backward starts from dL/dx̂
RECONSTRUCTING = model_names(family="plain") + model_names(family="denoising") + model_names(family="conv")


@pytest.mark.parametrize("name", RECONSTRUCTING)
def test_models_refuse_an_edited_reconstruction_before_backward_from_it(name):
    """model.forward(x) returns x̂ (the Sigmoid's output, which its backward reads); editing x̂,
    then model.backward(dL/dx̂), is refused."""
    model, x, _ = _model_case(name)
    reconstruction = model.forward(x)
    grad = np.ones_like(reconstruction)
    reconstruction[:, :5] = 0.5
    refused(lambda: model.backward(grad), InplaceModificationError, rf"'s output {EDITED}", model)


@pytest.mark.parametrize("name", [model_names(family="plain")[0], model_names(family="variational")[0]])
def test_a_training_step_hashes_the_batch_once_at_loss_and_once_at_backward(name, monkeypatch):
    """The cost design: everything between the batch and the loss is private to the model's pass,
    and the batch (kept by the first layer and, as the target, by the loss) is one buffer."""
    model, x, noise = _model_case(name, batch=8)
    hashed = []
    real = inplace.fingerprint
    monkeypatch.setattr(inplace, "fingerprint", lambda array: hashed.append(array.nbytes) or real(array))
    model.loss(x, noise)
    assert sorted(hashed) == sorted([x.nbytes] + ([noise.nbytes] if noise is not None else []))
    hashed.clear()
    model.backward(input_grad=False)
    assert sorted(hashed) == sorted([x.nbytes] + ([noise.nbytes] if noise is not None else []))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_detection_changes_no_number(name):
    """The same step with detection on and off (``inplace.ENABLED``): identical loss, input
    gradient and parameter gradients, bit for bit, and identical Adam updates."""
    results = []
    for enabled in (True, False):
        inplace.ENABLED = enabled
        try:
            model, x, noise = _model_case(name)
            opt = optim.Adam(model.parameters(), lr=1e-3)
            parts = model.loss(x, noise, **REGISTRY[name].label_arguments(np.arange(len(x)) % 10))
            dx = model.backward()
            opt.step()
            results.append((parts, dx, [p.data.copy() for p in model.parameters()],
                            [p.grad.copy() for p in model.parameters()]))
        finally:
            inplace.ENABLED = True
    (parts_on, dx_on, data_on, grad_on), (parts_off, dx_off, data_off, grad_off) = results
    assert parts_on == parts_off
    np.testing.assert_array_equal(dx_on, dx_off)
    for a, b in zip(data_on + grad_on, data_off + grad_off):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- the fingerprint


@given(size=st.integers(0, 1200), offset=st.integers(0, 7), seed=S.seeds)
def test_fingerprint_kernel_matches_its_reference(size, offset, seed):
    """``fingerprint_bytes`` (Numba) against ``fingerprint_bytes_reference`` (NumPy words, Python
    merges) on every length (whole blocks of 64 words, a partial block, a 0..7-byte tail) and
    every alignment; ``inplace.fingerprint`` of an array is that of its bytes in C order."""
    data = _rng(seed).integers(0, 256, size + offset, dtype=np.uint8)[offset:]
    expected = K.fingerprint_bytes_reference(data.tobytes())
    assert int(K.fingerprint_bytes(data)) == expected
    full = size // 8 * 8
    words = np.frombuffer(data.tobytes()[:full], dtype=np.uint64)
    tail = int.from_bytes(data.tobytes()[full:], "little")
    assert int(K.fingerprint_words(words, np.uint64(tail), size)) == K.fingerprint_words_reference(words, tail, size)
    assert K.buffer_address(data) == K.buffer_address_reference(data)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int8, np.bool_])
def test_fingerprint_of_arrays_in_c_order(dtype):
    values = 10 * _rng().standard_normal((5, 7, 3))
    base = (values > 0) if dtype is np.bool_ else values.astype(dtype)
    for array in (base, base[:, ::2], base.transpose(2, 0, 1), base[1:4, 2], np.asarray(base[0, 0, 0])):
        assert inplace.fingerprint(array) == K.fingerprint_bytes_reference(np.ascontiguousarray(array).tobytes())


def test_every_single_byte_change_changes_the_fingerprint():
    """Exhaustively over a buffer of 1,031 bytes (two blocks of 64 words, a partial block and a
    7-byte tail): adding 1, or flipping the top bit, of any one byte changes the hash (a single
    word's change always does: every step of the hash is a bijection; see the kernel)."""
    data = _rng().integers(0, 256, 1031, dtype=np.uint8)
    original = int(K.fingerprint_bytes(data))
    seen = {original}
    for position in range(data.size):
        for change in (1, 128):
            edited = data.copy()
            edited[position] = (int(edited[position]) + change) % 256
            digest = int(K.fingerprint_bytes(edited))
            assert digest != original, (position, change)
            seen.add(digest)
    assert len(seen) == 1 + 2 * data.size  # and no two edits collide with each other either


def test_length_and_zero_padding_are_part_of_the_fingerprint():
    """A buffer and the same buffer with 1 to 19 zero bytes appended all hash differently: the
    length is merged in, so zero padding of the tail (or of a lane) cannot hide a change of size."""
    data = np.arange(13, dtype=np.uint8)
    digests = {int(K.fingerprint_bytes(np.concatenate([data, np.zeros(k, np.uint8)]))) for k in range(20)}
    assert len(digests) == 20
