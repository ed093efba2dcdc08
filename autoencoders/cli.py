"""The ``autoencoders`` command: train, eval, reconstruct, convert, compare, gradcheck.

Every user error (a bad option, missing or corrupt data, a bad checkpoint, a run directory that
is taken, a size that does not fit in memory) exits with status 2 and one line on stderr, never a
traceback; a run stopped by a NaN or infinite loss or weights exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autoencoders.threads import quiet_wait_policies

# Before NumPy, Numba or torch loads: their thread pools read the wait policies once, at load.
quiet_wait_policies()

import numpy as np

from autoencoders._arguments import (
    non_negative_float as _non_negative_float,
)
from autoencoders._arguments import (
    non_negative_int as _non_negative_int,
)
from autoencoders._arguments import (
    positive_float as _positive_float,
)
from autoencoders._arguments import (
    positive_int as _positive_int,
)
from autoencoders._arguments import (
    positive_int_list as _int_list,
)
from scratch.models import REGISTRY, model_names

# Which model takes which option, read from the one registry (scratch.models.REGISTRY):
# one hidden layer of width hidden_dim, or a list hidden_dims; a latent_dim (conv-ae's code size
# follows from its channels); the regularized models' one hidden layer is their code.
HIDDEN_DIM_MODELS = model_names(option="hidden_dim")
HIDDEN_DIMS_MODELS = model_names(option="hidden_dims")
LATENT_MODELS = model_names(option="latent_dim")
SHALLOW_AUTOENCODERS = model_names(family="regularized")
NOISY_INPUT_MODELS = model_names(option="noise")
# gradcheck builds small fully-connected models: those sized by input_dim and hidden width(s)
# (not cvae: its loss needs labels; parity_tests/test_cvae.py checks its gradients)
GRADCHECK_MODELS = tuple(name for name in model_names(option="input_dim") if name in HIDDEN_DIM_MODELS + HIDDEN_DIMS_MODELS
                         and "image_size" not in REGISTRY[name].options and not REGISTRY[name].conditional)
# Options the command line offers for one model only (other models may accept the key with
# another meaning or default, e.g. every VAE's beta is 1): the option's dest -> that model.
MODEL_SPECIFIC = {"beta": "beta-vae", "capacity_max": "beta-vae", "capacity_steps": "beta-vae", "gamma": "beta-vae",
                  "penalty": "sparse-ae", "sparsity_target": "sparse-ae", "sparsity_weight": "sparse-ae",
                  "contraction_weight": "contractive-ae", "activation": "tied-ae", "num_samples": "iwae",
                  "reg_weight": "wae-mmd", "kernel": "wae-mmd", "num_embeddings": "vq-vae", "embedding_dim": "vq-vae",
                  "ema": "vq-vae"}
DEFAULTS = dict(epochs=10, batch_size=128, lr=1e-3, weight_decay=1e-5, seed=0)
# reconstruct draws its images in blocks of this many columns, one block under the other
RECONSTRUCT_COLUMNS = 16
class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage block first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- model options shared by train and compare ---------------------------------------------


def _open_unit_interval(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a target mean activation ρ)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text}")
    return value


def _add_model_options(parser) -> None:
    from scratch.models.regularized import DEFAULT_SPARSITY_WEIGHT, SPARSITY_PENALTIES, TIED_ACTIVATIONS

    group = parser.add_argument_group("model")
    group.add_argument("--hidden-dims", type=_int_list, metavar="N[,N...]",
                       help="hidden layer widths: mlp-ae and denoising-ae (default 256), iwae (default 200,200), "
                            "deep-conv-vae's conv blocks (default 32,64,128); the single hidden layer "
                            "of vae, seed-vae, beta-vae (default 400) and of sparse-ae, contractive-ae, tied-ae "
                            "(default 256)")
    group.add_argument("--latent-dim", type=_positive_int, metavar="N",
                       help="latent width: mlp-ae and denoising-ae (default 64), the VAEs (default 20)")
    group.add_argument("--noise", choices=["gaussian", "masking", "salt-and-pepper"],
                       help="denoising-ae: the corruption (default gaussian)")
    group.add_argument("--noise-level", type=_non_negative_float, metavar="X",
                       help="denoising-ae: std of the Gaussian noise (default 0.4), or the corrupted fraction")
    group.add_argument("--beta", type=_non_negative_float, metavar="B", help="beta-vae: the KL's weight (default 4)")
    group.add_argument("--capacity-max", type=_non_negative_float, metavar="C",
                       help="beta-vae: use BCE + gamma·|KL - C| with C raised linearly to this many nats (Burgess et al.)")
    group.add_argument("--capacity-steps", type=_positive_int, metavar="N",
                       help="beta-vae: training steps over which C rises (default 10000)")
    group.add_argument("--gamma", type=_non_negative_float, metavar="G", help="beta-vae: weight of |KL - C| (default 1000)")
    weights = " and ".join(f"{value:g} for {name}" for name, value in DEFAULT_SPARSITY_WEIGHT.items())
    group.add_argument("--penalty", choices=SPARSITY_PENALTIES,
                       help="sparse-ae: kl (default), the KL divergences of the hidden units' mean activations "
                            "from rho, summed; or l1, the hidden activations' absolute values summed per image")
    group.add_argument("--sparsity-target", type=_open_unit_interval, metavar="RHO",
                       help="sparse-ae, kl penalty: the target mean activation rho of each hidden unit, "
                            "0 < rho < 1 (default 0.05)")
    group.add_argument("--sparsity-weight", type=_non_negative_float, metavar="W",
                       help=f"sparse-ae: the penalty's weight (default {weights})")
    group.add_argument("--contraction-weight", type=_non_negative_float, metavar="L",
                       help="contractive-ae: lambda, the weight of the encoder Jacobian's squared Frobenius "
                            "norm (default 0.1)")
    group.add_argument("--activation", choices=list(TIED_ACTIVATIONS),
                       help="tied-ae: the hidden units' activation (default sigmoid)")
    group.add_argument("--reg-weight", type=_non_negative_float, metavar="L",
                       help="wae-mmd: lambda, the weight of the MMD between the codes and prior samples (default 10)")
    group.add_argument("--kernel", choices=["imq", "rbf"],
                       help="wae-mmd: the MMD's kernel, inverse multiquadratic over 7 scales (default) or Gaussian")
    group.add_argument("--num-embeddings", type=_positive_int, metavar="K",
                       help="vq-vae: codebook entries (default 128)")
    group.add_argument("--embedding-dim", type=_positive_int, metavar="D",
                       help="vq-vae: the width of each code vector (default 16)")
    group.add_argument("--ema", action="store_const", const=True,
                       help="vq-vae: move the codebook by exponential moving averages (decay 0.99) instead of "
                            "its loss term")
    group.add_argument("--num-samples", type=_positive_int, metavar="K",
                       help="iwae: importance samples per image in training (default 5; 1 is the one-sample "
                            "Monte Carlo ELBO)")


def _model_config(args) -> dict:
    """The model's configuration from the model options; a UsageError names any option that does
    not apply to ``args.model`` (the model would otherwise refuse it with a TypeError, or ignore it)."""
    config = {}
    if args.hidden_dims is not None:
        if args.model in HIDDEN_DIM_MODELS:
            if len(args.hidden_dims) != 1:
                raise UsageError(f"{args.model} has one hidden layer: give --hidden-dims a single width")
            config["hidden_dim"] = args.hidden_dims[0]
        elif args.model in HIDDEN_DIMS_MODELS:
            config["hidden_dims"] = args.hidden_dims
        else:
            raise UsageError(f"--hidden-dims applies to the MLP models, not {args.model}")
    if args.latent_dim is not None:
        if args.model in SHALLOW_AUTOENCODERS:
            raise UsageError(f"--latent-dim does not apply to {args.model}: its code is its one hidden layer, "
                             f"whose width --hidden-dims sets")
        if args.model not in LATENT_MODELS:
            raise UsageError(f"--latent-dim applies to {', '.join(LATENT_MODELS)}, not {args.model}")
        config["latent_dim"] = args.latent_dim
    if args.model not in NOISY_INPUT_MODELS and (args.noise is not None or args.noise_level is not None):
        raise UsageError(f"--noise and --noise-level apply to {', '.join(NOISY_INPUT_MODELS)}, not {args.model}")
    given = {key: getattr(args, key) for key in MODEL_SPECIFIC if getattr(args, key) is not None}
    wrong = [key for key in given if MODEL_SPECIFIC[key] != args.model]
    if wrong:
        owner = MODEL_SPECIFIC[wrong[0]]
        options = [key for key in wrong if MODEL_SPECIFIC[key] == owner]  # one owner per message
        verb = "applies" if len(options) == 1 else "apply"
        raise UsageError(f"{_flags(options)} {verb} to {owner}, not {args.model}")
    if given.get("penalty") == "l1" and "sparsity_target" in given:
        # ρ is the KL penalty's; the L1 penalty would silently ignore it
        raise UsageError("--sparsity-target applies to sparse-ae's kl penalty, not --penalty l1")
    config.update(given)
    if args.noise is not None:
        config["noise"] = args.noise
    if args.noise_level is not None:
        config["noise_level"] = args.noise_level
    return config


def _flags(keys) -> str:
    """["capacity_max", "gamma"] -> "--capacity-max, --gamma"."""
    return ", ".join("--" + key.replace("_", "-") for key in keys)


def _add_data_options(parser) -> None:
    from autoencoders.data import BINARIZATION_MODES, DATASET_NAMES, OFFLINE_DEFAULT

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                       help=f"dataset (default {OFFLINE_DEFAULT!r}: 8x8 digits that install with the package, no network)")
    group.add_argument("--data-dir", metavar="DIR",
                       help="folder with the four IDX files (.gz or raw); otherwise the cache, then a download "
                            "(recorded as an absolute path; with train --resume, where the run's data is now)")
    group.add_argument("--binarize", choices=BINARIZATION_MODES, default="threshold",
                       help="grey levels, the seed's threshold at 0.5 (default), or Bernoulli resampled every batch")


def _threads_value(text: str):
    """An argparse type: 'auto' or a positive integer."""
    return "auto" if text == "auto" else _positive_int(text)


def _add_threads_option(parser, *, resume: bool = False) -> None:
    from autoencoders.threads import THREAD_VARIABLES, available_cores

    extra = ("; with --resume, the counts the run recorded unless given here (then float32 results may "
             "differ in the last bits from an uninterrupted run's)") if resume else ""
    parser.add_argument("--threads", type=_threads_value, default=None, metavar="N|auto",
                        help=f"threads for Numba, the BLAS and torch alike (default auto: the {available_cores()} "
                             f"cores available less those other processes keep busy, at least 1; where the "
                             f"environment sets {', '.join(THREAD_VARIABLES)}, the pools are left as it sets them)"
                             f"{extra}")


def _resolve_threads(args, announce: bool = True) -> int | None:
    """--threads as a count: the number given, or for auto (the default) the cores other processes
    leave free (autoencoders.threads.auto_threads), said in one line on stdout (``announce``) when
    that is fewer than all. None: no --threads and the environment sets thread counts, which stand."""
    from autoencoders.threads import auto_threads, available_cores, default_threads, environment_thread_counts

    if args.threads not in (None, "auto"):
        return args.threads
    if args.threads is None and environment_thread_counts():
        return None
    threads, busy = auto_threads()
    if announce and threads < default_threads():
        print(f"threads: {threads} (auto: other processes keep {busy:.1f} of {available_cores()} cores busy; "
              f"--threads N to choose)")
    return threads


def _apply_threads(args, backend: str = "scratch") -> None:
    """Set --threads (or the default) on every pool before any work."""
    from autoencoders.threads import set_threads, start_pools

    threads = _resolve_threads(args, announce=False)
    if threads is not None:
        set_threads(threads, torch=backend == "torch")
    else:  # the environment set the counts: start the pools in the right order, counts untouched
        start_pools(torch=backend == "torch")


def _add_training_options(parser) -> None:
    group = parser.add_argument_group("training (defaults from the seed project)")
    group.add_argument("--epochs", type=_positive_int, default=None,
                       help="epochs (default 10; 100 on the small offline digits)")
    group.add_argument("--batch-size", type=_positive_int, default=DEFAULTS["batch_size"], help="batch size (default 128)")
    group.add_argument("--lr", type=_positive_float, default=DEFAULTS["lr"], help="Adam learning rate (default 1e-3)")
    group.add_argument("--weight-decay", type=_non_negative_float, default=DEFAULTS["weight_decay"],
                       help="Adam weight decay (default 1e-5)")
    group.add_argument("--seed", type=_non_negative_int, default=DEFAULTS["seed"],
                       help="seed of weights, batch order and noise, a non-negative integer (default 0)")
    group.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="float32 (default) or float64")


# -- commands ------------------------------------------------------------------------------


def _train(args) -> int:
    """``autoencoders.train`` (or a resume) from the command line; the same configuration and loop."""
    from autoencoders.api import default_run_directory, training_config
    from autoencoders.training import run_training

    if args.resume and (args.model is not None or args.out is not None):
        raise UsageError("--resume RUN_DIR continues a run with its own settings; give no MODEL or --out with it")
    if args.nproc is not None and args.nproc > 1:
        from autoencoders import distributed

        if distributed.requested():
            raise UsageError("--nproc starts the ranks itself; under torchrun (which sets WORLD_SIZE) leave it out")
        return _launch(args)
    if args.resume:
        threads = None if args.threads is None else _resolve_threads(args)  # None: the run's recorded counts
        run_training(args.resume, resume=True, progress=not args.quiet, epochs=args.epochs,
                     on_nonfinite=args.on_nonfinite, threads=threads, data_dir=args.data_dir)
        return 0
    if args.model is None:
        raise UsageError("train needs a MODEL (or --resume RUN_DIR)")
    config = training_config(args.model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                             backend=args.backend, seed=args.seed, dtype=args.dtype, binarize=args.binarize,
                             image_every=args.image_every, on_nonfinite=args.on_nonfinite or "stop",
                             **_model_config(args))
    # A default name is claimed exclusively, with -2, -3, ... after it when a run started in the
    # same second took it (autoencoders.runs.directory); an explicit --out must be new or empty.
    out = Path(args.out) if args.out else default_run_directory(args.model, config.dataset)
    run_training(out, config, progress=not args.quiet, unique=not args.out, threads=_resolve_threads(args))
    return 0


def _launch(args) -> int:
    """``train --nproc N``: validate here, then start N ranks of the same command (autoencoders.launch)."""
    from autoencoders.api import default_run_directory, training_config
    from autoencoders.launch import launch
    from autoencoders.threads import available_cores

    arguments = _without_option(args.argv, "--nproc")
    if args.resume:
        run_dir = args.resume
    else:
        if args.model is None:
            raise UsageError("train needs a MODEL (or --resume RUN_DIR)")
        config = training_config(args.model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                                 batch_size=args.batch_size, backend=args.backend, **_model_config(args))
        if config.batch_size < args.nproc:
            raise UsageError(f"--batch-size {config.batch_size} cannot be split over --nproc {args.nproc} processes")
        run_dir = args.out or str(default_run_directory(args.model, config.dataset))
        if not args.out:
            arguments += ["--out", run_dir]
    if args.threads is None:  # the cores shared out: N ranks of `auto` would each take them all
        arguments += ["--threads", str(max(1, available_cores() // args.nproc))]
    return launch(arguments, args.nproc, str(run_dir))


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` less ``option VALUE`` and ``option=VALUE``."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == option:
            skip = True
        elif not argument.startswith(option + "="):
            kept.append(argument)
    return kept


def _load_run(args):
    """(config, dataset, backend, state) of RUN_DIR, its newest checkpoint's weights loaded and its
    data read from --data-dir when given."""
    from autoencoders.runs.load import load_run

    run = load_run(args.run_dir, data_dir=args.data_dir)
    return run.config, run.dataset, run.backend, run.state


def _variational_evaluation(config, dataset, weights, samples: int, bound_samples=(1, 5, 50)) -> dict:
    """Nats per image on the test set: −ELBO, KL per dimension, active units, the K-sample bound
    −ℒ_K for K in ``bound_samples``, and (samples > 0) the importance-sampled −log p(x). Runs on a scratch model holding the run's weights, whichever
    backend trained them (the keys are the same)."""
    from autoencoders.data import binarize
    from autoencoders.training import evaluation_rng, model_config_for
    from scratch import evaluation
    from scratch.models import build

    model = build(config.model, dtype=np.float64, rng=config.seed, **model_config_for(config, dataset))
    model.load_state_dict(weights)
    model.eval()
    rng = evaluation_rng(config.seed)
    images = binarize(dataset.test_images, config.binarize, rng).astype(np.float64).reshape(len(dataset.test_images), -1)
    eps = rng.standard_normal((len(images), model.config["latent_dim"]))  # one ε per image (the iwae draws K)
    result = {"negative_elbo": float(evaluation.negative_elbo(model, images, eps).mean())}
    kl = evaluation.kl_per_dimension(model, images)
    count, variances = evaluation.active_units(model, images)
    result.update(kl_per_dimension=[float(v) for v in kl], active_units=int(count),
                  latent_dim=int(model.config["latent_dim"]))
    # −ℒ_K, the importance-weighted bound of Burda et al., at a few K: −ℒ_1 is the one-sample ELBO
    # (its KL sampled), and the bound tightens with K towards −log p(x)
    bound_samples = sorted(set(bound_samples) | {model.config.get("num_samples", 1)})  # and the iwae's training K
    result["bounds"] = {str(k): float(-evaluation.importance_sampled_log_likelihood(model, images, k, rng=rng).mean())
                        for k in bound_samples}
    if samples > 0:
        estimate = evaluation.importance_sampled_nll(model, images, samples=samples, rng=rng)
        result.update(nll=float(estimate.nll), nll_standard_error=float(estimate.standard_error), nll_samples=samples)
    return result


def _eval(args) -> int:
    from autoencoders.training import evaluate, loss_unit

    config, dataset, backend, state = _load_run(args)
    _apply_threads(args, config.backend)
    metrics = evaluate(backend, config, dataset.test_images, dataset.test_labels)
    result = {"run": str(args.run_dir), "epoch": state["epoch"], "model": config.model,
              "dataset": config.dataset, "backend": config.backend, "test": metrics}
    # the likelihood estimates of scratch.evaluation take q(z|x) and p(x|z): not yet q(z|x, y) (cvae)
    variational = getattr(backend.model, "loss_reduction", None) == "sum" and not REGISTRY[config.model].conditional
    if variational:
        result["variational"] = _variational_evaluation(config, dataset, state["weights"], args.nll_samples)
    elif args.nll_samples:
        raise UsageError(f"--nll-samples applies to the unconditional variational models, not {config.model}")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{config.model} on {config.dataset} ({config.backend}), epoch {state['epoch']}, "
          f"{len(dataset.test_images)} test images:")
    for line in _metric_lines(metrics, loss_unit(config.model, backend.model.config)):
        print(f"  {line}")
    if variational:
        v = result["variational"]
        print(f"  -ELBO    {v['negative_elbo']:.4f} nats per image (float64, one ε per image)")
        print(f"  active units {v['active_units']} of {v['latent_dim']} (Var_x E[z|x] > 0.01)")
        print("  KL per dimension: " + " ".join(f"{k:.3f}" for k in v["kl_per_dimension"]))
        print("  -L_K     " + "  ".join(f"K={k}: {value:.4f}" for k, value in v["bounds"].items())
              + " nats per image (importance-weighted bound; K=1 is the sampled ELBO)")
        if "nll" in v:
            print(f"  -log p(x) {v['nll']:.4f} ± {v['nll_standard_error']:.4f} nats per image "
                  f"(importance sampling, K = {v['nll_samples']})")
    return 0


def _metric_lines(metrics: dict, unit: str) -> list[str]:
    """The test metrics a line each, each distinct quantity once with its unit: the loss and its
    parts in the model's loss unit, then what the loss does not measure (per-pixel BCE or MSE,
    vq-vae's codebook perplexity)."""
    from autoencoders.training import RECONSTRUCTION_METRICS, loss_parts, test_extras

    lines = [f"{key:<10} {metrics[key]:.6f}  {unit}" for key in ["loss", *loss_parts(metrics)]]
    return lines + [f"{key:<10} {value:.6f}  {RECONSTRUCTION_METRICS[key]}" for key, value in test_extras(metrics, unit).items()]


def _reconstruct(args) -> int:
    from autoencoders import plots
    from autoencoders.data import binarize
    from autoencoders.training import evaluation_rng
    from scratch.models import draw_noise

    config, dataset, backend, state = _load_run(args)
    _apply_threads(args, config.backend)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "reconstructions.png"
    rng = evaluation_rng(config.seed)
    x = binarize(dataset.test_images[:args.count], config.binarize, rng).astype(config.dtype, copy=False)
    noise = draw_noise(config.model, backend.model.config, x.shape, rng, np.dtype(config.dtype))
    _, reconstruction = backend.evaluate(x, noise, dataset.test_labels[:args.count])
    stages, names = [x], ["original"]
    corrupted = backend.corrupted_input(x, noise)
    if corrupted is not None:
        stages, names = stages + [corrupted], names + ["noisy input"]
    stages, names = stages + [reconstruction], names + ["reconstruction"]
    rows, labels = [], []  # every image: blocks of RECONSTRUCT_COLUMNS, each block its stages above each other
    for start in range(0, len(x), RECONSTRUCT_COLUMNS):
        first = start + 1
        for stage, name in zip(stages, names):
            rows.append(stage[start:start + RECONSTRUCT_COLUMNS])
            labels.append(name if len(x) <= RECONSTRUCT_COLUMNS else f"{name} {first}-{min(len(x), start + RECONSTRUCT_COLUMNS)}")
    plots.save_image_rows(out, rows, labels=labels, title=f"{config.model}, epoch {state['epoch']}: {len(x)} test images",
                          max_columns=RECONSTRUCT_COLUMNS)
    print(f"wrote {out} ({len(x)} test images and their reconstructions)")
    return 0


def _report(args) -> int:
    from autoencoders.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    return 0


def _add_run_data_option(parser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the run's four IDX files, when they are no longer where the run's "
                             "config.json says (a run or its data moved to another machine)")


def _convert(args) -> int:
    from autoencoders.convert import convert

    written = convert(args.source, args.destination)
    print(f"wrote {written}")
    return 0


def _compare(args) -> int:
    from autoencoders.api import default_run_directory, training_config
    from autoencoders.compare import compare

    config = training_config(args.model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                             dtype=args.dtype, binarize=args.binarize, **_model_config(args))
    out = Path(args.out) if args.out else default_run_directory(args.model, config.dataset, prefix="compare-")
    compare(config, out, progress=not args.quiet, unique=not args.out, threads=_resolve_threads(args))
    return 0


BENCH_SUITES = {"ops": "autoencoders.bench.ops", "models": "autoencoders.bench.models", "sweep": "autoencoders.bench.sweep",
                "peak": "autoencoders.bench.peak", "conv": "autoencoders.bench.conv", "load": "autoencoders.bench.load",
                "all": "autoencoders.bench.all"}


def _bench(args) -> int:
    """Run a benchmark suite of ``autoencoders/bench/`` (its options are on the suite's sub-parser)."""
    import importlib

    from autoencoders.bench.harness import CheckFailed
    from autoencoders.bench.options import resolve

    resolve(args, args.suite, invoked_as="cli")
    module = importlib.import_module(BENCH_SUITES[args.suite])
    try:
        return module.run(args)
    except CheckFailed as failure:  # scratch disagreed with torch: nothing of that case was reported
        print(f"autoencoders bench: {str(failure).splitlines()[0]}", file=sys.stderr)
        return 1


def _gradcheck(args) -> int:
    """Verify a small float64 model's hand-written backward pass against central differences."""
    from scratch.gradcheck import gradcheck_model
    from scratch.memory import check_allocation
    from scratch.models import build

    _apply_threads(args)
    rng = np.random.default_rng(args.seed)
    # one hidden layer (hidden_dim) or a list of them (hidden_dims); a latent where the model has one
    config = {"hidden_dim": args.hidden_dim} if args.model in HIDDEN_DIM_MODELS else {"hidden_dims": [args.hidden_dim]}
    if args.model in LATENT_MODELS:
        config["latent_dim"] = args.latent_dim
    # the layers refuse weights that cannot fit before allocating them (scratch.memory); so does the batch
    check_allocation("gradcheck: the input batch (--batch-size, --input-dim) =", (args.batch_size, args.input_dim),
                     np.float64)
    model = build(args.model, dtype=np.float64, rng=rng, input_dim=args.input_dim, **config)
    model.eval()  # fixes the β-VAE's capacity step while the loss is evaluated again and again
    x = rng.random((args.batch_size, args.input_dim))
    noise = None if REGISTRY[args.model].noise_kind == "none" else model.draw_noise(x.shape)
    loss = model.loss(x, noise=noise)["loss"]
    print(f"{args.model}: {model.num_parameters()} parameters, float64, batch {args.batch_size}, loss {loss:.6f}")
    result = gradcheck_model(model, x, noise, rng=rng, raise_on_failure=False)
    for name, shape, count in result.arrays:
        print(f"  {name:<20} {str(shape):<12} {count:>6} elements checked")
    print(result)
    return 0 if result.passed else 1


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    models = sorted(REGISTRY)
    parser = _Parser(
        prog="autoencoders",
        description="Autoencoders from scratch (NumPy + Numba, hand-written backward passes) and their PyTorch twins.",
    )
    from autoencoders import __version__

    parser.add_argument("--version", action="version", version=f"autoencoders {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", help="train a model; writes metrics, pictures and checkpoints to a run directory",
        description="Train MODEL with Adam and write metrics.jsonl, PNG pictures and a checkpoint per epoch "
                    "to the run directory. With no --dataset, trains on the offline default (8x8 digits).",
    )
    train.add_argument("model", nargs="?", choices=models, metavar="MODEL", help=f"one of {', '.join(models)}")
    _add_data_options(train)
    _add_training_options(train)
    _add_model_options(train)
    run_group = train.add_argument_group("run")
    run_group.add_argument("--backend", choices=["scratch", "torch"], default="scratch",
                           help="scratch (NumPy/Numba, default) or torch")
    run_group.add_argument("--out", metavar="RUN_DIR",
                           help="run directory, new or empty (default runs/MODEL-DATASET-TIME, with -2, -3, ... "
                                "after it when that name is taken)")
    run_group.add_argument("--resume", metavar="RUN_DIR",
                           help="continue a run from its newest checkpoint with the settings it was started "
                                "with; only --epochs (to extend it), --on-nonfinite, --data-dir, --threads and "
                                "--quiet apply")
    run_group.add_argument("--on-nonfinite", choices=["stop", "skip"], default=None,
                           help="a batch whose loss is NaN or infinite: stop the run, keeping the last "
                                "checkpoint (default), or skip that batch and go on; with --resume, replaces "
                                "the run's setting")
    run_group.add_argument("--image-every", type=_positive_int, default=None, metavar="N",
                           help="write pictures every N epochs and after the last (default: about ten times a run)")
    run_group.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads_option(run_group, resume=True)
    run_group.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                           help="data-parallel over N local processes (torch.distributed, gloo): the same run as "
                                "one process, each rank taking its slice of every global batch of --batch-size; "
                                "rank 0 writes the run directory; --threads defaults to the cores over N. Several "
                                "machines: the same command without --nproc under torchrun (docs/distributed.md)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="evaluate a run's newest checkpoint on the test set",
                                   description="Test-set metrics of RUN_DIR's newest checkpoint.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    _add_run_data_option(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--nll-samples", type=_non_negative_int, default=0, metavar="K",
                          help="variational models: also estimate -log p(x) by importance sampling with K samples "
                               "per image (e.g. 1000; Burda et al. 2016), in bounded memory")
    _add_threads_option(evaluate)
    evaluate.set_defaults(handler=_eval)

    reconstruct = commands.add_parser("reconstruct", help="picture test images above their reconstructions",
                                      description="Write originals above reconstructions for RUN_DIR's newest checkpoint.")
    reconstruct.add_argument("run_dir", metavar="RUN_DIR")
    _add_run_data_option(reconstruct)
    reconstruct.add_argument("--count", type=_positive_int, default=16,
                             help=f"test images (default 16), drawn in blocks of {RECONSTRUCT_COLUMNS} columns")
    reconstruct.add_argument("--out", metavar="PNG", help="output file (default RUN_DIR/reconstructions.png)")
    _add_threads_option(reconstruct)
    reconstruct.set_defaults(handler=_reconstruct)

    report = commands.add_parser(
        "report", help="write RUN_DIR/report.html: a run (or compare) directory in one page for a browser",
        description="Write one self-contained RUN_DIR/report.html (no network needed): the configuration, the "
                    "metrics table, the curves, every picture by epoch, for a compare directory both backends' "
                    "curves and their difference, and the environment. train and compare write it at their end.")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.set_defaults(handler=_report)

    convert = commands.add_parser(
        "convert", help="convert weights between .safetensors and a torch .pt state_dict",
        description="SOURCE: a .safetensors file, a run directory (its newest weights) or a .pt state_dict "
                    "(loaded with weights_only=True, never unpickling code). DESTINATION: .pt or .safetensors.",
    )
    convert.add_argument("source", metavar="SOURCE")
    convert.add_argument("destination", metavar="DESTINATION")
    convert.set_defaults(handler=_convert)

    compare = commands.add_parser(
        "compare", help="train the scratch and torch versions side by side and compare them",
        description="Train MODEL with both backends from the same weights, batches and noise; print each "
                    "epoch's losses, the largest parameter difference and each backend's step time; write a plot.",
    )
    compare.add_argument("model", choices=models, metavar="MODEL", help=f"one of {', '.join(models)}")
    _add_data_options(compare)
    _add_training_options(compare)
    _add_model_options(compare)
    compare.add_argument("--out", metavar="DIR", help="a new or empty directory for compare.png and compare.json "
                                                  "(default runs/compare-MODEL-DATASET-TIME)")
    compare.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads_option(compare)
    compare.set_defaults(handler=_compare)

    from autoencoders.bench.options import SUITES as BENCH_DESCRIPTIONS
    from autoencoders.bench.options import add_suite_arguments

    bench = commands.add_parser(
        "bench", help="time scratch against torch (same process, same thread count); see 'bench SUITE --help'",
        description="Benchmark suites, scratch (NumPy/Numba) against torch in one process with the same thread "
                    "count, every case checked equal to torch before and after it is timed. Each writes JSON, "
                    "markdown and PNG files to --out (default ./bench-results). "
                    "Example: 'autoencoders bench models --batch-sizes 1,128 --repeats 10'.",
    )
    suites = bench.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name, module in BENCH_SUITES.items():
        summary = BENCH_DESCRIPTIONS[name][1]
        suite = suites.add_parser(name, help=summary, description=f"{summary}. Rules and details: {module}.")
        add_suite_arguments(suite, name, default_out="bench-results")
        suite.set_defaults(handler=_bench)

    check = commands.add_parser(
        "gradcheck", help="check a model's hand-written gradients against central differences",
        description="Build a small float64 model and compare every parameter gradient of its loss "
                    "with float64 central differences, element by element.",
    )
    check.add_argument("model", choices=GRADCHECK_MODELS,
                       help="model name")
    check.add_argument("--input-dim", type=_positive_int, default=16, help="input features (default 16)")
    check.add_argument("--hidden-dim", type=_positive_int, default=8, help="hidden width (default 8)")
    check.add_argument("--latent-dim", type=_positive_int, default=4,
                       help="latent width (default 4; the sparse, contractive and tied models have none)")
    check.add_argument("--batch-size", type=_positive_int, default=5, help="batch size (default 5)")
    check.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    _add_threads_option(check)
    check.set_defaults(handler=_gradcheck)
    return parser


def main(argv=None) -> int:
    from autoencoders.data import DataError
    from autoencoders.distributed import DistributedError
    from autoencoders.launch import LaunchError
    from autoencoders.runs.checkpoint import CheckpointError
    from autoencoders.training import NonFiniteLossError
    from scratch.memory import AllocationTooLarge

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.handler(args)
    except (UsageError, DataError, CheckpointError, ValueError, TypeError) as error:
        print(f"autoencoders {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, DistributedError) as error:  # the run itself failed, not its arguments: status 1
        print(f"autoencoders {args.command}: stopped: {error}", file=sys.stderr)
        return 1
    except LaunchError as error:  # a rank of --nproc failed; the others were stopped
        print(f"autoencoders {args.command}: {error}", file=sys.stderr)
        return error.status
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        print(f"autoencoders {args.command}: error:{where} {error.strerror or error}", file=sys.stderr)
        return 2
    except MemoryError as error:  # sizes are checked before allocating (scratch.memory); this is the rest
        detail = " ".join(str(error).split()) or "the machine ran out of memory"
        prefix = "" if isinstance(error, AllocationTooLarge) else "out of memory: "
        print(f"autoencoders {args.command}: error: {prefix}{detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # a training run says how to continue (TrainingInterrupted)
        detail = str(interrupt) or "interrupted"
        print(f"autoencoders {args.command}: {detail}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
