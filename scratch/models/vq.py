"""The VQ-VAE (van den Oord, Vinyals and Kavukcuoglu 2017, "Neural Discrete Representation
Learning"), scaled to 28x28 binarized MNIST. Derivations: docs/vq-vae.md.

x (N, C, S, S) -> encoder -> z_e (N, D, S/4, S/4) -> nearest codebook vectors z_q -> decoder ->
x̂ (N, C, S, S), with one of K codes per latent position (7x7 = 49 codes per 28x28 image).
The quantisation itself: ``scratch/functional/quantize.py``.
"""

from __future__ import annotations

import numpy as np

from scratch.functional import quantize as Q
from scratch.models._inputs import (
    MODEL_DTYPE,
    FlatInputModel,
    check_backward_ready,
    check_loss_scale,
    flatten_image_input,
    mark_pass,
)
from scratch.models._latent import LatentMethods
from scratch.nn import BCELoss, Conv2d, ConvTranspose2d, Module, Parameter, ReLU, Sequential, Sigmoid
from scratch.nn.inplace import backward_pass, forward_pass
from scratch.validate import check_array, check_float_dtype, check_integer, check_real_number, resolve_rng


class Codebook(Module):
    """K vectors of D numbers, ``weight`` (K, D): torch's ``nn.Embedding(K, D)`` layout and key.

    ``ema=False``: ``weight`` is a Parameter, trained by the codebook loss's gradient.
    ``ema=True``: ``weight`` is a buffer that ``Q.codebook_ema_update`` sets, beside the buffers
    ``ema_cluster_size`` (K,), the moving average N of how many rows chose each code, and
    ``ema_weight`` (K, D), the moving average m of their sums; in ``state_dict`` in that order
    (``codebook.weight``, ``codebook.ema_cluster_size``, ``codebook.ema_weight``). They start at
    N = 1 and m = the initial codebook: each code a cluster of one, itself, so that e = m/Ñ is
    the initial codebook until data moves it (docs/vq-vae.md#starting-the-averages).
    Initialised uniform(−1/K, 1/K) from the model's generator, as common PyTorch VQ-VAE code does.
    """

    def __init__(self, num_embeddings, embedding_dim, ema=False, *, rng, dtype):
        super().__init__()
        bound = 1.0 / num_embeddings
        initial = rng.uniform(-bound, bound, (num_embeddings, embedding_dim)).astype(dtype)  # (K, D)
        object.__setattr__(self, "ema", bool(ema))
        if ema:
            self.register_buffer("weight", initial)
            self.register_buffer("ema_cluster_size", np.ones(num_embeddings, dtype=dtype))
            self.register_buffer("ema_weight", initial.copy())
        else:
            self.weight = Parameter(initial)

    @property
    def vectors(self) -> np.ndarray:
        """The codebook e (K, D) itself (not a copy), whether it is a Parameter or a buffer."""
        return self.weight if self.ema else self.weight.data

    def extra_repr(self) -> str:
        return f"{self.vectors.shape[0]}, {self.vectors.shape[1]}" + (", ema=True" if self.ema else "")


def _sequence_of_two(owner, name, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{owner}: {name} must be two positive ints (the two conv widths), got {value!r}")
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"{owner}: {name} must be two positive ints (the two conv widths), got {value!r}")
    return tuple(check_integer(width, owner, f"{name}[{index}]", minimum=1) for index, width in enumerate(value))


class VQVAE(LatentMethods, FlatInputModel):
    """The VQ-VAE: a convolutional encoder, a codebook of K vectors and a convolutional decoder.

    Architecture (the paper's shape, two stride-2 convolutions down and two up, without its
    residual blocks, scaled down for a CPU): encoder Conv2d(C, c1, 4, 2, 1) ReLU Conv2d(c1, c2,
    4, 2, 1) ReLU Conv2d(c2, D, 1) -> z_e (N, D, S/4, S/4); decoder Conv2d(D, c2, 3, 1, 1) ReLU
    ConvTranspose2d(c2, c1, 4, 2, 1) ReLU ConvTranspose2d(c1, C, 4, 2, 1) Sigmoid. On 28x28:
    28 -> 14 -> 7 (49 codes per image) -> 14 -> 28. ``image_size`` may be any multiple of 4.
    Keys: ``encoder.{0,2,4}``, ``codebook.weight`` (+ ``codebook.ema_cluster_size``,
    ``codebook.ema_weight`` with ``ema``), ``decoder.{0,2,4}``; 79,057 parameters by default.

    K = 128 codes of D = 16 numbers instead of the paper's 512 of 64: those quantise 32x32
    colour images (and 128x128 ImageNet crops) with a wide residual network; 49 positions of
    7 bits each (343 bits) are more than binarized 28x28 digits need, a smaller codebook stays
    better used (higher perplexity), and the (M, K) distance matrix, M = 49·N, stays cheap.
    β = 0.25 is the paper's.

    Objective (``loss``), with sg the stop-gradient and means over all elements:

        loss = recon + codebook + β·commitment
        recon = mean BCE(x̂, x) over the N·C·S·S pixels (binarized MNIST: Bernoulli; the paper's
                CIFAR and ImageNet models use a Gaussian, i.e. a mean squared error)
        codebook = mean (sg[z_e] − z_q)² over the M·D elements of z_e (Sonnet's reduction)
        commitment = mean (z_e − sg[z_q])²   (the same value; it moves the encoder only)

    The decoder reads z_q, and its gradient is copied to z_e unchanged (the straight-through
    estimator, z_e + sg[z_q − z_e]). With ``ema=True`` the codebook is not a parameter: every
    training-mode ``loss`` call moves it by exponential moving averages (decay γ, Laplace
    smoothing ε; ``Q.codebook_ema_update``), after computing the loss with the codebook as it
    was, and "codebook" is reported as 0.0 (the key stays, so that both settings report the same
    parts: loss = recon + 0.0 + β·commitment). Evaluation mode (``model.eval()``) and every other
    method leave the codebook as it is.

    The model is deterministic: ``noise`` must be None (``noise_for`` returns None).

    ``encode(x)`` returns z_e (N, D, S/4, S/4), the encoder's continuous output, before
    quantisation (the paper's z_e(x)); ``quantize(z_e)`` -> (z_q, codes (N, S/4, S/4) int64);
    ``decode(z_q)`` -> x̂ as flat (N, C·S·S) probabilities, for any (N, D, S/4, S/4) latent
    (codebook vectors, or anything else).

    ``interpolate(x1, x2, steps)`` mixes the continuous codes z_e(x1), z_e(x2) and decodes each mix
    as ``reconstruct`` decodes z_e: quantised first, decode(quantize(z_t)). The decoder only ever
    saw codebook vectors; the path is piecewise constant, jumping where a position's nearest code
    changes. Row 0 is the reconstruction of x1, the last x2's. The model has no prior: no ``sample``.
    """

    name = "vq-vae"

    def __init__(self, in_channels=1, channels=(32, 64), embedding_dim=16, num_embeddings=128, beta=0.25, ema=False,
                 decay=0.99, epsilon=1e-5, image_size=28, *, rng=None, dtype=np.float32):
        super().__init__()
        owner = f"{type(self).__name__}({self.name})"
        in_channels = check_integer(in_channels, owner, "in_channels", minimum=1)
        narrow, wide = _sequence_of_two(owner, "channels", channels)
        embedding_dim = check_integer(embedding_dim, owner, "embedding_dim", minimum=1)
        num_embeddings = check_integer(num_embeddings, owner, "num_embeddings", minimum=1)
        beta = check_real_number(beta, owner, "beta", minimum=0)
        if not isinstance(ema, (bool, np.bool_)):
            raise TypeError(f"{owner}: ema must be True or False, got {ema!r} ({type(ema).__name__})")
        decay = check_real_number(decay, owner, "decay", minimum=0, below=1)
        epsilon = check_real_number(epsilon, owner, "epsilon", minimum=0)
        if epsilon == 0:
            raise ValueError(f"{owner}: epsilon must be a finite number > 0 (the EMA's Laplace smoothing keeps "
                             f"every code's count above 0), got {epsilon!r}")
        image_size = check_integer(image_size, owner, "image_size", minimum=4)
        if image_size % 4:
            raise ValueError(f"{owner}: image_size must be a multiple of 4 (two stride-2 convolutions down and two "
                             f"transposed ones back up), got {image_size}")
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        object.__setattr__(self, "rng", rng)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_config", dict(
            in_channels=in_channels, channels=[narrow, wide], embedding_dim=embedding_dim,
            num_embeddings=num_embeddings, beta=beta, ema=bool(ema), decay=decay, epsilon=epsilon,
            image_size=image_size))
        layer = dict(rng=rng, dtype=dtype)
        self.encoder = Sequential(Conv2d(in_channels, narrow, 4, stride=2, padding=1, **layer), ReLU(),
                                  Conv2d(narrow, wide, 4, stride=2, padding=1, **layer), ReLU(),
                                  Conv2d(wide, embedding_dim, 1, **layer))
        self.codebook = Codebook(num_embeddings, embedding_dim, ema, **layer)
        self.decoder = Sequential(Conv2d(embedding_dim, wide, 3, stride=1, padding=1, **layer), ReLU(),
                                  ConvTranspose2d(wide, narrow, 4, stride=2, padding=1, **layer), ReLU(),
                                  ConvTranspose2d(narrow, in_channels, 4, stride=2, padding=1, **layer), Sigmoid())
        object.__setattr__(self, "bce", BCELoss(reduction="mean"))
        object.__setattr__(self, "_state", None)

    # -- configuration and inputs ----------------------------------------------------------
    @staticmethod
    def config_for_images(image_shape) -> dict:
        """Configuration that fits images of shape (C, H, W), H = W a multiple of 4."""
        return {"in_channels": int(image_shape[0]), "image_size": int(image_shape[1])}

    @staticmethod
    def noise_for(config: dict, x_shape, rng: np.random.Generator, dtype) -> None:
        """The VQ-VAE is deterministic: no noise."""
        return None

    def _image_shape(self) -> tuple[int, int, int]:
        size = self._config["image_size"]
        return self._config["in_channels"], size, size

    def _latent_shape(self) -> tuple[int, int, int]:
        side = self._config["image_size"] // 4
        return self._config["embedding_dim"], side, side

    def _flatten_input(self, x, name="x"):
        return flatten_image_input(self, x, self._image_shape(), name)

    def _check_latent(self, z, name):
        """z must be (N, D, S/4, S/4), N >= 1, in the model's dtype."""
        owner = f"{type(self).__name__}({self.name})"
        check_array(z, owner, dtype=self.dtype, ndim=4, name=name, dtype_source=MODEL_DTYPE)
        expected = self._latent_shape()
        if z.shape[1:] != expected or z.shape[0] == 0:
            raise ValueError(f"{owner}: {name} must be (N, {', '.join(map(str, expected))}) with N >= 1 "
                             f"(embedding_dim, image_size / 4, image_size / 4), got shape {z.shape}")
        return z

    def _refuse_noise(self, noise) -> None:
        if noise is not None:
            raise ValueError(f"{type(self).__name__}: {self.name} is deterministic and takes no noise, "
                             f"got {type(noise).__name__}")

    # -- the pieces --------------------------------------------------------------------------
    @forward_pass
    def encode(self, x: np.ndarray) -> np.ndarray:
        """(N, C·S·S) or (N, C, S, S) -> z_e (N, D, S/4, S/4), the encoder's output before quantisation."""
        flat = self._flatten_input(x)
        return self.encoder(flat.reshape(len(flat), *self._image_shape()))

    def _quantize_rows(self, z_e: np.ndarray):
        """z_e (N, D, h, w) -> (z_q (N, D, h, w), codes (N, h, w), the quantiser's cache over M = N·h·w rows)."""
        n, depth, height, width = z_e.shape
        rows = np.ascontiguousarray(z_e.transpose(0, 2, 3, 1)).reshape(-1, depth)  # (M, D) channels last
        q_rows, codes, cache = Q.vector_quantize_forward(rows, self.codebook.vectors)  # (M, D), (M,)
        z_q = np.ascontiguousarray(q_rows.reshape(n, height, width, depth).transpose(0, 3, 1, 2))  # (N, D, h, w)
        return z_q, codes.reshape(n, height, width), cache

    def quantize(self, z_e: np.ndarray):
        """z_e (N, D, S/4, S/4) -> (z_q, codes): z_q the nearest codebook vectors (same shape), codes
        (N, S/4, S/4) int64 their indices (ties to the first index, as torch.argmin)."""
        self._check_latent(z_e, "z_e")
        z_q, codes, _ = self._quantize_rows(z_e)
        return z_q, codes

    def _decode_code(self, z_e):
        return self.decode(self.quantize(z_e)[0])  # interpolate: each mix quantised, as reconstruct does

    @forward_pass
    def decode(self, z_q: np.ndarray) -> np.ndarray:
        """z_q (N, D, S/4, S/4) -> x̂ (N, C·S·S), Bernoulli means."""
        self._check_latent(z_q, "z_q")
        return self.decoder(z_q).reshape(len(z_q), -1)

    # -- the passes --------------------------------------------------------------------------
    def _forward(self, x):
        flat = self._flatten_input(x)  # (N, C·S·S)
        z_e = self.encode(flat)  # (N, D, h, w)
        z_q, codes, cache = self._quantize_rows(z_e)
        probabilities = self.decode(z_q)  # (N, C·S·S)
        object.__setattr__(self, "_state", (x.shape, cache))
        return flat, probabilities, cache

    @forward_pass
    def forward(self, x: np.ndarray, noise=None) -> np.ndarray:
        """The reconstruction x̂ = decode(quantize(encode(x))), in x's shape."""
        self._refuse_noise(noise)
        _, probabilities, _ = self._forward(x)
        mark_pass(self, from_loss=False)
        return probabilities.reshape(x.shape)

    def reconstruct(self, x: np.ndarray, noise=None) -> np.ndarray:
        return self.forward(x, noise)

    @forward_pass
    def loss(self, x: np.ndarray, noise=None) -> dict:
        """``{"loss": recon + codebook + β·commitment, "recon", "codebook", "commitment"}``, floats
        (class docstring). With ``ema`` in training mode, then moves the codebook (its EMA update)."""
        self._refuse_noise(noise)
        flat, probabilities, cache = self._forward(x)
        recon = self.bce(probabilities, flat)
        error = float(Q.quantization_error(cache))
        config = self._config
        codebook = 0.0 if config["ema"] else error
        mark_pass(self, from_loss=True)
        if config["ema"] and self.training:
            z_rows, _, codes, _ = cache
            book = self.codebook
            Q.codebook_ema_update(z_rows, codes, book.weight, book.ema_cluster_size, book.ema_weight,
                                  config["decay"], config["epsilon"])
        return {"loss": recon + codebook + config["beta"] * error, "recon": recon, "codebook": codebook,
                "commitment": error}

    @backward_pass
    def backward(self, grad_output=None, *, input_grad: bool = True):
        """Back-propagate the last ``loss`` into every parameter's ``.grad``; returns dL/dx in x's
        shape, through the encoder with the target x held fixed (it is data), or None when
        ``input_grad`` is False. ``grad_output``: dL/d(loss), default 1.

        dL/dz_q from the decoder (its Sigmoid back-propagated together with the BCE); the
        quantiser's backward copies it into dL/dz_e and adds the commitment gradient (straight
        through), and puts the codebook loss's gradient into ``codebook.weight.grad`` (none with
        ``ema``); then the encoder's pass.
        """
        upstream = 1.0 if grad_output is None else check_loss_scale(self, grad_output)
        check_backward_ready(self, needs_loss=True)
        shape, cache = self._state
        config = self._config
        grad_logits = self.bce.backward_through_sigmoid(self.decoder[-1], upstream)  # (N, C, S, S)
        grad_z_q = self.decoder.backward(grad_logits, start=len(self.decoder) - 2)  # (N, D, h, w)
        n, depth, height, width = grad_z_q.shape
        grad_rows = np.ascontiguousarray(grad_z_q.transpose(0, 2, 3, 1)).reshape(-1, depth)  # (M, D)
        grad_rows, grad_codebook = Q.vector_quantize_backward(
            grad_rows, cache, codebook_weight=0.0 if config["ema"] else upstream,
            commitment_weight=config["beta"] * upstream)
        if not config["ema"]:
            self.codebook.weight.grad += grad_codebook  # (K, D)
        grad_z_e = np.ascontiguousarray(grad_rows.reshape(n, height, width, depth).transpose(0, 3, 1, 2))
        grad_input = self.encoder.backward(grad_z_e, input_grad=input_grad)  # (N, C, S, S)
        return None if grad_input is None else grad_input.reshape(shape)

    # -- codebook statistics -------------------------------------------------------------------
    def codebook_usage(self, x: np.ndarray) -> np.ndarray:
        """How many of the batch's N·(S/4)² latent positions chose each code: (K,) int64. (It runs
        the encoder, as ``encode`` does: call ``loss`` again before a ``backward``.)"""
        _, codes = self.quantize(self.encode(x))
        return Q.code_counts(codes, self._config["num_embeddings"])

    def perplexity(self, x: np.ndarray) -> float:
        """exp of the entropy of the batch's code frequencies: 1 (one code used) to K (all equally).
        (It runs the encoder, as ``encode`` does: call ``loss`` again before a ``backward``.)"""
        _, codes = self.quantize(self.encode(x))
        return Q.perplexity(codes, self._config["num_embeddings"])
