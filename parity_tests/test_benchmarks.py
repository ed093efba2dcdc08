"""The benchmark harness: result structure, and that nothing wrong is ever timed.

Speed is never asserted here: only that the harness measures what it claims (medians, ratio,
compile time, outputs checked) and that a case whose scratch side is wrong makes ``measure``
raise before any warm-up or timed repetition runs.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from benchmarks import conv as bench
from benchmarks.harness import Case, CheckFailed, assert_matches, format_table, markdown_table, measure
from scratch import nn
from scratch import optim as scratch_optim

THREADS = min(2, os.cpu_count() or 1)


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


def test_measure_reports_medians_ratio_compile_time_and_checked_outputs():
    cases = bench.layer_cases(2, only={"encoder.0"}) + [bench.training_case(2)]
    counted = [_counted(case) for case in cases]
    results = measure([case for case, _ in counted], repeats=3, warmup=1, threads=THREADS)
    assert [r["name"] for r in results] == ["Conv2d(1,16,3,s3,p1) on 1x28x28", bench.TRAINING_STEP]
    for result, (_, calls) in zip(results, counted):
        assert result["batch_size"] == 2 and result["dtype"] == "float32"
        assert result["checked"] is True and result["check"] in ("torch float32", "torch float64 referee")
        for side in ("scratch", "torch"):
            assert result[f"{side}_median_ms"] > 0
            assert result[f"{side}_iqr_ms"] >= 0
            assert len(result[f"{side}_samples_ms"]) == 3
            assert result[f"{side}_median_ms"] == pytest.approx(float(np.median(result[f"{side}_samples_ms"])))
            assert result[f"{side}_page_faults_per_call"] >= 0
        assert result["ratio"] == pytest.approx(result["scratch_median_ms"] / result["torch_median_ms"])
        assert result["compile_ms"] > 0
        assert result["repeats"] == 3 and result["warmup"] == 1
        assert {"numba", "torch"} <= set(result["threads"]) and result["threads"]["numba"] == THREADS
        # the first scratch call alone, then warm-up and repetitions; torch only warm-up and repetitions
        assert calls == {"scratch": 1 + 1 + 3, "torch": 1 + 3}
    for table in (format_table(results), markdown_table(results)):
        assert bench.TRAINING_STEP in table and "compile ms" in table


def test_a_wrong_scratch_layer_raises_before_timing():
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(1, 4, 3, stride=3, padding=1, rng=rng)
    twin = torch.nn.Conv2d(1, 4, 3, stride=3, padding=1)
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in layer.state_dict().items()})
    layer.bias.data += 0.1  # deliberately wrong: the scratch output is off by 0.1 everywhere
    x = (rng.random((2, 1, 28, 28)) < 0.13).astype(np.float32)
    case, calls = _counted(bench.layer_case("wrong", layer, twin, x, rng, batch_size=2))
    with pytest.raises(CheckFailed, match="not timed"):
        measure([case], repeats=3, warmup=1, threads=THREADS)
    assert calls == {"scratch": 1, "torch": 0}  # only the compile call: no warm-up, no repetition


def test_a_wrong_training_step_is_not_excused_by_the_float64_referee(monkeypatch):
    # scratch's Adam with twice the learning rate: torch float32 and the float64 referee both disagree
    adam = scratch_optim.Adam
    monkeypatch.setattr(scratch_optim, "Adam", lambda params, lr, **kwargs: adam(params, lr=2 * lr, **kwargs))
    good, _ = _counted(bench.layer_cases(2, only={"encoder.0"})[0])
    wrong, calls = _counted(bench.training_case(2))
    with pytest.raises(CheckFailed, match="torch float64 referee"):
        measure([good, wrong], repeats=3, warmup=1, threads=THREADS)
    assert calls["torch"] == 0  # a later case's failure stops every case before any timing


def test_a_case_with_a_wrong_output_never_reaches_the_clock():
    def check():
        assert_matches({"output": np.ones(3, np.float32)}, {"output": torch.zeros(3)}, "synthetic")

    timed = []
    case = Case("synthetic", lambda: timed.append("scratch"), lambda: timed.append("torch"), check)
    with pytest.raises(CheckFailed, match="synthetic"):
        measure([case], repeats=3, warmup=1, threads=THREADS)
    assert timed == ["scratch"]


def test_assert_matches_uses_the_float32_tolerance_scaled_by_the_largest_magnitude():
    expected = np.array([1.0, 1e-6], dtype=np.float32)
    assert_matches({"a": expected + np.float32(1.9e-4)}, {"a": expected})  # within 2e-4·max|expected|
    with pytest.raises(AssertionError):
        assert_matches({"a": expected + np.float32(5e-4)}, {"a": expected})
    with pytest.raises(AssertionError, match="torch gives"):
        assert_matches({"a": expected}, {"b": expected})


def test_model_training_step_benchmark_checks_then_times_every_model_kind():
    """benchmarks.models: one case per model (plain, noisy, variational, convolutional)."""
    from benchmarks.harness import measure
    from benchmarks.models import training_step_case

    names = ["mlp-ae", "denoising-ae", "vae", "conv-ae"]
    results = measure([training_step_case(name, 2) for name in names], repeats=2, warmup=1, threads=1)
    assert [r["model"] for r in results] == names
    for result in results:
        assert result["checked"] and result["scratch_median_ms"] > 0 and result["torch_median_ms"] > 0
        assert result["ratio"] == pytest.approx(result["scratch_median_ms"] / result["torch_median_ms"])


def test_autoencoders_bench_runs_a_suite_and_writes_its_results(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "scratch.cli", "bench", "models", "--models", "mlp-ae", "--batch-sizes", "2",
         "--repeats", "2", "--warmup", "1"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mlp-ae training step" in result.stdout
    assert (tmp_path / "bench-results" / "models.json").exists() and (tmp_path / "bench-results" / "models.md").exists()
