"""The seed's convolutional autoencoder, with a Sigmoid output (the seed's Tanh fed BCE).

Geometry on 28x28 (DESIGN.md): Conv(1,16,3,s3,p1) ReLU MaxPool(2,2) Conv(16,8,3,s2,p1) ReLU
MaxPool(2,s1) | ConvT(8,16,3,s2) ReLU ConvT(16,8,5,s3,p1) ReLU ConvT(8,1,2,s2,p1) Sigmoid:
28 -> 10 -> 5 -> 3 -> 2 -> 5 -> 15 -> 28, 5,729 parameters. Channel widths are configurable;
the strides and kernels are the seed's and map 28x28 back to 28x28 only.
"""

from __future__ import annotations

import numpy as np

from scratch.models._inputs import MODEL_DTYPE, _owner, check_backward_ready, check_model_array, mark_pass
from scratch.models._latent import LatentMethods
from scratch.nn import BCELoss, Conv2d, ConvTranspose2d, MaxPool2d, Module, ReLU, Sequential, Sigmoid
from scratch.nn.inplace import backward_pass, forward_pass
from scratch.validate import check_array, check_float_dtype, check_integer, resolve_rng

IMAGE_SIZE = 28


def check_conv_config(owner, in_channels, channels, image_size):
    check_integer(in_channels, owner, "in_channels", minimum=1)
    if len(channels) != 2:
        raise ValueError(f"{owner}: channels must be two positive ints (the two conv widths), got {channels!r}")
    for index, width in enumerate(channels):
        check_integer(width, owner, f"channels[{index}]", minimum=1)
    if check_integer(image_size, owner, "image_size", minimum=1) != IMAGE_SIZE:
        raise ValueError(f"{owner}: the seed's geometry maps 28x28 images to 28x28 only, got image_size "
                         f"{image_size!r}; train it on an MNIST-format dataset (--dataset mnist)")


class ConvAutoencoder(LatentMethods, Module):
    """x (N, C, 28, 28) -> encoder -> (N, channels[1], 2, 2) -> decoder -> x̂ (N, C, 28, 28).

    ``state_dict`` keys: ``encoder.{0,3}.{weight,bias}``, ``decoder.{0,2,4}.{weight,bias}``.
    ``encode``/``decode`` speak images and codes (N, channels[1], 2, 2); ``interpolate`` takes one
    image (C, 28, 28) or a batch (N, C, 28, 28) each.
    """

    name = "conv-ae"

    def __init__(self, in_channels=1, channels=(16, 8), image_size=IMAGE_SIZE, *, rng=None, dtype=np.float32):
        super().__init__()
        owner = type(self).__name__
        channels = tuple(channels)
        check_conv_config(owner, in_channels, channels, image_size)
        dtype = check_float_dtype(dtype, owner)
        rng = resolve_rng(rng, owner)
        object.__setattr__(self, "rng", rng)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "_config", dict(in_channels=int(in_channels), channels=list(channels),
                                                 image_size=int(image_size)))
        wide, narrow = channels
        layer = dict(rng=rng, dtype=dtype)
        self.encoder = Sequential(
            Conv2d(in_channels, wide, 3, stride=3, padding=1, **layer), ReLU(), MaxPool2d(2, stride=2),
            Conv2d(wide, narrow, 3, stride=2, padding=1, **layer), ReLU(), MaxPool2d(2, stride=1),
        )
        self.decoder = Sequential(
            ConvTranspose2d(narrow, wide, 3, stride=2, **layer), ReLU(),
            ConvTranspose2d(wide, narrow, 5, stride=3, padding=1, **layer), ReLU(),
            ConvTranspose2d(narrow, in_channels, 2, stride=2, padding=1, **layer), Sigmoid(),
        )
        object.__setattr__(self, "loss_fn", BCELoss(reduction="mean"))

    @property
    def config(self) -> dict:
        return dict(self._config)

    @staticmethod
    def config_for_images(image_shape) -> dict:
        """Configuration that fits images of shape (C, H, W)."""
        return {"in_channels": int(image_shape[0]), "image_size": int(image_shape[1])}

    def _check_input(self, x, name="x"):
        owner = f"{type(self).__name__}({self.name})"
        check_array(x, owner, dtype=self.dtype, ndim=4, name=name, dtype_source=MODEL_DTYPE)
        expected = (self._config["in_channels"], IMAGE_SIZE, IMAGE_SIZE)
        if x.shape[1:] != expected or x.shape[0] == 0:
            raise ValueError(f"{owner}: {name} must be (N, {', '.join(map(str, expected))}) with N >= 1, got shape {x.shape}")

    def _check_batch(self, x, name="x"):
        self._check_input(x, name)

    def encode(self, x):
        """(N, C, 28, 28) -> (N, channels[1], 2, 2)."""
        self._check_input(x)
        return self.encoder(x)

    @forward_pass
    def decode(self, z):
        """(N, channels[1], 2, 2) -> (N, C, 28, 28) probabilities."""
        check_array(z, _owner(self), dtype=self.dtype, ndim=4, name="z", dtype_source=MODEL_DTYPE)
        expected = (self._config["channels"][1], 2, 2)
        if z.shape[1:] != expected or z.shape[0] == 0:
            raise ValueError(f"{_owner(self)}: z must be (N, {', '.join(map(str, expected))}) with N >= 1, "
                             f"got shape {z.shape}")
        return self.decoder(z)

    @forward_pass
    def forward(self, x):
        """Reconstruction x̂, (N, C, 28, 28)."""
        self._check_input(x)
        reconstruction = self.decoder(self.encoder(x))
        mark_pass(self, from_loss=False)
        return reconstruction

    @backward_pass
    def backward(self, grad_output=None, *, input_grad: bool = True):
        """Back-propagate dL/dx̂ (default: the last ``loss``'s) into every ``.grad``; returns dL/dx,
        or None when ``input_grad`` is False (then the first convolution skips computing it).
        From the loss, the BCE and the final Sigmoid back-propagate in one pass.
        ``grad_output`` must have x̂'s shape and the model's dtype; without it, the last call must
        have been ``loss``. Either is checked before any ``.grad`` changes."""
        check_backward_ready(self, needs_loss=grad_output is None, hint=" (or pass grad_output, dL/dx̂)")
        decoder = self.decoder
        if grad_output is not None:
            check_model_array(self, grad_output, "grad_output (dL/dx̂)", decoder[-1]._output_shape)
        if grad_output is None and isinstance(decoder[-1], Sigmoid):
            grad_logits = self.loss_fn.backward_through_sigmoid(decoder[-1])
            grad_z = decoder.backward(grad_logits, start=len(decoder) - 2)
        else:
            if grad_output is None:
                grad_output = self.loss_fn.backward()
            grad_z = decoder.backward(grad_output)
        return self.encoder.backward(grad_z, input_grad=input_grad)

    @staticmethod
    def noise_for(config, x_shape, rng, dtype):
        return None

    def reconstruct(self, x, noise=None):
        return self.forward(x)

    @forward_pass
    def loss(self, x, noise=None) -> dict:
        """BCE (mean over every element) between x̂ and x: ``{"loss", "recon"}``, floats."""
        if noise is not None:
            raise ValueError(f"ConvAutoencoder: conv-ae is deterministic and takes no noise, got {type(noise).__name__}")
        self._check_input(x)
        recon = self.loss_fn(self.decoder(self.encoder(x)), x)
        mark_pass(self, from_loss=True)
        return {"loss": recon, "recon": recon}
