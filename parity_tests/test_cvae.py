"""The conditional VAE (Sohn et al. 2015): the scratch model against its torch twin (every loss part,
every parameter gradient and dL/dx, float64 and float32), against float64 central differences,
the label path (the one-hot rows select which column of fc1's and fc3's label columns each
example's gradient lands in; the labels alone change the reconstruction; zero label columns give
the VAE), clear refusals of bad labels before anything changes, and a 30-step Adam run on real
MNIST with its labels tracking the twin. Derivation: docs/cvae.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.mnist import mnist_train_images, mnist_train_labels
from parity_tests.tolerances import GRADCHECK, assert_close
from scratch import optim
from scratch.gradcheck import gradcheck
from scratch.models import model_names
from scratch.models.cvae import ConditionalVAE
from scratch.models.vae import VariationalAutoencoder
from scratch.nn.inplace import InplaceModificationError
from torch_impl.models.cvae import ConditionalVAE as TorchConditionalVAE

# This file's parity family (test_registry.py holds the families' union equal to the registry)
NAMES = list(model_names(family="conditional"))
OWNER = "ConditionalVAE"
KEYS = [f"{layer}.{kind}" for layer in ("fc1", "fc21", "fc22", "fc3", "fc4") for kind in ("weight", "bias")]
PARTS = {"loss", "recon", "kl"}


@st.composite
def cvae_cases(draw):
    """(config, batch) of a small CVAE."""
    config = dict(input_dim=draw(st.integers(1, 10)), hidden_dim=draw(st.integers(1, 6)),
                  latent_dim=draw(st.integers(1, 3)), num_classes=draw(st.integers(1, 4)),
                  beta=draw(st.sampled_from([1.0, 0.0, 4.0])))
    return config, draw(st.integers(1, 4))


def twin_of(model, dtype) -> TorchConditionalVAE:
    twin = TorchConditionalVAE(**model.config).to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}, strict=True)
    return twin


def _case(config, batch, dtype, seed, binary=False):
    """(model, x, labels, ε) on a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    model = ConditionalVAE(**config, rng=rng, dtype=dtype)
    x = S.probabilities(rng, (batch, config["input_dim"])).astype(dtype)
    if binary:
        x = (x > 0.5).astype(dtype)
    labels = rng.integers(0, config["num_classes"], batch)
    return model, x, labels, model.draw_noise(x.shape)


def _grads(model) -> dict:
    return {key: parameter.grad.copy() for key, parameter in model.named_parameters()}


def _tensor(array):
    return torch.from_numpy(np.array(array))


# -- (1) against torch ---------------------------------------------------------------------


def test_keys_shapes_parameter_count_and_config_match_the_twin():
    model, twin = ConditionalVAE(rng=0), TorchConditionalVAE()
    assert list(model.state_dict()) == list(twin.state_dict()) == KEYS
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert model.num_parameters() == sum(p.numel() for p in twin.parameters()) == 660_824  # the VAE's + 2·10·400
    assert model.state_dict()["fc1.weight"].shape == (400, 784 + 10)
    assert model.state_dict()["fc3.weight"].shape == (400, 20 + 10)
    assert model.config == twin.config == dict(input_dim=784, latent_dim=20, hidden_dim=400, num_classes=10, beta=1.0)
    assert ConditionalVAE(**model.config).config == model.config  # the config rebuilds the model
    assert ConditionalVAE.name == TorchConditionalVAE.name == "cvae"


@given(case=cvae_cases(), dtype=S.dtypes, seed=S.seeds)
def test_loss_parts_every_gradient_and_dx_match_torch(case, dtype, seed):
    config, batch = case
    model, x, labels, eps = _case(config, batch, dtype, seed, binary=seed % 2 == 0)
    twin = twin_of(model, dtype)
    parts = model.loss(x, eps, labels=labels)
    model.zero_grad()
    grad_x = model.backward()
    tx = _tensor(x).requires_grad_()
    tparts = twin.loss(tx, _tensor(eps), labels=_tensor(labels))
    tparts["loss"].backward()
    assert set(parts) == set(tparts) == PARTS
    assert all(isinstance(value, float) for value in parts.values())
    for part in PARTS:
        assert_close(parts[part], tparts[part].detach(), "torch", dtype, f"cvae {part} {config}")
    torch_parameters = dict(twin.named_parameters())
    assert list(_grads(model)) == list(torch_parameters) == KEYS
    for key, grad in _grads(model).items():
        assert_close(grad, torch_parameters[key].grad, "torch", dtype, f"cvae d{key} {config}")
    assert grad_x.shape == x.shape and grad_x.dtype == x.dtype
    assert_close(grad_x, tx.grad, "torch", dtype, f"cvae dL/dx {config}")

    # the other passes, on the same weights, labels and noise
    tlabels = _tensor(labels)
    with torch.no_grad():
        assert_close(model.reconstruct(x, eps, labels=labels), twin.reconstruct(_tensor(x), _tensor(eps), labels=tlabels),
                     "torch", dtype, "reconstruction")
        for mine, theirs, what in zip(model.encode(x, labels), twin.encode(_tensor(x), tlabels), ("μ", "logvar")):
            assert_close(mine, theirs, "torch", dtype, f"encode {what}")
        assert_close(model.decode(eps, labels), twin.decode(_tensor(eps), tlabels), "torch", dtype, "decode")
        assert_close(model.sample(labels, eps), twin.sample(tlabels, _tensor(eps)), "torch", dtype, "sample")
        assert_close(model.one_hot(labels), twin.one_hot(tlabels), "torch", dtype, "one_hot")


def test_image_shaped_input_and_the_dx_shape():
    """(N, 1, H, W) in, the same loss as flattened, dL/dx in x's shape."""
    config = dict(input_dim=16, hidden_dim=5, latent_dim=2, num_classes=3)
    model, x, labels, eps = _case(config, 3, np.float64, 0)
    flat_parts = model.loss(x, eps, labels=labels)
    flat_grad = model.backward()
    images = x.reshape(3, 1, 4, 4)
    assert model.loss(images, eps, labels=labels) == flat_parts
    grad = model.backward()
    assert grad.shape == images.shape
    np.testing.assert_array_equal(grad.reshape(3, 16), flat_grad)
    model.loss(images, eps, labels=labels)
    assert model.backward(input_grad=False) is None


# -- (2) central differences ---------------------------------------------------------------


class _LossOf:
    """gradcheck's Module interface over the CVAE's scalar loss for fixed labels and ε: called on
    x it returns the loss (0-d); ``backward(c)`` returns c·dL/dx and leaves c·dL/dθ in every
    ``.grad`` (the model differentiates its loss only, so the cotangent scales what it adds).

    x is the encoder's input and the BCE's target. ``model.backward()`` returns the gradient
    through the encoder only (the target is data, as for every model here); central differences
    perturb both, so the target's part is added here: dBCE/dx = max(log(1 − p), −100) −
    max(log p, −100) with torch's clamp, p the reconstruction on the same ε."""

    def __init__(self, model, labels, eps):
        self.model, self.labels, self.eps = model, labels, eps

    def __call__(self, x):
        self.x = x
        return np.asarray(self.model.loss(x, self.eps, labels=self.labels)["loss"])

    def backward(self, cotangent):
        before = _grads(self.model)
        grad_x = self.model.backward()
        for key, parameter in self.model.named_parameters():
            parameter.grad[...] = before[key] + cotangent * (parameter.grad - before[key])
        p = self.model.reconstruct(self.x, self.eps, labels=self.labels)
        grad_target = np.maximum(np.log1p(-p), -100) - np.maximum(np.log(p), -100)
        return cotangent * (grad_x + grad_target)

    def named_parameters(self):
        return self.model.named_parameters()


def _relu_margin(model, x, labels, eps) -> float:
    """min |pre-activation| of fc1 and fc3 over the batch, by hand: central differences are
    exact only away from the ReLUs' kinks."""
    w = {k: v for k, v in model.state_dict().items()}
    one_hot = model.one_hot(labels)
    a1 = np.concatenate([x, one_hot], 1) @ w["fc1.weight"].T + w["fc1.bias"]
    h = np.maximum(a1, 0)
    mean, logvar = h @ w["fc21.weight"].T + w["fc21.bias"], h @ w["fc22.weight"].T + w["fc22.bias"]
    a3 = np.concatenate([mean + np.exp(0.5 * logvar) * eps, one_hot], 1) @ w["fc3.weight"].T + w["fc3.bias"]
    return float(min(np.abs(a1).min(), np.abs(a3).min()))


@given(case=cvae_cases(), seed=S.seeds)
def test_loss_gradients_match_central_differences(case, seed):
    """float64, a random cotangent of the scalar loss, every element of x and of every parameter."""
    config, batch = case
    model, x, labels, eps = _case(config, batch, np.float64, seed)
    assume(_relu_margin(model, x, labels, eps) > 1e-4)
    result = gradcheck(_LossOf(model, labels, eps), x, rng=seed, **GRADCHECK)
    assert result.passed
    assert [name for name, _, _ in result.arrays] == ["input0", *KEYS]
    assert result.elements_checked == x.size + model.num_parameters()


# -- (3) the label path --------------------------------------------------------------------


@given(case=cvae_cases(), dtype=S.dtypes, seed=S.seeds)
def test_label_columns_gradient_is_the_per_class_sum_of_the_pre_activation_gradient(case, dtype, seed):
    """dL/dW_y[:, c] = Σ_{n: y_n = c} dL/da_n for fc1 (a = [x, e_y] W^T + b) and fc3, with dL/da
    taken from the twin's autograd (retain_grad on the pre-activations): the one-hot rows select
    the column each example's gradient lands in. A class absent from the batch gets exactly 0,
    and the label columns add up to the bias gradient."""
    config, batch = case
    model, x, labels, eps = _case(config, batch, dtype, seed)
    twin = twin_of(model, dtype)
    pre = {}

    def keep(name):
        def hook(module, inputs, output):
            output.retain_grad()
            pre[name] = output
        return hook

    twin.fc1.register_forward_hook(keep("fc1"))
    twin.fc3.register_forward_hook(keep("fc3"))
    twin.loss(_tensor(x), _tensor(eps), labels=_tensor(labels))["loss"].backward()
    model.loss(x, eps, labels=labels)
    model.zero_grad()
    model.backward()
    classes = config["num_classes"]
    for layer, width in (("fc1", config["input_dim"]), ("fc3", config["latent_dim"])):
        upstream = pre[layer].grad.numpy()  # dL/da, (N, H)
        weight_grad = getattr(model, layer).weight.grad
        label_columns = weight_grad[:, width:]  # (H, C)
        assert label_columns.shape == (config["hidden_dim"], classes)
        for c in range(classes):
            members = labels == c
            if not members.any():
                np.testing.assert_array_equal(label_columns[:, c], 0.0, err_msg=f"{layer}: class {c} is absent")
                continue
            assert_close(label_columns[:, c], upstream[members].sum(axis=0), "torch", dtype,
                         f"{layer} label column {c} as Σ over its {int(members.sum())} examples",
                         scale=np.abs(upstream[members]).sum(axis=0).max())
        # in matrix form, G^T E: the one-hot selects
        assert_close(label_columns, upstream.T @ model.one_hot(labels), "torch", dtype, f"{layer} label columns as G^T E",
                     scale=np.abs(upstream).sum())
        assert_close(label_columns.sum(axis=1), getattr(model, layer).bias.grad, "torch", dtype,
                     f"{layer}: Σ_c label column c = bias gradient", scale=np.abs(upstream).sum())


def test_changing_only_the_labels_changes_the_reconstruction_by_a_class_bias():
    """Same x and ε, other labels: the encoder's pre-activation moves by W_y[:, y'] − W_y[:, y]
    (concatenation = a class-dependent bias), so μ, logvar and the reconstruction change; the
    decoder likewise: the same z decodes to different images under different labels."""
    config = dict(input_dim=12, hidden_dim=8, latent_dim=3, num_classes=4)
    model, x, labels, eps = _case(config, 4, np.float64, 3)
    labels = np.array([0, 1, 2, 3])
    other = (labels + 1) % 4
    first, second = model.reconstruct(x, eps, labels=labels), model.reconstruct(x, eps, labels=other)
    assert np.all(np.abs(first - second).max(axis=1) > 1e-6), "every image's reconstruction depends on its label"
    np.testing.assert_array_equal(model.reconstruct(x, eps, labels=labels), first)  # deterministic given ε
    # the class bias: fc1([x, e_y]) = W_x x + b + W_y[:, y]
    w, b = model.fc1.weight.data, model.fc1.bias.data
    mean, _ = model.encode(x, other)
    expected_h = np.maximum(x @ w[:, :12].T + b + w[:, 12:][:, other].T, 0)
    assert_close(mean, expected_h @ model.fc21.weight.data.T + model.fc21.bias.data, "torch", np.float64,
                 "μ through the class bias")
    z = np.repeat(eps[:1], 4, axis=0)
    images = model.decode(z, labels)
    assert len({row.tobytes() for row in images}) == 4, "one z, four labels, four different images"
    np.testing.assert_array_equal(model.sample(labels, z), images)


def test_zero_label_columns_give_the_vae_in_value_and_gradient():
    """A CVAE whose label columns are zero is the VAE with the same other weights: the same loss
    parts and the same gradients of the shared weights (its label columns still get theirs)."""
    config = dict(input_dim=10, hidden_dim=6, latent_dim=3)
    model, x, labels, eps = _case(dict(config, num_classes=3), 4, np.float64, 5)
    model.fc1.weight.data[:, 10:] = 0
    model.fc3.weight.data[:, 3:] = 0
    vae = VariationalAutoencoder(**config, dtype=np.float64)
    vae.load_state_dict({k: (v[:, :10] if k == "fc1.weight" else v[:, :3] if k == "fc3.weight" else v)
                         for k, v in model.state_dict().items()})
    parts, vae_parts = model.loss(x, eps, labels=labels), vae.loss(x, eps)
    for part in PARTS:
        assert_close(parts[part], vae_parts[part], "torch", np.float64, part)
    grad_x, vae_grad_x = model.backward(), vae.backward()
    assert_close(grad_x, vae_grad_x, "torch", np.float64, "dL/dx")
    mine = _grads(model)
    for key, grad in _grads(vae).items():
        shared = mine[key][:, :grad.shape[1]] if key in ("fc1.weight", "fc3.weight") else mine[key]
        assert_close(shared, grad, "torch", np.float64, f"d{key}")
    for layer, width in (("fc1", 10), ("fc3", 3)):
        assert np.abs(getattr(model, layer).weight.grad[:, width:]).max() > 0, f"{layer}'s label columns learn from zero"


def test_one_hot_is_in_the_model_dtype_and_selects():
    for dtype in (np.float32, np.float64):
        model = ConditionalVAE(input_dim=4, hidden_dim=2, latent_dim=1, num_classes=5, dtype=dtype, rng=0)
        for labels in (np.array([4, 0, 2, 2]), np.array([3], dtype=np.uint8), np.array([1, 0], dtype=np.int32)):
            encoded = model.one_hot(labels)
            assert encoded.dtype == dtype and encoded.shape == (len(labels), 5)
            np.testing.assert_array_equal(encoded, np.eye(5, dtype=dtype)[labels])


def test_sampling_a_chosen_digit_draws_from_the_model_generator():
    """sample(labels): z ~ N(0, I) from the model's generator (reproducible from the seed, fresh
    each call), decoded with the labels; a row per digit as a samples grid would lay it out."""
    labels = np.repeat(np.arange(10), 3)
    first, again = ConditionalVAE(rng=7), ConditionalVAE(rng=7)
    images = first.sample(labels)
    assert images.shape == (30, 784) and images.dtype == np.float32
    assert np.all((images > 0) & (images < 1))
    np.testing.assert_array_equal(again.sample(labels), images)
    assert not np.array_equal(first.sample(labels), images)  # the generator moved on
    z = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32)
    grid = first.sample(labels, np.tile(z, (10, 1))).reshape(10, 3, 784)  # one z per column
    assert all(len({grid[d, k].tobytes() for d in range(10)}) == 10 for k in range(3))


# -- (4) bad labels ------------------------------------------------------------------------

CONFIG = dict(input_dim=6, hidden_dim=4, latent_dim=2, num_classes=3)
N = 4
BAD_LABELS = {  # kind: (labels for a batch of N, exception, message)
    "float": (np.array([0.0, 1.0, 2.0, 1.0]), TypeError, r"integer array of class indices.*got dtype float64 \(class indices"),
    "bool": (np.array([True, False, True, True]), TypeError, "got dtype bool"),
    "list": ([0, 1, 2, 1], TypeError, "got list"),
    "none": (None, TypeError, "labels are required"),
    "2-d": (np.array([[0], [1], [2], [1]]), ValueError, r"shape \(4, 1\)"),
    "one-hot": (np.eye(3, dtype=np.int64)[[0, 1, 2, 1]], ValueError, r"shape \(4, 3\)"),
    "short": (np.array([0, 1, 2]), ValueError, r"shape \(3,\) for a batch of 4"),
    "empty": (np.array([], dtype=np.int64), ValueError, r"shape \(0,\)"),
    "negative": (np.array([0, 1, -1, 2]), ValueError, r"in \[0, 3\) \(num_classes=3\); got -1 at index 2"),
    "too large": (np.array([0, 3, 1, 2]), ValueError, r"in \[0, 3\) \(num_classes=3\); got 3 at index 1"),
}
METHODS = ("loss", "forward", "reconstruct", "encode", "decode", "sample", "one_hot", "kl_per_dimension")


def _call(model, method, x, eps, labels):
    if method in ("loss", "forward", "reconstruct"):
        return getattr(model, method)(x, eps, labels=labels)
    if method == "kl_per_dimension":
        return model.kl_per_dimension(x, labels=labels)
    if method == "encode":
        return model.encode(x, labels)
    if method == "decode":
        return model.decode(eps, labels)
    if method == "sample":
        return model.sample(labels)  # ε drawn: a refusal must come before the draw
    return model.one_hot(labels)


def _pending(seed=0):
    """A model that has run loss (its backward pending), and what that backward should give."""
    model, x, labels, eps = _case(CONFIG, N, np.float64, seed)
    reference = ConditionalVAE(**CONFIG, rng=np.random.default_rng(seed), dtype=np.float64)
    reference.load_state_dict(model.state_dict())
    reference.loss(x, eps, labels=labels)
    reference.zero_grad()
    expected = reference.backward()
    model.loss(x, eps, labels=labels)
    model.zero_grad()
    return model, x, eps, expected, _grads(reference)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(BAD_LABELS))
def test_bad_labels_are_refused_clearly_before_anything_changes(method, kind):
    """A clear error naming the model; no layer ran (the pending backward still differentiates the
    last loss and gives its gradients), no noise was drawn (the generator's state is unchanged)."""
    labels, error, message = BAD_LABELS[kind]
    if method in ("sample", "one_hot") and kind == "short":
        pytest.skip("no batch to disagree with: the labels set the batch size")
    model, x, eps, expected_dx, expected_grads = _pending()
    state = model.rng.bit_generator.state
    weights = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message) as raised:
        _call(model, method, x, eps, labels)
    assert OWNER in str(raised.value)
    assert model.rng.bit_generator.state == state
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, weights[key])
    np.testing.assert_array_equal(model.backward(), expected_dx)  # the same pass as the reference's
    for key, grad in _grads(model).items():
        np.testing.assert_array_equal(grad, expected_grads[key], err_msg=key)


@pytest.mark.parametrize("method", ("loss", "forward", "reconstruct", "encode", "decode", "sample", "one_hot"))
def test_missing_labels_are_a_clear_type_error(method):
    model, x, eps, _, _ = _pending()
    call = {"loss": lambda: model.loss(x, eps), "forward": lambda: model.forward(x, eps),
            "reconstruct": lambda: model.reconstruct(x, eps), "encode": lambda: model.encode(x),
            "decode": lambda: model.decode(eps), "sample": lambda: model.sample(), "one_hot": lambda: model.one_hot()}
    with pytest.raises(TypeError, match=rf"ConditionalVAE\.{method}\(\) missing 1 required .*'labels'"):
        call[method]()
    model.backward()  # still the last loss's


def test_labels_are_checked_after_x_and_before_the_noise():
    """A bad x is reported as x (not as the labels), bad noise after good labels as noise, and
    bad noise with bad labels as the labels: the labels are checked first, before any draw."""
    model, x, eps, _, _ = _pending()
    with pytest.raises(TypeError, match="x has dtype float32"):
        model.loss(x.astype(np.float32), eps, labels=np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"noise \(ε\) must have shape \(4, 2\)"):
        model.loss(x, eps[:3], labels=np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="labels must lie in"):
        model.loss(x, eps[:3], labels=np.array([0, 1, 9, 0]))
    with pytest.raises(ValueError, match=r"z must be \(N, 2\)"):
        model.decode(eps[:, :1].copy(), np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"noise \(z\) must have shape \(2, 2\)"):
        model.sample(np.array([0, 1]), eps)
    model.backward()


def test_the_twin_refuses_bad_labels_too():
    twin = TorchConditionalVAE(**CONFIG).double()
    x, eps = torch.rand(N, 6, dtype=torch.float64), torch.randn(N, 2, dtype=torch.float64)
    for labels, error in ((torch.tensor([0.0, 1.0, 2.0, 1.0]), TypeError), (torch.tensor([0, 1, 3, 1]), ValueError),
                          (torch.tensor([0, -1, 2, 1]), ValueError), (torch.tensor([0, 1, 2]), ValueError)):
        with pytest.raises(error, match="ConditionalVAE: labels"):
            twin.loss(x, eps, labels=labels)


def test_backward_bookkeeping_is_the_vaes():
    """The in-place watches and the pass records of the VAE: an ε or x edited in place after the
    loss is caught; encode or forward after the loss leaves nothing for backward to differentiate;
    the labels (only read into a private one-hot) may change after the loss."""
    model, x, labels, eps = _case(CONFIG, N, np.float64, 1)
    model.loss(x, eps, labels=labels)
    saved = eps[0, 0]
    eps[0, 0] += 1.0
    with pytest.raises(InplaceModificationError, match="noise"):
        model.backward()
    eps[0, 0] = saved
    model.loss(x, eps, labels=labels)
    saved = x[0, 0]
    x[0, 0] += 0.25
    with pytest.raises(InplaceModificationError, match="modified in place"):
        model.backward()
    x[0, 0] = saved
    model.loss(x, eps, labels=labels)
    model.encode(x, labels)
    with pytest.raises(RuntimeError, match="ran again after the last loss"):
        model.backward()
    model.loss(x, eps, labels=labels)
    model.forward(x, eps, labels=labels)
    with pytest.raises(RuntimeError, match="differentiates the last loss"):
        model.backward()
    model.zero_grad()
    model.loss(x, eps, labels=labels)
    expected = model.backward()
    grads = _grads(model)
    model.zero_grad()
    model.loss(x, eps, labels=labels)
    labels[:] = (labels + 1) % CONFIG["num_classes"]
    np.testing.assert_array_equal(model.backward(), expected)
    for key, grad in _grads(model).items():
        np.testing.assert_array_equal(grad, grads[key], err_msg=key)


# -- (5) a training run --------------------------------------------------------------------

STEPS, BATCH = 30, 128


@pytest.mark.slow  # 30 Adam steps on real MNIST: `python -m pytest -m slow`
@pytest.mark.parametrize("name", NAMES)
def test_adam_training_run_tracks_torch(name):
    """30 Adam steps (lr 1e-3, weight_decay 1e-5, batch 128) on binarized MNIST with its labels,
    from identical weights, batches and ε, in float64: every loss and, at the end, every weight
    element within the table's training row, and no ReLU unit ever on different sides of 0."""
    dtype = np.float64
    images = (mnist_train_images(STEPS * BATCH) > 0.5).astype(dtype).reshape(STEPS * BATCH, 784)
    labels = mnist_train_labels(STEPS * BATCH)
    assert set(np.unique(labels)) == set(range(10))
    model = ConditionalVAE(rng=0, dtype=dtype)
    assert model.name == name
    twin = twin_of(model, dtype)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-5)
    masks = {}
    for layer in ("fc1", "fc3"):
        getattr(twin, layer).register_forward_hook(
            lambda module, inputs, output, layer=layer: masks.__setitem__(layer, (output > 0).numpy()))
    noise_rng = np.random.default_rng(1)
    losses, torch_losses = [], []
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        x, y = images[batch], labels[batch]
        eps = noise_rng.standard_normal((BATCH, 20))
        opt.zero_grad()
        losses.append(model.loss(x, eps, labels=y)["loss"])
        model.backward()
        opt.step()
        topt.zero_grad()
        tloss = twin.loss(_tensor(x), _tensor(eps), labels=_tensor(y))["loss"]
        tloss.backward()
        topt.step()
        torch_losses.append(tloss.item())
        for layer, relu in (("fc1", model.relu1), ("fc3", model.relu3)):
            assert np.array_equal(relu._cache > 0, masks[layer]), f"step {step}: {layer}'s ReLU mask differs from torch's"
    assert losses[-1] < 0.95 * losses[0], "the run should learn something in 30 steps"
    assert_close(np.array(losses), np.array(torch_losses), "training", dtype, "cvae losses")
    torch_parameters = dict(twin.named_parameters())
    for key, parameter in model.named_parameters():
        assert_close(parameter.data, torch_parameters[key], "training", dtype, f"cvae {key} after 30 steps")
    # the label columns moved, and by the twin's amounts (checked above, element by element)
    assert np.abs(model.fc1.weight.data[:, 784:] - ConditionalVAE(rng=0, dtype=dtype).fc1.weight.data[:, 784:]).max() > 1e-3
