"""What every suite writes: ``STEM.json`` (environment, options, peak, every sample), ``STEM.md``
(the tables) and its PNG plots, each file written atomically (a temporary file, then a rename)."""

from __future__ import annotations

from pathlib import Path

from autoencoders.bench.harness import environment, markdown_table, write_json, write_text

TIMING_NOTE = (
    "Timing rules (autoencoders/bench/harness.py): scratch and torch in one process with the same thread count; "
    "{repeats} timed blocks per side, each after a {settle_ms:g} ms pause (so the other library's spinning "
    "BLAS/OpenMP threads are idle) and its own untimed warm-up calls, each block at least {block_ms:g} ms of "
    "calls; blocks alternate which side goes first. Times: median over blocks of the mean time per call, "
    "interquartile range in brackets, in ms; ratio = scratch median / torch median (< 1: scratch faster). "
    "GFLOP/s of each median by autoencoders/bench/flops.py's rule (a matrix-product or convolution multiply-add is "
    "2 FLOPs; a training step counts forward, dW of every layer and dx of every layer but the first); "
    "element-wise work, pooling and optimizer steps count no FLOPs (memory-bound) and show GB/s of the bytes "
    "they must move instead. % of peak: against the measured float32 matrix-multiply peak above. compile ms: "
    "the first scratch call of a case, timed alone (Numba compile or cache load on a kernel's first use in "
    "the process). Every case's outputs and gradients were checked equal to torch's (rtol 2e-4, "
    "atol 2e-4·max|torch|, float32) before and again after it was timed.")


def environment_for(args, peak: dict | None, malloc: str | None) -> dict:
    """``harness.environment`` plus this run's timing options and the peak measurement."""
    threads = peak["threads"] if peak is not None else None
    timing = {key: getattr(args, key) for key in ("repeats", "warmup", "settle_ms", "block_ms") if hasattr(args, key)}
    return environment(threads, malloc, timing=timing, settle_ms=args.settle_ms, peak=peak,
                       command=args.command_line)


def header(title: str, args, env: dict) -> list[str]:
    """The markdown lines above a suite's tables: the command, machine, libraries, peak, rules."""
    from autoencoders.bench.peak import peak_line

    threads = env.get("threads") or {}
    blas = "; ".join(" ".join(str(part) for part in (entry.get("prefix"), entry.get("version")) if part)
                     + (f" ({entry['architecture']} kernels)" if entry.get("architecture") else "")
                     + f", {entry.get('num_threads')} threads"
                     for entry in env["blas"]) or "unknown"
    variables = ", ".join(f"{key}={value}" for key, value in env["environment_variables"].items()) or "none"
    lines = [
        f"# {title}", "",
        f"`{args.command_line}`, {env['date']}.", "",
        f"CPU {env['cpu']} ({env['cpu_count']} cores, {env['available_cores']} available); Python {env['python']}, "
        f"NumPy {env['numpy']}, Numba {env['numba']} (threading layer {env['numba_threading_layer']}), "
        f"torch {env['torch']}" + (f", jax {env['jax']} (XLA's CPU thread pool: every core)" if env.get("jax") else "")
        + f"; threads: numba {threads.get('numba')}, torch {threads.get('torch')}, "
        f"blas {threads.get('blas')}. BLAS libraries loaded: {blas}. Environment: {variables}. "
        f"malloc: {env['malloc']}.",
    ]
    if env.get("peak"):
        lines += ["", peak_line(env["peak"]) + "."]
    lines += ["", TIMING_NOTE.format(repeats=args.repeats, settle_ms=args.settle_ms, block_ms=args.block_ms)]
    return lines


def grouped_tables(results: list[dict], key: str, heading: str, none_heading: str = "Other cases",
                   level: int = 2) -> list[str]:
    """A section (markdown heading ``level``) with a table per distinct ``result[key]``, in
    first-seen order (``heading.format(value)``; ``none_heading`` for results without the key)."""
    lines = []
    values = list(dict.fromkeys(r.get(key) for r in results))
    for value in values:
        chosen = [r for r in results if r.get(key) == value]
        title = heading.format(value) if value is not None else none_heading
        lines += ["", f"{'#' * level} {title}", "", markdown_table(chosen)]
        notes = check_notes(chosen)
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
    return lines


PAGE_FAULT_NOTE = 10  # per call; a few are normal (a new page of the heap now and then)


def check_notes(results: list[dict]) -> list[str]:
    """A line per case whose outputs had to be settled by the torch float64 referee, and per case
    where a side page-faulted more than PAGE_FAULT_NOTE times per call."""
    notes = []
    for r in results:
        if r.get("check") == "torch float64 referee":
            notes.append(f"note: {r['name']} checked against torch float64: {r['check_note']}")
        for side in ("scratch", "torch"):
            faults = r.get(f"{side}_page_faults_per_call", 0)
            if faults > PAGE_FAULT_NOTE:
                notes.append(f"note: {r['name']}: {side} page-faulted {faults:.0f} times per call")
    return notes


def write_png(path, figure) -> Path:
    """A matplotlib ``Figure`` as PNG, atomically."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from autoencoders.bench.harness import write_bytes

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_bytes(path, buffer.getvalue())


def arguments_record(args) -> dict:
    """The run's options, JSON-friendly."""
    record = {}
    for key, value in vars(args).items():
        if key in ("handler", "options"):
            continue
        record[key] = str(value) if isinstance(value, Path) else value
    return record


def write_suite(out, stem: str, results: list[dict], env: dict, args, markdown: list[str],
                figures: dict | None = None, **extra) -> list[Path]:
    """``out/STEM.json``, ``out/STEM.md`` and ``out/NAME.png`` for each ``figures`` entry."""
    out = Path(out)
    paths = [write_json(out / f"{stem}.json", results, env, arguments=arguments_record(args), **extra),
             write_text(out / f"{stem}.md", "\n".join(markdown) + "\n")]
    for name, figure in (figures or {}).items():
        paths.append(write_png(out / f"{name}.png", figure))
    return paths
