"""Training-step benchmark of every model: scratch against torch, the same batch and noise.

    python -m benchmarks.models [--models mlp-ae,vae] [--batch-sizes 1,128,1024] [--repeats 20]
                                [--threads 2] [--out benchmarks/results]

One case per model and batch size, float32: zero_grad, the model's loss (with the same fixed
noise array on both sides: the denoising corruption or the VAEs' ε), backward, Adam step (lr
1e-3, weight_decay 1e-5), from the same initial weights. Rules and checks: ``benchmarks.harness``
(same process and thread count, compile time apart, interleaved repetitions, outputs checked
against torch first, with torch float64 as referee where float32 rounding alone separates them).
Writes ``models.json`` and ``models.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import (Case, check_against_torch, environment, format_table, markdown_table, measure,
                                pin_malloc, to_numpy, write_json)
from scratch import models as scratch_models
from scratch._arguments import non_negative_int, positive_int, positive_int_list
from scratch import optim
from torch_impl import models as torch_models

DTYPE = np.float32
LR, WEIGHT_DECAY = 1e-3, 1e-5
INK = 0.13
DEFAULT_MODELS = ("mlp-ae", "denoising-ae", "vae", "conv-ae")
DEFAULT_BATCH_SIZES = (1, 128, 1024)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def training_step_case(name: str, batch_size: int, seed: int = 0) -> Case:
    """``name``'s whole training step, scratch and torch, from the same weights, batch and noise."""
    rng = np.random.default_rng(seed)
    x = (rng.random((batch_size, 1, 28, 28)) < INK).astype(DTYPE)
    model = scratch_models.build(name, dtype=DTYPE, rng=seed)
    noise = scratch_models.draw_noise(name, model.config, x.shape, rng, DTYPE)
    twin = torch_models.build(name, dtype=torch.float32, **model.config)
    initial = model.state_dict()
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in initial.items()}, strict=True)
    optimizer = optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    tx, tnoise = torch.from_numpy(x), None if noise is None else torch.from_numpy(noise)

    def scratch_step():
        optimizer.zero_grad()
        loss = model.loss(x, noise=noise)["loss"]
        model.backward()
        optimizer.step()
        return loss

    def torch_step():
        twin_optimizer.zero_grad()
        loss = twin.loss(tx, noise=tnoise)["loss"]
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
        loss = twin64.loss(torch.from_numpy(x.astype(np.float64)), noise=noise64)["loss"]
        loss.backward()
        optimizer64.step()
        return outputs(to_numpy(loss), twin64.named_parameters())

    label = f"{name} training step (Adam)"
    meta = {"batch_size": batch_size, "kind": "training_step", "model": name, "dtype": np.dtype(DTYPE).name,
            "parameters": model.num_parameters(), "lr": LR, "weight_decay": WEIGHT_DECAY}

    def check():
        model.load_state_dict(initial)
        optimizer.state.clear()
        twin.load_state_dict({key: torch.from_numpy(value) for key, value in initial.items()}, strict=True)
        twin_optimizer.state.clear()
        loss, twin_loss = scratch_step(), torch_step()
        check_against_torch(outputs(np.float32(loss), model.named_parameters()),
                            outputs(to_numpy(twin_loss), twin.named_parameters()),
                            f"{label}, batch {batch_size}", referee=referee, meta=meta)

    return Case(label, scratch_step, torch_step, check, meta)


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in scratch_models.MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"models must be some of {sorted(scratch_models.MODELS)}, got {text!r}")
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=_names, default=list(DEFAULT_MODELS),
                        help=f"comma-separated model names (default {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--batch-sizes", type=positive_int_list, default=list(DEFAULT_BATCH_SIZES),
                        help="comma-separated batch sizes (default 1,128,1024)")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed repetitions per side (default 20)")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed warm-up calls per side (default 3)")
    parser.add_argument("--threads", type=positive_int, default=2, help="threads for Numba, torch and BLAS alike (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for models.json and models.md")
    args = parser.parse_args(argv)
    malloc = pin_malloc()
    results = []
    for batch_size in args.batch_sizes:
        cases = [training_step_case(name, batch_size) for name in args.models]
        batch_results = measure(cases, repeats=args.repeats, warmup=args.warmup, threads=args.threads)
        results += batch_results
        print(f"\nbatch {batch_size}, float32, threads {batch_results[0]['threads']}; medians in ms (IQR)", flush=True)
        print(format_table(batch_results), flush=True)
    env = environment(results[0]["threads"], malloc)
    json_path = write_json(args.out / "models.json", results, env, arguments=vars(args) | {"out": str(args.out)})
    markdown = [f"# Training step, scratch vs torch\n\n`python -m benchmarks.models --models {','.join(args.models)} "
                f"--batch-sizes {','.join(map(str, args.batch_sizes))} --repeats {args.repeats}`, {env['date']}, "
                f"{env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, numba {env['numba']}.\n"]
    for batch_size in args.batch_sizes:
        markdown.append(f"\n## Batch {batch_size}\n\n" + markdown_table([r for r in results if r["batch_size"] == batch_size]))
    (args.out / "models.md").write_text("\n".join(markdown) + "\n", encoding="utf-8")
    print(f"wrote {json_path} and {args.out / 'models.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
