"""Modules per the contract: parameters with ``.data``/``.grad``, torch's ``state_dict`` keys."""

from scratch.nn.conv import Conv2d, ConvTranspose2d
from scratch.nn.inplace import InplaceModificationError
from scratch.nn.layers import Flatten, LeakyReLU, Linear, ReLU, Sigmoid, Tanh, TiedLinear, Unflatten
from scratch.nn.losses import BCELoss, BCEWithLogitsLoss, GaussianKL, MSELoss
from scratch.nn.module import Module, Parameter, Sequential
from scratch.nn.pooling import AvgPool2d, MaxPool2d, MaxUnpool2d

__all__ = [
    "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "Conv2d", "ConvTranspose2d", "MaxPool2d", "MaxUnpool2d", "Flatten", "GaussianKL", "InplaceModificationError",
    "LeakyReLU", "Linear", "MSELoss",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh", "TiedLinear", "Unflatten",
]
