"""The benchmark suites' command-line options, shared by ``autoencoders bench SUITE`` and
``python -m benchmarks.SUITE``.

Imports neither torch nor the suites themselves, so that building the ``autoencoders`` parser
stays cheap; a suite module is imported only when it runs. Options whose default differs
under ``--quick`` (a smoke run: tiny batches, two blocks, short pauses; its numbers mean
nothing) default to None here and are filled in by ``resolve``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scratch._arguments import non_negative_float, non_negative_int, positive_int, positive_int_list

# name -> (module, one-line description)
SUITES = {
    "ops": ("benchmarks.ops", "each layer, loss and optimizer step alone, forward and backward timed apart"),
    "models": ("benchmarks.models", "the training step of every model"),
    "sweep": ("benchmarks.sweep", "the training step against batch size (1 to 1024) and against thread count"),
    "peak": ("benchmarks.peak", "this machine's float32 matrix-multiply peak, with NumPy's BLAS and with torch"),
    "conv": ("benchmarks.conv", "the conv-ae's conv and pooling layers (forward+backward) and its training step"),
    "all": ("benchmarks.all", "every suite above into one folder (regenerates the README's numbers)"),
}

ALL_MODELS = ("mlp-ae", "denoising-ae", "vae", "seed-vae", "beta-vae", "conv-ae", "conv-vae")
SWEEP_MODELS = ("mlp-ae", "denoising-ae", "vae", "conv-ae")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask; the CPU count where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_thread_counts(cores: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the core count, and the core count itself: [1, 2] on 2 cores."""
    cores = cores or available_cores()
    counts, count = [], 1
    while count < cores:
        counts.append(count)
        count *= 2
    return counts + [cores]


# Timing defaults (benchmarks.harness explains each), normal and --quick.
COMMON_DEFAULTS = {
    "normal": dict(repeats=10, warmup=3, settle_ms=150.0, block_ms=15.0, peak_size=2048, peak_repeats=5),
    "quick": dict(repeats=2, warmup=1, settle_ms=20.0, block_ms=2.0, peak_size=256, peak_repeats=2),
}
SUITE_DEFAULTS = {
    "ops": {"normal": dict(batch_sizes=[128]), "quick": dict(batch_sizes=[8])},
    "models": {"normal": dict(batch_sizes=[1, 128, 1024], models=list(ALL_MODELS)),
               "quick": dict(batch_sizes=[2], models=list(ALL_MODELS))},
    "sweep": {"normal": dict(batch_sizes=[2 ** i for i in range(11)], models=list(SWEEP_MODELS),
                             thread_counts=None, thread_batch_size=128),
              "quick": dict(batch_sizes=[1, 8], models=["mlp-ae"], thread_counts=None, thread_batch_size=8)},
    "conv": {"normal": dict(batch_sizes=[1, 32, 128, 512]), "quick": dict(batch_sizes=[2])},
    "peak": {"normal": {}, "quick": {}},
    "all": {"normal": {}, "quick": {}},
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
        parser.add_argument("--models", type=model_names, metavar="NAME[,NAME...]",
                            help=f"models (default {_listing(normal['models'])}; --quick {_listing(quick['models'])})")
    if suite == "ops":
        parser.add_argument("--only", metavar="TEXT[,TEXT...]", type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
                            help="time only the cases whose name contains one of these (case-insensitive), "
                                 "e.g. 'Linear,ReLU' or 'backward'")
    if suite == "sweep":
        parser.add_argument("--thread-counts", type=positive_int_list, metavar="N[,N...]",
                            help=f"thread counts of the thread sweep (default {_listing(default_thread_counts(cores))}: "
                                 f"1, 2, 4... up to the {cores} cores available)")
        parser.add_argument("--thread-batch-size", type=positive_int, metavar="N",
                            help=f"batch size of the thread sweep (default {normal['thread_batch_size']}; "
                                 f"--quick {quick['thread_batch_size']})")
    timing = parser.add_argument_group("timing (rules: benchmarks/harness.py)")
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
    """Fill in the defaults left None (normal or --quick ones), check thread counts against the
    machine, and record ``suite`` and the command line that repeats the run (``invoked_as``:
    "cli" for ``autoencoders bench SUITE``, "module" for ``python -m benchmarks.SUITE``)."""
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
    args.suite = suite
    args.invoked_as = invoked_as
    args.command_line = command_line(args)
    return args


_RECORDED = ("batch_sizes", "models", "only", "thread_counts", "thread_batch_size", "threads", "repeats", "warmup",
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
                                   thread_batch_size=None)
    return resolve(namespace, suite, invoked_as=args.invoked_as)


def main_for(suite: str, argv=None) -> int:
    """``python -m benchmarks.SUITE``: parse, then run the suite (its ``run(args)``)."""
    import importlib

    from benchmarks.harness import CheckFailed

    module_name, description = SUITES[suite]
    parser = OneLineParser(prog=f"python -m {module_name}", description=description)
    add_suite_arguments(parser, suite, default_out=str(Path(__file__).resolve().parent / "results"))
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
