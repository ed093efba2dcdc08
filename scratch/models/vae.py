"""Variational autoencoders: the pytorch/examples VAE, the seed's variant, and the β-VAE.

ELBO and gradients: docs/vae.md. The loss is summed over the batch, as pytorch/examples does:
BCE(x̂, x) summed over pixels and images + β · KL(q(z|x) ‖ N(0, I)) summed likewise; metrics
divide by the batch size to report nats per image. z = μ + σ·ε with σ = exp(½·logvar) is sampled
in evaluation too; ε (N, latent_dim) is the ``noise`` argument, drawn from the model's
generator when not given.
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.models._inputs import FlatInputModel, check_backward_ready, check_model_array, flatten_image_input, mark_pass
from scratch.models._latent import PriorSampling
from scratch.nn import BCELoss, GaussianKL, Linear, ReLU, Sequential, Sigmoid
from scratch.nn.inplace import backward_pass, forward_pass, watch
from scratch.validate import check_float_dtype, check_integer, resolve_rng


def _positive(owner, **values):
    for label, value in values.items():
        check_integer(value, owner, label, minimum=1)


class _Variational(PriorSampling, FlatInputModel):
    """Shared plumbing: input checks, sampling, the summed BCE + weighted KL, and its backward.

    ``sample(n, noise=None)`` decodes n draws z ~ N(0, I) (the model's generator); ``interpolate``
    mixes the posterior means μ(x1), μ(x2) and decodes the mixes (no ε: a deterministic path).
    """

    name = "vae"
    loss_reduction = "sum"  # loss parts are sums over the batch; divide by N for per-image values

    def _setup(self, owner, input_dim, latent_dim, rng, dtype, config):
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        object.__setattr__(self, "rng", rng)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_config", dict(input_dim=int(input_dim), latent_dim=int(latent_dim), **config))
        object.__setattr__(self, "bce", BCELoss(reduction="sum"))
        object.__setattr__(self, "kl", GaussianKL(reduction="sum"))
        object.__setattr__(self, "_state", None)
        return rng, dtype

    @staticmethod
    def noise_for(config: dict, x_shape, rng: np.random.Generator, dtype) -> np.ndarray:
        """ε ~ N(0, I), (N, latent_dim)."""
        return rng.standard_normal((x_shape[0], config.get("latent_dim", 20))).astype(dtype)

    def draw_noise(self, shape) -> np.ndarray:
        return self.noise_for(self._config, shape, self.rng, self.dtype)

    def _noise(self, n, noise):
        latent = self._config["latent_dim"]
        if noise is None:
            return self.noise_for(self._config, (n,), self.rng, self.dtype)
        return check_model_array(self, noise, "noise (ε)", (n, latent))

    # -- subclasses supply the encoder and decoder ------------------------------------------
    def encode(self, x):
        """(N, D) or (N, C, H, W) -> (mean, logvar), each (N, latent_dim)."""
        raise NotImplementedError

    def _encoder_backward(self, grad_mean, grad_logvar, input_grad=True):
        raise NotImplementedError

    def decode(self, z):
        """(N, latent_dim) -> (N, D) Bernoulli means."""
        raise NotImplementedError

    def _decoder_backward_from_loss(self):
        """dL/dz from the last BCE, through the decoder: the BCE and the Sigmoid in one pass."""
        raise NotImplementedError

    def _code(self, x):
        return self.encode(x)[0]  # the posterior mean μ: interpolate's deterministic code

    # -- the shared passes ----------------------------------------------------------------
    def _forward(self, x, noise):
        flat = self._flatten_input(x)
        # ε is checked (or drawn) before the encoder runs, so that refused noise changes no
        # layer's cache; the encoder draws nothing, so the generator's sequence is unchanged.
        eps = self._noise(len(flat), noise)
        mean, logvar = self.encode(flat)
        z, reparameterization = F.reparameterize_forward(mean, logvar, eps)
        probabilities = self.decode(z)
        object.__setattr__(self, "_state", (x.shape, mean, logvar, reparameterization))
        # dlogvar reads ε: the noise passed in (a view of it) is watched for in-place edits
        object.__setattr__(self, "_watches", watch(self, (("noise (ε)", reparameterization[0]),), (x, noise)))
        return flat, probabilities

    @forward_pass
    def forward(self, x, noise=None):
        """A sampled reconstruction x̂ (the Bernoulli means), in x's shape."""
        _, probabilities = self._forward(x, noise)
        mark_pass(self, from_loss=False)
        return probabilities.reshape(x.shape)

    def reconstruct(self, x, noise=None):
        return self.forward(x, noise)

    def kl_weight(self, kl: float, batch_size: int) -> float:
        """dL/dKL: β for the plain objective (1 for the VAE)."""
        return float(self._config.get("beta", 1.0))

    def _objective(self, recon: float, kl: float, batch_size: int) -> float:
        return recon + self.kl_weight(kl, batch_size) * kl

    @forward_pass
    def loss(self, x, noise=None) -> dict:
        """{"loss": BCE + β·KL, "recon": BCE, "kl": KL}, each summed over the batch (floats)."""
        return self._elbo_parts(*self._forward(x, noise))

    def _elbo_parts(self, flat, probabilities) -> dict:
        """The loss parts of the pass ``_forward`` just made, marked as a loss for ``backward``."""
        recon = self.bce(probabilities, flat)
        _, mean, logvar, _ = self._state
        kl = self.kl(mean, logvar)
        object.__setattr__(self, "_kl_weight", self.kl_weight(kl, len(flat)))
        mark_pass(self, from_loss=True)
        return {"loss": self._objective(recon, kl, len(flat)), "recon": recon, "kl": kl}

    def kl_per_dimension(self, x, noise=None) -> np.ndarray:
        """Mean over the batch of each latent dimension's KL term, (latent_dim,)."""
        mean, logvar = self.encode(self._flatten_input(x))
        return F.gaussian_kl_forward(mean, logvar, "none")[0].mean(axis=0)

    @backward_pass
    def backward(self, grad_output=None, *, input_grad: bool = True):
        """Back-propagate the last ``loss`` into every parameter's ``.grad``; returns dL/dx, or
        None when ``input_grad`` is False (then the first layer skips computing it).

        dL/dz comes from the decoder (its final Sigmoid back-propagated together with the BCE,
        ``BCELoss.backward_through_sigmoid``); the reparameterisation splits it into dμ and
        dlogvar, to which the weighted KL's own gradients are added before the encoder's pass.
        """
        if grad_output is not None:
            raise ValueError(f"{type(self).__name__}.backward takes no gradient: it differentiates the last loss; "
                             f"got grad_output {type(grad_output).__name__}")
        check_backward_ready(self, needs_loss=True)
        shape, mean, logvar, reparameterization = self._state
        grad_z = self._decoder_backward_from_loss()
        grad_mean, grad_logvar = F.reparameterize_backward(grad_z, reparameterization)
        kl_mean, kl_logvar = self.kl.backward(self._kl_weight)
        grad_input = self._encoder_backward(grad_mean + kl_mean, grad_logvar + kl_logvar, input_grad)
        return None if grad_input is None else grad_input.reshape(shape)


class VariationalAutoencoder(_Variational):
    """The pytorch/examples VAE: fc1 D-400 ReLU, fc21/fc22 400-20 (μ, logvar), fc3 20-400 ReLU,
    fc4 400-D Sigmoid. Keys fc1, fc21, fc22, fc3, fc4 as there. 652,824 parameters."""

    name = "vae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, beta=1.0, *, rng=None, dtype=np.float32):
        super().__init__()
        owner = type(self).__name__
        _positive(owner, input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim)
        if not (isinstance(beta, (int, float)) and beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"{owner}: beta must be a non-negative number, got {beta!r}")
        rng, dtype = self._setup(owner, input_dim, latent_dim, rng, dtype,
                                 dict(hidden_dim=int(hidden_dim), beta=float(beta)))
        layer = dict(rng=rng, dtype=dtype)
        self.fc1 = Linear(input_dim, hidden_dim, **layer)
        self.fc21 = Linear(hidden_dim, latent_dim, **layer)
        self.fc22 = Linear(hidden_dim, latent_dim, **layer)
        self.fc3 = Linear(latent_dim, hidden_dim, **layer)
        self.fc4 = Linear(hidden_dim, input_dim, **layer)
        self.relu1, self.relu3, self.sigmoid = ReLU(), ReLU(), Sigmoid()

    @forward_pass
    def encode(self, x):
        h = self.fc1.forward_fused(self._flatten_input(x), self.relu1)  # relu1(fc1(x)), (N, hidden)
        return self.fc21(h), self.fc22(h)  # (N, latent) each

    def _encoder_backward(self, grad_mean, grad_logvar, input_grad=True):
        grad_h = self.fc21.backward(grad_mean) + self.fc22.backward(grad_logvar)
        return self.fc1.backward_fused(grad_h, self.relu1, input_grad=input_grad)

    @forward_pass
    def decode(self, z):
        return self.sigmoid(self.fc4(self.fc3.forward_fused(z, self.relu3)))

    def _decoder_backward_from_loss(self):
        return self._decoder_backward_from_logits(self.bce.backward_through_sigmoid(self.sigmoid))

    def _decoder_backward_from_logits(self, grad_logits):
        return self.fc3.backward_fused(self.fc4.backward(grad_logits), self.relu3)


class SeedVAE(_Variational):
    """The seed project's own VAE: encoder D-400-(2·latent) whose output is split into μ and
    logvar, decoder latent-400-D. The seed put a ReLU on μ and logvar, which forces σ ≥ 1 and
    μ ≥ 0; that bug is not reproduced. Keys encoder.{0,2}, decoder.{0,2}. 652,824 parameters."""

    name = "seed-vae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, beta=1.0, *, rng=None, dtype=np.float32):
        super().__init__()
        owner = type(self).__name__
        _positive(owner, input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim)
        rng, dtype = self._setup(owner, input_dim, latent_dim, rng, dtype,
                                 dict(hidden_dim=int(hidden_dim), beta=float(beta)))
        layer = dict(rng=rng, dtype=dtype)
        self.encoder = Sequential(Linear(input_dim, hidden_dim, **layer), ReLU(), Linear(hidden_dim, 2 * latent_dim, **layer))
        self.decoder = Sequential(Linear(latent_dim, hidden_dim, **layer), ReLU(), Linear(hidden_dim, input_dim, **layer), Sigmoid())

    def encode(self, x):
        h = self.encoder(self._flatten_input(x))  # (N, 2·latent)
        latent = self._config["latent_dim"]
        return np.ascontiguousarray(h[:, :latent]), np.ascontiguousarray(h[:, latent:])

    def _encoder_backward(self, grad_mean, grad_logvar, input_grad=True):
        return self.encoder.backward(np.concatenate([grad_mean, grad_logvar], axis=1), input_grad=input_grad)

    def decode(self, z):
        return self.decoder(z)

    def _decoder_backward_from_loss(self):
        grad_logits = self.bce.backward_through_sigmoid(self.decoder[-1])
        return self.decoder.backward(grad_logits, start=len(self.decoder) - 2)


class BetaVAE(VariationalAutoencoder):
    """β-VAE (Higgins et al. 2017): the VAE with the KL weighted by β (default 4); or, with
    ``capacity_max`` set, the capacity-controlled objective of Burgess et al. 2018,
    BCE + γ·N·|KL/N − C| = BCE + γ·|KL − N·C| for a batch of N (BCE and KL summed over it, C in
    nats per image), C raised linearly from 0 to capacity_max over capacity_steps training steps
    (counted by ``loss`` calls in training mode; ``step`` holds the count)."""

    name = "beta-vae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, beta=4.0, capacity_max=None,
                 capacity_steps=10_000, gamma=1000.0, *, rng=None, dtype=np.float32):
        super().__init__(input_dim, hidden_dim, latent_dim, beta, rng=rng, dtype=dtype)
        owner = type(self).__name__
        if capacity_max is not None and not (capacity_max >= 0 and math.isfinite(capacity_max)):
            raise ValueError(f"{owner}: capacity_max must be a non-negative number of nats, got {capacity_max!r}")
        _positive(owner, capacity_steps=capacity_steps)
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"{owner}: gamma must be a non-negative number, got {gamma!r}")
        self._config.update(capacity_max=None if capacity_max is None else float(capacity_max),
                            capacity_steps=int(capacity_steps), gamma=float(gamma))
        object.__setattr__(self, "step", 0)

    def capacity(self) -> float:
        """C at the current step: capacity_max · min(1, step / capacity_steps)."""
        config = self._config
        return config["capacity_max"] * min(1.0, self.step / config["capacity_steps"])

    def kl_weight(self, kl: float, batch_size: int) -> float:
        if self._config["capacity_max"] is None:
            return self._config["beta"]
        # d|u|/du = sign(u), 0 at 0 (as torch's abs)
        return self._config["gamma"] * float(np.sign(kl - batch_size * self.capacity()))

    def _objective(self, recon: float, kl: float, batch_size: int) -> float:
        if self._config["capacity_max"] is None:
            return recon + self._config["beta"] * kl
        return recon + self._config["gamma"] * abs(kl - batch_size * self.capacity())

    def loss(self, x, noise=None) -> dict:
        parts = super().loss(x, noise)
        if self.training:
            object.__setattr__(self, "step", self.step + 1)
        return parts


class _ConvVariational(_Variational):
    """The image plumbing of the convolutional VAEs: (N, D) or (N, C, H, W) in, flat (N, D) out of
    ``encode``/``decode``, so the evaluation code serves every VAE alike; the subclass builds
    ``encoder`` (ending in Flatten), ``fc21``/``fc22`` and ``decoder`` (ending in Sigmoid)."""

    @staticmethod
    def config_for_images(image_shape) -> dict:
        return {"in_channels": int(image_shape[0]), "image_size": int(image_shape[1])}

    def _image_shape(self, n):
        size = self._config["image_size"]
        return (n, self._config["in_channels"], size, size)

    def _flatten_input(self, x, name="x"):
        return flatten_image_input(self, x, self._image_shape(0)[1:], name)

    @forward_pass
    def encode(self, x):
        flat = self._flatten_input(x)
        h = self.encoder(flat.reshape(self._image_shape(len(flat))))  # (N, features)
        return self.fc21(h), self.fc22(h)

    def _encoder_backward(self, grad_mean, grad_logvar, input_grad=True):
        grad_h = self.fc21.backward(grad_mean) + self.fc22.backward(grad_logvar)
        grad_x = self.encoder.backward(grad_h, input_grad=input_grad)  # (N, C, H, W)
        return None if grad_x is None else grad_x.reshape(len(grad_x), -1)

    def decode(self, z):
        return self.decoder(z).reshape(len(z), -1)  # (N, D)

    def _decoder_backward(self, grad_probabilities):
        return self.decoder.backward(grad_probabilities.reshape(self._image_shape(len(grad_probabilities))))

    def _decoder_backward_from_loss(self):
        grad_logits = self.bce.backward_through_sigmoid(self.decoder[-1])  # (N, C, H, W)
        return self.decoder.backward(grad_logits, start=len(self.decoder) - 2)


class ConvVAE(_ConvVariational):
    """A convolutional VAE on 28x28: encoder Conv(C,c1,4,s2,p1) ReLU Conv(c1,c2,4,s2,p1) ReLU
    Flatten -> fc21/fc22 (μ, logvar); decoder Linear(latent, c2·7·7) ReLU Unflatten ConvT(c2,c1,
    4,s2,p1) ReLU ConvT(c1,C,4,s2,p1) Sigmoid: 28 -> 14 -> 7 -> latent -> 7 -> 14 -> 28.

    Like the MLP VAEs it takes (N, D) or (N, C, 28, 28) and its ``encode``/``decode`` speak flat
    (N, D) images, so the evaluation code serves every VAE alike.
    """

    name = "conv-vae"

    def __init__(self, in_channels=1, channels=(32, 64), latent_dim=20, image_size=28, beta=1.0, input_dim=None, *,
                 rng=None, dtype=np.float32):
        super().__init__()
        owner = type(self).__name__
        from scratch.models.conv import check_conv_config
        from scratch.nn import Conv2d, ConvTranspose2d, Flatten, Unflatten

        channels = tuple(channels)
        check_conv_config(owner, in_channels, channels, image_size)
        _positive(owner, latent_dim=latent_dim)
        if input_dim is not None and check_integer(input_dim, owner, "input_dim", minimum=1) \
                != in_channels * image_size * image_size:
            raise ValueError(f"{owner}: input_dim {input_dim} disagrees with in_channels·image_size² = "
                             f"{in_channels * image_size * image_size} (it follows from them; leave it out)")
        input_dim = in_channels * image_size * image_size
        rng, dtype = self._setup(owner, input_dim, latent_dim, rng, dtype,
                                 dict(in_channels=int(in_channels), channels=list(channels),
                                      image_size=int(image_size), beta=float(beta)))
        narrow, wide = channels
        layer = dict(rng=rng, dtype=dtype)
        features = wide * 7 * 7
        self.encoder = Sequential(Conv2d(in_channels, narrow, 4, stride=2, padding=1, **layer), ReLU(),
                                  Conv2d(narrow, wide, 4, stride=2, padding=1, **layer), ReLU(), Flatten())
        self.fc21 = Linear(features, latent_dim, **layer)
        self.fc22 = Linear(features, latent_dim, **layer)
        self.decoder = Sequential(Linear(latent_dim, features, **layer), ReLU(), Unflatten(1, (wide, 7, 7)),
                                  ConvTranspose2d(wide, narrow, 4, stride=2, padding=1, **layer), ReLU(),
                                  ConvTranspose2d(narrow, in_channels, 4, stride=2, padding=1, **layer), Sigmoid())


def conv_sizes(image_size: int, blocks: int) -> list[int]:
    """The encoder's feature-map sizes for Conv2d(3, stride 2, padding 1) blocks:
    s_{k+1} = ⌊(s_k + 2·1 - 3)/2⌋ + 1 = ⌈s_k/2⌉; 28 -> 14 -> 7 -> 4 for three blocks."""
    sizes = [int(image_size)]
    for _ in range(blocks):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


def transpose_output_paddings(sizes) -> list[int]:
    """The output_padding of each ConvTranspose2d(3, stride 2, padding 1) that retraces ``sizes``
    in reverse: it maps s to 2·s - 1 + output_padding, so output_padding = target - (2·s - 1),
    which is 0 or 1 (< stride) since s = ⌈target/2⌉; 4 -> 7 -> 14 -> 28 takes 0, 1, 1."""
    backwards = list(reversed(sizes))
    return [target - (2 * size - 1) for size, target in zip(backwards, backwards[1:])]


class DeepConvVAE(_ConvVariational):
    """PyTorch-VAE's vanilla VAE (Subramanian 2020) scaled to 28x28, with a Sigmoid output for BCE.

    Encoder: one block per width h in ``hidden_dims``: Conv2d(in, h, 3, s2, p1, bias=False)
    BatchNorm2d(h) LeakyReLU(0.01), then Flatten and fc21/fc22 (μ, logvar). Decoder: Linear(latent,
    h_last·s·s) Unflatten, one block per width in reverse: ConvTranspose2d(3, s2, p1, output_padding
    from the sizes, bias=False) BatchNorm2d LeakyReLU, the last block back to hidden_dims[0] at the
    image size, then Conv2d(hidden_dims[0], C, 3, p1) Sigmoid. Sizes with (32, 64, 128) on 28x28:
    28 -> 14 -> 7 -> 4 -> latent -> 4 -> 7 -> 14 -> 28.

    The convolutions in front of a BatchNorm have no bias (PyTorch-VAE's have one): training-mode
    BatchNorm subtracts the batch mean again, so such a bias changes nothing, its exact gradient
    is 0 and the computed one is rounding noise that Adam would turn into steps of ±lr
    (docs/vae.md#batchnorm-in-a-vae). BatchNorm normalises with the batch's statistics in
    training mode and with its running statistics in evaluation mode (``model.eval()``); the
    running statistics are buffers in ``state_dict`` (``running_mean``, ``running_var``,
    ``num_batches_tracked``). Keys: encoder.{0,3,6} (conv weights), encoder.{1,4,7} (BatchNorm),
    fc21, fc22, decoder.0 (Linear), decoder.{2,5,8} (transposed convs), decoder.{3,6,9}
    (BatchNorm), decoder.11 (the output conv), for three widths.
    """

    name = "deep-conv-vae"

    def __init__(self, in_channels=1, hidden_dims=(32, 64, 128), latent_dim=20, image_size=28, beta=1.0,
                 input_dim=None, *, rng=None, dtype=np.float32):
        super().__init__()
        owner = f"{type(self).__name__}({self.name})"
        from scratch.nn import BatchNorm2d, Conv2d, ConvTranspose2d, Flatten, LeakyReLU, Unflatten

        check_integer(in_channels, owner, "in_channels", minimum=1)
        if isinstance(hidden_dims, (str, bytes)) or not hasattr(hidden_dims, "__iter__"):
            raise TypeError(f"{owner}: hidden_dims must be a sequence of positive ints (one conv block per "
                            f"width), got {hidden_dims!r}")
        hidden_dims = tuple(hidden_dims)
        if not hidden_dims:
            raise ValueError(f"{owner}: hidden_dims must hold at least one width, got {hidden_dims!r}")
        for index, width in enumerate(hidden_dims):
            check_integer(width, owner, f"hidden_dims[{index}]", minimum=1)
        _positive(owner, latent_dim=latent_dim, image_size=image_size)
        if not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"{owner}: beta must be a non-negative number, got {beta!r}")
        if input_dim is not None and check_integer(input_dim, owner, "input_dim", minimum=1) \
                != in_channels * image_size * image_size:
            raise ValueError(f"{owner}: input_dim {input_dim} disagrees with in_channels·image_size² = "
                             f"{in_channels * image_size * image_size} (it follows from them; leave it out)")
        input_dim = in_channels * image_size * image_size
        hidden_dims = tuple(int(width) for width in hidden_dims)
        rng, dtype = self._setup(owner, input_dim, latent_dim, rng, dtype,
                                 dict(in_channels=int(in_channels), hidden_dims=list(hidden_dims),
                                      image_size=int(image_size), beta=float(beta)))
        layer = dict(rng=rng, dtype=dtype)
        sizes = conv_sizes(image_size, len(hidden_dims))
        last, side = hidden_dims[-1], sizes[-1]
        encoder, width = [], in_channels
        for h in hidden_dims:
            encoder += [Conv2d(width, h, 3, stride=2, padding=1, bias=False, **layer), BatchNorm2d(h, dtype=dtype),
                        LeakyReLU()]
            width = h
        self.encoder = Sequential(*encoder, Flatten())
        features = last * side * side
        self.fc21 = Linear(features, latent_dim, **layer)
        self.fc22 = Linear(features, latent_dim, **layer)
        widths = list(reversed(hidden_dims)) + [hidden_dims[0]]  # the last block keeps the first width
        decoder = [Linear(latent_dim, features, **layer), Unflatten(1, (last, side, side))]
        for (wide, narrow), padding in zip(zip(widths, widths[1:]), transpose_output_paddings(sizes)):
            decoder += [ConvTranspose2d(wide, narrow, 3, stride=2, padding=1, output_padding=padding, bias=False,
                                        **layer), BatchNorm2d(narrow, dtype=dtype), LeakyReLU()]
        self.decoder = Sequential(*decoder, Conv2d(hidden_dims[0], in_channels, 3, padding=1, **layer), Sigmoid())
