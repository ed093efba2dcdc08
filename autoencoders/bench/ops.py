"""Per-op benchmark: every layer, loss and optimizer step alone, scratch against torch.

    python -m autoencoders.bench.ops [--batch-sizes 128] [--only Linear,backward] [--repeats 10]
                             [--threads N] [--settle-ms 150] [--out docs/benchmarks] [--quick]

Ops and shapes, float32, at the shapes the seed models use (taken from the default models):

- ``Linear``: each layer of the mlp-ae (784-256-64-256-784) on (B, in_features);
- ``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``: each layer of the conv-ae on the input it
  sees inside the model (``autoencoders.bench.conv.model_layers``);
- ``ReLU``, ``LeakyReLU``, ``Tanh`` on (B, 256), the mlp-ae's hidden width; ``Sigmoid`` on
  (B, 784), its output;
- ``GELU`` (both forms), ``SiLU``, ``ELU``, ``Softplus``, ``BatchNorm1d``, ``LayerNorm``,
  ``Dropout`` on (B, 256); ``BatchNorm2d``, ``GroupNorm(8, 32)``, ``Dropout2d`` on (B, 32, 14, 14);
  ``Upsample`` x2, nearest and bilinear, on (B, 32, 7, 7) (``new_layer_cases``, ``dropout_cases``);
- ``BCELoss``, ``BCEWithLogitsLoss``, ``MSELoss`` (mean) on (B, 784); ``GaussianKL`` (sum) on
  the vae's (B, 20) mean and log-variance; the torch side of the KL is
  ``torch_impl.functional.gaussian_kl``, written with torch ops;
- optimizer steps over the mlp-ae's 435,536 parameters with fixed gradients: SGD (lr 1e-2,
  momentum 0.9), Adam (lr 1e-3, weight_decay 1e-5), AdamW (lr 1e-3, weight_decay 1e-2), against
  torch.optim with its defaults (on CPU, its single-tensor loop).

Each op is timed twice, as two cases:

- **forward**: scratch ``op(*inputs)`` (which also caches what its backward needs) against
  torch ``op(*inputs)`` with autograd recording, as in training (parameters and the inputs that
  get gradients require grad);
- **backward**: the forward runs once, outside the timed calls; the timed call is the backward
  alone, re-run on that one forward: scratch ``op.backward(dy)`` (``op.backward()`` for a loss),
  torch ``y.backward(dy, retain_graph=True)``, which like scratch accumulates into ``.grad``.
  Both compute the gradients of the input(s) and of every parameter. (Scratch's one forward
  runs in the case's first call, the harness's separately timed compile call, so that no
  scratch kernel runs before that call; a backward case's compile ms includes that forward.)

Every case checks scratch against torch (outputs, or input and parameter gradients; the
optimizers: the weights after two steps from the same state) with ``check_against_torch``
before and after it is timed. FLOPs by ``autoencoders.bench.flops`` (Linear and the convolutions); the
element-wise ops, losses, pooling and optimizer steps are memory-bound and state instead the
bytes they must move at least: forward, the inputs read and the output written; backward, the
upstream gradient and the inputs read and the input gradients written (max-pooling's backward
reads its argmax indices rather than its input, counted as the input); an optimizer step, per
parameter, SGD with momentum reads weight, gradient and momentum and writes weight and momentum
(5 arrays), Adam and AdamW read weight, gradient and both moments and write weight and both
moments (7 arrays). Writes ``ops.json``, ``ops.md`` and ``ops.png`` to ``--out``.
"""

from __future__ import annotations

import copy
import sys
from functools import partial

import numpy as np
import torch

from autoencoders.bench import flops as flop_count
from autoencoders.bench.harness import Case, check_against_torch, format_table, measure, pin_malloc
from scratch import models as scratch_models
from scratch import nn, optim
from torch_impl import models as torch_models
from torch_impl.functional import gaussian_kl

DTYPE = np.float32
INK = 0.13
SEED = 0


def _leaf(array: np.ndarray, requires_grad: bool) -> torch.Tensor:
    """A torch copy of ``array`` (never sharing memory: a scratch op that wrote into its input would
    then show up in the check instead of silently feeding both sides)."""
    return torch.from_numpy(array.copy()).requires_grad_(requires_grad)


def _nbytes(*arrays) -> int:
    """Bytes of the arrays, scalars (a reduced loss) not counted."""
    return sum(np.asarray(a).nbytes for a in arrays if np.ndim(a) > 0)


def _named_parameters(op):
    return list(op.named_parameters()) if hasattr(op, "named_parameters") else []


def op_cases(label: str, scratch_op, torch_op, inputs: list[np.ndarray], grad_names: list[str], batch_size: int,
             rng: np.random.Generator, meta: dict | None = None) -> list[Case]:
    """The forward case and the backward case of one op.

    ``scratch_op(*inputs)`` and ``torch_op(*tensors)`` compute the same thing (``torch_op`` a
    torch module holding the scratch op's weights, or a function); the first ``len(grad_names)``
    inputs get gradients, named by ``grad_names``, the rest (a loss's target) do not. The
    backward case runs on deep copies, so the forward case's calls never touch its cache. ``rng``
    draws the upstream gradient of a tensor-valued output.
    """
    base = {"kind": "op", "op": type(scratch_op).__name__, "batch_size": batch_size, "dtype": np.dtype(DTYPE).name,
            "input_shapes": [list(a.shape) for a in inputs], **(meta or {})}
    differentiable = len(grad_names)

    # No scratch call is made here: the harness's first, separately timed call of each case is
    # then the one that compiles its kernels. Shapes come from torch.
    with torch.no_grad():
        reference = torch_op(*[torch.from_numpy(a.copy()) for a in inputs]).numpy()

    # -- forward
    forward_tensors = [_leaf(a, i < differentiable) for i, a in enumerate(inputs)]
    forward_flops = flop_count.forward_flops(scratch_op, inputs[0].shape)
    forward_meta = {**base, "direction": "forward", "flops": forward_flops,
                    **({} if forward_flops else {"bytes": _nbytes(*inputs, reference)})}

    def scratch_forward():
        return scratch_op(*inputs)

    def torch_forward():
        return torch_op(*forward_tensors)

    def check_forward():
        check_against_torch({"output": np.asarray(scratch_forward())}, {"output": torch_forward()},
                            f"{label} forward, batch {batch_size}", meta=forward_meta)

    # -- backward, on copies
    backward_op = copy.deepcopy(scratch_op)
    backward_twin = copy.deepcopy(torch_op) if isinstance(torch_op, torch.nn.Module) else torch_op
    backward_tensors = [_leaf(a, i < differentiable) for i, a in enumerate(inputs)]
    torch_y = backward_twin(*backward_tensors)
    reduced = reference.ndim == 0
    grad_output = None if reduced else rng.standard_normal(reference.shape).astype(DTYPE)
    torch_grad_output = None if reduced else torch.from_numpy(grad_output.copy())
    backward_flops = flop_count.backward_flops(backward_op, inputs[0].shape, input_gradient=True)
    backward_meta = {**base, "direction": "backward", "flops": backward_flops}
    if not backward_flops:
        backward_meta["bytes"] = _nbytes(*([] if reduced else [grad_output]), *inputs, *inputs[:differentiable])

    forward_done = []

    def scratch_backward():
        if not forward_done:  # the one forward, in the first call: the harness's untimed compile call
            backward_op(*inputs)
            forward_done.append(True)
        return backward_op.backward() if reduced else backward_op.backward(grad_output)

    def torch_backward():
        torch_y.backward(torch_grad_output, retain_graph=True)

    def check_backward():
        # fresh gradients on both sides: one backward each, then compare what it produced
        if hasattr(backward_op, "zero_grad"):
            backward_op.zero_grad()
        for tensor in backward_tensors:
            tensor.grad = None
        for _, parameter in _named_parameters(backward_twin):
            parameter.grad = None
        returned = scratch_backward()
        returned = returned if isinstance(returned, tuple) else (returned,)
        torch_backward()
        scratch_grads = {f"grad {name}": value for name, value in zip(grad_names, returned)}
        scratch_grads.update({f"grad {key}": p.grad.copy() for key, p in _named_parameters(backward_op)})
        torch_grads = {f"grad {name}": t.grad for name, t in zip(grad_names, backward_tensors)}
        torch_grads.update({f"grad {key}": p.grad for key, p in _named_parameters(backward_twin)})
        check_against_torch(scratch_grads, torch_grads, f"{label} backward, batch {batch_size}", meta=backward_meta)

    return [Case(f"{label} forward", scratch_forward, torch_forward, check_forward, forward_meta),
            Case(f"{label} backward", scratch_backward, torch_backward, check_backward, backward_meta)]


def _linear_pair(in_features: int, out_features: int, seed: int):
    layer = nn.Linear(in_features, out_features, rng=seed, dtype=DTYPE)
    twin = torch.nn.Linear(in_features, out_features)
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in layer.state_dict().items()})
    return layer, twin


def linear_cases(batch_size: int, rng: np.random.Generator) -> list[Case]:
    """Forward and backward of each Linear layer of the default mlp-ae, on (B, in_features)."""
    model = scratch_models.build("mlp-ae", dtype=DTYPE, rng=SEED)
    shapes = list(dict.fromkeys((m.in_features, m.out_features) for _, m in model.named_modules()
                                if isinstance(m, nn.Linear)))
    cases = []
    for in_features, out_features in shapes:
        layer, twin = _linear_pair(in_features, out_features, SEED)
        x = rng.standard_normal((batch_size, in_features)).astype(DTYPE)
        cases += op_cases(f"Linear({in_features},{out_features})", layer, twin, [x], ["input"], batch_size, rng)
    return cases


def conv_cases(batch_size: int, rng: np.random.Generator) -> list[Case]:
    """Forward and backward of each Conv2d, ConvTranspose2d and MaxPool2d of the conv-ae, each on
    the input it sees inside the model."""
    from autoencoders.bench.conv import layer_label, model_layers

    layers, _ = model_layers(batch_size, SEED)
    cases = []
    for path, layer, twin, x in layers:
        label = f"{layer_label(layer)} on {'x'.join(map(str, x.shape[1:]))}"
        cases += op_cases(label, layer, twin, [x], ["input"], batch_size, rng, {"layer": path})
    return cases


def activation_cases(batch_size: int, rng: np.random.Generator) -> list[Case]:
    """ReLU, LeakyReLU and Tanh on the mlp-ae's hidden width; Sigmoid on its output width."""
    config = scratch_models.build("mlp-ae", dtype=DTYPE, rng=SEED).config
    hidden, output = config["hidden_dims"][0], config["input_dim"]
    pairs = [(nn.ReLU(), torch.nn.ReLU(), hidden), (nn.LeakyReLU(0.01), torch.nn.LeakyReLU(0.01), hidden),
             (nn.Tanh(), torch.nn.Tanh(), hidden), (nn.Sigmoid(), torch.nn.Sigmoid(), output)]
    cases = []
    for scratch_op, torch_op, width in pairs:
        x = rng.standard_normal((batch_size, width)).astype(DTYPE)
        cases += op_cases(f"{type(scratch_op).__name__} on {width}", scratch_op, torch_op, [x], ["input"],
                          batch_size, rng)
    return cases


# The layers modern autoencoders add (docs/normalization.md, docs/upsampling.md, docs/dropout.md,
# docs/activations.md), at the widths of the conv-vae's first block (32 channels at 14x14, 7x7
# before an upsampling) and of the mlp-ae's hidden layer (256).
CHANNELS, SIDE, WIDTH = 32, 14, 256


def _loaded(layer, twin):
    """``twin`` holding ``layer``'s parameters and buffers (strict), in float32."""
    twin = twin.to(torch.float32)
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in layer.state_dict().items()}, strict=True)
    return twin


def new_layer_cases(batch_size: int, rng: np.random.Generator) -> list[Case]:
    """GELU, SiLU, ELU, Softplus on (B, 256); BatchNorm1d and LayerNorm on (B, 256); BatchNorm2d
    and GroupNorm(8) on (B, 32, 14, 14); Upsample x2 (nearest, bilinear) on (B, 32, 7, 7). The
    normalizations run in training mode (batch statistics, running statistics updated)."""
    flat, image, small = (batch_size, WIDTH), (batch_size, CHANNELS, SIDE, SIDE), (batch_size, CHANNELS, SIDE // 2, SIDE // 2)
    specs = [
        (nn.GELU(), torch.nn.GELU(), flat, f" on {WIDTH}"),
        (nn.GELU("tanh"), torch.nn.GELU("tanh"), flat, f"(tanh) on {WIDTH}"),
        (nn.SiLU(), torch.nn.SiLU(), flat, f" on {WIDTH}"),
        (nn.ELU(), torch.nn.ELU(), flat, f" on {WIDTH}"),
        (nn.Softplus(), torch.nn.Softplus(), flat, f" on {WIDTH}"),
        (nn.BatchNorm1d(WIDTH, dtype=DTYPE), torch.nn.BatchNorm1d(WIDTH), flat, f"({WIDTH}) on {WIDTH}"),
        (nn.LayerNorm(WIDTH, dtype=DTYPE), torch.nn.LayerNorm(WIDTH), flat, f"({WIDTH}) on {WIDTH}"),
        (nn.BatchNorm2d(CHANNELS, dtype=DTYPE), torch.nn.BatchNorm2d(CHANNELS), image,
         f"({CHANNELS}) on {CHANNELS}x{SIDE}x{SIDE}"),
        (nn.GroupNorm(8, CHANNELS, dtype=DTYPE), torch.nn.GroupNorm(8, CHANNELS), image,
         f"(8,{CHANNELS}) on {CHANNELS}x{SIDE}x{SIDE}"),
        (nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Upsample(scale_factor=2, mode="nearest"), small,
         f"(x2, nearest) on {CHANNELS}x{SIDE // 2}x{SIDE // 2}"),
        (nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Upsample(scale_factor=2, mode="bilinear"), small,
         f"(x2, bilinear) on {CHANNELS}x{SIDE // 2}x{SIDE // 2}"),
    ]
    cases = []
    for layer, twin, shape, where in specs:
        x = rng.standard_normal(shape).astype(DTYPE)
        cases += op_cases(f"{type(layer).__name__}{where}", layer, _loaded(layer, twin), [x], ["input"],
                          batch_size, rng)
    return cases + dropout_cases(batch_size, rng)


def dropout_cases(batch_size: int, rng: np.random.Generator, p: float = 0.5) -> list[Case]:
    """Dropout on (B, 256) and Dropout2d on (B, 32, 14, 14), in training mode: each side draws a
    new mask per call, from its own generator, as in training. The check hands scratch the mask
    torch drew (replayed from torch's generator state on a tensor of ones), and then the output
    and dx must agree."""
    cases = []
    for make, make_twin, shape, where in ((nn.Dropout, torch.nn.Dropout, (batch_size, WIDTH), f"on {WIDTH}"),
                                         (nn.Dropout2d, torch.nn.Dropout2d, (batch_size, CHANNELS, SIDE, SIDE),
                                          f"on {CHANNELS}x{SIDE}x{SIDE}")):
        label = f"{make.__name__}({p}) {where}"
        layer, twin = make(p, rng=SEED), make_twin(p)
        x = rng.standard_normal(shape).astype(DTYPE)
        tx = _leaf(x, True)
        grad_output = rng.standard_normal(shape).astype(DTYPE)
        torch_grad_output = torch.from_numpy(grad_output.copy())
        meta = {"kind": "op", "op": make.__name__, "batch_size": batch_size, "dtype": np.dtype(DTYPE).name,
                "input_shapes": [list(shape)], "flops": 0}
        torch_y = twin(tx)
        backward_layer = make(p, rng=SEED)
        forward_done = []

        def scratch_backward(backward_layer=backward_layer, x=x, grad_output=grad_output, done=forward_done):
            if not done:
                backward_layer(x)
                done.append(True)
            return backward_layer.backward(grad_output)

        def check(layer=layer, twin=twin, x=x, grad_output=grad_output, label=label, meta=meta):
            state = torch.get_rng_state()
            leaf = _leaf(x, True)
            expected = twin(leaf)
            expected.backward(torch.from_numpy(grad_output.copy()))
            torch.set_rng_state(state)
            keep = (twin(torch.ones(x.shape)) != 0).numpy()
            mask = keep[:, :, :1, :1] if keep.ndim == 4 and isinstance(twin, torch.nn.Dropout2d) else keep
            out = layer(x, mask=mask)
            check_against_torch({"output": out, "grad input": layer.backward(grad_output)},
                                {"output": expected, "grad input": leaf.grad}, f"{label}, batch {batch_size}",
                                meta=meta)

        cases += [
            Case(f"{label} forward", partial(layer, x), partial(twin, tx), check,
                 {**meta, "direction": "forward", "bytes": _nbytes(x, x)}),
            Case(f"{label} backward", scratch_backward,
                 partial(torch_y.backward, torch_grad_output, retain_graph=True), check,
                 {**meta, "direction": "backward", "bytes": _nbytes(x, x)}),
        ]
    return cases


def loss_cases(batch_size: int, rng: np.random.Generator) -> list[Case]:
    """BCE, BCE-with-logits and MSE (mean) on the images' width; the Gaussian KL (sum) on the vae's latent."""
    width = scratch_models.build("mlp-ae", dtype=DTYPE, rng=SEED).config["input_dim"]
    latent = scratch_models.build("vae", dtype=DTYPE, rng=SEED).config["latent_dim"]
    shape = (batch_size, width)
    target = (rng.random(shape) < INK).astype(DTYPE)
    probabilities = (1 / (1 + np.exp(-rng.standard_normal(shape)))).astype(DTYPE)
    logits = (2 * rng.standard_normal(shape)).astype(DTYPE)
    prediction, regression_target = rng.standard_normal(shape).astype(DTYPE), rng.random(shape).astype(DTYPE)
    mean = rng.standard_normal((batch_size, latent)).astype(DTYPE)
    logvar = (0.5 * rng.standard_normal((batch_size, latent))).astype(DTYPE)
    return (op_cases(f"BCELoss on {width}", nn.BCELoss(), torch.nn.BCELoss(), [probabilities, target], ["input"],
                     batch_size, rng)
            + op_cases(f"BCEWithLogitsLoss on {width}", nn.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss(),
                       [logits, target], ["input"], batch_size, rng)
            + op_cases(f"MSELoss on {width}", nn.MSELoss(), torch.nn.MSELoss(), [prediction, regression_target],
                       ["input"], batch_size, rng)
            + op_cases(f"GaussianKL on {latent}", nn.GaussianKL(), partial(gaussian_kl, reduction="sum"),
                       [mean, logvar], ["mean", "logvar"], batch_size, rng))


# name -> (scratch optimizer, torch optimizer, arrays read and written per parameter element, settings)
OPTIMIZERS = {
    "SGD": (partial(optim.SGD, lr=1e-2, momentum=0.9), partial(torch.optim.SGD, lr=1e-2, momentum=0.9), 5,
            "lr 1e-2, momentum 0.9"),
    "Adam": (partial(optim.Adam, lr=1e-3, weight_decay=1e-5), partial(torch.optim.Adam, lr=1e-3, weight_decay=1e-5),
             7, "lr 1e-3, weight_decay 1e-5"),
    "AdamW": (partial(optim.AdamW, lr=1e-3, weight_decay=1e-2),
              partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2), 7, "lr 1e-3, weight_decay 1e-2"),
}


def optimizer_case(name: str, seed: int = SEED) -> Case:
    """One ``step()`` of optimizer ``name`` over the mlp-ae's parameters, with fixed gradients."""
    make_scratch, make_torch, arrays, settings = OPTIMIZERS[name]
    model = scratch_models.build("mlp-ae", dtype=DTYPE, rng=seed)
    twin = torch_models.build("mlp-ae", dtype=torch.float32, **model.config)
    initial = {key: value.copy() for key, value in model.state_dict().items()}  # state_dict shares storage, as torch's
    rng = np.random.default_rng(seed)
    grads = {key: (1e-2 * rng.standard_normal(p.shape)).astype(DTYPE) for key, p in model.named_parameters()}
    scratch_parameters, torch_parameters = dict(model.named_parameters()), dict(twin.named_parameters())

    def reset_weights_and_gradients():
        model.load_state_dict(initial)
        twin.load_state_dict({key: torch.from_numpy(value) for key, value in initial.items()}, strict=True)
        for key, grad in grads.items():
            np.copyto(scratch_parameters[key].grad, grad)
            torch_parameters[key].grad = torch.from_numpy(grad.copy())

    reset_weights_and_gradients()
    optimizer, twin_optimizer = make_scratch(model.parameters()), make_torch(twin.parameters())
    initial_state, initial_twin_state = optimizer.state_dict(), twin_optimizer.state_dict()
    count = model.num_parameters()
    label = f"{name} step ({settings}) over mlp-ae's {count:,} parameters"
    meta = {"kind": "optimizer", "op": name, "direction": "step", "batch_size": None, "dtype": np.dtype(DTYPE).name,
            "parameters": count, "flops": 0, "bytes": arrays * count * np.dtype(DTYPE).itemsize}

    def scratch_step():
        optimizer.step()

    def torch_step():
        twin_optimizer.step()

    def check():
        # the same weights, gradients and empty state on both sides; two steps, so that the
        # second one runs on the state (momentum, moments, step count) the first one left
        reset_weights_and_gradients()
        optimizer.load_state_dict(initial_state)
        twin_optimizer.load_state_dict(initial_twin_state)
        for _ in range(2):
            scratch_step()
            torch_step()
        check_against_torch({f"updated {key}": p.data.copy() for key, p in scratch_parameters.items()},
                            {f"updated {key}": p.detach() for key, p in torch_parameters.items()},
                            label, meta=meta)

    return Case(label, scratch_step, torch_step, check, meta)


def all_cases(batch_sizes, only=None, seed: int = SEED) -> list[Case]:
    """Every op's forward and backward case at every batch size, then the optimizer steps;
    ``only``: keep the cases whose name contains one of these strings (case-insensitive)."""
    cases = []
    for batch_size in batch_sizes:
        rng = np.random.default_rng(seed)
        cases += (linear_cases(batch_size, rng) + conv_cases(batch_size, rng) + activation_cases(batch_size, rng)
                  + new_layer_cases(batch_size, rng) + loss_cases(batch_size, rng))
    cases += [optimizer_case(name, seed) for name in OPTIMIZERS]
    if only:
        wanted = [text.lower() for text in only]
        cases = [case for case in cases if any(text in case.name.lower() for text in wanted)]
    return cases


def run(args) -> int:
    from autoencoders.bench import plots, report
    from autoencoders.bench.peak import peak_for

    malloc = None if args.default_malloc else pin_malloc()
    peak = peak_for(args)
    cases = all_cases(args.batch_sizes, args.only)
    if not cases:
        raise ValueError(f"--only {','.join(args.only)} matches no case")
    results = measure(cases, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                      settle_ms=args.settle_ms, block_ms=args.block_ms, peak_gflops=peak["peak_gflops"],
                      log=lambda line: print(line, flush=True))
    print(f"\nfloat32, threads {results[0]['threads']}; medians in ms (IQR)")
    print(format_table(results))
    env = report.environment_for(args, peak, malloc)
    markdown = report.header("Per-op benchmark: scratch vs torch", args, env)
    markdown += ["", "Forward: the op on its inputs (scratch caches for backward; torch records autograd). Backward: "
                     "one forward outside the timed call, then the backward alone, re-run (scratch "
                     "`op.backward(dy)`, torch `y.backward(dy, retain_graph=True)`); both give the input and "
                     "parameter gradients. Optimizer steps: `step()` over the mlp-ae's parameters with fixed "
                     "gradients. Shapes: autoencoders/bench/ops.py."]
    markdown += ["", "![scratch / torch](ops.png)"]
    markdown += report.grouped_tables(results, "batch_size", "Batch {}",
                                      none_heading="Optimizer steps (no batch)")
    figure = plots.ratio_figure(results, "Per-op: scratch / torch")
    paths = report.write_suite(args.out, "ops", results, env, args, markdown, {"ops": figure})
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def main(argv=None) -> int:
    from autoencoders.bench.options import main_for

    return main_for("ops", argv)


if __name__ == "__main__":
    sys.exit(main())
