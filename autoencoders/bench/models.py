"""Training-step benchmark of every model: scratch against torch, the same batch and noise.

    python -m autoencoders.bench.models [--models mlp-ae,vae] [--batch-sizes 1,128,1024] [--peers torch,jax]
                                [--repeats 10] [--threads N] [--settle-ms 150] [--out docs/benchmarks] [--quick]

One case per model (every model of the registry, ``scratch.models.REGISTRY``, by default) and batch size, float32:
zero_grad, the model's loss (with the same fixed noise array on both sides: the denoising
corruption or the VAEs' ε), backward, Adam step (lr 1e-3, weight_decay 1e-5), from the same
initial weights, on a fixed random binary batch (pixels on with probability 0.13, about MNIST's
share of ink). Rules and checks: ``autoencoders.bench.harness`` (same process and thread count, compile
time apart, settle pause and alternating blocks, outputs checked against torch before and after
timing, with torch float64 as referee where float32 rounding alone separates them). FLOPs per
step: ``autoencoders.bench.flops`` (forward, dW of every layer, dx of every layer but the first).
Writes ``models.json``, ``models.md`` and ``models.png`` to ``--out``.

``--peers torch,jax`` adds jax.jit (``autoencoders.bench.jax_twins``: the whole step, value_and_grad
and torch's Adam, in one compiled function) for the models it has a twin of, from the same
weights, batch and noise, held to torch by the same check as scratch (loss, gradients with the
float64 referee, Adam step) before and after timing, and timed in the same rotating blocks; its
columns and scratch / jax join the tables. Without jax installed the suite says so in one line
and times against torch alone; so it does where ``--threads`` is not every core, since XLA's CPU
thread pool cannot be limited to fewer.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from autoencoders.bench import flops as flop_count
from autoencoders.bench.harness import (
    TRAINING_NORM_RTOL,
    Case,
    assert_matches,
    check_against_torch,
    format_table,
    measure,
    pin_malloc,
    to_numpy,
)
from scratch import models as scratch_models
from scratch import optim
from torch_impl import models as torch_models

DTYPE = np.float32
LR, WEIGHT_DECAY = 1e-3, 1e-5
INK = 0.13
IMAGE_SHAPE = (1, 28, 28)


def binary_batch(batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(B, 1, 28, 28) float32 zeros and ones, about MNIST's share of ink."""
    return (rng.random((batch_size, *IMAGE_SHAPE)) < INK).astype(DTYPE)


def step_flops(name: str, config: dict, x: np.ndarray, noise, **conditions) -> dict:
    """``autoencoders.bench.flops.training_step_flops`` of model ``name`` on batch ``x``: the layers from a
    scratch model of that configuration, their input shapes and order from its torch twin."""
    model = scratch_models.build(name, dtype=DTYPE, rng=0, **config)
    probe = torch_models.build(name, dtype=torch.float32, **config)
    return flop_count.training_step_flops(model, flop_count.input_shapes(probe, x, noise, **conditions))


def _gradients(outputs: dict) -> dict:
    return {key: value for key, value in outputs.items() if not key.startswith("updated ")}


def _updates(outputs: dict) -> dict:
    return {key: value for key, value in outputs.items() if key.startswith("updated ")}


def torch_adam_step(initial: dict, outputs: dict) -> dict:
    """torch.optim.Adam's first step (LR, WEIGHT_DECAY) from ``initial`` weights with the gradients
    in ``outputs`` (``"grad KEY"``), as ``{"updated KEY": weights}``; buffers in ``initial`` (BatchNorm's
    running statistics: no gradient) are not parameters and are left out."""
    parameters = {key: torch.nn.Parameter(torch.from_numpy(value.copy())) for key, value in initial.items()
                  if f"grad {key}" in outputs}
    for key, parameter in parameters.items():
        parameter.grad = torch.from_numpy(np.array(outputs[f"grad {key}"], dtype=initial[key].dtype))
    torch.optim.Adam(parameters.values(), lr=LR, weight_decay=WEIGHT_DECAY).step()
    return {f"updated {key}": parameter.detach().numpy() for key, parameter in parameters.items()}


def jax_step(name: str, config: dict, initial: dict, x: np.ndarray, noise):
    """The jax.jit twin of ``name``'s training step from the same weights, batch and noise, or None
    where jax has no twin of it (``autoencoders.bench.jax_twins``)."""
    from autoencoders.bench import jax_twins

    if name not in jax_twins.TWINS:
        return None
    return jax_twins.JaxTrainingStep(name, config, initial, x, noise, lr=LR, weight_decay=WEIGHT_DECAY)


def training_step_case(name: str, batch_size: int, seed: int = 0, peers=("torch",)) -> Case:
    """``name``'s whole training step, scratch and torch, from the same weights, batch and noise;
    with "jax" in ``peers``, jax.jit's too where it has a twin (checked like scratch: its loss,
    gradients and updated weights against torch's, before and after timing)."""
    rng = np.random.default_rng(seed)
    x = binary_batch(batch_size, rng)
    model = scratch_models.build(name, dtype=DTYPE, rng=seed)
    noise = scratch_models.draw_noise(name, model.config, x.shape, rng, DTYPE)
    # a conditional model's labels (uniform classes), the same on every side
    conditions = scratch_models.spec(name).label_arguments(scratch_models.draw_labels(name, model.config, len(x), rng))
    twin = torch_models.build(name, dtype=torch.float32, **model.config)
    initial = {key: value.copy() for key, value in model.state_dict().items()}  # state_dict shares storage, as torch's
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in initial.items()}, strict=True)
    optimizer = optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    initial_optimizer, initial_twin_optimizer = optimizer.state_dict(), twin_optimizer.state_dict()
    tx, tnoise = torch.from_numpy(x.copy()), None if noise is None else torch.from_numpy(noise.copy())
    jax_twin = jax_step(name, model.config, initial, x, noise) if "jax" in peers else None

    def scratch_step():
        optimizer.zero_grad()
        loss = model.loss(x, noise=noise, **conditions)["loss"]
        model.backward(input_grad=False)
        optimizer.step()
        return loss

    def torch_step():
        twin_optimizer.zero_grad()
        loss = twin.loss(tx, noise=tnoise, **conditions)["loss"]
        loss.backward()
        twin_optimizer.step()
        return loss

    def outputs(loss, named_parameters) -> dict:
        values = {"loss": np.asarray(loss)}
        for key, parameter in named_parameters:
            values[f"grad {key}"] = to_numpy(parameter.grad).copy()
            values[f"updated {key}"] = to_numpy(parameter.data).copy()
        return values

    def referee() -> dict:
        """The same step in torch float64."""
        twin64 = torch_models.build(name, dtype=torch.float64, **model.config)
        twin64.load_state_dict({key: torch.from_numpy(value.astype(np.float64)) for key, value in initial.items()})
        optimizer64 = torch.optim.Adam(twin64.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        noise64 = None if noise is None else torch.from_numpy(noise.astype(np.float64))
        loss = twin64.loss(torch.from_numpy(x.astype(np.float64)), noise=noise64, **conditions)["loss"]
        loss.backward()
        optimizer64.step()
        return outputs(to_numpy(loss), twin64.named_parameters())

    label = f"{name} training step (Adam)"
    count = step_flops(name, model.config, x, noise, **conditions)
    meta = {"batch_size": batch_size, "kind": "training_step", "model": name, "dtype": np.dtype(DTYPE).name,
            "parameters": model.num_parameters(), "lr": LR, "weight_decay": WEIGHT_DECAY,
            "flops": count["total"], "flops_detail": {key: count[key] for key in
                                                      ("forward", "grad_weight", "grad_input", "first_layer")}}

    def check():
        # Both sides restart from the same weights and an empty optimizer state, so that the check
        # after timing compares one step again, whatever the timed steps did to the weights.
        model.load_state_dict(initial)
        optimizer.load_state_dict(initial_optimizer)
        twin.load_state_dict({key: torch.from_numpy(value) for key, value in initial.items()}, strict=True)
        twin_optimizer.load_state_dict(initial_twin_optimizer)
        loss, twin_loss = scratch_step(), torch_step()
        mine = outputs(np.float32(loss), model.named_parameters())
        # The loss and gradients against torch's (a float64 referee settles ReLU flips); the Adam
        # step against torch.optim.Adam applied to *scratch's* gradients, since one Adam step moves
        # each weight by about lr·sign(g), which is ill-conditioned wherever g is near 0.
        theirs = _gradients(outputs(to_numpy(twin_loss), twin.named_parameters()))
        check_against_torch(_gradients(mine), theirs, f"{label}, batch {batch_size}", referee=lambda: _gradients(referee()),
                            meta=meta, norm_rtol=TRAINING_NORM_RTOL)
        assert_matches(_updates(mine), torch_adam_step(initial, mine), f"{label}, batch {batch_size}: Adam step")
        if jax_twin is not None:  # jax is held to torch exactly as scratch is
            jax_outputs, jax_meta = jax_twin.first_step_outputs(), {}
            check_against_torch(_gradients(jax_outputs), theirs, f"{label}, batch {batch_size}, jax",
                                referee=lambda: _gradients(referee()), meta=jax_meta, norm_rtol=TRAINING_NORM_RTOL)
            assert_matches(_updates(jax_outputs), torch_adam_step(initial, jax_outputs),
                           f"{label}, batch {batch_size}, jax: Adam step")
            meta["check_jax"] = jax_meta["check"]

    case = Case(label, scratch_step, torch_step, check, meta)
    if jax_twin is not None:
        case.peers["jax"] = jax_twin.step
    return case


def measure_models(models, batch_sizes, args, threads: int | None = None, peak_gflops: float | None = None,
                   log=print, peers=("torch",)) -> list[dict]:
    """Every model's training step at every batch size; one ``measure`` per batch size (so only
    that batch's cases are alive at once). Prints a table per batch size."""
    from autoencoders.bench.harness import throughput
    from autoencoders.bench.peak import measure_peak

    threads = threads or args.threads
    results = []
    for batch_size in batch_sizes:
        cases = [training_step_case(name, batch_size, peers=peers) for name in models]
        # The peak again just before and just after this batch's cases: a shared VM's speed drifts
        # over minutes (measured here: 140 and 272 GFLOP/s in one afternoon), and "% of peak" must
        # compare with what the machine could do while these cases ran. The largest of the three.
        before = measure_peak(threads, args.peak_size, args.peak_repeats, args.settle_ms, fresh=True)["peak_gflops"]
        batch_results = measure(cases, repeats=args.repeats, warmup=args.warmup, threads=threads,
                                settle_ms=args.settle_ms, block_ms=args.block_ms)
        after = measure_peak(threads, args.peak_size, args.peak_repeats, args.settle_ms, fresh=True)["peak_gflops"]
        group_peak = max(peak_gflops or 0.0, before, after)
        for result in batch_results:
            result["thread_count"] = threads
            result["peak_measurements_gflops"] = {"suite": peak_gflops, "before": before, "after": after}
            throughput(result, group_peak)
        results += batch_results
        log(f"\nbatch {batch_size}, float32, threads {batch_results[0]['threads']}; medians in ms (IQR)")
        log(format_table(batch_results))
    return results


def usable_peers(peers, threads: int, log=print) -> list[str]:
    """``peers`` less jax where it is not installed, or where ``threads`` is not every core (XLA's
    CPU client sizes its own thread pool to the cores and offers no setting for it), said in one line."""
    from autoencoders.bench import jax_twins
    from autoencoders.threads import available_cores

    if "jax" not in peers:
        return list(peers)
    reason = jax_twins.unavailable_reason()
    if reason is None and threads != available_cores():
        reason = (f"XLA runs on all {available_cores()} cores and cannot be limited to --threads {threads}, "
                  f"so it would not be timed with the same thread count")
    if reason is not None:
        log(f"jax: {reason}; timing against torch alone")
        return [peer for peer in peers if peer != "jax"]
    return list(peers)


def run(args) -> int:
    from autoencoders.bench import plots, report
    from autoencoders.bench.peak import peak_for

    malloc = None if args.default_malloc else pin_malloc()
    peers = usable_peers(args.peers, args.threads)
    peak = peak_for(args)
    results = measure_models(args.models, args.batch_sizes, args, peak_gflops=peak["peak_gflops"], peers=peers)
    env = report.environment_for(args, peak, malloc)
    markdown = report.header("Training step, scratch vs torch", args, env)
    markdown += ["", "Each case: zero_grad, the model's loss on a fixed binary batch (same noise both sides), "
                     "backward, Adam (lr 1e-3, weight_decay 1e-5); float32."
                 + (" jax: the same step as one jax.jit function (value_and_grad and torch's Adam), checked "
                    "against torch like scratch before and after timing." if "jax" in peers else ""),
                 "", "% of peak: against the largest of the suite's peak and two more measured just before and "
                     "just after each batch size's cases (the machine's speed drifts; every measurement is in the "
                     "JSON as `peak_measurements_gflops`): " + "; ".join(
                         f"batch {size}: {max(r['peak_gflops'] for r in results if r['batch_size'] == size):.0f} GFLOP/s"
                         for size in args.batch_sizes) + "."]
    markdown += ["", "![scratch / torch](models.png)"]
    markdown += report.grouped_tables(results, "batch_size", "Batch {}")
    if len(args.batch_sizes) > 1:
        figure = plots.batch_sweep_figure(results, "Training step against batch size (models suite)")
    else:
        figure = plots.ratio_figure(results, f"Training step, batch {args.batch_sizes[0]}: scratch / torch")
    paths = report.write_suite(args.out, "models", results, env, args, markdown, {"models": figure})
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def main(argv=None) -> int:
    from autoencoders.bench.options import main_for

    return main_for("models", argv)


if __name__ == "__main__":
    sys.exit(main())
