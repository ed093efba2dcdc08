"""jax twins of the models' training step: a ``jax.jit`` peer for the speed benchmark.

Twinned (``TWINS``): every registered model, ``mlp-ae``, ``denoising-ae``, ``conv-ae``, ``vae``,
``seed-vae``, ``beta-vae`` (without ``capacity_max``), ``conv-vae``, ``sparse-ae``,
``contractive-ae`` and ``tied-ae``. Each loss is its torch twin's (``torch_impl.models``) written
in ``jax.numpy`` / ``jax.lax``: the same layers, parameters keyed by the twin's ``state_dict`` keys
in torch's layouts, the same reductions and noise semantics, and ``F.binary_cross_entropy``'s
forward (logs clamped at -100) and backward (``(p - y) / max(p (1 - p), float32(1e-12))``).
``JaxTrainingStep`` compiles value_and_grad and ``torch.optim.Adam``'s update (single-tensor,
non-decoupled weight decay) into one ``jax.jit`` function.

Equality is proven in ``parity_tests/test_bench_jax.py``: in float64 the loss and every gradient
equal the torch twin's (rtol 1e-10), the weights after one and three steps equal
``torch.optim.Adam``'s, and in float32 the fused step's loss equals torch's.

jax is optional: it is imported inside functions only, so this module imports without it;
``available()`` and ``unavailable_reason()`` say whether it can run.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

__all__ = ["TWINS", "JaxTrainingStep", "available", "enable_x64", "loss_function", "parameter_shapes",
           "resolve_config", "unavailable_reason"]

TWINS: tuple[str, ...] = ("mlp-ae", "denoising-ae", "conv-ae", "vae", "seed-vae", "beta-vae", "conv-vae",
                          "sparse-ae", "contractive-ae", "tied-ae")
NOISY = frozenset({"denoising-ae", "vae", "seed-vae", "beta-vae", "conv-vae"})
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's and F.leaky_relu's default
# torch's binary_cross_entropy_backward: (p - y) / max(p (1 - p), EPSILON), EPSILON a C++ float
# 1e-12 (9.9999999600e-13 once widened; the float64 gradient shows it: 1 / EPSILON = 1.000000004e12)
BCE_EPSILON = float(np.float32(1e-12))
INSTALL_HINT = "pip install 'autoencoders[jax]'"


# ---------------------------------------------------------------------------- availability


def unavailable_reason() -> str | None:
    """Why the jax twins cannot run here (one line), or None when jax imports."""
    try:
        import jax  # noqa: F401
    except ImportError as error:
        return f"jax is not installed ({INSTALL_HINT}): {error}"
    return None


def available() -> bool:
    """True when jax imports, so that the twins can run."""
    return unavailable_reason() is None


def _jax():
    """The jax module, or an ImportError naming the extra that installs it."""
    reason = unavailable_reason()
    if reason is not None:
        raise ImportError(reason)
    import jax

    return jax


@contextlib.contextmanager
def enable_x64():
    """Scoped float64 in jax (``jax.enable_x64(True)``, or ``jax.experimental.enable_x64()`` on old jax)."""
    jax = _jax()
    try:
        from jax.experimental import enable_x64 as legacy
    except ImportError:
        manager = jax.enable_x64(True)
    else:
        manager = legacy()
    with manager:
        yield


# ---------------------------------------------------------------------------- configuration


def resolve_config(name: str, config: dict | None = None) -> dict:
    """Model ``name``'s full configuration: the registry's defaults updated with ``config``.

    Raises
    ------
    ValueError
        ``name`` has no jax twin, ``config`` has a key the model does not take, or a choice
        (activation, loss, noise, penalty, image size) the twin does not know.
    NotImplementedError
        beta-vae with ``capacity_max`` (its objective depends on the training step).
    """
    if not isinstance(name, str) or name not in TWINS:
        raise ValueError(f"no jax twin of model {name!r}; the jax twins are {', '.join(TWINS)}")
    from scratch.models import spec
    from scratch.models.mlp import DEFAULT_NOISE_LEVEL
    from scratch.models.regularized import DEFAULT_SPARSITY_WEIGHT

    config = dict(config or {})
    model = spec(name)
    unknown = sorted(set(config) - model.options)
    if unknown:
        raise ValueError(f"{name}: unknown configuration key(s) {unknown}; it takes {sorted(model.options)}")
    resolved = {**model.defaults, **config}
    if "activation" in resolved and resolved["activation"] not in ACTIVATIONS:
        raise ValueError(f"{name}: unknown activation {resolved['activation']!r}; choose one of {ACTIVATIONS}")
    if name in ("mlp-ae", "denoising-ae") and resolved["loss"] not in ("bce", "mse"):
        raise ValueError(f"{name}: unknown loss {resolved['loss']!r}; choose 'bce' or 'mse'")
    if name == "denoising-ae":
        if resolved["noise"] not in DEFAULT_NOISE_LEVEL:
            raise ValueError(f"{name}: unknown noise {resolved['noise']!r}; choose one of {sorted(DEFAULT_NOISE_LEVEL)}")
        if resolved["noise_level"] is None:
            resolved["noise_level"] = DEFAULT_NOISE_LEVEL[resolved["noise"]]
    if name == "sparse-ae":
        if resolved["penalty"] not in DEFAULT_SPARSITY_WEIGHT:
            raise ValueError(f"{name}: unknown penalty {resolved['penalty']!r}; choose one of {sorted(DEFAULT_SPARSITY_WEIGHT)}")
        if resolved["sparsity_weight"] is None:
            resolved["sparsity_weight"] = DEFAULT_SPARSITY_WEIGHT[resolved["penalty"]]
    if name == "beta-vae" and resolved["capacity_max"] is not None:
        raise NotImplementedError("beta-vae: capacity_max has no jax twin (the objective depends on the training step)")
    if name in ("conv-ae", "conv-vae") and resolved["image_size"] != 28:
        raise ValueError(f"{name}: the twin's geometry maps 28x28 images only, got image_size {resolved['image_size']}")
    if name == "conv-vae":
        input_dim = resolved["in_channels"] * 28 * 28
        if resolved["input_dim"] not in (None, input_dim):
            raise ValueError(f"{name}: input_dim {resolved['input_dim']} disagrees with in_channels·image_size²")
        resolved["input_dim"] = input_dim
    return resolved


def parameter_shapes(name: str, config: dict | None = None) -> dict[str, tuple[int, ...]]:
    """The torch twin's ``state_dict`` keys and shapes, in its order (Linear weight (out, in),
    Conv2d (C_out, C_in, kH, kW), ConvTranspose2d (C_in, C_out, kH, kW))."""
    c = resolve_config(name, config)
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(key, fan_in, fan_out):
        shapes[f"{key}.weight"], shapes[f"{key}.bias"] = (fan_out, fan_in), (fan_out,)

    def conv(key, weight, bias):
        shapes[f"{key}.weight"], shapes[f"{key}.bias"] = weight, (bias,)

    if name in ("mlp-ae", "denoising-ae"):
        sizes = (c["input_dim"], *c["hidden_dims"], c["latent_dim"])
        for part, ordered in (("encoder", sizes), ("decoder", sizes[::-1])):
            for index, (fan_in, fan_out) in enumerate(zip(ordered[:-1], ordered[1:])):
                linear(f"{part}.{2 * index}", fan_in, fan_out)
    elif name in ("vae", "beta-vae"):
        d, h, z = c["input_dim"], c["hidden_dim"], c["latent_dim"]
        for key, fan_in, fan_out in (("fc1", d, h), ("fc21", h, z), ("fc22", h, z), ("fc3", z, h), ("fc4", h, d)):
            linear(key, fan_in, fan_out)
    elif name == "seed-vae":
        d, h, z = c["input_dim"], c["hidden_dim"], c["latent_dim"]
        for key, fan_in, fan_out in (("encoder.0", d, h), ("encoder.2", h, 2 * z), ("decoder.0", z, h),
                                     ("decoder.2", h, d)):
            linear(key, fan_in, fan_out)
    elif name == "conv-ae":
        channels, (wide, narrow) = c["in_channels"], c["channels"]
        conv("encoder.0", (wide, channels, 3, 3), wide)
        conv("encoder.3", (narrow, wide, 3, 3), narrow)
        conv("decoder.0", (narrow, wide, 3, 3), wide)
        conv("decoder.2", (wide, narrow, 5, 5), narrow)
        conv("decoder.4", (narrow, channels, 2, 2), channels)
    elif name == "conv-vae":
        channels, (narrow, wide), z = c["in_channels"], c["channels"], c["latent_dim"]
        conv("encoder.0", (narrow, channels, 4, 4), narrow)
        conv("encoder.2", (wide, narrow, 4, 4), wide)
        linear("fc21", wide * 49, z)
        linear("fc22", wide * 49, z)
        linear("decoder.0", z, wide * 49)
        conv("decoder.3", (wide, narrow, 4, 4), narrow)
        conv("decoder.5", (narrow, channels, 4, 4), channels)
    elif name in ("sparse-ae", "contractive-ae"):
        linear("encoder", c["input_dim"], c["hidden_dim"])
        linear("decoder", c["hidden_dim"], c["input_dim"])
    else:  # tied-ae: one weight, the decoder's bias only
        linear("encoder", c["input_dim"], c["hidden_dim"])
        shapes["decoder.bias"] = (c["input_dim"],)
    return shapes


# ---------------------------------------------------------------------------- layers (torch's definitions)


def _linear(x, params, key):
    """F.linear: x Wᵀ + b, W (out, in)."""
    return x @ params[f"{key}.weight"].T + params[f"{key}.bias"]


def _activation(name, x):
    """relu (gradient 0 at 0), leaky_relu (slope 0.01, x > 0 ? x : 0.01 x), tanh, sigmoid, as torch."""
    jax = _jax()
    import jax.numpy as jnp

    if name == "relu":
        return jax.nn.relu(x)
    if name == "leaky_relu":
        return jnp.where(x > 0, x, LEAKY_SLOPE * x)
    if name == "tanh":
        return jnp.tanh(x)
    return jax.nn.sigmoid(x)


def _conv2d(x, params, key, stride, padding):
    """nn.Conv2d (NCHW, weight OIHW), zero padding."""
    from jax import lax

    y = lax.conv_general_dilated(x, params[f"{key}.weight"], (stride, stride), [(padding, padding)] * 2,
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + params[f"{key}.bias"][None, :, None, None]


def _conv_transpose2d(x, params, key, stride, padding, output_padding=0):
    """nn.ConvTranspose2d, weight (C_in, C_out, k, k), as the gradient of a convolution: x dilated
    by ``stride``, padded k-1-p (plus output_padding on the high side), correlated with the kernel
    flipped in space and read IOHW; the output is (H - 1)·stride - 2p + k + output_padding."""
    import jax.numpy as jnp
    from jax import lax

    weight = params[f"{key}.weight"]
    pads = [(k - 1 - padding, k - 1 - padding + output_padding) for k in weight.shape[2:]]
    y = lax.conv_general_dilated(x, jnp.flip(weight, (2, 3)), (1, 1), pads, lhs_dilation=(stride, stride),
                                 dimension_numbers=("NCHW", "IOHW", "NCHW"))
    return y + params[f"{key}.bias"][None, :, None, None]


def _max_pool2d(x, kernel, stride):
    """nn.MaxPool2d(kernel, stride), no padding; ties send the gradient to the first maximum, as torch."""
    from jax import lax

    # a NumPy init value: concrete under jit, so that lax picks the differentiable max-pool primitive
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, (1, 1, kernel, kernel),
                             (1, 1, stride, stride), "VALID")


@functools.cache
def _binary_cross_entropy():
    """Element-wise F.binary_cross_entropy with torch's forward and backward (a custom VJP)."""
    jax = _jax()
    import jax.numpy as jnp

    def clamped_logs(p):
        return jnp.maximum(jnp.log1p(-p), -100.0), jnp.maximum(jnp.log(p), -100.0)

    @jax.custom_vjp
    def bce(p, y):
        # torch's CPU kernel: (y - 1)·max(log1p(-p), -100) - y·max(log p, -100)
        log_q, log_p = clamped_logs(p)
        return (y - 1) * log_q - y * log_p

    def forward(p, y):
        return bce(p, y), (p, y)

    def backward(residuals, g):
        p, y = residuals
        # binary_cross_entropy_backward: g (p - y) / max((1 - p) p, EPSILON); the target's: -g logit(p)
        return g * (p - y) / jnp.maximum((1 - p) * p, BCE_EPSILON), -g * jnp.log(p / (1 - p))

    bce.defvjp(forward, backward)
    return bce


def binary_cross_entropy(p, y, reduction: str = "mean"):
    """F.binary_cross_entropy(p, y, reduction) with torch's clamped logs and torch's gradient."""
    import jax.numpy as jnp

    terms = _binary_cross_entropy()(p, y)
    if reduction == "none":
        return terms
    if reduction == "sum":
        return jnp.sum(terms)
    if reduction == "mean":
        return jnp.mean(terms)
    raise ValueError(f"binary_cross_entropy: unknown reduction {reduction!r}")


def _gaussian_kl(mean, logvar):
    """torch_impl.functional.gaussian_kl(..., "sum"): -½ Σ (1 + lv - μ² - e^{lv})."""
    import jax.numpy as jnp

    return jnp.sum(-0.5 * (1 + logvar - mean ** 2 - jnp.exp(logvar)))


def _clamp(x, low, high):
    """torch.clamp, whose gradient passes where low <= x <= high (jnp.clip halves it at the ends)."""
    import jax.numpy as jnp

    return jnp.where(x < low, low, jnp.where(x > high, high, x))


# ---------------------------------------------------------------------------- the models' losses


def _flat(name, x, input_dim):
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != input_dim:
        raise ValueError(f"{name}: expected {input_dim} features, got shape {tuple(x.shape)}")
    return flat


def _mlp_loss(name, c):
    import jax.numpy as jnp

    count = len(c["hidden_dims"]) + 1

    def stack(params, part, h, final):
        for index in range(count):
            h = _linear(h, params, f"{part}.{2 * index}")
            h = final(h) if index == count - 1 else _activation(c["activation"], h)
        return h

    def corrupt(x, noise):
        level, kind = c["noise_level"], c["noise"]
        if kind == "gaussian":
            corrupted = x + level * noise
            return _clamp(corrupted, 0.0, 1.0) if c["clip"] else corrupted
        if kind == "masking":
            return jnp.where(noise < level, 0.0, x)
        half = level / 2
        return jnp.where(noise < half, 0.0, jnp.where(noise > 1 - half, 1.0, x))

    def loss(params, x, noise=None):
        if name == "denoising-ae":
            if noise is None or noise.shape != x.shape:
                raise ValueError(f"{name}: noise must be an array of x's shape {tuple(x.shape)}, "
                                 f"got {None if noise is None else tuple(noise.shape)}")
            model_input = corrupt(x, noise)
        elif noise is not None:
            raise ValueError(f"{name} is deterministic and takes no noise")
        else:
            model_input = x
        flat, target = _flat(name, model_input, c["input_dim"]), x.reshape(x.shape[0], -1)
        code = stack(params, "encoder", flat, lambda h: _activation(c["activation"], h))
        reconstruction = stack(params, "decoder", code, lambda h: _activation("sigmoid", h))
        if c["loss"] == "mse":
            return jnp.mean((reconstruction - target) ** 2)
        return binary_cross_entropy(reconstruction, target, "mean")

    return loss


def _variational_loss(name, c):
    import jax.numpy as jnp

    latent = c["latent_dim"]
    relu = functools.partial(_activation, "relu")
    sigmoid = functools.partial(_activation, "sigmoid")

    def encode(params, flat):
        if name == "seed-vae":
            out = _linear(relu(_linear(flat, params, "encoder.0")), params, "encoder.2")
            return out[:, :latent], out[:, latent:]
        if name == "conv-vae":
            image = flat.reshape(flat.shape[0], c["in_channels"], 28, 28)
            h = relu(_conv2d(image, params, "encoder.0", 2, 1))
            h = relu(_conv2d(h, params, "encoder.2", 2, 1)).reshape(flat.shape[0], -1)
            return _linear(h, params, "fc21"), _linear(h, params, "fc22")
        h = relu(_linear(flat, params, "fc1"))
        return _linear(h, params, "fc21"), _linear(h, params, "fc22")

    def decode(params, z):
        if name == "seed-vae":
            return sigmoid(_linear(relu(_linear(z, params, "decoder.0")), params, "decoder.2"))
        if name == "conv-vae":
            h = relu(_linear(z, params, "decoder.0")).reshape(z.shape[0], c["channels"][1], 7, 7)
            h = relu(_conv_transpose2d(h, params, "decoder.3", 2, 1))
            return sigmoid(_conv_transpose2d(h, params, "decoder.5", 2, 1)).reshape(z.shape[0], -1)
        return sigmoid(_linear(relu(_linear(z, params, "fc3")), params, "fc4"))

    def loss(params, x, noise=None):
        if noise is None or noise.shape != (x.shape[0], latent):
            raise ValueError(f"{name}: noise (ε) must be an array of shape {(x.shape[0], latent)}, "
                             f"got {None if noise is None else tuple(noise.shape)}")
        flat = _flat(name, x, c["input_dim"])
        mean, logvar = encode(params, flat)
        z = mean + jnp.exp(0.5 * logvar) * noise
        recon = binary_cross_entropy(decode(params, z), flat, "sum")
        return recon + c["beta"] * _gaussian_kl(mean, logvar)

    return loss


def _conv_loss(name, c):
    relu = functools.partial(_activation, "relu")

    def loss(params, x, noise=None):
        if noise is not None:
            raise ValueError(f"{name} is deterministic and takes no noise")
        if x.ndim != 4 or x.shape[1:] != (c["in_channels"], 28, 28):
            raise ValueError(f"{name}: expected images (N, {c['in_channels']}, 28, 28), got shape {tuple(x.shape)}")
        h = _max_pool2d(relu(_conv2d(x, params, "encoder.0", 3, 1)), 2, 2)
        h = _max_pool2d(relu(_conv2d(h, params, "encoder.3", 2, 1)), 2, 1)
        h = relu(_conv_transpose2d(h, params, "decoder.0", 2, 0))
        h = relu(_conv_transpose2d(h, params, "decoder.2", 3, 1))
        reconstruction = _activation("sigmoid", _conv_transpose2d(h, params, "decoder.4", 2, 1))
        return binary_cross_entropy(reconstruction, x, "mean")

    return loss


def _shallow_loss(name, c):
    """sparse-ae, contractive-ae, tied-ae: h = act(x Wᵀ + b), x̂ = σ(decoder(h)), BCE summed / N + penalty."""
    jax = _jax()
    import jax.numpy as jnp

    activation = c.get("activation", "sigmoid")

    def encode(params, flat):
        return _activation(activation, _linear(flat, params, "encoder"))

    def decode(params, h):
        if name == "tied-ae":  # F.linear(h, Wᵀ, c) = h W + c
            return _activation("sigmoid", h @ params["encoder.weight"] + params["decoder.bias"])
        return _activation("sigmoid", _linear(h, params, "decoder"))

    def penalty(params, flat, h):
        n = flat.shape[0]
        if name == "sparse-ae":
            weight = c["sparsity_weight"]
            if c["penalty"] == "l1":
                return weight * jnp.sum(jnp.abs(h)) / n
            rho, info = c["sparsity_target"], jnp.finfo(h.dtype)
            rho_hat = _clamp(jnp.mean(h, axis=0), float(info.tiny) ** 0.5, 1 - float(info.eps) / 2)
            kl = rho * jnp.log(rho / rho_hat) + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat))
            return weight * jnp.sum(kl)
        if name == "contractive-ae":  # ∂h_n/∂x_n by reverse mode, as torch's batched autograd.grad
            jacobian = jax.vmap(jax.jacrev(lambda row: encode(params, row)))(flat)
            return c["contraction_weight"] * jnp.sum(jacobian ** 2) / n
        return None

    def loss(params, x, noise=None):
        if noise is not None:
            raise ValueError(f"{name} is deterministic and takes no noise")
        flat = _flat(name, x, c["input_dim"])
        h = encode(params, flat)
        recon = binary_cross_entropy(decode(params, h), flat, "sum") / flat.shape[0]
        extra = penalty(params, flat, h)
        return recon if extra is None else recon + extra

    return loss


def loss_function(name: str, config: dict | None = None):
    """The scalar training loss of model ``name`` as a pure jax function.

    Parameters
    ----------
    name : a name in ``TWINS``
    config : the model's configuration (``model.config``); missing keys take the registry's defaults

    Returns
    -------
    loss(params, x, noise) -> scalar array, with ``params`` keyed by the torch twin's state_dict
    keys; ``noise`` is the denoising corruption (x's shape) or the VAEs' ε (N, latent_dim), and
    None for deterministic models. Traceable by ``jax.jit`` / ``jax.grad``.
    """
    _jax()
    c = resolve_config(name, config)
    if name in ("mlp-ae", "denoising-ae"):
        return _mlp_loss(name, c)
    if name in ("vae", "seed-vae", "beta-vae", "conv-vae"):
        return _variational_loss(name, c)
    if name == "conv-ae":
        return _conv_loss(name, c)
    return _shallow_loss(name, c)


# ---------------------------------------------------------------------------- the training step


class JaxTrainingStep:
    """One whole training step (loss, gradients, torch.optim.Adam) compiled in one ``jax.jit``.

    Parameters
    ----------
    name, config : the model (see ``loss_function``)
    state_dict : initial weights, torch's keys and layouts (NumPy arrays or tensors)
    x, noise : the fixed batch and its noise (None for deterministic models); their dtype
        (float32, or float64 inside ``enable_x64()``) is the step's
    lr, weight_decay, betas, eps : torch.optim.Adam's (non-amsgrad, weight decay added to the gradient)

    ``step()`` returns the loss at the weights before the update, after ``block_until_ready``
    on every output; parameters and Adam moments are donated to the compiled step.
    """

    def __init__(self, name: str, config: dict | None, state_dict: dict, x, noise=None, lr: float = 1e-3,
                 weight_decay: float = 1e-5, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        jax = _jax()
        import jax.numpy as jnp

        self.name, self.config = name, resolve_config(name, config)
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), tuple(map(float, betas)), float(eps)
        self.dtype = np.dtype(getattr(x, "dtype", np.float64))
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"JaxTrainingStep({name}): x must be float32 or float64, got {self.dtype}")
        if jax.dtypes.canonicalize_dtype(self.dtype) != self.dtype:
            raise RuntimeError(f"JaxTrainingStep({name}): float64 needs jax's x64 mode; build and run it inside "
                               "`with autoencoders.bench.jax_twins.enable_x64():`")
        if (noise is None) == (name in NOISY):
            raise ValueError(f"{name}: " + ("needs its noise array" if noise is None else "is deterministic and takes no noise"))
        expected = parameter_shapes(name, self.config)
        given = {key: np.asarray(_numpy(value)) for key, value in state_dict.items()}
        if set(given) != set(expected):
            raise ValueError(f"JaxTrainingStep({name}): state_dict keys differ from the twin's: missing "
                             f"{sorted(set(expected) - set(given))}, unexpected {sorted(set(given) - set(expected))}")
        for key, shape in expected.items():
            if given[key].shape != shape:
                raise ValueError(f"JaxTrainingStep({name}): {key} has shape {given[key].shape}, expected {shape}")
        self._initial = {key: given[key].astype(self.dtype, copy=True) for key in expected}
        self.x = jnp.asarray(_numpy(x), dtype=self.dtype)
        self.noise = None if noise is None else jnp.asarray(_numpy(noise), dtype=self.dtype)
        self.loss = loss_function(name, self.config)
        jax.eval_shape(self.loss, self._initial, self.x, self.noise)  # shape errors now, not at the first step
        self._value_and_grad = jax.jit(jax.value_and_grad(self.loss))
        self._step = jax.jit(self._adam_step, donate_argnums=(0, 1, 2))
        self.reset()

    def _adam_step(self, params, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt, x, noise):
        """torch's _single_tensor_adam on every parameter, after value_and_grad of the loss."""
        import jax
        import jax.numpy as jnp

        beta1, beta2 = self.betas
        loss, grads = jax.value_and_grad(self.loss)(params, x, noise)
        new_params, new_exp_avg, new_exp_avg_sq = {}, {}, {}
        for key, param in params.items():
            grad = grads[key] + self.weight_decay * param if self.weight_decay != 0 else grads[key]
            m = exp_avg[key] + (1 - beta1) * (grad - exp_avg[key])  # exp_avg.lerp_(grad, 1 - β1), weight < ½
            v = exp_avg_sq[key] * beta2 + (1 - beta2) * grad * grad  # mul_(β2).addcmul_(grad, grad, 1 - β2)
            denom = jnp.sqrt(v) / bias_correction2_sqrt + self.eps
            new_params[key] = param + (-step_size) * m / denom  # addcdiv_(exp_avg, denom, value=-step_size)
            new_exp_avg[key], new_exp_avg_sq[key] = m, v
        return new_params, new_exp_avg, new_exp_avg_sq, loss

    def reset(self) -> None:
        """Back to the initial weights and an empty Adam state (step 0)."""
        import jax.numpy as jnp

        self.params = {key: jnp.array(value) for key, value in self._initial.items()}
        self.exp_avg = {key: jnp.zeros(value.shape, self.dtype) for key, value in self._initial.items()}
        self.exp_avg_sq = {key: jnp.zeros(value.shape, self.dtype) for key, value in self._initial.items()}
        self.steps = 0

    def step(self):
        """One training step; returns the loss (a jax scalar) once every output is computed."""
        import jax

        self.steps += 1
        beta1, beta2 = self.betas
        # As torch: the bias corrections in Python floats (double), then rounded to the step's dtype.
        step_size = np.asarray(self.lr / (1 - beta1 ** self.steps), self.dtype)
        bias_correction2_sqrt = np.asarray((1 - beta2 ** self.steps) ** 0.5, self.dtype)
        outputs = self._step(self.params, self.exp_avg, self.exp_avg_sq, step_size, bias_correction2_sqrt,
                             self.x, self.noise)
        jax.block_until_ready(outputs)
        self.params, self.exp_avg, self.exp_avg_sq, loss = outputs
        return loss

    __call__ = step

    def params_numpy(self) -> dict[str, np.ndarray]:
        """The current weights as NumPy arrays, torch's keys and layouts."""
        return {key: np.array(value) for key, value in self.params.items()}

    def loss_and_gradients(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The loss and every gradient at the current weights (a separate, undonated jit)."""
        loss, grads = self._value_and_grad(self.params, self.x, self.noise)
        return np.asarray(loss), {key: np.array(value) for key, value in grads.items()}

    def first_loss(self) -> float:
        """The loss at the initial weights (the state is left as it was)."""
        return float(self._value_and_grad(self._initial, self.x, self.noise)[0])

    def first_step_outputs(self) -> dict[str, np.ndarray]:
        """From the initial state: ``{"loss", "grad KEY", "updated KEY"}`` of one step, as the
        benchmark's ``outputs`` (the loss is the compiled step's); leaves the step reset."""
        self.reset()
        _, grads = self.loss_and_gradients()
        loss = np.asarray(self.step())
        outputs = {"loss": loss}
        for key, value in self.params_numpy().items():
            outputs[f"grad {key}"], outputs[f"updated {key}"] = grads[key], value
        self.reset()
        return outputs


def _numpy(value):
    """A NumPy array from an array or a torch tensor (detached, on the CPU)."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value
