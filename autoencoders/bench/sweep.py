"""Sweeps of the training step: against batch size, and against thread count.

    python -m autoencoders.bench.sweep [--models mlp-ae,denoising-ae,vae,conv-ae] [--batch-sizes 1,2,4,...,1024]
                               [--thread-counts 1,2] [--thread-batch-size 128] [--threads N] [--quick]

- **Batch sweep**: each model's training step (``autoencoders.bench.models.training_step_case``) at
  every batch size, at ``--threads`` threads; plotted log-log, one panel per model, scratch and
  torch, with the ratio beneath (``sweep-batch.png``).
- **Thread sweep**: the same step at ``--thread-batch-size`` with 1, 2, 4, ... threads up to the
  cores available (Numba, torch and the BLAS alike); the float32 peak is measured again at each
  thread count, so that "% of peak" compares against what that many threads can do
  (``sweep-threads.png``).

Rules and checks: ``autoencoders.bench.harness``. Writes ``sweep.json``, ``sweep.md``,
``sweep-batch.png`` and ``sweep-threads.png`` to ``--out``.
"""

from __future__ import annotations

import sys

from autoencoders.bench.harness import pin_malloc


def batch_sweep(args, peak: dict, log=print) -> list[dict]:
    """Every ``args.models`` training step at every ``args.batch_sizes``, ``args.threads`` threads."""
    from autoencoders.bench.models import measure_models

    results = measure_models(args.models, args.batch_sizes, args, peak_gflops=peak["peak_gflops"], log=log)
    for result in results:
        result["sweep"] = "batch"
    return results


def thread_sweep(args, log=print) -> tuple[list[dict], dict]:
    """Every ``args.models`` training step at ``args.thread_batch_size`` for each of
    ``args.thread_counts``; returns the results and the peak measured at each thread count."""
    from autoencoders.bench.models import measure_models
    from autoencoders.bench.peak import peak_for

    results, peaks = [], {}
    for count in args.thread_counts:
        peaks[count] = peak_for(args, threads=count, log=log)
        log(f"\n{count} thread{'s' if count > 1 else ''}:")
        chosen = measure_models(args.models, [args.thread_batch_size], args, threads=count,
                                peak_gflops=peaks[count]["peak_gflops"], log=log)
        for result in chosen:
            result["sweep"] = "threads"
        results += chosen
    return results, peaks


def run(args) -> int:
    from autoencoders.bench import plots, report
    from autoencoders.bench.harness import markdown_table
    from autoencoders.bench.peak import peak_for, peak_line

    malloc = None if args.default_malloc else pin_malloc()
    peak = peak_for(args)
    print(f"batch sweep, {args.threads} threads")
    batch_results = batch_sweep(args, peak)
    thread_results, peaks = thread_sweep(args)
    # the thread sweep moved every library's thread count; back to the run's own
    from autoencoders.threads import set_threads
    set_threads(args.threads)
    env = report.environment_for(args, peak, malloc)
    env["thread_sweep_peaks"] = {str(count): value for count, value in peaks.items()}
    markdown = report.header("Training step: batch sweep and thread sweep", args, env)
    markdown += ["", f"## Batch sweep ({args.threads} threads)", "", "![batch sweep](sweep-batch.png)"]
    markdown += report.grouped_tables(batch_results, "batch_size", "Batch {}", level=3)
    markdown += ["", f"## Thread sweep (batch {args.thread_batch_size})", "", "![thread sweep](sweep-threads.png)"]
    for count in args.thread_counts:
        chosen = [r for r in thread_results if r["thread_count"] == count]
        markdown += ["", f"### {count} thread{'s' if count > 1 else ''}", "", peak_line(peaks[count]) + ".", "",
                     markdown_table(chosen)]
    figures = {"sweep-batch": plots.batch_sweep_figure(batch_results, f"Training step against batch size "
                                                                       f"({args.threads} threads)"),
               "sweep-threads": plots.thread_sweep_figure(thread_results, f"Training step against thread count "
                                                                          f"(batch {args.thread_batch_size})")}
    paths = report.write_suite(args.out, "sweep", batch_results + thread_results, env, args, markdown, figures)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def main(argv=None) -> int:
    from autoencoders.bench.options import main_for

    return main_for("sweep", argv)


if __name__ == "__main__":
    sys.exit(main())
