"""Thread counts (autoencoders.threads), the commands' --threads N|auto, and which count a resumed
run takes: set_threads pins Numba, the BLAS and torch together and refuses what Numba's pool
cannot run without changing anything; auto takes the cores other processes leave free
(busy_cores, which leaves this process's own time out); the quiet wait policies and
GOMP_SPINCOUNT are set only where the environment leaves them unset, and GOMP_SPINCOUNT only
while Numba's pool starts; an explicit --threads on --resume wins over the recorded counts,
with a warning naming them.

conftest.py's autouse fixture sets the suite's thread counts again after every test, so the
tests here change counts freely.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numba
import pytest
import torch

from autoencoders import threads as threads_module
from autoencoders.cli import BENCH_SUITES, _resolve_threads
from autoencoders.runs.checkpoint import latest_checkpoint, read_checkpoint
from autoencoders.threads import (
    NUMBA_SPINCOUNT,
    QUIET_WAIT_POLICIES,
    THREAD_VARIABLES,
    auto_threads,
    available_cores,
    busy_cores,
    check_threads,
    current_thread_counts,
    default_threads,
    environment_thread_counts,
    numba_pool_started,
    quiet_wait_policies,
    set_threads,
    start_numba_pool,
)
from autoencoders.training import TrainConfig, run
from parity_tests.test_train import ROOT, cli

POOL = int(numba.config.NUMBA_NUM_THREADS)  # Numba's pool in this process (conftest: min(2, cores))
LINUX = sys.platform.startswith("linux")


def _suite_counts() -> dict[str, int]:
    return current_thread_counts("torch")


# -- set_threads, check_threads ------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
def test_set_threads_pins_numba_the_blas_and_torch_and_returns_the_counts_in_force(count):
    if count > POOL:
        pytest.skip(f"Numba's pool has {POOL} thread(s)")
    other = 1 if count == 2 else POOL  # start from other counts where the pool allows, so a no-op shows
    numba.set_num_threads(other)
    torch.set_num_threads(other)
    counts = set_threads(count)
    assert counts == {"blas": count, "numba": count, "torch": count}
    assert counts == current_thread_counts("torch")
    assert numba.get_num_threads() == count and torch.get_num_threads() == count


def test_set_threads_without_torch_leaves_torchs_count_alone():
    torch.set_num_threads(3)
    counts = set_threads(1, torch=False)
    assert counts == {"blas": 1, "numba": 1} == current_thread_counts("scratch")
    assert torch.get_num_threads() == 3


def test_set_threads_none_takes_numbas_pool_size():
    numba.set_num_threads(1)
    assert set_threads(None, torch=False)["numba"] == POOL == default_threads()


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "2", None])
def test_check_threads_refuses_what_is_not_a_positive_integer(value):
    with pytest.raises(ValueError, match=r"--threads: expected a positive integer, got"):
        check_threads(value)


def test_more_threads_than_numbas_pool_are_refused_naming_numba_num_threads_and_nothing_changes():
    too_many = POOL + 1
    with pytest.raises(ValueError, match=rf"--threads {too_many}: Numba's pool has {POOL} threads "
                                         rf"\(NUMBA_NUM_THREADS.*NUMBA_NUM_THREADS={too_many}"):
        check_threads(too_many)
    assert check_threads(POOL) == POOL
    with pytest.raises(ValueError, match="--where"):
        check_threads(too_many, where="--where")
    numba.set_num_threads(1)
    torch.set_num_threads(3)
    before = current_thread_counts("torch")
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        set_threads(too_many)
    assert current_thread_counts("torch") == before  # torch was not set either, though it could be


# -- auto_threads, busy_cores --------------------------------------------------------------------


@pytest.mark.parametrize("cores, pool, busy, expected", [
    (2, 2, 0.0, 2),
    (2, 2, 0.2, 2),     # rounds to 0 busy cores
    (2, 2, 1.2, 1),
    (2, 2, 7.0, 1),     # never fewer than 1
    (4, 2, 0.2, 2),     # never more than Numba's pool
    (4, 8, 0.2, 4),     # nor than the cores available
    (4, 8, 1.5, 2),     # 1.5 rounds to 2 busy cores
    (4, 8, 1.4, 3),
    (8, 8, None, 8),    # no /proc: the pool size
    (2, 1, None, 1),
])
def test_auto_threads_takes_the_cores_left_free_between_one_and_the_pool(monkeypatch, cores, pool, busy, expected):
    intervals = []
    monkeypatch.setattr(threads_module, "available_cores", lambda: cores)
    monkeypatch.setattr(threads_module, "default_threads", lambda: pool)
    monkeypatch.setattr(threads_module, "busy_cores", lambda interval=0.2: intervals.append(interval) or busy)
    assert auto_threads(0.05) == (expected, busy)
    assert intervals == [0.05]


def test_busy_cores_is_the_busy_share_of_the_allowed_cpus_less_this_processs_own_ticks(monkeypatch):
    """Scripted /proc readings: 2 cpus, 100 ticks in all over the interval, 90 of them busy, 60
    of those this process's: the others kept 2·30/100 = 0.6 cores busy."""
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads_module.time, "sleep", lambda seconds: None)
    cpu = iter([(500, 1000), (590, 1100)])
    own = iter([40, 100])
    monkeypatch.setattr(threads_module, "_cpu_times", lambda cpus: next(cpu))
    monkeypatch.setattr(threads_module, "_own_ticks", lambda: next(own))
    assert busy_cores() == pytest.approx(0.6)
    # this process alone busy: nobody else (never below 0, whatever the ticks' rounding)
    cpu, own = iter([(500, 1000), (560, 1100)]), iter([0, 63])
    assert busy_cores() == 0.0
    # no time passed (the counters did not move): 0, not a division by zero
    cpu, own = iter([(500, 1000), (500, 1000)]), iter([0, 0])
    assert busy_cores() == 0.0


def test_busy_cores_is_none_where_proc_is_missing(monkeypatch):
    def missing(cpus):
        raise FileNotFoundError("/proc/stat")

    monkeypatch.setattr(threads_module, "_cpu_times", missing)
    assert busy_cores(0.01) is None
    monkeypatch.setattr(threads_module, "busy_cores", lambda interval=0.2: None)
    assert auto_threads() == (default_threads(), None)


@pytest.mark.skipif(not LINUX, reason="busy_cores reads /proc")
def test_busy_cores_sees_a_competing_process():
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # let it start spinning
        busy = busy_cores(0.5)
    finally:
        competitor.kill()
        competitor.wait()
    assert busy is not None
    # a lower bound: the competitor alone keeps a core busy (other load only adds)
    assert 0.5 <= busy <= available_cores() + 1e-9, busy


@pytest.mark.skipif(not LINUX, reason="busy_cores reads /proc")
def test_busy_cores_leaves_this_processs_own_time_out():
    """A thread of this process spins through the whole interval: busy_cores must report the
    busy share less that thread's, measured around the call from the same /proc counters."""
    cpus = os.sched_getaffinity(0)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        time.sleep(0.05)
        busy0, total0 = threads_module._cpu_times(cpus)
        own0 = threads_module._own_ticks()
        measured = busy_cores(0.5)
        busy1, total1 = threads_module._cpu_times(cpus)
        own1 = threads_module._own_ticks()
    finally:
        stop.set()
        spinner.join()
    scale = len(cpus) / (total1 - total0)
    own = scale * (own1 - own0)
    everyone = scale * (busy1 - busy0)
    if own < 0.3:
        pytest.skip(f"the machine is too busy: the spinning thread ran only {own:.2f} of a core")
    # Without the subtraction the result would be `everyone`, `own` above this bound; the
    # tolerance (under own / 2) covers the clock ticks' rounding and the few µs the reads take.
    assert measured <= everyone - own + min(0.2, own / 2), (measured, everyone, own)


# -- the environment -----------------------------------------------------------------------------


def test_environment_thread_counts_lists_the_thread_variables_that_are_set():
    environ = {"NUMBA_NUM_THREADS": "3", "OMP_NUM_THREADS": " ", "MKL_NUM_THREADS": "", "OTHER_THREADS": "2",
               "OPENBLAS_NUM_THREADS": "1"}
    assert environment_thread_counts(environ) == {"NUMBA_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "1"}
    assert environment_thread_counts({}) == {}
    assert set(THREAD_VARIABLES) >= {"NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}


def test_quiet_wait_policies_sets_only_what_the_environment_leaves_unset():
    assert QUIET_WAIT_POLICIES == {"OPENBLAS_THREAD_TIMEOUT": "16"}
    environ = {"PATH": "/bin"}
    assert quiet_wait_policies(environ) == {"OPENBLAS_THREAD_TIMEOUT": "16"}
    assert environ == {"PATH": "/bin", "OPENBLAS_THREAD_TIMEOUT": "16"}
    mine = {"OPENBLAS_THREAD_TIMEOUT": "9"}
    assert quiet_wait_policies(mine) == {"OPENBLAS_THREAD_TIMEOUT": "9"}
    assert mine == {"OPENBLAS_THREAD_TIMEOUT": "9"}


def test_start_numba_pool_leaves_the_environment_alone_once_the_pool_runs():
    assert numba_pool_started()  # conftest set Numba's count, which starts the pool
    environ: dict[str, str] = {}
    start_numba_pool(environ=environ)
    assert environ == {}  # no GOMP_SPINCOUNT set, none left behind
    start_numba_pool(1, environ=environ)
    assert environ == {} and numba.get_num_threads() == 1


_POOL_PROBE = textwrap.dedent("""
    import json, os, sys
    seen = {}
    import autoencoders.threads as threads
    original = threads.quiet_wait_policies
    def spy(*args, **kwargs):
        seen["numpy loaded before the wait policies"] = "numpy" in sys.modules
        return original(*args, **kwargs)
    threads.quiet_wait_policies = spy
    import autoencoders.cli  # sets the wait policies as it loads
    import numba
    from numba.np.ufunc import parallel
    launch = parallel._launch_threads
    def spy_launch():
        seen.setdefault("GOMP_SPINCOUNT at launch", os.environ.get("GOMP_SPINCOUNT"))
        launch()
    parallel._launch_threads = spy_launch
    seen["started before"] = threads.numba_pool_started()
    threads.start_numba_pool(1)
    seen.update({"started after": threads.numba_pool_started(), "GOMP_SPINCOUNT after": os.environ.get("GOMP_SPINCOUNT"),
                 "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                 "numba threads": numba.get_num_threads()})
    print(json.dumps(seen))
""")


def _probe_pool(**environment) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(PYTHONPATH=str(ROOT), **environment)
    result = subprocess.run([sys.executable, "-c", _POOL_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not LINUX, reason="the OpenMP layer's start is what is under test")
def test_a_fresh_process_starts_numbas_pool_with_gomp_spincount_set_only_while_it_starts():
    seen = _probe_pool()
    assert seen["numpy loaded before the wait policies"] is False  # else OpenBLAS read them already
    assert seen["OPENBLAS_THREAD_TIMEOUT"] == "16"
    assert seen["started before"] is False and seen["started after"] is True
    assert seen["GOMP_SPINCOUNT at launch"] == NUMBA_SPINCOUNT
    assert seen["GOMP_SPINCOUNT after"] is None
    assert seen["numba threads"] == 1
    # a user's settings stand, both of them
    seen = _probe_pool(GOMP_SPINCOUNT="500", OPENBLAS_THREAD_TIMEOUT="7")
    assert seen["GOMP_SPINCOUNT at launch"] == "500" and seen["GOMP_SPINCOUNT after"] == "500"
    assert seen["OPENBLAS_THREAD_TIMEOUT"] == "7" and seen["started after"] is True


@pytest.mark.skipif(not LINUX, reason="ELF symbol binding (LD_DEBUG) is what is under test")
def test_numbas_pool_binds_to_torchs_libgomp_when_torch_loads_first():
    """The fact start_numba_pool documents, asked of the dynamic linker: with torch loaded first
    (as set_threads does), Numba's pool runs on torch's libgomp, so a GOMP_SPINCOUNT set only
    while the pool starts does not reach it (docs/speed.md, "Threads that behave")."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LD_DEBUG": "bindings"}
    code = "from autoencoders.threads import set_threads; set_threads(1)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    bindings = [line for line in result.stderr.splitlines() if "omppool" in line and "`GOMP_parallel'" in line]
    assert bindings, "no binding of GOMP_parallel from Numba's omppool found"
    assert all("torch/lib/libgomp" in line for line in bindings), bindings


# -- the commands' --threads ---------------------------------------------------------------------


COMMANDS = ("train", "eval", "reconstruct", "compare", "gradcheck")


@pytest.mark.parametrize("command", [*COMMANDS, *(f"bench {suite}" for suite in BENCH_SUITES)])
def test_every_computing_command_offers_threads(tmp_path, command):
    result = cli(*command.split(), "--help", cwd=tmp_path, check_status=0)
    assert "--threads" in result.stdout
    if not command.startswith("bench"):
        assert "--threads N|auto" in result.stdout


@pytest.mark.parametrize("value", ["0", "x", "-2", "1.5"])
@pytest.mark.parametrize("command", ["gradcheck mlp-ae", "train mlp-ae", "eval run"])
def test_a_bad_threads_value_is_a_one_line_usage_error(tmp_path, command, value):
    result = cli(*command.split(), "--threads", value, cwd=tmp_path)
    error = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(error) == 1 and "--threads" in error[0], result.stderr


def test_more_threads_than_numbas_pool_is_a_one_line_error_naming_numba_num_threads(tmp_path):
    for args in (["gradcheck", "mlp-ae"], ["train", "mlp-ae", "--out", "run", "--quiet"]):
        result = cli(*args, "--threads", POOL + 1, cwd=tmp_path)
        error = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(error) == 1, result.stderr
        assert "NUMBA_NUM_THREADS" in error[0] and f"--threads {POOL + 1}" in error[0], error
    assert not (tmp_path / "run").exists()  # refused before the run directory was taken


def test_gradcheck_with_threads_1_passes_and_leaves_numba_at_1(tmp_path):
    if POOL > 1:
        assert numba.get_num_threads() == POOL  # the suite's count, so that the change shows
    result = cli("gradcheck", "mlp-ae", "--threads", "1", cwd=tmp_path, check_status=0)
    assert "gradcheck passed" in result.stdout
    assert current_thread_counts("scratch") == {"blas": 1, "numba": 1}


# -- _resolve_threads ----------------------------------------------------------------------------


@pytest.fixture
def quiet_environment(monkeypatch):
    """No thread variable in the environment, 2 cores, a pool of 2; busy_cores as the test sets it."""
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads_module, "available_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "default_threads", lambda: 2)
    busy = {"cores": 0.0, "calls": 0}

    def fake_busy(interval=0.2):
        busy["calls"] += 1
        return busy["cores"]

    monkeypatch.setattr(threads_module, "busy_cores", fake_busy)
    return busy


def test_resolve_threads_returns_an_explicit_count_as_given(quiet_environment, capsys):
    assert _resolve_threads(argparse.Namespace(threads=3)) == 3  # checked later, by set_threads
    assert quiet_environment["calls"] == 0 and capsys.readouterr().out == ""


def test_resolve_threads_leaves_counts_the_environment_sets(quiet_environment, monkeypatch):
    quiet_environment["cores"] = 1.4
    assert _resolve_threads(argparse.Namespace(threads=None)) == 1  # no variable set: auto
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _resolve_threads(argparse.Namespace(threads=None)) is None
    assert _resolve_threads(argparse.Namespace(threads="auto")) == 1  # asked for: auto all the same


def test_auto_says_in_one_line_when_it_takes_fewer_threads_than_the_pool(quiet_environment, capsys):
    quiet_environment["cores"] = 1.4
    assert _resolve_threads(argparse.Namespace(threads="auto")) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["threads: 1 (auto: other processes keep 1.4 of 2 cores busy; --threads N to choose)"], out
    assert _resolve_threads(argparse.Namespace(threads="auto"), announce=False) == 1
    assert capsys.readouterr().out == ""
    quiet_environment["cores"] = 0.3
    assert _resolve_threads(argparse.Namespace(threads="auto")) == 2
    assert capsys.readouterr().out == ""  # all of them: nothing to say


def test_train_passes_threads_to_the_run_and_resume_only_an_explicit_one(tmp_path, quiet_environment, monkeypatch):
    import autoencoders.training

    calls = []
    monkeypatch.setattr(autoencoders.training, "run_training",
                        lambda *args, **kwargs: calls.append(kwargs) or (Path(args[0]), []))
    quiet_environment["cores"] = 1.2
    cli("train", "mlp-ae", "--out", "new", "--quiet", cwd=tmp_path, check_status=0)
    cli("train", "mlp-ae", "--out", "new", "--quiet", "--threads", "2", cwd=tmp_path, check_status=0)
    cli("train", "--resume", "run", "--quiet", cwd=tmp_path, check_status=0)
    cli("train", "--resume", "run", "--quiet", "--threads", "2", cwd=tmp_path, check_status=0)
    cli("train", "--resume", "run", "--quiet", "--threads", "auto", cwd=tmp_path, check_status=0)
    assert [call["threads"] for call in calls] == [1, 2, None, 2, 1]
    assert [call.get("resume", False) for call in calls] == [False, False, True, True, True]


# -- resume: recorded counts, or an explicit --threads -----------------------------------------


def _config(**changes) -> TrainConfig:
    settings = dict(model="mlp-ae", epochs=1, dtype="float64", image_every=100,
                    model_config={"hidden_dims": [32], "latent_dim": 8})
    return TrainConfig(**{**settings, **changes})


def _recorded(run_dir: Path) -> dict:
    _, _, state = read_checkpoint(latest_checkpoint(run_dir))
    return state["threads"]


@pytest.mark.skipif(POOL < 2, reason="needs a Numba pool of 2 threads to tell the counts apart")
def test_resume_restores_the_recorded_counts_unless_threads_is_given_which_wins_with_a_warning(tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir, _config(), progress=False, log=lambda line: None, threads=1)
    assert _recorded(run_dir) == {"blas": 1, "numba": 1}

    set_threads(2, torch=False)  # another count in force: the resume sets the recorded one again
    lines: list[str] = []
    run(run_dir, resume=True, epochs=2, progress=False, log=lines.append)
    assert current_thread_counts("scratch") == {"blas": 1, "numba": 1}
    assert _recorded(run_dir) == {"blas": 1, "numba": 1}
    assert any("thread counts set as the run recorded them" in line and "numba 2 -> 1" in line for line in lines), lines
    assert not any("replaces" in line for line in lines), lines

    lines.clear()
    run(run_dir, resume=True, epochs=3, progress=False, log=lines.append, threads=2)
    assert current_thread_counts("scratch") == {"blas": 2, "numba": 2}
    assert _recorded(run_dir) == {"blas": 2, "numba": 2}
    [warning] = [line for line in lines if "replaces" in line]
    assert warning.startswith("warning: --threads 2 replaces the thread counts the run recorded (blas 1, numba 1)")
    assert not any("set as the run recorded" in line for line in lines), lines

    lines.clear()  # --threads equal to the recorded counts: nothing to warn about
    run(run_dir, resume=True, epochs=4, progress=False, log=lines.append, threads=2)
    assert not any("replaces" in line or "recorded" in line for line in lines), lines
    assert _recorded(run_dir) == {"blas": 2, "numba": 2}


@pytest.mark.skipif(POOL < 2, reason="needs a Numba pool of 2 threads to tell the counts apart")
def test_resume_with_threads_through_the_command_line(tmp_path):
    run(tmp_path / "run", _config(), progress=False, log=lambda line: None, threads=2)
    result = cli("train", "--resume", "run", "--epochs", "2", "--quiet", "--threads", "1", cwd=tmp_path,
                 check_status=0)
    assert "warning: --threads 1 replaces the thread counts the run recorded (blas 2, numba 2)" in result.stdout
    assert _recorded(tmp_path / "run") == {"blas": 1, "numba": 1}
    result = cli("train", "--resume", "run", "--epochs", "2", "--quiet", "--threads", POOL + 1, cwd=tmp_path)
    assert result.returncode == 2 and "NUMBA_NUM_THREADS" in result.stderr, result.stderr


def test_a_resume_refused_for_too_many_threads_leaves_config_json_unchanged(tmp_path):
    run(tmp_path / "run", _config(), progress=False, log=lambda line: None, threads=1)
    before = (tmp_path / "run" / "config.json").read_bytes()
    result = cli("train", "--resume", "run", "--epochs", "5", "--quiet", "--threads", POOL + 1, cwd=tmp_path)
    assert result.returncode == 2 and "NUMBA_NUM_THREADS" in result.stderr, result.stderr
    assert (tmp_path / "run" / "config.json").read_bytes() == before
