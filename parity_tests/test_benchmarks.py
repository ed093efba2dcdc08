"""The benchmark harness and suites: result structure, timing rules, FLOP counts, outputs, and
that nothing wrong is ever timed or reported.

Speed is never asserted here: only that the harness measures what it claims (block samples,
medians, ratio, compile time, alternating order, GFLOP/s from the stated count), that a case
whose scratch side is wrong makes ``measure`` raise before any warm-up or timed block runs, and
that one which goes wrong while it is being timed raises in the check after timing. Every test
runs with no settle pause and tiny blocks, so each takes a few seconds at most.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autoencoders.bench import conv as bench
from autoencoders.bench import flops
from autoencoders.bench.harness import (
    Case,
    CheckFailed,
    assert_matches,
    format_table,
    markdown_table,
    measure,
    timeit_warmup_calls,
)
from scratch import nn
from scratch import optim as scratch_optim

THREADS = 1  # the tests share 2 cores with whatever else runs; one thread per side is enough here
FAST = dict(settle_ms=0, block_ms=0, threads=THREADS)  # block_ms=0: one call per block
ROOT = Path(__file__).resolve().parents[1]


def assert_usage_error(argv, option, capsys):
    """``autoencoders ARGV`` exits 2 with one line of usage error that names ``option``."""
    from autoencoders.cli import main

    with pytest.raises(SystemExit) as raised:
        main(argv)
    error = capsys.readouterr().err.strip().splitlines()
    assert raised.value.code == 2 and len(error) == 1 and option in error[0], error


def _counted(case: Case) -> tuple[Case, dict]:
    """The case with its timed callables counting their calls (check() uses its own closures)."""
    calls = {"scratch": 0, "torch": 0}

    def scratch():
        calls["scratch"] += 1
        return case.scratch()

    def torch_side():
        calls["torch"] += 1
        return case.torch()

    return Case(case.name, scratch, torch_side, case.check, case.meta), calls


def _runs(log: list[str]) -> list[tuple[str, int]]:
    """[("scratch", 3), ("torch", 6), ...]: the log as runs of one side."""
    return [(side, len(list(group))) for side, group in itertools.groupby(log)]


# -- measure: result fields and timing rules ----------------------------------------------------


def test_measure_reports_block_samples_medians_ratio_compile_time_and_throughput():
    cases = bench.layer_cases(2, only={"encoder.0"}) + [bench.training_case(2)]
    counted = [_counted(case) for case in cases]
    repeats, warmup = 3, 1
    results = measure([case for case, _ in counted], repeats=repeats, warmup=warmup, peak_gflops=100.0, **FAST)
    assert [r["name"] for r in results] == ["conv-ae Conv2d(1,16,3,s3,p1) on 1x28x28", "conv-ae training step (Adam)"]
    for result, (_, calls) in zip(results, counted):
        assert result["batch_size"] == 2 and result["dtype"] == "float32"
        assert result["checked"] is True and result["checked_after_timing"] is True
        assert result["check"] in ("torch float32", "torch float64 referee")
        for side in ("scratch", "torch"):
            samples = result[f"{side}_samples_ms"]
            assert len(samples) == repeats and min(samples) > 0
            assert result[f"{side}_median_ms"] == pytest.approx(float(np.median(samples)))
            q1, q3 = np.percentile(samples, [25, 75])
            assert result[f"{side}_iqr_ms"] == pytest.approx(q3 - q1, abs=1e-12)
            assert result[f"{side}_min_ms"] == pytest.approx(min(samples))
            assert result[f"{side}_block_calls"] == 1  # block_ms=0
            assert result[f"{side}_page_faults_per_call"] >= 0
            # GFLOP/s of the median from the case's stated FLOP count; fraction of the given peak
            assert result[f"gflops_{side}"] == pytest.approx(result["flops"] / (result[f"{side}_median_ms"] * 1e6))
            assert result[f"peak_fraction_{side}"] == pytest.approx(result[f"gflops_{side}"] / 100.0)
        assert result["ratio"] == pytest.approx(result["scratch_median_ms"] / result["torch_median_ms"])
        pairs = np.array(result["scratch_samples_ms"]) / np.array(result["torch_samples_ms"])
        assert result["ratio_paired"] == pytest.approx(float(np.median(pairs)))
        assert result["compile_ms"] > 0
        assert result["repeats"] == repeats and result["warmup"] == warmup
        assert result["settle_ms"] == 0 and result["block_ms"] == 0 and result["peak_gflops"] == 100.0
        assert result["threads"]["numba"] == THREADS and result["threads"]["torch"] == THREADS
        # scratch: the compile call alone, warm-up, then per block Timer.timeit's own untimed
        # warm-up calls and the timed one; torch: no call before the check, then the same
        per_block = 1 + timeit_warmup_calls(1)
        assert calls == {"scratch": 1 + warmup + repeats * per_block, "torch": warmup + repeats * per_block}
    for table in (format_table(results), markdown_table(results)):
        assert "conv-ae training step (Adam)" in table and "compile ms" in table and "GFLOP/s scratch" in table


def test_blocks_alternate_which_side_goes_first_and_follow_the_warm_up():
    log: list[str] = []
    case = Case("synthetic", lambda: log.append("scratch"), lambda: log.append("torch"), lambda: None)
    [result] = measure([case], repeats=4, warmup=1, **FAST)
    assert result["block_first_side"] == ["scratch", "torch", "scratch", "torch"]
    # the compile call, the warm-up of each side, then blocks S T | T S | S T | T S: runs of a
    # side are one block long at the ends and two blocks long in between
    assert log[:3] == ["scratch", "scratch", "torch"]
    runs = _runs(log[3:])
    block = runs[0][1]
    assert [side for side, _ in runs] == ["scratch", "torch", "scratch", "torch", "scratch"]
    assert [length for _, length in runs] == [block, 2 * block, 2 * block, 2 * block, block]


def test_blocks_are_sized_to_last_block_ms():
    case = Case("sleeps 1 ms", lambda: time.sleep(0.001), lambda: None, lambda: None)
    [result] = measure([case], repeats=2, warmup=2, settle_ms=0, block_ms=5, threads=THREADS)
    assert 2 <= result["scratch_block_calls"] <= 5   # ceil(5 ms / a sleep of 1 ms or a little more)
    assert result["torch_block_calls"] > 100         # a no-op: many calls per block
    assert result["scratch_median_ms"] >= 1.0


def test_a_wrong_scratch_layer_raises_before_timing():
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(1, 4, 3, stride=3, padding=1, rng=rng)
    twin = torch.nn.Conv2d(1, 4, 3, stride=3, padding=1)
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in layer.state_dict().items()})
    layer.bias.data += 0.1  # deliberately wrong: the scratch output is off by 0.1 everywhere
    x = (rng.random((2, 1, 28, 28)) < 0.13).astype(np.float32)
    case, calls = _counted(bench.layer_case("wrong", layer, twin, x, rng, batch_size=2))
    with pytest.raises(CheckFailed, match="not timed"):
        measure([case], repeats=3, warmup=1, **FAST)
    assert calls == {"scratch": 1, "torch": 0}  # only the compile call: no warm-up, no block


def test_a_wrong_training_step_is_not_excused_by_the_float64_referee(monkeypatch):
    # scratch's Adam with twice the learning rate: its step disagrees with torch.optim.Adam applied
    # to scratch's own gradients (the gradients themselves are right)
    adam = scratch_optim.Adam
    monkeypatch.setattr(scratch_optim, "Adam", lambda params, lr, **kwargs: adam(params, lr=2 * lr, **kwargs))
    good, _ = _counted(bench.layer_cases(2, only={"encoder.0"})[0])
    wrong, calls = _counted(bench.training_case(2))
    with pytest.raises(CheckFailed, match="Adam step"):
        measure([good, wrong], repeats=3, warmup=1, **FAST)
    assert calls["torch"] == 0  # a later case's failure stops every case before any timing


def test_a_case_with_a_wrong_output_never_reaches_the_clock():
    def check():
        assert_matches({"output": np.ones(3, np.float32)}, {"output": torch.zeros(3)}, "synthetic")

    timed = []
    case = Case("synthetic", lambda: timed.append("scratch"), lambda: timed.append("torch"), check)
    with pytest.raises(CheckFailed, match="synthetic"):
        measure([case], repeats=3, warmup=1, **FAST)
    assert timed == ["scratch"]


def test_a_case_that_goes_wrong_while_timed_fails_the_check_after_timing():
    """A scratch side right for its first calls and wrong after (a buffer reused across calls, a
    state that drifts): the check before timing passes, the one after the blocks raises."""
    x = np.arange(6, dtype=np.float32)
    calls = {"scratch": 0}

    def scratch():
        calls["scratch"] += 1
        return x * 2 if calls["scratch"] <= 4 else x * 2 + 1  # wrong from the fifth call on

    def torch_side():
        return torch.from_numpy(x) * 2

    def check():
        assert_matches({"y": scratch()}, {"y": torch_side()}, "drifting")

    case = Case("drifting", scratch, torch_side, check)
    with pytest.raises(CheckFailed, match="after timing"):
        measure([case], repeats=3, warmup=1, **FAST)
    assert calls["scratch"] > 4 + 3  # it was timed: the compile call, the check, warm-up and blocks ran first


def test_assert_matches_uses_the_float32_tolerance_scaled_by_the_largest_magnitude():
    expected = np.array([1.0, 1e-6], dtype=np.float32)
    assert_matches({"a": expected + np.float32(1.9e-4)}, {"a": expected})  # within 2e-4·max|expected|
    with pytest.raises(AssertionError):
        assert_matches({"a": expected + np.float32(5e-4)}, {"a": expected})
    with pytest.raises(AssertionError, match="torch gives"):
        assert_matches({"a": expected}, {"b": expected})


# -- FLOP counts ---------------------------------------------------------------------------------


def test_the_mlp_ae_training_step_counts_three_forwards_minus_the_first_layers_input_gradient():
    from autoencoders.bench.models import step_flops
    from scratch.models import build

    batch = 3
    forward_per_example = 2 * (784 * 256 + 256 * 64 + 64 * 256 + 256 * 784)  # 868,352
    step_per_example = 3 * forward_per_example - 2 * 784 * 256                # 2,203,648
    x = np.zeros((batch, 1, 28, 28), np.float32)
    count = step_flops("mlp-ae", build("mlp-ae").config, x, None)
    assert count["forward"] == batch * forward_per_example
    assert count["grad_weight"] == batch * forward_per_example
    assert count["grad_input"] == batch * (forward_per_example - 2 * 784 * 256)
    assert count["total"] == batch * step_per_example == 6_610_944
    assert count["first_layer"] == "encoder.0"


def test_the_vae_training_step_counts_both_heads_and_skips_only_fc1s_input_gradient():
    from autoencoders.bench.models import step_flops
    from scratch.models import build

    forward = 2 * (784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784)  # fc1, fc21 and fc22, fc3, fc4
    x = np.zeros((2, 1, 28, 28), np.float32)
    vae = build("vae")
    count = step_flops("vae", vae.config, x, vae.draw_noise((2, 784)))
    assert count["first_layer"] == "fc1"
    assert count["total"] == 2 * (3 * forward - 2 * 784 * 400)


@pytest.mark.parametrize("hidden", [256, 48])
def test_the_tied_decoder_counts_as_the_linear_it_computes(hidden):
    """tied-ae (784-H-784, one weight) does the matrix products of an untied 784-H-784
    autoencoder: its TiedLinear decoder counts forward, dW into the shared weight, and dx."""
    from autoencoders.bench.models import step_flops
    from scratch.models import build

    x = np.zeros((3, 1, 28, 28), np.float32)
    tied = step_flops("tied-ae", build("tied-ae", hidden_dim=hidden).config, x, None)
    untied = step_flops("sparse-ae", build("sparse-ae", hidden_dim=hidden).config, x, None)
    assert [(layer["layer"], layer["type"]) for layer in tied["layers"]] == [("encoder", "Linear"),
                                                                            ("decoder", "TiedLinear")]
    for key in ("total", "forward", "grad_weight", "grad_input", "first_layer"):
        assert tied[key] == untied[key], key
    assert tied["total"] == 3 * (3 * 2 * 2 * 784 * hidden - 2 * 784 * hidden)  # both layers x3, no dx of the first
    assert flops.forward_flops(nn.TiedLinear(nn.Linear(784, hidden)), (5, hidden)) == 2 * 5 * hidden * 784


def test_one_conv_layers_flops():
    conv = nn.Conv2d(1, 16, 3, stride=3, padding=1)          # 28x28 -> 10x10
    assert flops.forward_flops(conv, (2, 1, 28, 28)) == 2 * 2 * 16 * 10 * 10 * 1 * 3 * 3
    assert flops.backward_flops(conv, (2, 1, 28, 28)) == 2 * flops.forward_flops(conv, (2, 1, 28, 28))
    assert flops.backward_flops(conv, (2, 1, 28, 28), input_gradient=False) == 57_600
    transposed = nn.ConvTranspose2d(8, 1, 2, stride=2, padding=1)  # every input element meets every tap
    assert flops.forward_flops(transposed, (2, 8, 15, 15)) == 2 * 2 * 8 * 15 * 15 * 1 * 2 * 2
    assert flops.forward_flops(nn.Linear(784, 256), (5, 784)) == 2 * 5 * 784 * 256
    assert flops.forward_flops(nn.ReLU(), (5, 784)) == 0  # element-wise: memory-bound, no FLOPs


def test_a_layer_missing_from_the_shapes_is_refused():
    from scratch.models import build

    model = build("mlp-ae")
    with pytest.raises(ValueError, match="decoder.2"):
        flops.training_step_flops(model, [("encoder.0", (1, 784)), ("encoder.2", (1, 256)), ("decoder.0", (1, 64))])


# -- suites --------------------------------------------------------------------------------------


def test_model_training_step_benchmark_checks_then_times_every_model():
    """autoencoders.bench.models: one case per model (plain, noisy, variational, convolutional), each with
    its FLOP count."""
    from autoencoders.bench.models import training_step_case
    from scratch.models import MODELS

    names = list(MODELS)
    results = measure([training_step_case(name, 2) for name in names], repeats=2, warmup=1, **FAST)
    assert [r["model"] for r in results] == names
    for result in results:
        assert result["checked"] and result["checked_after_timing"]
        assert result["scratch_median_ms"] > 0 and result["torch_median_ms"] > 0
        assert result["flops"] > 0 and result["gflops_scratch"] > 0 and result["gflops_torch"] > 0
        assert result["ratio"] == pytest.approx(result["scratch_median_ms"] / result["torch_median_ms"])


def test_autoencoders_bench_ops_quick_writes_json_markdown_and_png(tmp_path, capsys):
    from autoencoders.cli import main

    status = main(["bench", "ops", "--quick", "--settle-ms", "0", "--threads", str(THREADS), "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "ops.json").read_text())
    env = document["environment"]
    for key in ("cpu", "cpu_count", "python", "numpy", "numba", "torch", "threads", "blas", "environment_variables"):
        assert key in env
    assert env["settle_ms"] == 0 and env["peak"]["peak_gflops"] == max(env["peak"]["numpy_gflops"],
                                                                       env["peak"]["torch_gflops"])
    assert document["arguments"]["batch_sizes"] == [8] and document["arguments"]["quick"] is True
    names = [r["name"] for r in document["results"]]
    for op in ("Linear(784,256) forward", "Linear(784,256) backward", "ConvTranspose2d(16,8,5,s3,p1)", "MaxPool2d",
               "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "BCELoss", "BCEWithLogitsLoss", "MSELoss", "GaussianKL",
               "SGD step", "Adam step", "AdamW step"):
        assert any(op in name for name in names), op
    linear = document["results"][0]
    assert linear["gflops_scratch"] > 0 and linear["peak_fraction_torch"] > 0 and len(linear["scratch_samples_ms"]) == 2
    markdown = (tmp_path / "ops.md").read_text()
    assert "% of peak" in markdown and "autoencoders bench ops --batch-sizes 8" in markdown
    assert (tmp_path / "ops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_autoencoders_bench_sweep_quick_plots_both_sweeps(tmp_path, capsys):
    from autoencoders.cli import main

    status = main(["bench", "sweep", "--quick", "--settle-ms", "0", "--batch-sizes", "1,4", "--thread-counts", "1",
                   "--threads", str(THREADS), "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "sweep.json").read_text())["results"]
    assert [(r["sweep"], r["batch_size"]) for r in results] == [("batch", 1), ("batch", 4), ("threads", 8)]
    for name in ("sweep-batch.png", "sweep-threads.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_bench_options_report_usage_errors_in_one_line(capsys):
    from autoencoders.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["bench", "ops", "--settle-ms", "-1"])
    assert raised.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    cores = len(os.sched_getaffinity(0))
    assert main(["bench", "sweep", "--thread-counts", str(cores + 1)]) == 2
    assert "cores" in capsys.readouterr().err


def test_quick_defaults_give_way_to_explicit_options():
    import argparse

    from autoencoders.bench.options import add_suite_arguments, resolve

    parser = argparse.ArgumentParser()
    add_suite_arguments(parser, "models", default_out="out")
    args = resolve(parser.parse_args(["--quick", "--repeats", "7"]), "models")
    assert args.repeats == 7 and args.batch_sizes == [2] and args.settle_ms == 20.0
    args = resolve(parser.parse_args([]), "models")
    assert args.batch_sizes == [1, 128, 1024] and args.settle_ms == 150.0 and args.repeats == 10
    assert args.command_line.startswith("autoencoders bench models --batch-sizes 1,128,1024 --models mlp-ae,")


def test_the_readme_example_benchmarks_a_kernel_of_ones_own():
    text = (ROOT / "docs" / "benchmarks" / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict = {}
    exec(compile(example, "docs/benchmarks/README.md", "exec"), namespace)  # noqa: S102 - our own README
    [result] = namespace["results"]
    assert result["checked_after_timing"] and result["gflops_scratch"] > 0 and len(result["scratch_samples_ms"]) == 5


@pytest.mark.slow  # a real process timing a suite, ~6 s
def test_autoencoders_bench_runs_as_a_command_and_writes_to_bench_results(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "autoencoders.cli", "bench", "models", "--quick", "--models", "mlp-ae", "--settle-ms", "0",
         "--threads", "1"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mlp-ae training step" in result.stdout
    for name in ("models.json", "models.md", "models.png"):
        assert (tmp_path / "bench-results" / name).exists()


def test_the_norm_fallback_excuses_a_flip_and_not_a_wrong_formula():
    """check_against_torch(norm_rtol=...): a few elements off (one ReLU flip's share) pass when the
    arrays agree with the float64 referee in norm; a gradient off by 1% everywhere does not."""
    from autoencoders.bench.harness import TRAINING_NORM_RTOL, check_against_torch

    rng = np.random.default_rng(0)
    reference = {"grad w": rng.standard_normal((64, 64))}
    torch_side = {"grad w": reference["grad w"].astype(np.float32)}
    flipped = reference["grad w"].astype(np.float32).copy()
    flipped[3, 5] += 0.05  # one element far outside rtol/atol 2e-4, tiny in norm
    meta = {}
    check_against_torch({"grad w": flipped}, torch_side, "flip", referee=lambda: reference, meta=meta,
                        norm_rtol=TRAINING_NORM_RTOL)
    assert meta["check"] == "torch float64 referee, in norm"
    wrong = (1.01 * reference["grad w"]).astype(np.float32)
    with pytest.raises(AssertionError, match="nor in norm"):
        check_against_torch({"grad w": wrong}, torch_side, "wrong", referee=lambda: reference, meta={},
                            norm_rtol=TRAINING_NORM_RTOL)
    with pytest.raises(AssertionError):  # without norm_rtol the flip is not excused
        check_against_torch({"grad w": flipped}, torch_side, "flip", referee=lambda: reference, meta={})


def test_a_wrong_gradient_in_a_training_step_is_caught(monkeypatch):
    """A dW 2% too large in every Linear: neither element-wise nor in norm does it pass."""
    import scratch.functional.linear as linear_functional
    from autoencoders.bench.models import training_step_case

    accumulate = linear_functional.linear_backward_accumulate

    def wrong(grad_output, cache, grad_weight, *args, **kwargs):
        before = grad_weight.copy()
        result = accumulate(grad_output, cache, grad_weight, *args, **kwargs)
        grad_weight += 0.02 * (grad_weight - before)
        return result

    monkeypatch.setattr(linear_functional, "linear_backward_accumulate", wrong)
    monkeypatch.setattr(nn.Linear, "backward", lambda self, grad_output, *, input_grad=True: wrong(
        grad_output, self._take(grad_output), self.weight.grad, self.bias.grad, input_grad))
    monkeypatch.setattr(nn.Linear, "fuses_with", lambda self, following: False)
    case = training_step_case("mlp-ae", 4)
    with pytest.raises(AssertionError, match="nor in norm"):
        case.check()


# -- peers: a third side in the same rotating blocks ---------------------------------------------


def _three_sided(log: list[str], meta: dict | None = None) -> Case:
    return Case("three sides", lambda: log.append("scratch"), lambda: log.append("torch"), lambda: None,
                dict(meta or {}), peers={"jax": lambda: log.append("jax")})


def test_a_peer_is_timed_in_the_same_blocks_each_side_going_first_in_turn():
    log: list[str] = []
    repeats, warmup = 3, 1
    [result] = measure([_three_sided(log, {"flops": 1000})], repeats=repeats, warmup=warmup, **FAST)
    assert result["sides"] == ["scratch", "torch", "jax"]
    assert result["block_first_side"] == ["scratch", "torch", "jax"]
    # the compile call, each side's warm-up, then blocks S T J | T J S | J S T, each side's block
    # one Timer.timeit: its untimed warm-up calls and the timed one
    assert log[:4] == ["scratch", "scratch", "torch", "jax"]
    runs = _runs(log[4:])
    per_block = 1 + timeit_warmup_calls(1)
    assert runs == [(side, per_block) for side in ["scratch", "torch", "jax", "torch", "jax", "scratch",
                                                   "jax", "scratch", "torch"]]
    samples = {side: result[f"{side}_samples_ms"] for side in result["sides"]}
    assert all(len(values) == repeats and min(values) > 0 for values in samples.values())
    assert result["jax_median_ms"] == pytest.approx(float(np.median(samples["jax"])))
    assert result["jax_block_calls"] == 1 and result["jax_page_faults_per_call"] >= 0
    assert result["ratio_jax"] == pytest.approx(result["scratch_median_ms"] / result["jax_median_ms"])
    assert result["ratio_paired_jax"] == pytest.approx(float(np.median(np.array(samples["scratch"]) /
                                                                        np.array(samples["jax"]))))
    # torch's ratio and pairs stay scratch against torch
    assert result["ratio"] == pytest.approx(result["scratch_median_ms"] / result["torch_median_ms"])
    assert result["ratio_paired"] == pytest.approx(float(np.median(np.array(samples["scratch"]) /
                                                                    np.array(samples["torch"]))))
    assert "ratio_torch" not in result and "ratio_paired_torch" not in result
    assert result["gflops_jax"] == pytest.approx(1000 / (result["jax_median_ms"] * 1e6))


def test_the_tables_have_a_peers_columns_only_where_a_result_has_that_peer():
    from autoencoders.bench.harness import COLUMNS, columns

    [three] = measure([_three_sided([])], repeats=2, warmup=1, **FAST)
    [two] = measure([Case("two sides", lambda: None, lambda: None, lambda: None)], repeats=2, warmup=1, **FAST)
    peer_columns = ("jax ms (IQR)", "scratch / jax (paired)", "GFLOP/s jax")
    assert columns([three]) == COLUMNS[:-1] + peer_columns + ("compile ms",)
    assert columns([two]) == COLUMNS
    for table in (format_table([three]), markdown_table([three])):
        assert all(heading in table for heading in peer_columns)
        assert f"{three['ratio_jax']:.2f} ({three['ratio_paired_jax']:.2f})" in table
        assert f"{three['jax_median_ms']:.3f} ({three['jax_iqr_ms']:.3f})" in table
    for table in (format_table([two]), markdown_table([two])):
        assert "jax" not in table
    # mixed: the two-sided row shows "-" under the peer's columns, and every row has every column
    rows = markdown_table([three, two]).splitlines()
    assert len({row.count("|") for row in rows}) == 1
    two_cells = [cell.strip() for cell in rows[-1].strip("|").split("|")]
    assert two_cells[0] == "two sides" and two_cells[-4:-1] == ["-", "-", "-"]
    text = format_table([three, two]).splitlines()
    assert len({len(line) for line in text}) == 1  # fixed width: the columns line up


# -- the load suite ------------------------------------------------------------------------------


def test_competing_processes_run_during_the_block_and_are_killed_after_it(monkeypatch):
    import subprocess

    from autoencoders.bench import load

    started = []

    class Process(subprocess.Popen):
        """Popen, remembered, and whose wait() gives up after 10 s: a competitor left alive fails the
        test instead of hanging it."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

        def wait(self, timeout=None):
            return super().wait(10 if timeout is None else timeout)

    monkeypatch.setattr(load.subprocess, "Popen", Process)
    monkeypatch.setattr(load, "START_S", 0.05)
    try:
        with load.competing_processes(2) as processes:
            assert len(processes) == 2 and all(process.poll() is None for process in processes)
        assert all(process.poll() is not None for process in processes)
        with pytest.raises(RuntimeError, match="inside"):
            with load.competing_processes(2) as raising:
                assert all(process.poll() is None for process in raising)
                raise RuntimeError("inside")
        assert len(raising) == 2 and all(process.poll() is not None for process in raising)
        with load.competing_processes(0) as none:
            assert none == []
        assert len(started) == 4
    finally:
        for process in started:  # whatever the code under test left running
            process.kill()
            subprocess.Popen.wait(process)


def test_slowdowns_divide_by_the_quiet_run_of_the_same_model_batch_and_setting():
    from autoencoders.bench.load import slowdowns

    def result(model, batch, setting, busy, scratch, torch_ms):
        return {"model": model, "batch_size": batch, "thread_setting": setting, "busy_processes": busy,
                "scratch_median_ms": scratch, "torch_median_ms": torch_ms}

    results = slowdowns([
        result("mlp-ae", 8, "fixed", 0, 2.0, 4.0),
        result("mlp-ae", 8, "auto", 0, 1.0, 8.0),
        result("mlp-ae", 16, "fixed", 0, 10.0, 10.0),
        result("mlp-ae", 8, "fixed", 1, 5.0, 6.0),
        result("mlp-ae", 8, "auto", 1, 3.0, 4.0),
        result("mlp-ae", 16, "fixed", 2, 30.0, 15.0),
        result("vae", 8, "fixed", 1, 3.0, 3.0),       # no quiet run of vae
    ])
    found = [(r["slowdown_scratch"], r["slowdown_torch"]) for r in results]
    assert found == [(1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (2.5, 1.5), (3.0, 0.5), (3.0, 1.5), (None, None)]


@pytest.mark.parametrize("text, expected", [("0,1,2", [0, 1, 2]), ("0", [0]), ("0, 3", [0, 3])])
def test_busy_counts_start_with_the_quiet_run(text, expected):
    from autoencoders.bench.options import busy_counts

    assert busy_counts(text) == expected


@pytest.mark.parametrize("text", ["1,2", "0,0", "-1", "0,-1", "a", "0,x", "", ","])
def test_busy_counts_refuse_what_has_no_quiet_run_first_or_repeats_a_count(text, capsys):
    import argparse

    from autoencoders.bench.options import busy_counts

    with pytest.raises(argparse.ArgumentTypeError):
        busy_counts(text)
    assert_usage_error(["bench", "load", "--busy", text], "--busy", capsys)


def test_autoencoders_bench_load_quick_measures_each_busy_count_fixed_and_auto(tmp_path, capsys):
    from autoencoders.cli import main

    status = main(["bench", "load", "--quick", "--busy", "0,1", "--repeats", "1", "--settle-ms", "0",
                   "--threads", str(THREADS), "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "load.json").read_text())
    assert document["arguments"]["busy"] == [0, 1] and document["arguments"]["models"] == ["mlp-ae"]
    results = document["results"]
    # every busy count has a fixed and an auto row (auto copies fixed where it chose the same count)
    assert sorted((r["busy_processes"], r["thread_setting"]) for r in results) == [
        (0, "auto"), (0, "fixed"), (1, "auto"), (1, "fixed")]
    for r in results:
        assert r["model"] == "mlp-ae" and r["batch_size"] == 8 and r["checked_after_timing"]
        assert r["thread_count"] == (THREADS if r["thread_setting"] == "fixed" else r["auto_threads"])
        assert 1 <= r["auto_threads"] <= len(os.sched_getaffinity(0))
        if r["busy_processes"] == 0:
            assert r["slowdown_scratch"] == 1.0 and r["slowdown_torch"] == 1.0
        else:
            quiet = next(q for q in results if q["busy_processes"] == 0 and q["thread_setting"] == r["thread_setting"])
            assert r["slowdown_scratch"] == pytest.approx(r["scratch_median_ms"] / quiet["scratch_median_ms"])
            assert r["slowdown_torch"] == pytest.approx(r["torch_median_ms"] / quiet["torch_median_ms"])
    markdown = (tmp_path / "load.md").read_text()
    assert "| model | batch | threads | busy processes |" in markdown and "autoencoders bench load" in markdown


# -- the conv suite: both convolutional models -----------------------------------------------------


def test_the_conv_suite_times_conv_ae_and_conv_vae_and_refuses_other_models(capsys):
    import argparse

    from autoencoders.bench.options import add_suite_arguments, conv_model_names, resolve

    parser = argparse.ArgumentParser()
    add_suite_arguments(parser, "conv", default_out="out")
    assert resolve(parser.parse_args([]), "conv").models == ["conv-ae", "conv-vae"]
    assert resolve(parser.parse_args(["--quick"]), "conv").models == ["conv-ae", "conv-vae"]
    assert conv_model_names("conv-vae") == ["conv-vae"]
    for text in ("mlp-ae", "conv-ae,vae", "nothing"):
        with pytest.raises(argparse.ArgumentTypeError):
            conv_model_names(text)
        assert_usage_error(["bench", "conv", "--models", text], "--models", capsys)


def test_conv_vae_layer_cases_are_named_after_the_model_and_match_torch():
    cases = bench.layer_cases(2, name="conv-vae")
    assert [case.name for case in cases] == [
        "conv-vae Conv2d(1,32,4,s2,p1) on 1x28x28", "conv-vae Conv2d(32,64,4,s2,p1) on 32x14x14",
        "conv-vae ConvTranspose2d(64,32,4,s2,p1) on 64x7x7", "conv-vae ConvTranspose2d(32,1,4,s2,p1) on 32x14x14"]
    assert [case.meta["layer"] for case in cases] == ["encoder.0", "encoder.2", "decoder.3", "decoder.5"]
    for case in cases:
        assert case.meta["model"] == "conv-vae" and case.meta["batch_size"] == 2
        case.check()  # each on the input the layer sees inside the model
    assert [case.name for case in bench.layer_cases(2, only={"encoder.0"})] == ["conv-ae Conv2d(1,16,3,s3,p1) on 1x28x28"]


def _conv_result(model, name, kind, ratio, batch=128, layer_type=None, peaks=(None, None)):
    result = {"model": model, "name": f"{model} {name}", "kind": kind, "ratio": ratio, "batch_size": batch,
              "peak_fraction_scratch": peaks[0], "peak_fraction_torch": peaks[1]}
    if layer_type is not None:
        result["layer_type"] = layer_type
    return result


def test_the_conv_verdict_is_one_line_per_model_measured():
    results = [
        _conv_result("conv-ae", "Conv2d(1,16,3,s3,p1) on 1x28x28", "layer", 0.8, layer_type="Conv2d", peaks=(0.4, 0.5)),
        _conv_result("conv-ae", "MaxPool2d(2,s2) on 16x10x10", "layer", 3.0, layer_type="MaxPool2d"),  # not a conv
        _conv_result("conv-ae", "training step (Adam)", "training_step", 0.9),
        _conv_result("conv-ae", "Conv2d(1,16,3,s3,p1) on 1x28x28", "layer", 5.0, batch=2, layer_type="Conv2d"),
        _conv_result("conv-vae", "Conv2d(1,32,4,s2,p1) on 1x28x28", "layer", 0.7, layer_type="Conv2d"),
        _conv_result("conv-vae", "ConvTranspose2d(32,1,4,s2,p1) on 32x14x14", "layer", 1.3,
                     layer_type="ConvTranspose2d", peaks=(0.1, 0.2)),
        _conv_result("conv-vae", "training step (Adam)", "training_step", 1.1),
        _conv_result("mlp-ae", "training step (Adam)", "training_step", 0.5, batch=2),  # not at batch 128: none
    ]
    entries = bench.verdicts(results)
    assert [entry["model"] for entry in entries] == ["conv-ae", "conv-vae"]
    ae, vae = entries
    assert ae["line"].startswith("conv-ae verdict at batch 128: ALL no slower than torch (1/1 conv layers, "
                                 "training step yes")
    assert "Conv2d(1,16,3,s3,p1) 0.80 yes (40% / 50% of peak)" in ae["line"] and "MaxPool" not in ae["line"]
    assert ae["all_no_slower"] is True and set(ae["cases"]) == {"conv-ae Conv2d(1,16,3,s3,p1) on 1x28x28",
                                                                 "conv-ae training step (Adam)"}
    assert vae["line"].startswith("conv-vae verdict at batch 128: NOT all no slower than torch (1/2 conv layers, "
                                  "training step no")
    assert "ConvTranspose2d(32,1,4,s2,p1) 1.30 NO (10% / 20% of peak)" in vae["line"]
    assert "training step 1.10 NO" in vae["line"] and vae["all_no_slower"] is False
    assert vae["cases"]["conv-vae Conv2d(1,32,4,s2,p1) on 1x28x28"]["peak_fraction_scratch"] is None
    assert bench.verdicts(results, batch_size=512) == []


# -- the jax peer of the models suite ------------------------------------------------------------


def test_peer_names_take_torch_and_optionally_jax(capsys):
    import argparse

    from autoencoders.bench.options import peer_names

    assert peer_names("torch") == ["torch"] and peer_names("torch,jax") == ["torch", "jax"]
    assert peer_names("jax, torch,torch") == ["jax", "torch"]
    for text in ("jax", "torch,tf", "", "tf"):
        with pytest.raises(argparse.ArgumentTypeError, match="torch"):
            peer_names(text)
    assert_usage_error(["bench", "models", "--peers", "jax"], "--peers", capsys)


def test_usable_peers_drop_jax_in_one_line_where_it_cannot_be_timed_fairly(monkeypatch):
    from autoencoders import threads as threads_module
    from autoencoders.bench import jax_twins
    from autoencoders.bench.models import usable_peers

    monkeypatch.setattr(threads_module, "available_cores", lambda: 4)
    lines: list[str] = []
    assert usable_peers(["torch"], 1, log=lines.append) == ["torch"] and lines == []
    monkeypatch.setattr(jax_twins, "unavailable_reason", lambda: "jax is not installed")
    assert usable_peers(["torch", "jax"], 4, log=lines.append) == ["torch"]
    assert lines == ["jax: jax is not installed; timing against torch alone"]
    lines.clear()
    monkeypatch.setattr(jax_twins, "unavailable_reason", lambda: None)
    assert usable_peers(["torch", "jax"], 4, log=lines.append) == ["torch", "jax"] and lines == []
    assert usable_peers(["torch", "jax"], 2, log=lines.append) == ["torch"]
    [line] = lines
    assert line.startswith("jax: XLA runs on all 4 cores and cannot be limited to --threads 2")


def test_the_jax_peer_is_checked_against_torch_like_scratch(monkeypatch):
    pytest.importorskip("jax")
    from autoencoders.bench import jax_twins
    from autoencoders.bench.models import training_step_case

    assert "jax" not in training_step_case("mlp-ae", 2).peers
    case = training_step_case("mlp-ae", 2, peers=("torch", "jax"))
    assert set(case.peers) == {"jax"} and case.sides == ("scratch", "torch", "jax")
    case.check()
    assert case.meta["check_jax"] in ("torch float32", "torch float64 referee", "torch float64 referee, in norm")
    first_loss = float(case.peers["jax"]())
    assert np.isfinite(first_loss)

    # a jax step whose encoder gradient is 1% too large: caught, element-wise and in norm
    outputs = jax_twins.JaxTrainingStep.first_step_outputs

    def wrong(self):
        values = outputs(self)
        values["grad encoder.0.weight"] = values["grad encoder.0.weight"] * np.float32(1.01)
        return values

    monkeypatch.setattr(jax_twins.JaxTrainingStep, "first_step_outputs", wrong)
    with pytest.raises(AssertionError, match="jax"):
        case.check()
    # and one whose Adam step is not torch's, though its gradients are right
    def wrong_update(self):
        values = outputs(self)
        values["updated decoder.2.bias"] = values["updated decoder.2.bias"] + np.float32(1e-3)
        return values

    monkeypatch.setattr(jax_twins.JaxTrainingStep, "first_step_outputs", wrong_update)
    with pytest.raises(AssertionError, match="jax: Adam step"):
        case.check()
