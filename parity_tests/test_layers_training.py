"""A small convolutional autoencoder built from issue 17's layers, trained 30 Adam steps on real
MNIST in float64, tracks its torch twin: every loss, every weight *and* every buffer (the running
statistics and num_batches_tracked of its BatchNorms), and then its evaluation-mode output.

Its layers, in order: Conv2d, BatchNorm2d, LeakyReLU, Conv2d, GroupNorm, SiLU, Dropout2d,
Flatten, Linear, LayerNorm, GELU, Dropout, Linear, BatchNorm1d, ELU, Unflatten, Upsample
(nearest), Conv2d, Softplus, Upsample (bilinear), Conv2d, Sigmoid; BCE (mean) on binarized MNIST.
The twin is made of torch's own modules. Its dropouts draw from torch's generator, and each mask
is replayed (torch's RNG state before the call, restored, on a tensor of ones) and handed to
scratch's layer, so both sides drop the same units.
"""

from __future__ import annotations

import numpy as np
import torch

from parity_tests.mnist import mnist_train_images
from parity_tests.tolerances import assert_close
from scratch import nn, optim

STEPS, BATCH, DTYPE = 30, 64, np.float64


def _layers(dtype):
    """(scratch layer, torch layer) pairs, torch's built with the same arguments."""
    d = {"dtype": dtype}
    t = {"dtype": torch.float64}
    return [
        (nn.Conv2d(1, 4, 3, 2, 1, rng=1, **d), torch.nn.Conv2d(1, 4, 3, 2, 1, **t)),            # (N, 4, 14, 14)
        (nn.BatchNorm2d(4, **d), torch.nn.BatchNorm2d(4, **t)),
        (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (nn.Conv2d(4, 8, 3, 2, 1, rng=2, **d), torch.nn.Conv2d(4, 8, 3, 2, 1, **t)),            # (N, 8, 7, 7)
        (nn.GroupNorm(2, 8, **d), torch.nn.GroupNorm(2, 8, **t)),
        (nn.SiLU(), torch.nn.SiLU()),
        (nn.Dropout2d(0.1), torch.nn.Dropout2d(0.1)),
        (nn.Flatten(), torch.nn.Flatten()),                                                     # (N, 392)
        (nn.Linear(392, 16, rng=3, **d), torch.nn.Linear(392, 16, **t)),
        (nn.LayerNorm(16, **d), torch.nn.LayerNorm(16, **t)),
        (nn.GELU(), torch.nn.GELU()),
        (nn.Dropout(0.2), torch.nn.Dropout(0.2)),
        (nn.Linear(16, 392, rng=4, **d), torch.nn.Linear(16, 392, **t)),
        (nn.BatchNorm1d(392, momentum=None, **d), torch.nn.BatchNorm1d(392, momentum=None, **t)),
        (nn.ELU(), torch.nn.ELU()),
        (nn.Unflatten(1, (8, 7, 7)), torch.nn.Unflatten(1, (8, 7, 7))),
        (nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Upsample(scale_factor=2, mode="nearest")),  # 14x14
        (nn.Conv2d(8, 4, 3, 1, 1, rng=5, **d), torch.nn.Conv2d(8, 4, 3, 1, 1, **t)),
        (nn.Softplus(beta=2.0), torch.nn.Softplus(beta=2.0)),
        (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
         torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)),              # (N, 4, 28, 28)
        (nn.Conv2d(4, 1, 3, 1, 1, rng=6, **d), torch.nn.Conv2d(4, 1, 3, 1, 1, **t)),
        (nn.Sigmoid(), torch.nn.Sigmoid()),
    ]


class _Chain(nn.Module):
    """Layers applied in turn; a dropout layer is given its mask from ``masks`` (by position)."""

    def __init__(self, layers):
        super().__init__()
        for index, layer in enumerate(layers):
            setattr(self, str(index), layer)

    def forward(self, x, masks):
        for index, layer in enumerate(self.children()):
            x = layer(x, mask=masks[index]) if index in masks else layer(x)
        return x

    def backward(self, grad_output):
        for layer in reversed(list(self.children())):
            grad_output = layer.backward(grad_output)
        return grad_output


def _replaying_masks(twin: torch.nn.Sequential) -> dict:
    """Hooks that keep torch's RNG state before each dropout call and its input's shape; the
    returned dict's ``masks()`` replays them into the keep-masks torch drew."""
    states = {}
    for index, module in enumerate(twin):
        if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)):
            module.register_forward_pre_hook(
                lambda module, inputs, index=index: states.__setitem__(
                    index, (torch.get_rng_state(), inputs[0].shape)))

    def masks():
        replayed = {}
        current = torch.get_rng_state()
        for index, (state, shape) in states.items():
            torch.set_rng_state(state)
            keep = (twin[index](torch.ones(shape, dtype=torch.float64)) != 0).numpy()
            replayed[index] = keep[:, :, :1, :1] if isinstance(twin[index], torch.nn.Dropout2d) else keep
        torch.set_rng_state(current)
        return replayed
    return masks


def test_a_model_of_the_new_layers_trains_30_steps_like_its_torch_twin_running_statistics_included():
    pairs = _layers(DTYPE)
    model = _Chain([layer for layer, _ in pairs])
    twin = torch.nn.Sequential(*[layer for _, layer in pairs])
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    assert any(k.endswith("running_var") for k in model.state_dict()), "the buffers travel with the weights"
    masks_of = _replaying_masks(twin)
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    topt = torch.optim.Adam(twin.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn, torch_loss_fn = nn.BCELoss(), torch.nn.BCELoss()
    images = (mnist_train_images(STEPS * BATCH + BATCH) > 0.5).astype(DTYPE)
    torch.manual_seed(0)
    losses, torch_losses = [], []
    for step in range(STEPS):
        x = images[step * BATCH:(step + 1) * BATCH]
        topt.zero_grad()
        tloss = torch_loss_fn(twin(torch.from_numpy(x)), torch.from_numpy(x))
        tloss.backward()
        topt.step()
        torch_losses.append(tloss.item())
        opt.zero_grad()
        losses.append(loss_fn(model(x, masks_of()), x))
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < 0.9 * losses[0], f"the run should learn something in {STEPS} steps: {losses[0]} -> {losses[-1]}"
    assert_close(np.array(losses), np.array(torch_losses), "training", DTYPE, "losses")
    expected = twin.state_dict()
    assert list(model.state_dict()) == list(expected)
    for key, value in model.state_dict().items():
        assert_close(value, expected[key], "training", DTYPE, f"{key} after {STEPS} steps")
    assert int(model.state_dict()["1.num_batches_tracked"]) == STEPS
    held_out = images[STEPS * BATCH:]
    model.eval()
    twin.eval()
    with torch.no_grad():
        expected_output = twin(torch.from_numpy(held_out))
    assert_close(model(held_out, {}), expected_output, "training", DTYPE, "evaluation-mode output")
