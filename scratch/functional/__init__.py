"""The math as pure functions: ``*_forward(...) -> (out, cache)``, ``*_backward(dout, cache)``."""

from scratch.functional.activations import (
    elu_backward,
    elu_forward,
    gelu_backward,
    gelu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    silu_backward,
    silu_forward,
    softplus_backward,
    softplus_forward,
    tanh_backward,
    tanh_forward,
)
from scratch.functional.conv import (
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
)
from scratch.functional.dropout import dropout_backward, dropout_forward
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
from scratch.functional.mmd import mmd_backward, mmd_forward
from scratch.functional.normalization import (
    batch_norm_backward,
    batch_norm_forward,
    group_norm_backward,
    group_norm_forward,
    layer_norm_backward,
    layer_norm_forward,
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
from scratch.functional.quantize import vector_quantize_backward, vector_quantize_forward
from scratch.functional.upsampling import interpolate_backward, interpolate_forward
from scratch.functional.vae import (
    importance_weighted_bound_backward,
    importance_weighted_bound_forward,
    reparameterize_backward,
    reparameterize_forward,
)

__all__ = [name for name in dir() if name.endswith(("_forward", "_backward", "_bias", "_accumulate"))]
