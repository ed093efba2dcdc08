"""Modules per the contract: parameters with ``.data``/``.grad``, torch's ``state_dict`` keys."""

from scratch.nn.conv import Conv2d, ConvTranspose2d
from scratch.nn.dropout import Dropout, Dropout2d
from scratch.nn.inplace import InplaceModificationError
from scratch.nn.layers import (
    ELU,
    GELU,
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
    TiedLinear,
    Unflatten,
)
from scratch.nn.losses import BCELoss, BCEWithLogitsLoss, GaussianKL, MSELoss
from scratch.nn.module import Module, Parameter, Sequential
from scratch.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from scratch.nn.pooling import AvgPool2d, MaxPool2d, MaxUnpool2d
from scratch.nn.upsampling import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d

__all__ = [
    "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "Conv2d", "ConvTranspose2d", "Dropout", "Dropout2d", "MaxPool2d", "MaxUnpool2d", "Flatten", "GaussianKL", "InplaceModificationError",
    "LeakyReLU", "Linear", "MSELoss", "ELU", "GELU", "SiLU", "Softplus",
    "BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm",
    "Module", "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh", "TiedLinear", "Unflatten",
    "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d",
]
