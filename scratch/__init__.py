"""Autoencoders from scratch: NumPy + Numba, every backward pass written out by hand.

Never imports torch at module level; see torch_impl for the PyTorch twins.
"""

from scratch import functional, nn, optim  # noqa: F401

__version__ = "0.1.0"
