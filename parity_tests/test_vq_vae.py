"""The VQ-VAE (scratch.models.vq over scratch.functional.quantize) against its torch twin
(torch_impl.models.vq), and on its own: (1) every loss part, the codes, every parameter gradient,
dL/dx and the EMA buffers against torch, float64 and float32, both codebook settings; (2) float64
central differences of what is differentiable (the straight-through surrogate term by term, the
decoder and the codebook through the whole loss); (3) the EMA equations and perplexity against
plain formulas; (4) the tie rule; (5) a 30-step Adam run on real MNIST; (6) clear errors.
There is no Numba kernel: the quantiser is a BLAS product, an argmin and a bincount."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity_tests import strategies as S
from parity_tests.mnist import mnist_train_images
from parity_tests.tolerances import GRADCHECK, assert_close, assert_close_in_norm
from scratch import optim
from scratch.functional import quantize as Q
from scratch.gradcheck import gradcheck
from scratch.models import model_names
from scratch.models.vq import VQVAE
from scratch.nn import ReLU, Tanh
from scratch.testing import assert_model_matches_torch
from torch_impl.models import vq as torch_vq

# This file's parity family (test_registry.py holds the families' union equal to the registry)
NAMES = list(model_names(family="quantized"))
PARTS = {"loss", "recon", "codebook", "commitment"}
DEFAULT_PARAMETERS = 79_057  # encoder 34,416 + codebook 2,048 + decoder 42,593
ENCODER_KEYS = [f"encoder.{i}.{kind}" for i in (0, 2, 4) for kind in ("weight", "bias")]
DECODER_KEYS = [f"decoder.{i}.{kind}" for i in (0, 2, 4) for kind in ("weight", "bias")]
EMA_BUFFERS = ["codebook.weight", "codebook.ema_cluster_size", "codebook.ema_weight"]


def twin_of(model, dtype=None) -> torch.nn.Module:
    """The torch twin built from the model's configuration, in its dtype, holding its weights and
    buffers (strict)."""
    dtype = getattr(torch, np.dtype(dtype or model.dtype).name)
    twin = torch_vq.VQVAE(**model.config).to(dtype)
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}, strict=True)
    return twin


def _rows(z_e: np.ndarray) -> np.ndarray:
    """(N, D, h, w) -> (N·h·w, D) float64, channels last: the quantiser's rows."""
    return z_e.transpose(0, 2, 3, 1).reshape(-1, z_e.shape[1]).astype(np.float64)


def _gaps(rows: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Per row, (second smallest − smallest) exact squared distance over ‖z‖² + max‖e‖² (inf for K = 1)."""
    distances = ((rows[:, None, :] - codebook[None, :, :].astype(np.float64)) ** 2).sum(-1)  # (M, K)
    if distances.shape[1] == 1:
        return np.full(len(rows), np.inf)
    two = np.partition(distances, 1, axis=1)[:, :2]
    scale = (rows ** 2).sum(1) + (codebook.astype(np.float64) ** 2).sum(1).max()
    return (two[:, 1] - two[:, 0]) / np.maximum(scale, 1e-300)


def separate_codebook(model, x, rng, margin) -> None:
    """Give the model a codebook near its encoder's outputs for ``x`` (K rows drawn among them, plus
    noise), redrawn until every row's nearest code beats the next one by ``margin`` relative to
    the distances' terms; with ``ema`` also general EMA buffers (N_k in [0.5, 3], m ≈ N·e).

    So each test knows its codes are not a rounding decision: both backends, and a ±eps
    perturbation of a codebook entry, pick the same code for every row. Valid by construction
    (redrawn, never filtered: the chance that 200 draws all fail is nil)."""
    rows = _rows(model.encode(x))
    count, depth = rows.shape
    k = model.config["num_embeddings"]
    spread = float(np.sqrt(np.mean(rows ** 2))) + 1e-3  # the rows' size, not their spread (one row has none)
    for _ in range(200):
        codebook = rows[rng.integers(0, count, k)] + 0.3 * spread * rng.standard_normal((k, depth))
        if _gaps(rows, codebook).min() > margin:
            break
    else:  # pragma: no cover - would need 200 unlucky draws
        raise AssertionError("no separated codebook found")
    book = model.codebook
    book.vectors[...] = codebook
    if model.config["ema"]:
        book.ema_cluster_size[...] = rng.uniform(0.5, 3.0, k)
        book.ema_weight[...] = codebook * book.ema_cluster_size[:, None] + 0.1 * spread * rng.standard_normal((k, depth))


#: relative gap between the two nearest codes that rounding can never close: float32's z_e
#: differs between the backends by ~1e-6 relative (their convolutions sum in other orders)
MARGINS = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}


@st.composite
def vq_cases(draw):
    """(config, x shape): 1 to 3 input channels and conv widths, D 1..4, K 1..6, batch 1..3, an
    image side of 4, 8 or 28 (latent side 1, 2 or 7), β, and either codebook setting; x flat or
    image-shaped."""
    channels = draw(st.integers(1, 3))
    size = draw(st.sampled_from([4, 8, 28]))
    config = dict(in_channels=channels, channels=[draw(st.integers(1, 3)), draw(st.integers(1, 3))],
                  embedding_dim=draw(st.integers(1, 4)), num_embeddings=draw(st.integers(1, 6)),
                  beta=draw(st.sampled_from([0.0, 0.25, 1.0])), ema=draw(st.booleans()),
                  decay=draw(st.sampled_from([0.0, 0.5, 0.99])), epsilon=draw(st.sampled_from([1e-5, 0.1])),
                  image_size=size)
    batch = draw(st.integers(1, 3))
    shape = (batch, channels, size, size) if draw(st.booleans()) else (batch, channels * size * size)
    return config, shape


# -- (1) against torch -----------------------------------------------------------------------


@pytest.mark.parametrize("ema", [False, True])
def test_keys_order_shapes_and_parameter_count_match_torch(ema):
    model, twin = VQVAE(ema=ema, rng=0), torch_vq.VQVAE(ema=ema)
    codebook = EMA_BUFFERS if ema else ["codebook.weight"]
    assert list(model.state_dict()) == list(twin.state_dict()) == ENCODER_KEYS + codebook + DECODER_KEYS
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert list(dict(model.named_parameters())) == list(dict(twin.named_parameters()))
    expected = DEFAULT_PARAMETERS - (128 * 16 if ema else 0)  # with ema the codebook is a buffer
    assert model.num_parameters() == sum(p.numel() for p in twin.parameters()) == expected
    assert list(dict(model.named_buffers())) == list(dict(twin.named_buffers())) == (EMA_BUFFERS if ema else [])
    assert VQVAE(**model.config).config == model.config == twin.config  # the config rebuilds the model


@given(case=vq_cases(), dtype=S.dtypes, seed=S.seeds)
def test_loss_parts_codes_every_gradient_and_buffers_match_torch(case, dtype, seed):
    config, shape = case
    rng = np.random.default_rng(seed)
    model = VQVAE(**config, rng=rng, dtype=dtype)
    x = S.probabilities(rng, shape).astype(dtype)
    separate_codebook(model, x, rng, MARGINS[np.dtype(dtype)])
    twin = twin_of(model)
    tx = torch.from_numpy(x)
    with torch.no_grad():
        torch_codes = twin.quantize(twin.encode(tx))[1].numpy()
    codes = model.quantize(model.encode(x))[1]
    np.testing.assert_array_equal(codes, torch_codes)
    assert codes.dtype == np.int64 and codes.shape == (shape[0], config["image_size"] // 4, config["image_size"] // 4)

    result = assert_model_matches_torch(model, twin, x, input_grad=True, what=f"vq-vae {config}")
    assert {q for q in result.max_rel_error if not q.startswith("grad")} == PARTS
    assert {q for q in result.max_rel_error if q.startswith("grad ")} == {f"grad {k!r}" for k, _ in model.named_parameters()}
    assert "grad_input" in result.max_rel_error
    assert ("codebook.weight" in dict(model.named_parameters())) == (not config["ema"])
    # the training-mode loss moved the EMA codebook alike on both sides
    buffers, torch_buffers = dict(model.named_buffers()), dict(twin.named_buffers())
    assert list(buffers) == list(torch_buffers)
    for key, value in buffers.items():
        assert_close(value, torch_buffers[key], "torch", dtype, f"{key} after a training-mode loss")

    model.eval()
    twin.eval()
    parts = model.loss(x)
    assert all(isinstance(value, float) for value in parts.values())
    if config["ema"]:
        assert parts["codebook"] == 0.0
        for key, value in model.named_buffers():  # evaluation mode updates nothing
            np.testing.assert_array_equal(value, buffers[key], err_msg=key)
    with torch.no_grad():
        assert_close(model.reconstruct(x), twin.reconstruct(tx), "torch", dtype, "reconstruction")
        assert model.perplexity(x) == pytest.approx(twin.perplexity(tx), rel=1e-12)
        np.testing.assert_array_equal(model.codebook_usage(x), twin.codebook_usage(tx).numpy())


def test_loss_parts_follow_their_definitions():
    """recon = mean BCE over pixels; codebook = commitment = mean (z_q − z_e)² over z_e's elements;
    loss = recon + codebook + β·commitment; z_q = the codebook rows the codes name."""
    rng = np.random.default_rng(3)
    model = VQVAE(in_channels=2, channels=(3, 2), embedding_dim=3, num_embeddings=5, beta=0.4, image_size=8,
                  rng=rng, dtype=np.float64)
    x = (rng.random((3, 2, 8, 8)) > 0.5).astype(np.float64)
    separate_codebook(model, x, rng, 1e-9)
    z_e = model.encode(x)
    z_q, codes = model.quantize(z_e)
    np.testing.assert_array_equal(z_q, model.codebook.vectors[codes].transpose(0, 3, 1, 2))
    p = model.decode(z_q).reshape(x.shape)
    parts = model.loss(x)
    bce = -np.mean(x * np.log(p) + (1 - x) * np.log1p(-p))
    mse = np.mean((z_q - z_e) ** 2)
    assert parts["recon"] == pytest.approx(bce, rel=1e-12)
    assert parts["codebook"] == parts["commitment"] == pytest.approx(mse, rel=1e-12)
    assert parts["loss"] == pytest.approx(parts["recon"] + 1.4 * mse, rel=1e-12)


# -- (2) central differences -------------------------------------------------------------------

SURROGATE_TERMS = {"straight-through": (1.0, 0.0, 0.0), "codebook": (0.0, 1.0, 0.0), "commitment": (0.0, 0.0, 0.7),
                   "all": (1.0, 1.0, 0.7)}


@given(rows=st.integers(1, 12), depth=st.integers(1, 4), k=st.integers(1, 6),
       term=st.sampled_from(sorted(SURROGATE_TERMS)), seed=S.seeds)
def test_quantizer_backward_matches_finite_differences_of_its_surrogate(rows, depth, k, term, seed):
    """``vector_quantize_backward`` against central differences of the surrogate with every
    stop-gradient made explicit (sg[·] is its value at the forward's point, a constant), codes
    fixed:

        S(z_e, e) = Σ c ⊙ (z_e + sg[z_q − z_e]) + a·mean (sg[z_e] − e[codes])² + b·mean (z_e − sg[e[codes]])²

    term by term (straight-through: dz_e = c, de = 0; codebook: dz_e = 0; commitment: de = 0)
    and all together. The quantised loss itself is piecewise constant in z_e: its true
    derivative is not the straight-through gradient, which is why the surrogate is checked."""
    rng = np.random.default_rng(seed)
    z_e = rng.standard_normal((rows, depth))
    codebook = rng.standard_normal((k, depth))
    scale, a, b = SURROGATE_TERMS[term]
    cotangent = scale * rng.standard_normal((rows, depth))
    _, codes, cache = Q.vector_quantize_forward(z_e.copy(), codebook.copy())
    z_e0, q0 = z_e.copy(), codebook[codes].copy()  # the values behind every sg[·]

    def surrogate(z, e):
        straight = np.sum(cotangent * (z + (q0 - z_e0)))
        codebook_term = a * np.mean((z_e0 - e[codes]) ** 2)
        commitment_term = b * np.mean((z - q0) ** 2)
        return np.asarray(straight + codebook_term + commitment_term), None

    def backward(grad_output, _):
        g = float(grad_output)
        return Q.vector_quantize_backward(g * cotangent, cache, codebook_weight=g * a, commitment_weight=g * b)

    result = gradcheck((surrogate, backward), z_e, codebook, rng=rng, **GRADCHECK)
    assert result.elements_checked == z_e.size + codebook.size
    grad_z_e, grad_codebook = Q.vector_quantize_backward(cotangent, cache, codebook_weight=a, commitment_weight=b)
    if b == 0:  # the straight-through copy is exact: dL/dz_e is dL/dz_q, bit for bit
        np.testing.assert_array_equal(grad_z_e, cotangent)
    if a == 0:
        assert not grad_codebook.any()
    unused = np.setdiff1d(np.arange(k), codes)
    assert not grad_codebook[unused].any(), "a code no row chose gets no gradient"


def _smooth_relus(model) -> None:
    """Swap every ReLU for a Tanh in place: central differences need no kink at 0."""
    for _, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if isinstance(child, ReLU):
                setattr(parent, child_name, Tanh())


def _central_differences(loss_of, array, indices, eps):
    flat = array.reshape(-1)
    numeric = np.empty(len(indices))
    for n, j in enumerate(indices):
        original = flat[j]
        flat[j] = original + eps
        plus = loss_of()
        flat[j] = original - eps
        minus = loss_of()
        flat[j] = original
        numeric[n] = (plus - minus) / (2 * eps)
    return numeric


@st.composite
def small_vq_cases(draw):
    """``vq_cases`` on 4x4 and 8x8 images: central differences evaluate the loss twice per element."""
    config, shape = draw(vq_cases())
    size = draw(st.sampled_from([4, 8]))
    config["image_size"] = size
    return config, (shape[0], config["in_channels"] * size * size)


@given(case=small_vq_cases(), seed=S.seeds)
def test_decoder_and_codebook_gradients_match_finite_differences_of_the_loss(case, seed):
    """What is differentiable: the decoder's parameters, through the whole loss; the codebook,
    through the "codebook" part (codes fixed: they are, for a separated codebook and eps = 1e-6).

    The codebook's gradient is NOT the derivative of the whole loss: the reconstruction depends
    on e through z_q's value, but the straight-through z_e + sg[z_q − z_e] cuts that path, and
    the commitment term holds e inside sg[·]; the "codebook" part is the only one in which e
    appears outside a stop-gradient. Nor is the encoder's gradient a derivative (the quantised
    loss is piecewise constant in z_e): the surrogate test above checks those. With ``ema`` the
    codebook is a buffer, and evaluation mode keeps it fixed while the differences are taken."""
    config, shape = case
    rng = np.random.default_rng(seed)
    model = VQVAE(**config, rng=rng, dtype=np.float64)
    _smooth_relus(model)
    x = S.probabilities(rng, shape)
    separate_codebook(model, x, rng, 1e-3)
    if config["ema"]:
        model.eval()
    model.zero_grad()
    base = model.loss(x)
    assert model.backward(input_grad=False) is None
    eps, rtol, atol = GRADCHECK["eps"], GRADCHECK["rtol"], GRADCHECK["atol"]
    checked = [(name, p) for name, p in model.named_parameters() if not name.startswith("encoder.")]
    assert [name for name, _ in checked] == (["codebook.weight"] if not config["ema"] else []) + DECODER_KEYS
    for name, parameter in checked:
        part = "codebook" if name == "codebook.weight" else "loss"
        floor = 16 * 2.0**-53 * abs(base[part]) / eps  # the quotient's own rounding (scratch.gradcheck)
        indices = np.arange(parameter.size) if parameter.size <= 8 else np.sort(rng.choice(parameter.size, 8, replace=False))
        numeric = _central_differences(lambda: model.loss(x)[part], parameter.data, indices, eps)
        analytic = parameter.grad.reshape(-1)[indices]
        bad = np.abs(analytic - numeric) > atol + rtol * np.abs(numeric) + floor
        assert not bad.any(), f"{name}: analytic {analytic[bad]} vs central differences of {part!r} {numeric[bad]}"


# -- (3) the EMA equations, perplexity ----------------------------------------------------------


def test_ema_update_follows_the_papers_equations():
    """N_k ← γN_k + (1−γ)n_k, m_k ← γm_k + (1−γ)Σ z, e_k = m_k/Ñ_k with Ñ the Laplace-smoothed N,
    written out code by code; code 3 is chosen by no row, so only smoothing keeps its Ñ."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((9, 2))
    codes = np.array([0, 1, 1, 2, 0, 0, 4, 2, 1])
    cluster, weight = rng.uniform(0.5, 2.0, 5), rng.standard_normal((5, 2))
    codebook = np.empty((5, 2))
    gamma, eps = 0.9, 0.01
    expected_cluster = np.array([gamma * cluster[k] + (1 - gamma) * np.sum(codes == k) for k in range(5)])
    expected_weight = np.array([gamma * weight[k] + (1 - gamma) * z[codes == k].sum(0) for k in range(5)])
    n = expected_cluster.sum()
    smoothed = (expected_cluster + eps) / (n + 5 * eps) * n
    expected = expected_weight / smoothed[:, None]
    Q.codebook_ema_update(z, codes, codebook, cluster, weight, gamma, eps)
    assert_close(cluster, expected_cluster, "kernel", np.float64, "N")
    assert_close(weight, expected_weight, "kernel", np.float64, "m")
    assert_close(codebook, expected, "kernel", np.float64, "e")
    assert smoothed.sum() == pytest.approx(n, rel=1e-14)  # smoothing keeps the total


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ema_codebook_moves_only_in_training_mode_loss(dtype):
    """The EMA buffers start at N = 1 and m = e (e = m/Ñ holds at the start); forward, encode,
    quantize, perplexity, codebook_usage and an evaluation-mode loss leave them; a training-mode
    loss moves them."""
    model = VQVAE(channels=(2, 2), embedding_dim=2, num_embeddings=4, image_size=8, ema=True, rng=1, dtype=dtype)
    book = model.codebook
    np.testing.assert_array_equal(book.ema_cluster_size, np.ones(4, dtype))
    np.testing.assert_array_equal(book.ema_weight, book.weight)
    x = S.probabilities(np.random.default_rng(2), (2, 64)).astype(dtype)
    before = {k: v.copy() for k, v in model.named_buffers()}
    model.reconstruct(x)
    model.perplexity(x)
    model.codebook_usage(x)
    model.quantize(model.encode(x))
    model.eval()
    model.loss(x)
    for key, value in model.named_buffers():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    model.train()
    model.loss(x)
    assert not np.array_equal(book.ema_cluster_size, before["codebook.ema_cluster_size"])


def test_codebook_starts_uniform_in_plus_minus_one_over_k_from_the_models_generator():
    a, b = VQVAE(num_embeddings=50, rng=7), VQVAE(num_embeddings=50, rng=7)
    weight = a.codebook.weight.data
    assert weight.shape == (50, 16) and weight.dtype == np.float32
    assert np.abs(weight).max() <= 1 / 50 and np.abs(weight).max() > 0.9 / 50
    for (key, value), (_, other) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(value, other, err_msg=key)


def test_perplexity_of_known_frequencies():
    assert Q.perplexity(np.zeros(7, np.int64), 5) == 1.0  # one code: 0·log 0 = 0 for the others
    assert Q.perplexity(np.array([0, 1, 2, 3] * 3), 6) == pytest.approx(4.0, rel=1e-15)
    assert Q.perplexity(np.array([2, 2, 0, 5]), 6) == pytest.approx(2 ** 1.5, rel=1e-15)  # p = ½, ¼, ¼
    assert math.isnan(Q.perplexity(np.zeros(0, np.int64), 3))
    np.testing.assert_array_equal(Q.code_counts(np.array([[2, 2], [0, 5]]), 6), [1, 0, 2, 0, 0, 1])


# -- (4) ties ---------------------------------------------------------------------------------


def test_ties_go_to_the_first_index_as_in_torch():
    """Duplicated codebook rows, and distinct rows at equal distance: the first index wins, on
    both sides. Every value is a small dyadic number, so every distance is exact in either
    formula and every tie is a true tie, whatever order the products are summed in."""
    rng = np.random.default_rng(4)
    config = dict(embedding_dim=2, num_embeddings=6, image_size=8, channels=(2, 2))
    model = VQVAE(**config, rng=0, dtype=np.float64)
    base = rng.integers(-4, 5, (3, 2)) / 4
    model.codebook.vectors[...] = np.concatenate([base, base])  # rows 3..5 repeat rows 0..2
    z_e = rng.integers(-8, 9, (5, 2, 2, 2)) / 4  # (N, D, h, w) dyadic
    z_e[0, :, 0, 0] = base[1]  # exactly on a duplicated code: distance 0 twice
    twin = twin_of(model)
    _, codes = model.quantize(z_e)
    with torch.no_grad():
        _, torch_codes = twin.quantize(torch.from_numpy(z_e))
    np.testing.assert_array_equal(codes, torch_codes.numpy())
    assert codes.max() <= 2 and codes[0, 0, 0] == 1
    distances = ((_rows(z_e)[:, None, :] - model.codebook.vectors[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes.reshape(-1), [np.flatnonzero(d == d.min())[0] for d in distances])

    model.codebook.vectors[...] = [[1, 0], [0, 1], [-1, 0], [0, -1], [0.5, 0.5], [2, 2]]  # four at distance 1 from 0
    twin = twin_of(model)
    origin = np.zeros((1, 2, 2, 2))
    with torch.no_grad():
        assert twin.quantize(torch.from_numpy(origin))[1].flatten().tolist() == [4] * 4  # 0.5 beats 1
    assert model.quantize(origin)[1].flatten().tolist() == [4] * 4
    model.codebook.vectors[4] = [3, 3]
    twin = twin_of(model)
    with torch.no_grad():
        assert twin.quantize(torch.from_numpy(origin))[1].flatten().tolist() == [0] * 4
    assert model.quantize(origin)[1].flatten().tolist() == [0] * 4


# -- (5) training ------------------------------------------------------------------------------

STEPS, BATCH = 30, 32
TRAINING_CONFIG = dict(channels=(8, 16), embedding_dim=8, num_embeddings=32)


@pytest.mark.slow  # 30 Adam steps on real MNIST: `python -m pytest -m slow parity_tests/test_vq_vae.py`
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_adam_training_run_tracks_torch(name, ema, dtype):
    """30 Adam steps (lr 1e-3, weight_decay 1e-5, batch 32) on binarized MNIST from identical
    weights and batches: every loss part and the codes at every step, then every weight and
    buffer, agree with the twin's run (float32: each tensor in norm)."""
    images = (mnist_train_images(STEPS * BATCH) > 0.5).astype(dtype)
    model = VQVAE(**TRAINING_CONFIG, ema=ema, rng=0, dtype=dtype)
    assert model.name == name
    twin = twin_of(model)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-5)
    history, torch_history = [], []
    for step in range(STEPS):
        x = images[step * BATCH:(step + 1) * BATCH]
        tx = torch.from_numpy(x)
        codes = model.quantize(model.encode(x))[1]
        with torch.no_grad():
            np.testing.assert_array_equal(codes, twin.quantize(twin.encode(tx))[1].numpy(), err_msg=f"codes at step {step}")
        opt.zero_grad()
        parts = model.loss(x)
        model.backward()
        opt.step()
        topt.zero_grad()
        tparts = twin.loss(tx)
        tparts["loss"].backward()
        topt.step()
        history.append([parts[k] for k in sorted(PARTS)])
        torch_history.append([tparts[k].item() for k in sorted(PARTS)])
    history, torch_history = np.array(history), np.array(torch_history)
    assert history[-1, sorted(PARTS).index("loss")] < 0.95 * history[0, sorted(PARTS).index("loss")]
    assert_close(history, torch_history, "training", dtype, f"loss parts {sorted(PARTS)} over 30 steps")
    expected = {**{k: p.detach() for k, p in twin.named_parameters()}, **dict(twin.named_buffers())}
    ours = {**{k: p.data for k, p in model.named_parameters()}, **dict(model.named_buffers())}
    assert sorted(ours) == sorted(expected)
    for key, value in ours.items():
        check = assert_close if dtype == np.float64 else assert_close_in_norm
        check(value, expected[key].numpy(), "training", dtype, f"{key} after 30 steps")


# -- (6) errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("config, error, match", [
    (dict(channels=(4,)), ValueError, r"channels must be two positive ints"),
    (dict(channels="ab"), TypeError, r"channels must be two positive ints"),
    (dict(channels=(4, 0)), ValueError, r"channels\[1\] must be a positive int, got 0"),
    (dict(embedding_dim=0), ValueError, r"embedding_dim must be a positive int, got 0"),
    (dict(num_embeddings=True), TypeError, r"num_embeddings must be a positive int, got True \(bool\)"),
    (dict(num_embeddings=2.0), TypeError, r"num_embeddings must be a positive int"),
    (dict(beta=-0.1), ValueError, r"beta must be a finite number >= 0"),
    (dict(ema=1), TypeError, r"ema must be True or False, got 1"),
    (dict(decay=1.0), ValueError, r"decay must be a finite number >= 0 and < 1, got 1.0"),
    (dict(epsilon=0.0), ValueError, r"epsilon must be a finite number > 0"),
    (dict(image_size=30), ValueError, r"image_size must be a multiple of 4 .*, got 30"),
    (dict(image_size=2), ValueError, r"image_size must be an int >= 4"),
    (dict(in_channels=0), ValueError, r"in_channels must be a positive int"),
    (dict(dtype=np.int32), TypeError, r"dtype must be float32 or float64"),
    (dict(rng=-1), TypeError, r"rng must be a numpy.random.Generator"),
])
def test_bad_configuration_is_refused_naming_the_model(config, error, match):
    with pytest.raises(error, match=match) as raised:
        VQVAE(**config)
    assert str(raised.value).startswith("VQVAE(vq-vae):")


def test_bad_inputs_are_refused_with_clear_errors():
    model = VQVAE(channels=(2, 2), embedding_dim=2, num_embeddings=3, image_size=8, rng=0)
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(TypeError, match="float64 but the model's parameters are float32"):
        model.loss(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"must be \(N, 64\) or \(N, 1, 8, 8\) with N >= 1, got shape \(2, 1, 8, 9\)"):
        model.loss(np.zeros((2, 1, 8, 9), np.float32))
    with pytest.raises(ValueError, match="N >= 1"):
        model.loss(np.zeros((0, 64), np.float32))
    with pytest.raises(TypeError, match="NumPy array"):
        model.loss([[0.0] * 64])
    with pytest.raises(ValueError, match="deterministic and takes no noise"):
        model.loss(x, noise=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"z_q must be \(N, 2, 2, 2\) with N >= 1"):
        model.decode(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"z_e must have 4 dimensions"):
        model.quantize(np.zeros((2, 2), np.float32))
    with pytest.raises(RuntimeError, match="called before loss"):
        VQVAE(image_size=8, rng=0).backward()
    model.forward(x)
    with pytest.raises(RuntimeError, match="differentiates the last loss"):
        model.backward()
    model.loss(x)
    with pytest.raises(ValueError, match="grad_output is dL/d\\(loss\\), a real number"):
        model.backward(np.ones(3))
    with pytest.raises(ValueError, match=r"missing keys \['codebook.ema_cluster_size', 'codebook.ema_weight'\]"):
        VQVAE(channels=(2, 2), embedding_dim=2, num_embeddings=3, image_size=8, ema=True).load_state_dict(model.state_dict())
    assert VQVAE.noise_for(model.config, x.shape, np.random.default_rng(0), np.float32) is None
    assert VQVAE.config_for_images((3, 12, 12)) == {"in_channels": 3, "image_size": 12}
