"""Evaluation mode for the length of a call, on either backend's model."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def evaluation_mode(model):
    """Put ``model`` (a scratch or a torch Module) and all its submodules in evaluation mode for
    the block (BatchNorm on its running statistics, Dropout the identity), then give every module
    back the mode it had, as torch's ``train()``/``eval()`` flags."""
    modes = [(module, module.training) for _, module in model.named_modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
