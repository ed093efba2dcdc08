"""Sizes that cannot fit, and parameters that cannot be written.

- Huge sizes (a layer, a run's config, gradcheck, the benchmark options) are refused before
  anything is allocated, in one line naming what asked and the bytes it needs, never a
  ``MemoryError`` traceback or the OOM killer (``scratch.memory``).
- Initial weights are drawn without a float64 temporary, bit for bit the values of
  ``rng.uniform(-b, b, shape).astype(dtype)``.
- A read-only ``.data`` or ``.grad`` is refused by every optimizer before anything moves.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from scratch import memory, nn, optim
from scratch.memory import AllocationTooLarge, available_bytes, check_allocation, format_bytes, uniform_array
from scratch.nn.module import Parameter

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


@pytest.fixture
def limit(monkeypatch):
    """``limit(n)``: take ``n`` bytes as the memory available (``AUTOENCODERS_MEMORY_LIMIT``)."""
    return lambda count: monkeypatch.setenv(memory.LIMIT_VARIABLE, str(count))


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------- scratch.memory


def test_format_bytes_and_the_override(limit):
    assert [format_bytes(n) for n in (0, 1023, 1024, 3_136_000_000_000, 1 << 80)] == [
        "0 B", "1023 B", "1.0 KiB", "2.9 TiB", "1073741824.0 PiB"]
    measured = available_bytes()
    assert measured is None or measured > 0
    limit(12345)
    assert available_bytes() == 12345
    limit("lots")
    with pytest.raises(ValueError, match=r"AUTOENCODERS_MEMORY_LIMIT must be a whole number of bytes, got 'lots'"):
        available_bytes()


def test_sizes_are_multiplied_without_overflow(limit):
    """2**40 x 2**40 float32 is 2**82 bytes: int64 arithmetic would wrap it to 0 and let it through."""
    limit(64 * GIB)
    with pytest.raises(AllocationTooLarge, match=r"^Linear\(1099511627776, 1099511627776\): its weight "):
        nn.Linear(2 ** 40, 2 ** 40)
    with pytest.raises(MemoryError, match=r"^x \(4294967296, 4294967296, 4096\) float64 needs 536870912\.0 PiB; "
                                          r"64\.0 GiB of memory is available$"):
        check_allocation("x", (np.int64(2 ** 32), 2 ** 32, 4096), np.float64)


LAYERS = [
    ("Linear", lambda: nn.Linear(1000, 1000, dtype=np.float64),
     (r"^Linear\(1000, 1000\): its weight \(1000, 1000\) float64, with its gradient, needs 15\.3 MiB; "
      r"976\.6 KiB of memory is available$")),
    ("Conv2d", lambda: nn.Conv2d(100, 100, 10, dtype=np.float32),
     (r"^Conv2d\(100, 100, kernel_size=\(10, 10\)\): its weight \(100, 100, 10, 10\) float32, with its "
      r"gradient, needs 7\.6 MiB")),
    ("ConvTranspose2d", lambda: nn.ConvTranspose2d(30, 200, (10, 20), dtype=np.float64),
     (r"^ConvTranspose2d\(30, 200, kernel_size=\(10, 20\)\): its weight \(30, 200, 10, 20\) float64, with "
      r"its gradient, needs 18\.3 MiB")),
]


@pytest.mark.parametrize("name, make, message", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_a_layer_too_large_is_refused_before_it_allocates(limit, name, make, message):
    limit(1_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(AllocationTooLarge, match=message):
            make()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000, f"{name}: {peak} bytes were allocated before the refusal"


def test_every_parameter_and_the_flat_buffer_are_checked(monkeypatch, limit):
    """The bias is checked too (after the weight took its memory), as are a TiedLinear's bias and
    the flat buffers ``flatten_parameters`` makes."""
    answers = iter([10 ** 9, 1000])  # the memory left before the weight, then before the bias
    monkeypatch.setattr(memory, "available_bytes", lambda: next(answers))
    with pytest.raises(AllocationTooLarge, match=r"^Linear\(3, 200000\): its bias \(200000,\) float32, with its "
                                                 r"gradient, needs 1\.5 MiB; 1000 B of memory is available$"):
        nn.Linear(3, 200_000, dtype=np.float32)
    monkeypatch.undo()
    source = nn.Linear(3, 200_000, bias=False, dtype=np.float64)
    limit(10)
    with pytest.raises(AllocationTooLarge, match=r"^TiedLinear\(200000, 3\): its bias \(3,\) float64, with its "
                                                 r"gradient, needs 48 B; 10 B of memory is available$"):
        nn.TiedLinear(source)
    limit(2_000_000)
    with pytest.raises(AllocationTooLarge, match=r"^Sequential\.flatten_parameters: a flat copy of its 600,000 "
                                                 r"float64 parameters and their gradients needs 9\.2 MiB"):
        nn.Sequential(source).flatten_parameters()
    assert source.weight.data.base is None  # nothing was moved


def test_a_layer_that_fits_is_built(limit):
    limit(10_000_000)
    layer = nn.Linear(1000, 1000, dtype=np.float32)  # 7.6 MiB with its gradient
    assert layer.weight.shape == (1000, 1000)


# ---------------------------------------------------------------------------- initial weights


def _old_layer(kind, args, dtype, seed):
    """The weight and bias as drawn before: ``rng.uniform(-b, b, shape).astype(dtype)``."""
    rng = np.random.default_rng(seed)
    if kind == "Linear":
        in_features, out_features = args
        shape, fan_in, out = (out_features, in_features), in_features, out_features
    else:
        in_channels, out_channels, kernel = args
        first, second = (out_channels, in_channels) if kind == "Conv2d" else (in_channels, out_channels)
        shape, fan_in, out = (first, second, kernel, kernel), second * kernel * kernel, out_channels
    bound = 1.0 / np.sqrt(fan_in)
    weight = rng.uniform(-bound, bound, shape).astype(dtype)
    bias = rng.uniform(-bound, bound, (out,)).astype(dtype)
    return weight, bias, rng.random()


INIT_CASES = [("Linear", (3, 5)), ("Linear", (784, 256)), ("Linear", (700, 300)), ("Linear", (1, 1)),
              ("Conv2d", (1, 16, 3)), ("Conv2d", (16, 40, 11)), ("ConvTranspose2d", (8, 16, 3)),
              ("ConvTranspose2d", (40, 16, 11))]


@pytest.mark.parametrize("chunk", [memory.CHUNK, 7], ids=["default chunk", "chunk of 7"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind, args", INIT_CASES, ids=[f"{k}{a}" for k, a in INIT_CASES])
def test_initial_weights_are_bit_identical_to_one_float64_draw(monkeypatch, kind, args, dtype, chunk):
    """Each layer's weight and bias, and the generator's state after them, are exactly those of the
    old expression (documented numbers depend on them), also across many chunk boundaries."""
    monkeypatch.setattr(memory, "CHUNK", chunk)
    rng = np.random.default_rng(20240607)
    layer = getattr(nn, kind)(*args, rng=rng, dtype=dtype)
    weight, bias, next_draw = _old_layer(kind, args, dtype, 20240607)
    assert layer.weight.dtype == dtype and layer.weight.data.tobytes() == weight.tobytes()
    assert layer.bias.data.tobytes() == bias.tobytes()
    assert rng.random() == next_draw


@pytest.mark.parametrize("shape", [(0,), (1,), (65536,), (65537,), (3, 70000), (2, 3, 4, 5)])
def test_uniform_array_is_one_draw_cast(shape):
    for dtype in (np.float32, np.float64):
        rng, old = np.random.default_rng(5), np.random.default_rng(5)
        drawn = uniform_array(rng, -0.25, 0.25, shape, dtype)
        expected = old.uniform(-0.25, 0.25, shape).astype(dtype)
        assert drawn.shape == expected.shape and drawn.dtype == expected.dtype and drawn.flags.c_contiguous
        assert drawn.tobytes() == expected.tobytes()
        assert rng.bit_generator.state == old.bit_generator.state


def test_a_float32_layer_is_built_without_a_float64_copy_of_its_weight():
    """Drawing the weight in float64 and casting held 12 bytes per weight at once; now the weight
    and its gradient (8 bytes per weight) are the most ever held."""
    nn.Linear(4, 4)  # imports and first-call allocations out of the way
    tracemalloc.start()
    try:
        nn.Linear(1000, 1000, dtype=np.float32, rng=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000 + 1_000_000, f"{peak} bytes held at once for a 4 MB weight"


# ---------------------------------------------------------------------------- the command line


@pytest.fixture
def run_main(capsys, limit):
    """``run_main(*argv)``: (status, the one line on stderr) of ``autoencoders argv`` in process,
    with 8 GiB taken as the memory available."""
    from autoencoders.cli import main

    limit(8 * GIB)

    def run(*argv):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit:
            status = exit.code
        return status, _one_line(capsys.readouterr().err)

    return run


def test_train_with_a_huge_hidden_layer_says_so_in_one_line(run_main, tmp_path):
    status, line = run_main("train", "mlp-ae", "--hidden-dims", 1_000_000_000, "--out", tmp_path / "run", "--quiet")
    assert status == 2
    assert "Linear(64, 1000000000): its weight (1000000000, 64) float32, with its gradient, needs 476.8 GiB; " \
           "8.0 GiB of memory is available" in line


def test_gradcheck_with_huge_sizes_says_so_in_one_line(run_main):
    status, line = run_main("gradcheck", "mlp-ae", "--input-dim", 100_000, "--hidden-dim", 100_000)
    assert status == 2 and "Linear(100000, 100000): its weight (100000, 100000) float64" in line
    assert "needs 149.0 GiB; 8.0 GiB of memory is available" in line
    status, line = run_main("gradcheck", "mlp-ae", "--batch-size", 10 ** 10)
    assert status == 2 and "the input batch (--batch-size, --input-dim) = (10000000000, 16) float64 needs 1.2 TiB" in line


def test_gradcheck_names_a_negative_seed(run_main):
    status, line = run_main("gradcheck", "mlp-ae", "--seed", -1)
    assert status == 2 and "argument --seed: expected a non-negative integer, got -1" in line


@pytest.fixture(scope="module")
def huge_run(tmp_path_factory):
    """A finished one-epoch run whose config.json then asks for a hidden layer of 10**9."""
    from autoencoders.cli import main

    run_dir = tmp_path_factory.mktemp("huge") / "run"
    assert main(["train", "mlp-ae", "--epochs", "1", "--hidden-dims", "8", "--latent-dim", "2", "--quiet",
                 "--out", str(run_dir)]) == 0
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    config["model_config"]["hidden_dims"] = [1_000_000_000]
    path.write_text(json.dumps(config))
    return run_dir


@pytest.mark.parametrize("command", [["eval"], ["train", "--resume"]], ids=["eval", "resume"])
def test_a_run_config_asking_for_a_huge_layer_says_so_in_one_line(run_main, huge_run, command):
    before = sorted(p.name for p in huge_run.rglob("*"))
    status, line = run_main(*command, huge_run)
    assert status == 2 and "Linear(64, 1000000000): its weight (1000000000, 64) float32" in line
    assert sorted(p.name for p in huge_run.rglob("*")) == before


def test_eval_of_a_huge_config_in_a_real_process(huge_run):
    """The same refusal from a process of its own: status 2, one line, no traceback."""
    env = {**os.environ, memory.LIMIT_VARIABLE: str(8 * GIB)}
    done = subprocess.run([sys.executable, "-m", "autoencoders.cli", "eval", str(huge_run)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "needs 476.8 GiB; 8.0 GiB of memory is available" in _one_line(done.stderr)


BENCH = [
    (["peak", "--peak-size", "1000000"],
     r"--peak-size 1000000 needs about 21\.8 TiB of memory \(the 1000000x1000000 float32 matrix multiply"),
    (["models", "--batch-sizes", "1,100000000"],
     (r"--batch-sizes 100000000 needs about 159\.7 TiB of memory \(the training steps of mlp-ae, .*tied-ae at "
      r"batch 100000000\); 8\.0 GiB is available")),
    (["sweep", "--thread-batch-size", "100000000"], r"--thread-batch-size 100000000 needs about"),
    (["conv", "--batch-sizes", "100000000"], r"--batch-sizes 100000000 needs about .*the conv-ae, conv-vae cases"),
    (["load", "--batch-sizes", "100000000"],
     r"--batch-sizes 100000000 needs about .*the training steps of mlp-ae, conv-vae at batch 100000000"),
    (["ops", "--batch-sizes", "10000000,10000000"], r"--batch-sizes 10000000,10000000 needs about"),
    (["all", "--peak-size", "1000000"], r"--peak-size 1000000 needs about 21\.8 TiB"),
]


@pytest.mark.parametrize("argv, message", BENCH, ids=[b[0][0] for b in BENCH])
def test_bench_sizes_that_cannot_fit_are_usage_errors(run_main, monkeypatch, argv, message):
    import importlib

    from autoencoders.bench.options import SUITES

    suite = importlib.import_module(SUITES[argv[0]][0])
    monkeypatch.setattr(suite, "run", lambda args: pytest.fail("the suite ran"))  # refused before it starts
    status, line = run_main("bench", *argv)
    assert status == 2 and line.startswith("autoencoders bench: error: ")
    assert re.search(message, line), line


def test_bench_module_entry_refuses_too(capsys, limit):
    from autoencoders.bench.options import main_for

    limit(8 * GIB)
    assert main_for("peak", ["--peak-size", "1000000"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("python -m autoencoders.bench.peak: error: --peak-size 1000000 needs")


def test_bench_defaults_fit_and_a_small_machine_is_told(limit):
    import argparse

    from autoencoders.bench.options import add_suite_arguments, resolve

    parser = argparse.ArgumentParser()
    add_suite_arguments(parser, "models", default_out="out")
    limit(2 * GIB)
    assert resolve(parser.parse_args([]), "models").batch_sizes == [1, 128, 1024]
    limit(100_000_000)
    with pytest.raises(ValueError, match=r"^--batch-sizes 1024 needs about 1\.7 GiB of memory .*; 95\.4 MiB is "
                                         r"available$"):
        resolve(parser.parse_args([]), "models")


# ---------------------------------------------------------------------------- read-only parameters


OPTIMIZERS = {
    "SGD": lambda params: optim.SGD(params, lr=0.1, momentum=0.9),
    "Adam": lambda params: optim.Adam(params, lr=0.1),
    "AdamW": lambda params: optim.AdamW(params, lr=0.1),
}


def _read_only_data(p):
    p.data.flags.writeable = False


def _frombuffer_data(p):
    p.data = np.frombuffer(p.data.tobytes(), dtype=p.dtype).reshape(p.shape)


def _read_only_grad(p):
    p.grad.flags.writeable = False


FAULTS = [("data marked read-only", _read_only_data, ".data"), ("data from bytes", _frombuffer_data, ".data"),
          ("grad marked read-only", _read_only_grad, ".grad")]


def _stepped(name, flat):
    if flat:
        params = nn.Sequential(nn.Linear(4, 3, rng=0, dtype=np.float64), nn.ReLU(),
                               nn.Linear(3, 4, rng=1, dtype=np.float64)).flatten_parameters().parameters()
    else:
        params = [Parameter(np.linspace(-1, 1, 6).reshape(2, 3)), Parameter(np.arange(4.0))]
    opt = OPTIMIZERS[name](params)
    for p in params:
        p.grad[...] = 0.5
    opt.step()
    return opt, params


def _state(opt, params):
    return copy.deepcopy(opt.state_dict()), [(p.data.copy(), p.grad.copy()) for p in params]


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


@pytest.mark.parametrize("flat", [False, True], ids=["loose", "flattened"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("fault, damage, label", FAULTS, ids=[f[0] for f in FAULTS])
def test_a_read_only_parameter_is_refused_before_anything_moves(name, flat, fault, damage, label):
    """The last parameter cannot be written: refused with nothing changed, step counts included.
    Flattened, its read-only view sits in a writeable buffer the fast path would write through."""
    opt, params = _stepped(name, flat)
    damage(params[-1])
    before = _state(opt, params)
    index, shape = len(params) - 1, params[-1].shape
    with pytest.raises(ValueError, match=rf"^{name}\.step: parameter {index} \(shape \({shape[0]},\)\) is read-only "
                                         rf"\(its \{label} array is not writeable, .*\); give it a writeable array, "
                                         rf"e\.g\. np\.array\({label[1:]}\)$"):
        opt.step()
    assert _same(_state(opt, params), before)


@pytest.mark.parametrize("flat", [False, True], ids=["loose", "flattened"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_read_only_state_buffer_is_refused_before_anything_moves(name, flat):
    opt, params = _stepped(name, flat)
    buffer = "momentum_buffer" if name == "SGD" else "exp_avg_sq"
    opt.state[id(params[-1])][buffer].flags.writeable = False
    before = _state(opt, params)
    with pytest.raises(ValueError, match=rf"^{name}\.step: parameter {len(params) - 1} \(shape \(4,\)\) is read-only "
                                         rf"\(its state '{buffer}' array is not writeable, and a step updates it in "
                                         rf"place\); load a writeable copy, e\.g\. optimizer\.load_state_dict"):
        opt.step()
    assert _same(_state(opt, params), before)
    opt.load_state_dict(opt.state_dict())  # the remedy the message gives
    opt.step()


def test_a_parameter_copies_a_read_only_array_and_steps():
    """np.frombuffer over bytes: the Parameter holds a writeable copy (never writing into the bytes)."""
    raw = b"\0" * 32
    source = np.frombuffer(raw, dtype=np.float64)
    p = Parameter(source)
    assert p.data.flags.writeable and not np.shares_memory(p.data, source)
    p.grad[...] = 1.0
    optim.Adam([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, -0.1)
    assert raw == b"\0" * 32
    writeable = np.zeros(3)
    assert Parameter(writeable).data is writeable  # shared, as before
