"""Convolution benchmark: the convolutional models' layers and training steps, scratch against torch.

    python -m autoencoders.bench.conv [--models conv-ae,conv-vae] [--batch-sizes 1,32,128,512] [--repeats 10]
                              [--threads N] [--settle-ms 150] [--out docs/benchmarks] [--default-malloc] [--quick]

Cases, per model (``conv-ae``, the seed's 1 to 16 channels, and ``conv-vae``, 32 and 64 channels,
by default) and batch size B, all float32 (rules: ``autoencoders.bench.harness``):

- forward + backward of each of the model's convolution and pooling layers, on the input shape
  that layer sees inside the model when the model runs on a (B, 1, 28, 28) batch:
  scratch ``y = layer(x); layer.backward(g)``; torch ``y = layer(x); y.backward(g)`` with ``x``
  requiring grad (both sides compute dL/dx, dL/dw, dL/db). The torch layer holds the scratch
  layer's weights; both layers' gradients are zeroed at the start of every repetition (torch's
  default ``zero_grad``, to None), so they do not grow. FLOPs (``autoencoders.bench.flops``): forward,
  dW and dx, three times the forward's; max-pooling is memory-bound (GB/s).
- the whole training step of the model: zero_grad, its loss on a binary batch (the VAE's with
  the same ε on both sides), backward, Adam step (scratch ``optim.Adam`` against ``torch.optim.Adam``, both lr 1e-3,
  weight_decay 1e-5), from the same initial weights (``autoencoders.bench.models.training_step_case``).

Inputs are fixed: random binary images (pixels on with probability 0.13, about MNIST's share of
ink) from ``np.random.default_rng(0)``, and upstream gradients from the same generator. Writes
``conv.json`` (environment, every sample), ``conv.md`` and ``conv.png`` to ``--out``, prints a
table per batch size and a one-line verdict per model at batch 128: is each conv layer's
forward+backward, and the whole training step, no slower than torch (ratio <= 1.0)? Each conv
layer's % of the measured matrix-multiply peak stands beside it (``autoencoders.bench.peak``).

Two things this benchmark found and handles (details in ``autoencoders.bench.harness``):

- The training step's float32 gradients cannot always be held to scratch == torch within
  rtol/atol 2e-4: on these binary batches a few pre-activations sit within float32 rounding of a
  ReLU kink (e.g. 8.6e-9 exactly; torch float32 rounds it to -3.7e-9, scratch to +1.2e-8), so
  the max-pool after it routes a gradient to another element in torch, and the encoder's
  gradients (and, through Adam's first step, which moves each weight by ~lr·sign(grad), its
  updated weights) differ by up to ~2 % of their max. ``check()`` then runs the step in torch
  float64 as a referee: scratch float32 must match it under the float32 tolerance (it does, to
  ~6e-7); the tables note each case settled this way. The layer cases, which give both sides the
  same input, always match torch float32 directly.
- glibc malloc's adaptive thresholds made torch page-fault thousands of times per call in some
  processes and not in others; the thresholds are pinned unless ``--default-malloc`` is given,
  and page faults per call are recorded for each side.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from autoencoders.bench import flops as flop_count
from autoencoders.bench.harness import Case, check_against_torch, format_table, measure, pin_malloc
from autoencoders.bench.report import check_notes
from scratch import models as scratch_models
from scratch.nn import Conv2d, ConvTranspose2d, MaxPool2d
from torch_impl import models as torch_models

DTYPE = np.float32
IMAGE_SHAPE = (1, 28, 28)
INK = 0.13  # share of pixels on in a binarized MNIST digit, roughly
VERDICT_BATCH = 128
MODELS = ("conv-ae", "conv-vae")


def binary_images(batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(B, 1, 28, 28) float32 zeros and ones."""
    return (rng.random((batch_size, *IMAGE_SHAPE)) < INK).astype(DTYPE)


def layer_label(layer) -> str:
    """``Conv2d(1,16,3,s3,p1)``, ``ConvTranspose2d(8,16,3,s2)``, ``MaxPool2d(2,s2)``."""
    if isinstance(layer, MaxPool2d):
        text = f"MaxPool2d({layer.kernel_size[0]},s{layer.stride[0]}"
    else:
        text = (f"{type(layer).__name__}({layer.in_channels},{layer.out_channels},"
                f"{layer.kernel_size[0]},s{layer.stride[0]}")
    if layer.padding[0]:
        text += f",p{layer.padding[0]}"
    return text + ")"


def _torch_weights(scratch_model) -> dict:
    return {key: torch.from_numpy(value) for key, value in scratch_model.state_dict().items()}


def twin_models(seed: int = 0, name: str = "conv-ae"):
    """The scratch model ``name`` (``build(name, float32, rng=seed)``) and its torch twin, same weights."""
    model = scratch_models.build(name, dtype=DTYPE, rng=seed)
    twin = torch_models.build(name)
    twin.load_state_dict(_torch_weights(model), strict=True)
    return model, twin


def _decoder_input(twin, code: torch.Tensor) -> torch.Tensor:
    """What the decoder sees after the encoder's output ``code``: the code itself, or for a VAE
    (which has ``fc21``, the mean) the mean, so that each decoder layer sees a typical input."""
    return twin.fc21(code) if hasattr(twin, "fc21") else code


def layer_case(path: str, layer, twin, x: np.ndarray, rng: np.random.Generator, batch_size: int) -> Case:
    """Forward + backward of scratch ``layer`` against torch ``twin`` on input ``x``; ``rng`` draws
    the upstream gradient. The twin should hold the layer's weights (``check()`` fails otherwise)."""
    # the output's shape from the torch twin: no scratch kernel runs before the harness's
    # separately timed first call, which is then the one that compiles
    with torch.no_grad():
        y = twin(torch.from_numpy(x.copy())).numpy()
    g = rng.standard_normal(y.shape).astype(DTYPE)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tg = torch.from_numpy(g.copy())  # a scratch backward that wrote into g would then show in check()

    def scratch_step():
        layer.zero_grad()
        out = layer(x)
        return out, layer.backward(g)

    def torch_step():
        twin.zero_grad()
        tx.grad = None
        out = twin(tx)
        out.backward(tg)
        return out, tx.grad

    name = f"{layer_label(layer)} on {'x'.join(map(str, x.shape[1:]))}"
    meta = {"batch_size": batch_size, "kind": "layer", "layer": path, "layer_type": type(layer).__name__,
            "input_shape": list(x.shape), "output_shape": list(y.shape), "dtype": np.dtype(DTYPE).name,
            "work": "forward+backward",
            # forward, dW and dx; max-pooling counts none (memory-bound): it reads x and dy once
            # and writes y and dx once
            "flops": flop_count.forward_flops(layer, x.shape) + flop_count.backward_flops(layer, x.shape)}
    if not meta["flops"]:
        meta["bytes"] = 2 * (x.nbytes + y.nbytes)

    def check():
        out, grad_input = scratch_step()
        scratch_outputs = {"output": out, "grad input": grad_input,
                           **{f"grad {key}": p.grad.copy() for key, p in layer.named_parameters()}}
        tout, tgrad_input = torch_step()
        torch_outputs = {"output": tout, "grad input": tgrad_input,
                         **{f"grad {key}": p.grad for key, p in twin.named_parameters()}}
        check_against_torch(scratch_outputs, torch_outputs, f"{name}, batch {batch_size}", meta=meta)

    return Case(name, scratch_step, torch_step, check, meta)


def model_layers(batch_size: int, seed: int = 0, kinds=(Conv2d, ConvTranspose2d, MaxPool2d), name: str = "conv-ae"):
    """``([(path, scratch layer, torch layer, input), ...], rng)``: each layer of model ``name`` of
    one of ``kinds``, with the input it sees when the model runs on a fixed binary batch, and the
    generator that drew the batch (for drawing upstream gradients next).

    The inputs are recorded by running the torch twin (same weights): no scratch kernel runs
    here, so the harness's first scratch call of each case is the one that compiles.
    """
    rng = np.random.default_rng(seed)
    model, twin = twin_models(seed, name)
    h = torch.from_numpy(binary_images(batch_size, rng))
    layers = []
    with torch.no_grad():
        for prefix in ("encoder", "decoder"):
            if prefix == "decoder":
                h = _decoder_input(twin, h)
            sequence, twin_sequence = getattr(model, prefix), getattr(twin, prefix)
            for index, layer in enumerate(sequence):
                if isinstance(layer, kinds):
                    layers.append((f"{prefix}.{index}", layer, twin_sequence[index], h.numpy().copy()))
                h = twin_sequence[index](h)
    return layers, rng


def layer_cases(batch_size: int, seed: int = 0, only=None, name: str = "conv-ae") -> list[Case]:
    """One case per conv and pooling layer of model ``name``, each on the input it sees in the model.

    The model runs once on a fixed binary batch; each layer's case times that layer alone on its
    recorded input. ``only``: a collection of layer paths (``"encoder.0"``...) to keep.
    """
    layers, rng = model_layers(batch_size, seed, name=name)
    cases = [layer_case(path, layer, twin, x, rng, batch_size)
             for path, layer, twin, x in layers if only is None or path in only]
    for case in cases:
        case.name = f"{name} {case.name}"
        case.meta["model"] = name
    return cases


def training_case(batch_size: int, seed: int = 0, name: str = "conv-ae") -> Case:
    """Model ``name``'s whole training step: ``autoencoders.bench.models.training_step_case``."""
    from autoencoders.bench.models import training_step_case

    return training_step_case(name, batch_size, seed)


def cases_for(batch_size: int, seed: int = 0, models=MODELS) -> list[Case]:
    return [case for name in models for case in layer_cases(batch_size, seed, name=name) + [training_case(batch_size, seed, name)]]


def verdicts(results: list[dict], batch_size: int = VERDICT_BATCH) -> list[dict]:
    """``verdict`` of each model measured, in the order measured."""
    names = list(dict.fromkeys(r["model"] for r in results))
    found = [verdict([r for r in results if r["model"] == name], batch_size) for name in names]
    return [entry for entry in found if entry is not None]


def verdict(results: list[dict], batch_size: int = VERDICT_BATCH) -> dict | None:
    """At ``batch_size``, for one model's results: is each conv layer's forward+backward and the
    training step no slower than torch (ratio <= 1.0)? With each conv layer's share of the
    measured peak, scratch / torch. None when that batch size was not measured."""
    chosen = [r for r in results if r["batch_size"] == batch_size and
              (r["kind"] == "training_step" or r["layer_type"] in ("Conv2d", "ConvTranspose2d"))]
    if not chosen:
        return None
    model = chosen[0].get("model", "conv-ae")
    entries = {r["name"]: {"ratio": r["ratio"], "no_slower": r["ratio"] <= 1.0,
                           "peak_fraction_scratch": r.get("peak_fraction_scratch"),
                           "peak_fraction_torch": r.get("peak_fraction_torch")} for r in chosen}
    conv = [r for r in chosen if r["kind"] == "layer"]
    step = next((r for r in chosen if r["kind"] == "training_step"), None)
    every = all(entry["no_slower"] for entry in entries.values())

    def layer_part(r):
        label = r["name"].removeprefix(f"{model} ").split(" on ")[0]
        share = ("" if r.get("peak_fraction_scratch") is None else
                 f" ({100 * r['peak_fraction_scratch']:.0f}% / {100 * r['peak_fraction_torch']:.0f}% of peak)")
        return f"{label} {r['ratio']:.2f} {'yes' if r['ratio'] <= 1.0 else 'NO'}{share}"

    parts = [layer_part(r) for r in conv]
    if step is not None:
        parts.append(f"training step {step['ratio']:.2f} {'yes' if step['ratio'] <= 1.0 else 'NO'}")
    line = (f"{model} verdict at batch {batch_size}: {'ALL' if every else 'NOT all'} no slower than torch "
            f"({sum(r['ratio'] <= 1.0 for r in conv)}/{len(conv)} conv layers"
            + ("" if step is None else f", training step {'yes' if step['ratio'] <= 1.0 else 'no'}")
            + "; ratio scratch/torch <= 1.0 is no slower; % of peak scratch / torch): " + "; ".join(parts))
    return {"model": model, "batch_size": batch_size, "all_no_slower": every, "cases": entries, "line": line}


def run(args) -> int:
    from autoencoders.bench import plots, report
    from autoencoders.bench.peak import peak_for

    malloc = None if args.default_malloc else pin_malloc()
    peak = peak_for(args)
    results = []
    for batch_size in args.batch_sizes:
        batch_results = measure(cases_for(batch_size, models=args.models), repeats=args.repeats, warmup=args.warmup,
                                threads=args.threads, settle_ms=args.settle_ms, block_ms=args.block_ms,
                                peak_gflops=peak["peak_gflops"])
        results += batch_results
        print(f"\nbatch {batch_size}, float32, threads {batch_results[0]['threads']}; medians in ms (IQR)",
              flush=True)
        print(format_table(batch_results), flush=True)
        for note in check_notes(batch_results):
            print(note, flush=True)
    verdict_entries = verdicts(results)
    print()
    for entry in verdict_entries or [{"line": f"verdict: batch {VERDICT_BATCH} was not measured"}]:
        print(entry["line"])
    env = report.environment_for(args, peak, malloc)
    markdown = report.header("Convolution benchmark: scratch (NumPy/Numba) vs torch", args, env)
    markdown += ["", "Layer cases: forward + backward of one layer on the input it sees in the model (dx, dW, db "
                     "on both sides); training step: zero_grad, the model's loss, backward, Adam (lr 1e-3, "
                     "weight_decay 1e-5). float32. Where torch float32 itself strays (a pre-activation within "
                     "rounding of a ReLU kink flips a max-pool's choice), the training step is checked against "
                     "torch float64 under the same tolerance, as noted under the table."]
    markdown += ["", "![scratch / torch](conv.png)"]
    markdown += report.grouped_tables(results, "batch_size", "Batch {}")
    if verdict_entries:
        markdown += ["", "## Verdict", ""] + [f"- {entry['line']}" for entry in verdict_entries]
    figure = plots.ratio_figure(results, f"{', '.join(args.models)} layers (forward+backward) and training "
                                         "steps: scratch / torch")
    paths = report.write_suite(args.out, "conv", results, env, args, markdown, {"conv": figure},
                               verdict=verdict_entries)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def main(argv=None) -> int:
    from autoencoders.bench.options import main_for

    return main_for("conv", argv)


if __name__ == "__main__":
    sys.exit(main())
