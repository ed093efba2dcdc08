"""The benchmark suites' command-line options, shared by ``autoencoders bench SUITE`` and
``python -m autoencoders.bench.SUITE``.

Imports neither torch nor the suites themselves, so that building the ``autoencoders`` parser
stays cheap; a suite module is imported only when it runs. Options whose default differs
under ``--quick`` (a smoke run: tiny batches, two blocks, short pauses; its numbers mean
nothing) default to None here and are filled in by ``resolve``, which also refuses, as a usage
error naming the option, a size whose arrays would not fit in memory (``check_memory``: the
bytes each suite's largest case holds, estimated from the default models' layer widths).
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import cache

from autoencoders._arguments import non_negative_float, non_negative_int, positive_int, positive_int_list
from autoencoders.bench.jax_twins import TWINS as JAX_TWINS  # the module imports jax only when used
from autoencoders.threads import available_cores
from scratch.models.registry import FAMILIES, REGISTRY, model_names

# name -> (module, one-line description)
SUITES = {
    "ops": ("autoencoders.bench.ops", "each layer, loss and optimizer step alone, forward and backward timed apart"),
    "models": ("autoencoders.bench.models", "the training step of every model"),
    "sweep": ("autoencoders.bench.sweep", "the training step against batch size (1 to 1024) and against thread count"),
    "peak": ("autoencoders.bench.peak", "this machine's float32 matrix-multiply peak, with NumPy's BLAS and with torch"),
    "conv": ("autoencoders.bench.conv", "the conv and pooling layers of conv-ae and conv-vae (forward+backward) and "
                                        "their training steps"),
    "load": ("autoencoders.bench.load", "the training step beside 0, 1 and 2 competing busy processes: each side's slowdown"),
    "all": ("autoencoders.bench.all", "every suite above into one folder (regenerates the README's numbers)"),
}

ALL_MODELS = tuple(REGISTRY)
CONV_MODELS = ("conv-ae", "conv-vae")
LOAD_MODELS = ("mlp-ae", "conv-vae")
PEERS = ("torch", "jax")
# the sweep's default: the first registered model of each family (a new family joins it)
SWEEP_MODELS = tuple(model_names(family=family)[0] for family in FAMILIES if model_names(family=family))


def default_thread_counts(cores: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the core count, and the core count itself: [1, 2] on 2 cores."""
    cores = cores or available_cores()
    counts, count = [], 1
    while count < cores:
        counts.append(count)
        count *= 2
    return counts + [cores]


# Timing defaults (autoencoders.bench.harness explains each), normal and --quick.
COMMON_DEFAULTS = {
    "normal": dict(repeats=10, warmup=3, settle_ms=150.0, block_ms=15.0, peak_size=2048, peak_repeats=5),
    "quick": dict(repeats=2, warmup=1, settle_ms=20.0, block_ms=2.0, peak_size=256, peak_repeats=2),
}
SUITE_DEFAULTS = {
    "ops": {"normal": dict(batch_sizes=[128]), "quick": dict(batch_sizes=[8])},
    "models": {"normal": dict(batch_sizes=[1, 128, 1024], models=list(ALL_MODELS), peers=["torch"]),
               "quick": dict(batch_sizes=[2], models=list(ALL_MODELS), peers=["torch"])},
    "sweep": {"normal": dict(batch_sizes=[2 ** i for i in range(11)], models=list(SWEEP_MODELS),
                             thread_counts=None, thread_batch_size=128),
              "quick": dict(batch_sizes=[1, 8], models=[ALL_MODELS[0]], thread_counts=None, thread_batch_size=8)},
    "conv": {"normal": dict(batch_sizes=[1, 32, 128, 512], models=list(CONV_MODELS)),
             "quick": dict(batch_sizes=[2], models=list(CONV_MODELS))},
    "peak": {"normal": {}, "quick": {}},
    "load": {"normal": dict(batch_sizes=[128], models=list(LOAD_MODELS), busy=[0, 1, 2]),
             "quick": dict(batch_sizes=[8], models=[LOAD_MODELS[0]], busy=[0, 1])},
    "all": {"normal": dict(peers=["torch"]), "quick": dict(peers=["torch"])},
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2 (as the ``autoencoders`` command)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def model_names(text: str) -> list[str]:
    """'mlp-ae,vae' -> ['mlp-ae', 'vae'], each one of the models."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in ALL_MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"models must be some of {', '.join(ALL_MODELS)}; got {text!r}")
    return names


def conv_model_names(text: str) -> list[str]:
    """'conv-vae' -> ['conv-vae'], each one of the models with convolutions (CONV_MODELS)."""
    names = model_names(text)
    if any(name not in CONV_MODELS for name in names):
        raise argparse.ArgumentTypeError(f"the conv suite times models with convolutions: some of "
                                         f"{', '.join(CONV_MODELS)}; got {text!r}")
    return names


def peer_names(text: str) -> list[str]:
    """'torch,jax' -> ['torch', 'jax']: torch always, jax optionally."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if "torch" not in names or any(name not in PEERS for name in names):
        raise argparse.ArgumentTypeError(f"expected torch, or torch,jax (torch is the oracle every case is checked "
                                         f"against), got {text!r}")
    return names


def busy_counts(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: non-negative, starting with 0 (the quiet run the slowdowns divide by)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not values or min(values) < 0 or values[0] != 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers starting with 0 (the quiet run), "
                                         f"got {text!r}")
    return values


def _listing(values) -> str:
    return ",".join(map(str, values))


def add_suite_arguments(parser: argparse.ArgumentParser, suite: str, default_out: str) -> None:
    """The options of ``suite`` (a key of SUITES) on ``parser``; ``default_out`` is --out's default."""
    normal, quick = SUITE_DEFAULTS[suite]["normal"], SUITE_DEFAULTS[suite]["quick"]
    common, common_quick = COMMON_DEFAULTS["normal"], COMMON_DEFAULTS["quick"]
    cores = available_cores()
    if "batch_sizes" in normal:
        parser.add_argument("--batch-sizes", type=positive_int_list, metavar="N[,N...]",
                            help=f"batch sizes (default {_listing(normal['batch_sizes'])}; "
                                 f"--quick {_listing(quick['batch_sizes'])})")
    if "models" in normal:
        parser.add_argument("--models", type=conv_model_names if suite == "conv" else model_names, metavar="NAME[,NAME...]",
                            help=f"models (default {_listing(normal['models'])}; --quick {_listing(quick['models'])})")
    if suite == "ops":
        parser.add_argument("--only", metavar="TEXT[,TEXT...]", type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
                            help="time only the cases whose name contains one of these (case-insensitive), "
                                 "e.g. 'Linear,ReLU' or 'backward'")
    if suite in ("models", "all"):
        parser.add_argument("--peers", type=peer_names, default=None, metavar="torch[,jax]",
                            help="the libraries scratch is timed against: torch (always: it is the oracle every "
                                 "case is checked against) and optionally jax, whose jax.jit-compiled twins of "
                                 f"{', '.join(JAX_TWINS)} join the same blocks (pip install 'autoencoders[jax]'; "
                                 "default torch)")
    if suite == "load":
        parser.add_argument("--busy", type=busy_counts, metavar="K[,K...]",
                            help=f"numbers of competing busy processes, 0 first (default {_listing(normal['busy'])}; "
                                 f"--quick {_listing(quick['busy'])})")
    if suite == "sweep":
        parser.add_argument("--thread-counts", type=positive_int_list, metavar="N[,N...]",
                            help=f"thread counts of the thread sweep (default {_listing(default_thread_counts(cores))}: "
                                 f"1, 2, 4... up to the {cores} cores available)")
        parser.add_argument("--thread-batch-size", type=positive_int, metavar="N",
                            help=f"batch size of the thread sweep (default {normal['thread_batch_size']}; "
                                 f"--quick {quick['thread_batch_size']})")
    timing = parser.add_argument_group("timing (rules: autoencoders/bench/harness.py)")
    timing.add_argument("--threads", type=positive_int, metavar="N",
                        help=f"threads for Numba, torch and the BLAS alike (default {cores}: the cores available)")
    timing.add_argument("--repeats", type=positive_int, metavar="N",
                        help=f"timed blocks per side, one sample each (default {common['repeats']}; "
                             f"--quick {common_quick['repeats']})")
    timing.add_argument("--warmup", type=non_negative_int, metavar="N",
                        help=f"untimed warm-up calls per side (default {common['warmup']})")
    timing.add_argument("--settle-ms", type=non_negative_float, metavar="MS",
                        help=f"pause before every block so the other side's BLAS/OpenMP threads stop spinning "
                             f"(default {common['settle_ms']:g}; --quick {common_quick['settle_ms']:g})")
    timing.add_argument("--block-ms", type=non_negative_float, metavar="MS",
                        help=f"shortest timed block: calls per block are chosen to last this long "
                             f"(default {common['block_ms']:g}; --quick {common_quick['block_ms']:g})")
    timing.add_argument("--peak-size", type=positive_int, metavar="N",
                        help=f"size of the square float32 matrix multiply that measures the peak "
                             f"(default {common['peak_size']}; --quick {common_quick['peak_size']})")
    timing.add_argument("--peak-repeats", type=positive_int, metavar="N",
                        help=f"timed blocks of that multiply per side (default {common['peak_repeats']})")
    timing.add_argument("--default-malloc", action="store_true",
                        help="leave glibc malloc's adaptive mmap/trim thresholds alone (by default they are pinned, "
                             "so whether a call page-faults does not depend on the process's history)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tiny batches, 2 blocks, short pauses (the numbers mean nothing)")
    parser.add_argument("--out", default=default_out, metavar="DIR",
                        help=f"folder for the suite's JSON, markdown and PNG files (default {default_out})")


def resolve(args: argparse.Namespace, suite: str, invoked_as: str = "cli") -> argparse.Namespace:
    """Fill in the defaults left None (normal or --quick ones), check thread counts and the memory
    the sizes need (``check_memory``) against the machine, and record ``suite`` and the command
    line that repeats the run (``invoked_as``: "cli" for ``autoencoders bench SUITE``, "module"
    for ``python -m autoencoders.bench.SUITE``)."""
    mode = "quick" if getattr(args, "quick", False) else "normal"
    for key, value in {**COMMON_DEFAULTS[mode], **SUITE_DEFAULTS[suite][mode]}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    cores = available_cores()
    if getattr(args, "threads", None) is None:
        args.threads = cores
    if suite == "sweep" and args.thread_counts is None:
        args.thread_counts = default_thread_counts(cores) if mode == "normal" else sorted({1, cores})
    for count in [args.threads, *(getattr(args, "thread_counts", None) or [])]:
        if count > cores:
            raise ValueError(f"{count} threads asked for, but this process may run on {cores} cores")
    check_memory(args, suite)
    args.suite = suite
    args.invoked_as = invoked_as
    args.command_line = command_line(args)
    return args


# -- memory: refuse a size whose arrays cannot fit before the suite allocates any of them ---------

IMAGE_SHAPE = (1, 28, 28)  # every suite's batch: (B, 1, 28, 28) float32 images
FLOAT32 = 4  # bytes


def _layer_output_shape(layer, shape: tuple) -> tuple:
    """The per-example shape ``layer`` (a scratch module without children) gives for ``shape``."""
    from scratch import nn
    from scratch.functional.conv import conv2d_output_size, conv_transpose2d_output_size, padding_sides
    from scratch.functional.pooling import pool2d_output_size

    # Shapes by the layers' size rules alone: running a layer here would start Numba's OpenMP
    # pool before torch loads its own libgomp, and the two would then share one (bench/harness.py).
    if isinstance(layer, (nn.Linear, nn.TiedLinear)):
        return (layer.out_features,)
    if isinstance(layer, nn.Flatten):
        return (math.prod(shape),)
    if isinstance(layer, nn.Unflatten):
        return layer.unflattened_size
    if len(shape) != 3:
        return shape
    if isinstance(layer, nn.Conv2d):
        sides = padding_sides(layer.padding, layer.kernel_size, layer.dilation)  # "same", "valid" too
        sizes = [conv2d_output_size(shape[1 + a] + sum(sides[a]), layer.kernel_size[a], layer.stride[a], 0,
                                    layer.dilation[a]) for a in (0, 1)]
        return (layer.out_channels, *sizes)
    if isinstance(layer, nn.ConvTranspose2d):
        sizes = [conv_transpose2d_output_size(shape[1 + a], layer.kernel_size[a], layer.stride[a], layer.padding[a],
                                              layer.output_padding[a], layer.dilation[a]) for a in (0, 1)]
        return (layer.out_channels, *sizes)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        dilation = getattr(layer, "dilation", (1, 1))
        sizes = [pool2d_output_size(shape[1 + a], layer.kernel_size[a], layer.stride[a], layer.padding[a],
                                    dilation[a], layer.ceil_mode) for a in (0, 1)]
        return (shape[0], *sizes)
    return shape  # element-wise


@cache
def activation_floats(name: str) -> int:
    """Floats per example that the default model ``name`` keeps from a forward pass: the outputs
    of its layers (Flatten and Unflatten are views), walked in registration order from a
    (1, 28, 28) image. The models register their layers in the order data meets them, but for
    the MLP VAEs' activations, registered after the layers: those count the last layer's width.
    The IWAE decodes K = ``num_samples`` codes per image: its decoder's outputs count K times."""
    from scratch import models

    model = models.build(name, rng=0)
    samples = model.config.get("num_samples", 1)
    shape, total = IMAGE_SHAPE, 0
    for module_name, layer in model.named_modules():
        if layer._modules:
            continue
        shape = _layer_output_shape(layer, shape)
        if layer._CACHE_ATTRIBUTES and type(layer).__name__ not in ("Flatten", "Unflatten"):
            total += math.prod(shape) * (samples if module_name.startswith("decoder.") else 1)
    return total


def training_step_bytes(models, batch_size: int) -> int:
    """Bytes ``autoencoders.bench.models.measure_models`` holds at once at ``batch_size``: every model's
    case is alive (its batch and torch's copy of it; the activations scratch keeps after its
    step), and the one that runs holds torch's saved activations besides."""
    images = math.prod(IMAGE_SHAPE)
    kept = sum(2 * images + activation_floats(name) for name in models)
    return FLOAT32 * batch_size * (kept + max(activation_floats(name) for name in models))


def ops_bytes(batch_sizes) -> int:
    """Bytes of ``autoencoders.bench.ops.all_cases``, which builds every batch size's cases at once: each op
    of the mlp-ae and conv-ae layers, activations and losses holds its input and output about
    four times (the forward case's and the backward case's, scratch's and torch's)."""
    per_example = 2 * (activation_floats("mlp-ae") + activation_floats("conv-ae")) + 6 * math.prod(IMAGE_SHAPE)
    return FLOAT32 * 4 * per_example * sum(batch_sizes)


def conv_bytes(batch_size: int, models=CONV_MODELS) -> int:
    """Bytes of ``autoencoders.bench.conv.cases_for(batch_size, models=models)``: each model's layer cases
    (input, output, upstream gradient and torch's copies, about six arrays of a layer's size) and its
    training step, all built at once."""
    return sum(FLOAT32 * batch_size * 6 * activation_floats(name) + training_step_bytes([name], batch_size)
               for name in models)


def peak_bytes(size: int) -> int:
    """Bytes of ``autoencoders.bench.peak.sgemm_case(size)``: A, B and C in NumPy and in torch, six
    (size, size) float32 matrices."""
    return 6 * FLOAT32 * size * size


def memory_needs(args: argparse.Namespace, suite: str) -> list[tuple[str, int, str]]:
    """``(option, bytes, what)`` for each allocation of ``suite`` that an option sizes; every suite
    measures the peak first, and the suites run their batch sizes one after the other (ops: at once)."""
    needs = [(f"--peak-size {args.peak_size}", peak_bytes(args.peak_size),
              f"the {args.peak_size}x{args.peak_size} float32 matrix multiply that measures the peak: six matrices")]
    batches = [("--batch-sizes", size) for size in getattr(args, "batch_sizes", None) or []]
    if suite == "sweep":
        batches.append(("--thread-batch-size", args.thread_batch_size))
    if suite in ("models", "sweep", "load"):
        needs += [(f"{option} {size}", training_step_bytes(args.models, size),
                   f"the training steps of {', '.join(args.models)} at batch {size}") for option, size in batches]
    elif suite == "conv":
        needs += [(f"--batch-sizes {size}", conv_bytes(size, args.models),
                   f"the {', '.join(args.models)} cases at batch {size}")
                  for _, size in batches]
    elif suite == "ops" and batches:
        sizes = [size for _, size in batches]
        needs.append((f"--batch-sizes {_listing(sizes)}", ops_bytes(sizes),
                      f"every op's cases at batch {_listing(sizes)}, built at once"))
    return needs


def check_memory(args: argparse.Namespace, suite: str) -> None:
    """Raise ValueError naming the option when the largest of ``memory_needs`` exceeds the memory
    available (``scratch.memory.available_bytes``), before the suite allocates anything."""
    from scratch.memory import available_bytes, format_bytes

    option, need, what = max(memory_needs(args, suite), key=lambda entry: entry[1])
    available = available_bytes()
    if available is not None and need > available:
        raise ValueError(f"{option} needs about {format_bytes(need)} of memory ({what}); {format_bytes(available)} "
                         f"is available")


_RECORDED = ("batch_sizes", "models", "peers", "only", "busy", "thread_counts", "thread_batch_size", "threads", "repeats", "warmup",
             "settle_ms", "block_ms", "peak_size", "peak_repeats")


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this run, every resolved option spelled out."""
    module = SUITES[args.suite][0]
    parts = [f"python -m {module}" if args.invoked_as == "module" else f"autoencoders bench {args.suite}"]
    for key in _RECORDED:
        value = getattr(args, key, None)
        if value is None:
            continue
        text = _listing(value) if isinstance(value, list) else (f"{value:g}" if isinstance(value, float) else str(value))
        parts.append(f"--{key.replace('_', '-')} {text}")
    if getattr(args, "default_malloc", False):
        parts.append("--default-malloc")
    return " ".join(parts)


def suite_arguments(args: argparse.Namespace, suite: str) -> argparse.Namespace:
    """A copy of ``args`` for running ``suite`` with the same timing options (``bench all``):
    the suite's own options take their defaults (normal or --quick, as ``args``)."""
    common = {key: getattr(args, key) for key in ("threads", "repeats", "warmup", "settle_ms", "block_ms", "peak_size",
                                                  "peak_repeats", "default_malloc", "quick", "out")}
    namespace = argparse.Namespace(**common, batch_sizes=None, models=None, only=None, thread_counts=None,
                                   thread_batch_size=None, busy=None,
                                   peers=getattr(args, "peers", None) if suite == "models" else None)
    return resolve(namespace, suite, invoked_as=args.invoked_as)


def main_for(suite: str, argv=None) -> int:
    """``python -m autoencoders.bench.SUITE``: parse, then run the suite (its ``run(args)``)."""
    import importlib

    from autoencoders.bench.harness import CheckFailed

    module_name, description = SUITES[suite]
    parser = OneLineParser(prog=f"python -m {module_name}", description=description)
    add_suite_arguments(parser, suite, default_out="bench-results")
    args = parser.parse_args(argv)
    try:
        resolve(args, suite, invoked_as="module")
        return importlib.import_module(module_name).run(args)
    except CheckFailed as failure:
        print(f"{parser.prog}: {str(failure).splitlines()[0]}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
