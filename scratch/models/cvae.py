"""The conditional VAE (Sohn, Lee & Yan 2015), in the form of the common MNIST tutorials.

The label y (class indices 0..C−1, shape (N,)) enters as a one-hot vector e_y concatenated to
the encoder's input, q(z | x, y), and to the decoder's, p(x | z, y). Everything else is the
VAE's (scratch/models/vae.py): the loss is BCE summed over pixels and images + β·KL summed
likewise, ε (N, latent_dim) is the ``noise`` argument. Derivation: docs/cvae.md.

Concatenation splits fc1's weight into an x-part and a label-part, W = [W_x | W_y], so
W·[x; e_y] = W_x x + W_y[:, y]: the label adds column y of W_y, a class-dependent bias, and the
gradient of that column is the sum over the examples of class y of dL/d(pre-activation). The
same holds for fc3's label columns.
"""

from __future__ import annotations

import math

import numpy as np

from scratch import functional as F
from scratch.models._inputs import MODEL_DTYPE, mark_pass
from scratch.models._latent import interpolation_inputs, mix_codes
from scratch.models.vae import _positive, _Variational
from scratch.nn import Linear, ReLU, Sigmoid
from scratch.nn.inplace import forward_pass, watch
from scratch.validate import check_array


class ConditionalVAE(_Variational):
    """CVAE on the pytorch/examples VAE: fc1 (D+C)-400 ReLU, fc21/fc22 400-20 (μ, logvar),
    fc3 (20+C)-400 ReLU, fc4 400-D Sigmoid; C = ``num_classes``. Keys fc1, fc21, fc22, fc3, fc4.
    660,824 parameters (the VAE's 652,824 plus the 2·10·400 label columns of fc1 and fc3).

    The labels are a required keyword argument wherever a layer reads them: ``loss(x, noise=None,
    *, labels)``, ``forward``/``reconstruct(x, noise=None, *, labels)``, ``encode(x, labels)``,
    ``decode(z, labels)``, ``sample(labels, noise=None)``, ``interpolate(x1, x2, steps=10, *, labels)``:
    an integer array of shape (N,), each in [0, num_classes) ((1,) for ``interpolate`` between two
    single examples). Refused labels raise before any layer runs or any noise is drawn.
    """

    name = "cvae"

    def __init__(self, input_dim=784, hidden_dim=400, latent_dim=20, num_classes=10, beta=1.0, *, rng=None,
                 dtype=np.float32):
        super().__init__()
        owner = f"{type(self).__name__}({self.name})"
        _positive(owner, input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim, num_classes=num_classes)
        if not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"{owner}: beta must be a non-negative number, got {beta!r}")
        rng, dtype = self._setup(owner, input_dim, latent_dim, rng, dtype,
                                 dict(hidden_dim=int(hidden_dim), num_classes=int(num_classes), beta=float(beta)))
        layer = dict(rng=rng, dtype=dtype)
        self.fc1 = Linear(input_dim + num_classes, hidden_dim, **layer)  # [x, e_y] -> h
        self.fc21 = Linear(hidden_dim, latent_dim, **layer)
        self.fc22 = Linear(hidden_dim, latent_dim, **layer)
        self.fc3 = Linear(latent_dim + num_classes, hidden_dim, **layer)  # [z, e_y] -> h
        self.fc4 = Linear(hidden_dim, input_dim, **layer)
        self.relu1, self.relu3, self.sigmoid = ReLU(), ReLU(), Sigmoid()

    # -- the labels ---------------------------------------------------------------------------
    def check_labels(self, labels, n: int | None = None) -> np.ndarray:
        """``labels`` if it is an integer array of shape (n,) (any n >= 1 when n is None) whose
        entries lie in [0, num_classes); otherwise a TypeError/ValueError naming the model."""
        owner = f"{type(self).__name__}({self.name})"
        classes = self._config["num_classes"]
        what = f"an integer array of class indices of shape ({'N' if n is None else n},), each in [0, {classes})"
        if labels is None:
            raise TypeError(f"{owner}: labels are required: {what}")
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"{owner}: labels must be {what}; got {type(labels).__name__}")
        if labels.dtype.kind not in "iu":
            hint = " (class indices, not floats or a one-hot matrix: the model builds the one-hot)" \
                if labels.dtype.kind in "fc" else ""
            raise TypeError(f"{owner}: labels must be {what}; got dtype {labels.dtype}{hint}")
        if labels.ndim != 1 or (n is not None and len(labels) != n) or len(labels) == 0:
            got = f"shape {labels.shape}" + (f" for a batch of {n}" if n is not None else "")
            raise ValueError(f"{owner}: labels must be {what} (one per image); got {got}")
        outside = (labels < 0) | (labels >= classes)
        if outside.any():
            index = int(np.argmax(outside))
            raise ValueError(f"{owner}: labels must lie in [0, {classes}) (num_classes={classes}); "
                             f"got {labels[index]} at index {index}")
        return labels

    def one_hot(self, labels, n: int | None = None) -> np.ndarray:
        """e_y: (N, num_classes) in the model's dtype, row i the unit vector of class labels[i]."""
        labels = self.check_labels(labels, n)
        encoded = np.zeros((len(labels), self._config["num_classes"]), dtype=self.dtype)
        encoded[np.arange(len(labels)), labels] = 1
        return encoded

    # -- encoder and decoder --------------------------------------------------------------------
    def _encode(self, flat, one_hot):
        h = self.fc1.forward_fused(np.concatenate([flat, one_hot], axis=1), self.relu1)  # relu1(fc1([x, e_y]))
        return self.fc21(h), self.fc22(h)  # (N, latent) each

    @forward_pass
    def encode(self, x, labels):
        """(N, D) or (N, C, H, W) with labels (N,) -> (mean, logvar) of q(z | x, y), each (N, latent_dim)."""
        flat = self._flatten_input(x)
        return self._encode(flat, self.one_hot(labels, len(flat)))

    def _encoder_backward(self, grad_mean, grad_logvar, input_grad=True):
        grad_h = self.fc21.backward(grad_mean) + self.fc22.backward(grad_logvar)
        # fc1's weight gradient takes all D + C columns: the label columns' part is Σ over the
        # examples of each class of dL/d(pre-activation) (docs/cvae.md)
        grad_input = self.fc1.backward_fused(grad_h, self.relu1, input_grad=input_grad)  # (N, D + C)
        if grad_input is None:
            return None
        # dL/de_y exists (grad_input[:, D:]) but the one-hot is a constant of the labels: dropped
        return np.ascontiguousarray(grad_input[:, :self._config["input_dim"]])

    def _decode(self, z, one_hot):
        return self.sigmoid(self.fc4(self.fc3.forward_fused(np.concatenate([z, one_hot], axis=1), self.relu3)))

    @forward_pass
    def decode(self, z, labels):
        """(N, latent_dim) with labels (N,) -> (N, D) Bernoulli means of p(x | z, y)."""
        owner = f"{type(self).__name__}({self.name})"
        check_array(z, owner, dtype=self.dtype, ndim=2, name="z", dtype_source=MODEL_DTYPE)
        if z.shape[1] != self._config["latent_dim"] or z.shape[0] == 0:
            raise ValueError(f"{owner}: z must be (N, {self._config['latent_dim']}) with N >= 1, got shape {z.shape}")
        return self._decode(z, self.one_hot(labels, len(z)))

    def _decoder_backward_from_loss(self):
        grad_logits = self.bce.backward_through_sigmoid(self.sigmoid)
        grad_latent = self.fc3.backward_fused(self.fc4.backward(grad_logits), self.relu3)  # (N, latent + C)
        # as in the encoder: fc3's label columns got their gradient; dL/de_y is dropped
        return np.ascontiguousarray(grad_latent[:, :self._config["latent_dim"]])

    @forward_pass
    def sample(self, labels, noise=None):
        """Generate images of chosen classes: z ~ N(0, I) (or ``noise``, (N, latent_dim)) decoded
        with ``labels`` (N,); returns (N, D) Bernoulli means. ``labels = np.repeat(np.arange(10),
        8)`` draws eight of each digit."""
        labels = self.check_labels(labels)  # before any noise is drawn
        return self._decode(self._prior(len(labels), noise), self.one_hot(labels))

    @forward_pass
    def interpolate(self, x1, x2, steps=10, *, labels):
        """Decode the path between the posterior means μ(x1, y), μ(x2, y), with y = ``labels``.

        Parameters
        ----------
        x1, x2 : one example each, (D,) or (C, H, W), or two batches of the same shape (N, ...)
        steps : int >= 2, the number of points, both endpoints included
        labels : (N,) integer classes, (1,) for single examples: pair n is encoded, and every mix
            of it decoded, with class labels[n]

        Returns
        -------
        (steps, *x1.shape) probabilities: row k decodes (1 − t)·μ1 + t·μ2, t = k/(steps − 1).
        """
        steps, both = interpolation_inputs(self, x1, x2, steps)
        one_hot = self.one_hot(labels, len(both) // 2)  # after x, before any layer runs
        mean, _ = self._encode(self._flatten_input(both), np.tile(one_hot, (2, 1)))
        return self._decode(mix_codes(mean, steps), np.tile(one_hot, (steps, 1))).reshape(steps, *x1.shape)

    # -- the passes: the VAE's, with the labels carried to both halves ----------------------------
    def _forward(self, x, noise, labels):
        flat = self._flatten_input(x)
        # labels, then ε, checked (or drawn) before the encoder runs: a refusal changes no
        # layer's cache and draws nothing from the generator
        one_hot = self.one_hot(labels, len(flat))
        eps = self._noise(len(flat), noise)
        mean, logvar = self._encode(flat, one_hot)
        z, reparameterization = F.reparameterize_forward(mean, logvar, eps)
        probabilities = self._decode(z, one_hot)
        object.__setattr__(self, "_state", (x.shape, mean, logvar, reparameterization))
        object.__setattr__(self, "_watches", watch(self, (("noise (ε)", reparameterization[0]),), (x, noise)))
        return flat, probabilities

    @forward_pass
    def forward(self, x, noise=None, *, labels):
        """A sampled reconstruction x̂ of x given its labels (the Bernoulli means), in x's shape."""
        _, probabilities = self._forward(x, noise, labels)
        mark_pass(self, from_loss=False)
        return probabilities.reshape(x.shape)

    def reconstruct(self, x, noise=None, *, labels):
        return self.forward(x, noise, labels=labels)

    @forward_pass
    def loss(self, x, noise=None, *, labels) -> dict:
        """{"loss": BCE + β·KL, "recon": BCE, "kl": KL}, each summed over the batch (floats)."""
        return self._elbo_parts(*self._forward(x, noise, labels))

    def kl_per_dimension(self, x, noise=None, *, labels) -> np.ndarray:
        """Mean over the batch of each latent dimension's KL term, (latent_dim,)."""
        mean, logvar = self.encode(x, labels)
        return F.gaussian_kl_forward(mean, logvar, "none")[0].mean(axis=0)

    # backward(input_grad=True) is _Variational's: dL/dz from the decoder, the reparameterisation,
    # the KL's own gradients, then the encoder; it returns dL/dx (the x columns of fc1's input).
