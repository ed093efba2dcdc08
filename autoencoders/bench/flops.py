"""FLOP counts of the benchmarked work, from the layers' own shapes.

The counting rule, one rule for both sides (so GFLOP/s compare like with like):

- A multiply-add of a matrix product or a convolution counts **2 FLOPs**. Bias additions,
  activations, losses, pooling and optimizer updates are not counted (they are a small share
  of a training step's work, and memory-bound: see below).
- ``Linear(in, out)`` on M rows: forward ``2·M·in·out``; backward ``dW = 2·M·in·out`` and
  ``dx = 2·M·in·out``.
- A tied decoder (scratch ``TiedLinear``, torch ``torch_impl.models.regularized.TiedDecoder``),
  which maps with the transpose of another Linear's weight, counts as the ``Linear(in, out)`` it
  computes: the same three matrix products, its dW added into the shared weight's gradient. So
  tied-ae (784-H-784, one weight) counts what an untied 784-H-784 autoencoder counts: sharing a
  weight halves the parameters, not the arithmetic.
- ``Conv2d`` on (N, C_in, H, W) giving (N, C_out, H_out, W_out) with a kH x kW kernel: forward
  ``2·N·C_out·H_out·W_out·(C_in/groups)·kH·kW`` (padding taps count; they are multiplied by zero
  but an implementation does them or skips them as it likes); ``dW`` and ``dx`` the same each.
  Each output channel sees only its group's C_in/groups input channels.
- ``ConvTranspose2d`` on (N, C_in, H, W): every input element meets every kernel tap of every
  output channel of its group, ``2·N·C_in·H·W·(C_out/groups)·kH·kW``, also for taps that
  ``padding`` crops off the output; ``dW`` and ``dx`` the same each.
- Element-wise work (ReLU, LeakyReLU, Sigmoid, Tanh, the losses, the Gaussian KL), max-pooling
  and the optimizer steps count **0 FLOPs: they are memory-bound**. Their cases state instead
  the bytes they must read and write at least (each input read once, each output written once;
  ``autoencoders.bench.ops``), and report GB/s.
- A **training step** counts the matrix-product and convolution work that torch's autograd
  also does: the forward pass, ``dW`` of every layer, and ``dx`` of every layer EXCEPT the
  first one the forward pass calls, whose input is the data, which needs no gradient (torch
  does not compute it, and scratch need not). For the default mlp-ae (784-256-64-256-784) that
  is, per example, 3 x 2·(784·256 + 256·64 + 64·256 + 256·784) - 2·784·256 = 2,203,648 FLOPs.
- Penalties on the code count 0 too. The sparse-ae's KL or L1 penalty is element-wise on
  h (N, H). contractive-ae's penalty λ‖∂h/∂x‖²_F is computed by scratch in closed form,
  Σ_j (h_j (1 - h_j))² Σ_i W_ji², whose work is element-wise on h and on W (H, D), with no
  matrix product; its torch twin takes the Jacobian by autograd (H batched vector-Jacobian
  products, far more arithmetic) to serve as an oracle. Its GFLOP/s therefore rate both sides by
  the encoder's and decoder's products alone, like the sparse-ae's.

The layers and their geometry come from walking the scratch model (``named_modules()``:
``Linear``'s and ``TiedLinear``'s ``in_features``/``out_features``; ``Conv2d``/``ConvTranspose2d``
``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``). Only
the input shape a convolution sees depends on what runs before it; ``input_shapes`` records it,
and the order in which the layers run, from one forward pass of the model's torch twin (same
module names), whose forward pre-hooks see every layer whatever the scratch side fuses.
"""

from __future__ import annotations

import math
from typing import Mapping

from scratch.functional.conv import conv2d_output_size, padding_sides
from scratch.nn import Conv2d, ConvTranspose2d, Linear, TiedLinear

COUNTED = (Linear, TiedLinear, Conv2d, ConvTranspose2d)


def linear_flops(rows: int, in_features: int, out_features: int) -> int:
    """2·M·in·out: one matrix product of a Linear layer on ``rows`` rows (forward, dW or dx)."""
    return 2 * rows * in_features * out_features


def conv2d_flops(layer: Conv2d, input_shape) -> int:
    """2·N·C_out·H_out·W_out·(C_in/groups)·kH·kW: one Conv2d pass on ``input_shape`` (forward, dW or dx)."""
    n, _, height, width = input_shape
    sides = padding_sides(layer.padding, layer.kernel_size, layer.dilation)  # "same"/"valid" too
    # conv2d_output_size takes the padding of one side; an uneven split pads sum(sides) in all
    out_height, out_width = (
        conv2d_output_size(size + sum(sides[a]), layer.kernel_size[a], layer.stride[a], 0, layer.dilation[a])
        for a, size in enumerate((height, width)))
    kernel_height, kernel_width = layer.kernel_size
    in_per_group = layer.in_channels // layer.groups
    return 2 * n * layer.out_channels * out_height * out_width * in_per_group * kernel_height * kernel_width


def conv_transpose2d_flops(layer: ConvTranspose2d, input_shape) -> int:
    """2·N·C_in·H·W·(C_out/groups)·kH·kW: one ConvTranspose2d pass on ``input_shape`` (forward, dW or dx)."""
    n, _, height, width = input_shape
    kernel_height, kernel_width = layer.kernel_size
    out_per_group = layer.out_channels // layer.groups
    return 2 * n * layer.in_channels * height * width * out_per_group * kernel_height * kernel_width


def forward_flops(layer, input_shape) -> int:
    """The forward pass of a Linear, TiedLinear, Conv2d or ConvTranspose2d on ``input_shape``; 0 for
    any other module (element-wise and pooling work counts 0, being memory-bound)."""
    if isinstance(layer, (Linear, TiedLinear)):  # a TiedLinear is a Linear(in, out) with a borrowed weight
        return linear_flops(math.prod(input_shape[:-1]), layer.in_features, layer.out_features)
    if isinstance(layer, ConvTranspose2d):  # before Conv2d, in case one ever derives from the other
        return conv_transpose2d_flops(layer, input_shape)
    if isinstance(layer, Conv2d):
        return conv2d_flops(layer, input_shape)
    return 0


def backward_flops(layer, input_shape, input_gradient: bool = True) -> int:
    """dW (as many FLOPs as the forward pass) plus, when ``input_gradient``, dx (as many again)."""
    forward = forward_flops(layer, input_shape)
    return forward + (forward if input_gradient else 0)


def input_shapes(twin, x, noise=None, **conditions) -> list[tuple[str, tuple[int, ...]]]:
    """``(module name, input shape)`` of every Linear/Conv2d/ConvTranspose2d/TiedDecoder of the torch
    ``twin``, in the order its ``loss(x, noise)`` calls them (a module called twice appears twice).

    ``x`` and ``noise`` may be NumPy arrays or tensors (``conditions``: a conditional model's
    ``labels=``); nothing is back-propagated.
    """
    import torch

    from torch_impl.models.regularized import TiedDecoder

    counted = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d, TiedDecoder)

    def tensor(value):
        return None if value is None else torch.as_tensor(value)

    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in twin.named_modules():
        if isinstance(module, counted):
            def record(_module, inputs, _name=name):
                seen.append((_name, tuple(inputs[0].shape)))
            handles.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            twin.loss(tensor(x), noise=tensor(noise), **conditions)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def training_step_flops(model, shapes: list[tuple[str, tuple[int, ...]]]) -> dict:
    """The FLOPs of one training step of the scratch ``model`` (the module docstring's rule).

    ``shapes``: ``(module name, input shape)`` per layer call in forward order (``input_shapes``
    of the torch twin, or written by hand). Returns ``{"total", "forward", "grad_weight",
    "grad_input", "first_layer", "layers": [{"layer", "type", "input_shape", "forward",
    "grad_weight", "grad_input"}, ...]}``. Every counted layer of the model must appear in
    ``shapes`` (``ValueError`` otherwise: a layer left out would silently lower the count).
    """
    modules: Mapping[str, object] = dict(model.named_modules())
    counted = {name for name, module in modules.items() if isinstance(module, COUNTED)}
    missing = sorted(counted - {name for name, _ in shapes})
    if missing:
        raise ValueError(f"training_step_flops: no input shape for layers {missing}")
    layers = []
    for index, (name, shape) in enumerate(shapes):
        layer = modules[name]
        forward = forward_flops(layer, shape)
        layers.append({"layer": name, "type": type(layer).__name__, "input_shape": list(shape),
                       "forward": forward, "grad_weight": forward, "grad_input": forward if index > 0 else 0})
    totals = {key: sum(entry[key] for entry in layers) for key in ("forward", "grad_weight", "grad_input")}
    return {"total": sum(totals.values()), **totals, "first_layer": shapes[0][0] if shapes else None,
            "layers": layers}
