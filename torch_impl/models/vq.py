"""Torch twin of scratch.models.vq: the VQ-VAE with the same layers, keys, configuration and
objective, written as a torch user writes it: autograd for every gradient, the stop-gradients
as ``.detach()`` where the paper puts its sg[·], the EMA update under ``torch.no_grad()``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torch_impl.models._latent import ImageExamples, LatentMethods


class EMACodebook(nn.Module):
    """The codebook of an EMA VQ-VAE: buffers ``weight`` (K, D), ``ema_cluster_size`` (K,) and
    ``ema_weight`` (K, D), in that order; no parameter. N starts at 1 and m at the codebook."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        weight = torch.empty(num_embeddings, embedding_dim).uniform_(-1.0 / num_embeddings, 1.0 / num_embeddings)
        self.register_buffer("weight", weight)
        self.register_buffer("ema_cluster_size", torch.ones(num_embeddings))
        self.register_buffer("ema_weight", weight.clone())


class VQVAE(ImageExamples, LatentMethods, nn.Module):
    """Twin of scratch's vq-vae: keys encoder.{0,2,4}, codebook.weight (an nn.Embedding; with
    ``ema`` an EMACodebook, + codebook.ema_cluster_size, codebook.ema_weight), decoder.{0,2,4}."""

    name = "vq-vae"

    def __init__(self, in_channels=1, channels=(32, 64), embedding_dim=16, num_embeddings=128, beta=0.25, ema=False,
                 decay=0.99, epsilon=1e-5, image_size=28, *, generator=None):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"VQVAE: image_size must be a multiple of 4, got {image_size}")
        narrow, wide = channels
        self.config = dict(in_channels=int(in_channels), channels=[int(narrow), int(wide)],
                           embedding_dim=int(embedding_dim), num_embeddings=int(num_embeddings), beta=float(beta),
                           ema=bool(ema), decay=float(decay), epsilon=float(epsilon), image_size=int(image_size))
        self.generator = generator  # unused: the model draws nothing
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, narrow, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(narrow, wide, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(wide, embedding_dim, 1))
        if ema:
            self.codebook = EMACodebook(num_embeddings, embedding_dim)
        else:
            self.codebook = nn.Embedding(num_embeddings, embedding_dim)
            nn.init.uniform_(self.codebook.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)
        self.decoder = nn.Sequential(nn.Conv2d(embedding_dim, wide, 3, 1, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(wide, narrow, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(narrow, in_channels, 4, 2, 1), nn.Sigmoid())

    def _decode_code(self, z_e):
        return self.decode(self.quantize(z_e)[0])  # interpolate: each mix quantised, as forward does

    def encode(self, x):
        """(N, C·S·S) or (N, C, S, S) -> z_e (N, D, S/4, S/4)."""
        size = self.config["image_size"]
        return self.encoder(x.reshape(x.shape[0], self.config["in_channels"], size, size))

    def _nearest(self, z_e):
        """(rows (M, D) of z_e, codes (M,)): argmin over ‖z‖² − 2 z·eᵀ + ‖e‖²."""
        rows = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])  # (M, D)
        with torch.no_grad():
            weight = self.codebook.weight
            distances = rows.pow(2).sum(1, keepdim=True) - 2 * rows @ weight.t() + weight.pow(2).sum(1)  # (M, K)
            codes = torch.argmin(distances, dim=1)
        return rows, codes

    def quantize(self, z_e):
        """(z_q, codes (N, S/4, S/4)); z_q = z_e + (e − z_e).detach(): e's value, z_e's gradient."""
        rows, codes = self._nearest(z_e)
        q_rows = F.embedding(codes, self.codebook.weight)  # (M, D)
        straight = rows + (q_rows - rows).detach()
        return self._images(straight, z_e), codes.reshape(z_e.shape[0], *z_e.shape[2:])

    @staticmethod
    def _images(rows, like):
        n, depth, height, width = like.shape
        return rows.reshape(n, height, width, depth).permute(0, 3, 1, 2)

    def decode(self, z_q):
        """(N, D, S/4, S/4) -> (N, C·S·S) probabilities."""
        return self.decoder(z_q).reshape(z_q.shape[0], -1)

    def forward(self, x, noise=None):
        return self.decode(self.quantize(self.encode(x))[0]).reshape(x.shape)

    def reconstruct(self, x, noise=None):
        return self.forward(x, noise)

    def loss(self, x, noise=None) -> dict:
        if noise is not None:
            raise ValueError(f"{self.name} is deterministic and takes no noise")
        flat = x.reshape(x.shape[0], -1)
        z_e = self.encode(x)
        rows, codes = self._nearest(z_e)
        q_rows = F.embedding(codes, self.codebook.weight)  # (M, D) e_{c_m}
        commitment = F.mse_loss(rows, q_rows.detach())  # β‖z_e − sg[e]‖²: moves the encoder
        if self.config["ema"]:
            codebook = torch.zeros((), dtype=rows.dtype)
        else:
            codebook = F.mse_loss(q_rows, rows.detach())  # ‖sg[z_e] − e‖²: moves the codebook
        straight = rows + (q_rows - rows).detach()  # the straight-through estimator
        probabilities = self.decode(self._images(straight, z_e))
        recon = F.binary_cross_entropy(probabilities, flat.detach(), reduction="mean")
        if self.config["ema"] and self.training:
            self._ema_update(rows.detach(), codes)
        loss = recon + codebook + self.config["beta"] * commitment
        return {"loss": loss, "recon": recon, "codebook": codebook, "commitment": commitment}

    @torch.no_grad()
    def _ema_update(self, rows, codes):
        book, decay, eps = self.codebook, self.config["decay"], self.config["epsilon"]
        num_embeddings = book.weight.shape[0]
        one_hot = F.one_hot(codes, num_embeddings).to(rows.dtype)  # (M, K)
        book.ema_cluster_size.mul_(decay).add_(one_hot.sum(0), alpha=1 - decay)
        book.ema_weight.mul_(decay).add_(one_hot.t() @ rows, alpha=1 - decay)
        n = book.ema_cluster_size.sum()
        smoothed = (book.ema_cluster_size + eps) / (n + num_embeddings * eps) * n
        book.weight.copy_(book.ema_weight / smoothed.unsqueeze(1))

    @torch.no_grad()
    def codebook_usage(self, x):
        _, codes = self._nearest(self.encode(x))
        return torch.bincount(codes, minlength=self.config["num_embeddings"])

    @torch.no_grad()
    def perplexity(self, x):
        counts = self.codebook_usage(x).double()
        p = counts / counts.sum()
        return torch.exp(-torch.special.xlogy(p, p).sum()).item()
