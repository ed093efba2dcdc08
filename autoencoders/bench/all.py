"""Every suite, one after the other, into one folder: what regenerates the README's numbers.

    autoencoders bench all [--out bench-results] [--threads N] [--repeats 10] [--settle-ms 150] [--quick]

Runs ``peak``, ``ops``, ``models``, ``sweep``, ``conv`` and ``load``, each with its own default batch sizes
and models and this command's timing options (``--quick``: each suite's smoke-run defaults), and
writes ``index.md``, which lists what each wrote. The peak is measured once per thread count and
shared by the suites. A full run takes tens of minutes on 2 cores (mostly settle pauses: see
``autoencoders.bench.harness``).
"""

from __future__ import annotations

import sys
import time

ORDER = ("peak", "ops", "models", "sweep", "conv", "load")


def run(args) -> int:
    import importlib
    from pathlib import Path

    from autoencoders.bench import report
    from autoencoders.bench.harness import pin_malloc
    from autoencoders.bench.options import SUITES, suite_arguments
    from autoencoders.bench.peak import peak_for, peak_line

    malloc = None if args.default_malloc else pin_malloc()
    out = Path(args.out)
    lines = []
    for suite in ORDER:
        suite_args = suite_arguments(args, suite)
        print(f"\n=== {suite}: {suite_args.command_line}", flush=True)
        started = time.monotonic()
        status = importlib.import_module(SUITES[suite][0]).run(suite_args)
        if status:
            return status
        minutes = (time.monotonic() - started) / 60
        files = sorted(path.name for path in out.glob(f"{suite}*") if path.suffix in (".json", ".md", ".png"))
        lines.append(f"- `{suite}` ({SUITES[suite][1]}; {minutes:.1f} min): "
                     + ", ".join(f"[{name}]({name})" for name in files))
    env = report.environment_for(args, peak_for(args), malloc)
    markdown = report.header("Benchmarks: scratch (NumPy/Numba) vs torch", args, env)
    markdown += ["", "## Suites", ""] + lines
    report.write_text(out / "index.md", "\n".join(markdown) + "\n")
    print(f"\n{peak_line(peak_for(args))}\nwrote {out / 'index.md'}")
    return 0


def main(argv=None) -> int:
    from autoencoders.bench.options import main_for

    return main_for("all", argv)


if __name__ == "__main__":
    sys.exit(main())
