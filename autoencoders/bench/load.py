"""Training steps on a busy machine: the slowdown each side suffers beside competing processes.

    python -m autoencoders.bench.load [--models mlp-ae,conv-vae] [--batch-sizes 128] [--busy 0,1,2]
                              [--threads N] [--repeats 10] [--out docs/benchmarks] [--quick]

For each count k of ``--busy``, k competing processes (each a Python loop that never sleeps, one
core's worth of work) start, and each model's training step (``autoencoders.bench.models``: the
same weights, batch and noise, checked against torch before and after) is timed for scratch and
torch in the harness's interleaved blocks (``autoencoders.bench.harness``), twice:

- with ``--threads`` (default: the cores available), the same count at every k;
- with the count ``--threads auto`` would choose at that moment, the default of ``train`` and the
  other commands (``autoencoders.threads.auto_threads``: the cores less those the competitors keep
  busy), sampled while the competitors run and this process is idle.

A side's slowdown at k is its median step time at k over its median with no competitor, under the
same setting (the auto row at k against the auto row at 0, which is all cores). Writes
``load.json`` and ``load.md`` to ``--out``. The competitors are killed before the suite returns,
whatever happens.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

BUSY_LOOP = "while True: pass"
START_S = 0.5  # lets the competitors start running before anything is sampled or timed


@contextmanager
def competing_processes(count: int):
    """``count`` CPU-bound Python processes, running while the block runs, killed after it."""
    processes = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if count:
            time.sleep(START_S)
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def measure_under_load(args, log=print) -> list[dict]:
    """Each model at each batch size, each busy count, fixed and auto thread counts; one result each."""
    from autoencoders.bench.harness import format_table, measure
    from autoencoders.bench.models import training_step_case
    from autoencoders.threads import auto_threads

    results = []
    for busy in args.busy:
        with competing_processes(busy):
            auto, busy_seen = auto_threads()
            settings = [("fixed", args.threads)] + ([("auto", auto)] if auto != args.threads else [])
            for setting, threads in settings:
                for batch_size in args.batch_sizes:
                    cases = [training_step_case(name, batch_size) for name in args.models]
                    chosen = measure(cases, repeats=args.repeats, warmup=args.warmup, threads=threads,
                                     settle_ms=args.settle_ms, block_ms=args.block_ms)
                    for result in chosen:
                        result.update(busy_processes=busy, busy_cores_seen=busy_seen, auto_threads=auto,
                                      thread_setting=setting, thread_count=threads)
                    log(f"\n{busy} busy process{'es' if busy != 1 else ''} (other processes kept "
                        f"{busy_seen if busy_seen is None else round(busy_seen, 2)} cores busy), {setting} threads "
                        f"{threads}, batch {batch_size}; medians in ms (IQR)")
                    log(format_table(chosen))
                    results += chosen
    # "auto" at a busy count where it chose --threads is the fixed measurement itself
    for result in [r for r in results if r["thread_setting"] == "fixed" and r["auto_threads"] == r["thread_count"]]:
        results.append({**result, "thread_setting": "auto"})
    return slowdowns(results)


def slowdowns(results: list[dict]) -> list[dict]:
    """Add ``slowdown_scratch`` and ``slowdown_torch``: each median over the quiet median of the same
    model, batch size and thread setting (None when no quiet run was measured)."""
    quiet = {(r["model"], r["batch_size"], r["thread_setting"]): r for r in results if r["busy_processes"] == 0}
    for result in results:
        base = quiet.get((result["model"], result["batch_size"], result["thread_setting"]))
        for side in ("scratch", "torch"):
            result[f"slowdown_{side}"] = (None if base is None else
                                          result[f"{side}_median_ms"] / base[f"{side}_median_ms"])
    return results


def _cell(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def load_table(results: list[dict]) -> list[str]:
    """Markdown rows: model, batch, thread setting and count, competitors, both medians, slowdowns, ratio."""
    lines = ["| model | batch | threads | busy processes | scratch ms (IQR) | torch ms (IQR) | scratch slowdown | "
             "torch slowdown | scratch / torch |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    order = sorted(results, key=lambda r: (r["model"], r["batch_size"], r["thread_setting"] != "fixed",
                                           r["busy_processes"]))
    for r in order:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['thread_setting']} ({r['thread_count']}) | "
                     f"{r['busy_processes']} | {r['scratch_median_ms']:.3f} ({r['scratch_iqr_ms']:.3f}) | "
                     f"{r['torch_median_ms']:.3f} ({r['torch_iqr_ms']:.3f}) | {_cell(r['slowdown_scratch'])} | "
                     f"{_cell(r['slowdown_torch'])} | {r['ratio']:.2f} |")
    return lines


def run(args) -> int:
    from autoencoders.bench import report
    from autoencoders.bench.harness import pin_malloc

    malloc = None if args.default_malloc else pin_malloc()
    results = measure_under_load(args)
    env = report.environment_for(args, None, malloc)
    env["threads"] = results[0]["threads"] if results else None  # the fixed setting's (every result has its own)
    markdown = report.header("Training step beside competing processes", args, env)
    markdown += ["", f"Each competing process is `python -c '{BUSY_LOOP}'`. Slowdown: the median step time beside "
                     "that many competitors over the median with none, same model, batch and thread setting. "
                     "Threads \"fixed\": --threads at every count; \"auto\": the count the commands' default "
                     "(--threads auto) chose at that moment, with the competitors running.", ""]
    markdown += load_table(results)
    paths = report.write_suite(args.out, "load", results, env, args, markdown)
    print("\n" + "\n".join(load_table(results)))
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def main(argv=None) -> int:
    from autoencoders.bench.options import main_for

    return main_for("load", argv)


if __name__ == "__main__":
    sys.exit(main())
