"""The ``autoencoders`` command. Usage errors exit with status 2 and one line on stderr."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _gradcheck(args) -> int:
    """Verify a small float64 model's hand-written backward pass against central differences."""
    from scratch.gradcheck import gradcheck_model
    from scratch.models import build

    rng = np.random.default_rng(args.seed)
    model = build(args.model, dtype=np.float64, rng=rng, input_dim=args.input_dim,
                  hidden_dims=[args.hidden_dim], latent_dim=args.latent_dim)
    x = rng.random((args.batch_size, args.input_dim))
    noise = model.draw_noise(x.shape) if hasattr(model, "draw_noise") else None
    loss = model.loss(x, noise=noise)["loss"]
    print(f"{args.model}: {model.num_parameters()} parameters, float64, batch {args.batch_size}, loss {loss:.6f}")
    result = gradcheck_model(model, x, noise, rng=rng, raise_on_failure=False)
    for name, shape, count in result.arrays:
        print(f"  {name:<20} {str(shape):<12} {count:>6} elements checked")
    print(result)
    return 0 if result.passed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoencoders",
        description="Autoencoders from scratch (NumPy + Numba) and their PyTorch twins.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "gradcheck", help="check a model's hand-written gradients against central differences",
        description="Build a small float64 model and compare every parameter gradient of its loss "
                    "with float64 central differences, element by element.",
    )
    check.add_argument("model", choices=["mlp-ae", "denoising-ae"], help="model name")
    check.add_argument("--input-dim", type=int, default=16, help="input features (default 16)")
    check.add_argument("--hidden-dim", type=int, default=8, help="hidden width (default 8)")
    check.add_argument("--latent-dim", type=int, default=4, help="latent width (default 4)")
    check.add_argument("--batch-size", type=int, default=5, help="batch size (default 5)")
    check.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    check.set_defaults(handler=_gradcheck)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("input_dim", "hidden_dim", "latent_dim", "batch_size"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        return args.handler(args)
    except (ValueError, TypeError) as error:
        print(f"autoencoders: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
