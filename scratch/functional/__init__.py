"""The math as pure functions: ``*_forward(...) -> (out, cache)``, ``*_backward(dout, cache)``."""

from scratch.functional.activations import (
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from scratch.functional.conv import (
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
)
from scratch.functional.linear import (
    activation_backward_bias,
    linear_activation_forward,
    linear_backward,
    linear_backward_accumulate,
    linear_forward,
)
from scratch.functional.losses import (
    bce_backward,
    bce_forward,
    bce_with_logits_backward,
    bce_with_logits_forward,
    gaussian_kl_backward,
    gaussian_kl_forward,
    mse_backward,
    mse_forward,
    sigmoid_bce_backward,
)
from scratch.functional.penalties import (
    contractive_backward,
    contractive_forward,
    kl_sparsity_backward,
    kl_sparsity_forward,
    l1_activity_backward,
    l1_activity_forward,
)
from scratch.functional.pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    max_unpool2d_backward,
    max_unpool2d_forward,
)
from scratch.functional.vae import reparameterize_backward, reparameterize_forward

__all__ = [name for name in dir() if name.endswith(("_forward", "_backward", "_bias", "_accumulate"))]
