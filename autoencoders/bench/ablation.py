"""What each of scratch's speed changes buys: the training step with one change undone at a time.

    python -m autoencoders.bench.ablation [--models mlp-ae,vae] [--batch-sizes 1,128,1024] [--repeats 15]
                                  [--threads 2] [--out docs/benchmarks]

Every variant is the current code with exactly one fast path switched off, in the same process
(monkeypatched for the duration of its calls), against the current code itself:

- ``per-parameter Adam``: the model's parameters are not in one flat buffer (built without
  ``flatten_parameters``), so Adam runs its kernel once per parameter tensor;
- ``no bias+ReLU fusion``: Sequential runs Linear and ReLU as two passes (``fuses_with`` False);
- ``BCE and Sigmoid backward apart``: ``backward_through_sigmoid`` takes the two-pass path;
- ``dW always by BLAS``: small batches accumulate dW with ``+= dy.T @ x`` instead of the kernel;
- ``first layer's dx computed``: ``model.backward()`` with ``input_grad=True``;
- ``no workspaces``: every temporary is a fresh array (``scratch.workspace.ENABLED = False``).

The kernels' own rewrite (float32 arithmetic, NumPy's error model; see ``scratch.kernels.optim``)
cannot be switched off at run time; its effect is measured on the Adam kernel alone in
``docs/speed.md``. Both variants of a case are timed in interleaved blocks (a block of k calls
of one, then of the other, alternating which goes first), median over blocks; the variants
share one BLAS and one thread pool, so no settle pause is needed between them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from pathlib import Path

import numpy as np

import scratch.functional.linear as linear_functional
import scratch.workspace as workspace_module
from autoencoders._arguments import positive_int, positive_int_list
from autoencoders._files import atomic_write_bytes
from scratch import models as scratch_models
from scratch import nn, optim

DTYPE = np.float32
INK = 0.13
DEFAULT_OUT = Path("bench-results")


def _step_function(name, batch_size, flatten=True, input_grad=False):
    rng = np.random.default_rng(0)
    x = (rng.random((batch_size, 1, 28, 28)) < INK).astype(DTYPE)
    model = scratch_models.spec(name).cls(rng=0, dtype=DTYPE)
    if flatten:
        model.flatten_parameters()
    noise = scratch_models.draw_noise(name, model.config, x.shape, rng, DTYPE)
    optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)

    def step():
        optimizer.zero_grad()
        model.loss(x, noise=noise)
        model.backward(input_grad=input_grad)
        optimizer.step()

    return step


@contextlib.contextmanager
def _patched(target, attribute, value):
    original = getattr(target, attribute)
    setattr(target, attribute, value)
    try:
        yield
    finally:
        setattr(target, attribute, original)


def _two_pass(self, sigmoid, grad_output=1.0):
    return sigmoid.backward(self.backward(grad_output).reshape(sigmoid._output_shape))


VARIANTS = {
    "per-parameter Adam": dict(flatten=False),
    "no bias+ReLU fusion": dict(patch=(nn.Linear, "fuses_with", lambda self, following: False)),
    "BCE and Sigmoid backward apart": dict(patch=(nn.BCELoss, "backward_through_sigmoid", _two_pass)),
    "dW always by BLAS": dict(patch=(linear_functional, "OUTER_PRODUCT_ROWS", 0)),
    "first layer's dx computed": dict(input_grad=True),
    "no workspaces": dict(patch=(workspace_module, "ENABLED", False)),
}


def _timed_block(function, calls, patch):
    context = _patched(*patch) if patch else contextlib.nullcontext()
    with context:
        function()  # untimed: the first call after switching may touch cold memory
        started = time.perf_counter()
        for _ in range(calls):
            function()
        return (time.perf_counter() - started) / calls


def ablate(name, batch_size, variant, repeats):
    """Median ms per step of the current code and of ``variant``, over interleaved blocks."""
    options = VARIANTS[variant]
    current = _step_function(name, batch_size)
    undone = _step_function(name, batch_size, flatten=options.get("flatten", True),
                            input_grad=options.get("input_grad", False))
    patch = options.get("patch")
    for _ in range(3):
        current()
        _timed_block(undone, 1, patch)
    single = max(_timed_block(current, 1, None), 1e-6)
    calls = max(1, int(0.02 / single))  # blocks of about 20 ms
    samples = {"current": [], "undone": []}
    gc.collect()
    gc.disable()
    try:
        for block in range(repeats):
            order = [("current", current, None), ("undone", undone, patch)]
            for label, function, block_patch in (order if block % 2 == 0 else order[::-1]):
                samples[label].append(_timed_block(function, calls, block_patch))
    finally:
        gc.enable()
    current_ms, undone_ms = (1e3 * float(np.median(samples[k])) for k in ("current", "undone"))
    return {"model": name, "batch_size": batch_size, "variant": variant, "current_ms": current_ms,
            "undone_ms": undone_ms, "saving_ms": undone_ms - current_ms, "calls_per_block": calls,
            "blocks": repeats}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoencoders.bench.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp-ae,vae", help="comma-separated models (default mlp-ae,vae)")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=[1, 128, 1024],
                        help="comma-separated batch sizes (default 1,128,1024)")
    parser.add_argument("--repeats", type=positive_int, default=15, help="blocks per variant (default 15)")
    parser.add_argument("--threads", type=positive_int, default=2, help="threads for Numba and BLAS (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for ablation.md")
    args = parser.parse_args(argv)
    from autoencoders.threads import set_threads

    counts = set_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in scratch_models.REGISTRY]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(scratch_models.REGISTRY)}")
    rows = []
    for name in names:
        for batch_size in args.batch_sizes:
            for variant in VARIANTS:
                result = ablate(name, batch_size, variant, args.repeats)
                rows.append(result)
                print(f"{name:8s} batch {batch_size:5d}  {variant:32s} current {result['current_ms']:8.3f} ms  "
                      f"undone {result['undone_ms']:8.3f} ms  saving {result['saving_ms']:+8.3f} ms", flush=True)
    lines = ["# What each speed change buys", "",
             f"`python -m autoencoders.bench.ablation --models {','.join(names)} --batch-sizes "
             f"{','.join(map(str, args.batch_sizes))} --repeats {args.repeats} --threads {args.threads}`; "
             f"threads {counts}; float32 training step (Adam) with one change undone at a time; "
             "median ms over interleaved blocks.", "",
             "| model | batch | change undone | with it (ms) | without it (ms) | it saves (ms) |",
             "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batch_size']} | {r['variant']} | {r['current_ms']:.3f} | "
              f"{r['undone_ms']:.3f} | {r['saving_ms']:+.3f} |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "ablation.md", ("\n".join(lines) + "\n").encode("utf-8"))
    print(f"wrote {args.out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
