"""Run directories have one writer and one owner: N processes started together on one --out leave
exactly one run, whole and labelled by its own configuration; a second --resume of a run in
progress refuses; default names never collide; a directory holding the user's files is refused,
and resume's clean-up removes only this library's temporaries; compare never overwrites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autoencoders._files import TEMPORARY_PREFIX, TEMPORARY_SUFFIX
from autoencoders.cli import main
from autoencoders.runs.directory import LOCK_NAME, MARKER_NAME, RunDirectoryError, claim_unique_run_directory
from parity_tests.test_reliability_runs import assert_same_run_directory, run_directory_contents
from parity_tests.test_train import ROOT, SMALL, cli

QUICK = ["--epochs", "2", "--dtype", "float64", *SMALL]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _start(*args, cwd: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "autoencoders.cli", *map(str, args)], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds a directory's lock (as a training process does) until stopped."""
    processes = []

    def hold(directory: Path) -> subprocess.Popen:
        code = textwrap.dedent(f"""
            import sys, time
            from autoencoders.runs.directory import lock_run_directory
            lock = lock_run_directory({str(directory)!r}, "train")
            print("locked", flush=True)
            time.sleep(120)
        """)
        process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "locked"
        processes.append(process)
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.slow  # several real processes racing for one directory, ~8 s
def test_n_processes_started_together_on_one_out_leave_exactly_one_whole_run(tmp_path):
    """Six `train` processes, each with its own --lr, on one --out: one trains, five refuse in one
    line; the directory is that one run, file for file as if it had run alone."""
    rates = ["0.001", "0.002", "0.003", "0.004", "0.005", "0.006"]
    processes = {lr: _start("train", "mlp-ae", *QUICK, "--lr", lr, "--out", "run", cwd=tmp_path) for lr in rates}
    results = {lr: (process.wait(timeout=600), *process.communicate()) for lr, process in processes.items()}
    winners = [lr for lr, (status, _, _) in results.items() if status == 0]
    assert len(winners) == 1, {lr: (status, err) for lr, (status, _, err) in results.items()}
    for lr, (status, _, stderr) in results.items():
        if lr != winners[0]:
            line = _one_line(stderr)
            assert status == 2 and ("in use by another autoencoders process" in line or "already holds a run" in line), line
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["lr"] == float(winners[0])
    alone = tmp_path / "alone"
    alone.mkdir()
    cli("train", "mlp-ae", *QUICK, "--lr", winners[0], "--out", "run", cwd=alone, check_status=0)
    assert_same_run_directory(tmp_path / "run", alone / "run", f"the run with lr {winners[0]}")


def test_a_locked_run_directory_refuses_a_new_run_and_a_second_resume_and_changes_nothing(tmp_path, holder):
    cli("train", "mlp-ae", *QUICK, "--out", "run", cwd=tmp_path, check_status=0)
    run_dir = tmp_path / "run"
    (run_dir / f"{TEMPORARY_PREFIX}abcd1234{TEMPORARY_SUFFIX}").write_bytes(b"a write in progress")
    before = run_directory_contents(run_dir)
    process = holder(run_dir)
    for args, refusal in ((["train", "--resume", "run", "--epochs", "3", "--quiet"],
                           f"in use by another autoencoders process (pid {process.pid}, train)"),
                          (["train", "mlp-ae", *QUICK, "--out", "run"], "already holds a run")):
        result = cli(*args, cwd=tmp_path)
        line = _one_line(result.stderr)
        assert result.returncode == 2 and refusal in line, line
        assert run_directory_contents(run_dir) == before, "a refused process changed the run directory"
    (tmp_path / "fresh").mkdir()
    process = holder(tmp_path / "fresh")
    result = cli("train", "mlp-ae", *QUICK, "--out", "fresh", cwd=tmp_path)
    assert result.returncode == 2 and "in use by another" in _one_line(result.stderr)
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == [LOCK_NAME]


def test_default_run_directories_started_in_the_same_second_never_collide(tmp_path, monkeypatch, capsys):
    """The default name has one-second resolution: a sweep launched at once gets -2, -3, ..."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *args: "20261202-120000")
    for seed in (1, 2, 3):
        assert main(["train", "mlp-ae", "--epochs", "1", "--seed", str(seed), *SMALL]) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["mlp-ae-digits-20261202-120000", "mlp-ae-digits-20261202-120000-2", "mlp-ae-digits-20261202-120000-3"]
    seeds = [json.loads((tmp_path / "runs" / name / "config.json").read_text())["seed"] for name in names]
    assert seeds == [1, 2, 3]
    assert "run directory runs/mlp-ae-digits-20261202-120000-3" in capsys.readouterr().out


@pytest.mark.slow  # three real processes racing, ~6 s
def test_default_names_started_together_in_processes_are_distinct(tmp_path):
    processes = [_start("train", "mlp-ae", "--epochs", "1", "--seed", seed, *SMALL, cwd=tmp_path) for seed in (1, 2, 3)]
    assert [process.wait(timeout=600) for process in processes] == [0, 0, 0], [p.communicate()[1] for p in processes]
    seeds = sorted(json.loads(path.read_text())["seed"] for path in (tmp_path / "runs").glob("*/config.json"))
    assert seeds == [1, 2, 3]


def test_claim_unique_takes_the_next_free_name(tmp_path):
    first, lock = claim_unique_run_directory(tmp_path / "run")
    second, other = claim_unique_run_directory(tmp_path / "run")
    assert (first.name, second.name) == ("run", "run-2")
    assert (first / MARKER_NAME).is_file() and (second / MARKER_NAME).is_file()
    lock.release(), other.release()


def test_a_directory_holding_the_users_files_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name, data in (("metrics.jsonl", b"my notes\n"), ("loss.png", b"my picture")):
        (out / name).write_bytes(data)
    status = main(["train", "mlp-ae", *QUICK, "--out", str(out)])
    line = _one_line(capsys.readouterr().err)
    assert status == 2 and "holds files this library did not write (loss.png, metrics.jsonl)" in line, line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "loss.png", "metrics.jsonl"]
    assert (out / "metrics.jsonl").read_bytes() == b"my notes\n" and (out / "loss.png").read_bytes() == b"my picture"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "mlp-ae", "--epochs", "1", *SMALL, "--out", str(empty)]) == 0  # an empty one is taken


def test_resume_removes_only_this_librarys_temporaries(tmp_path):
    cli("train", "mlp-ae", *QUICK, "--out", "run", cwd=tmp_path, check_status=0)
    run_dir = tmp_path / "run"
    users = {".thumbnail.png": b"user", ".draft.tmp": b"user", ".ae-notes.tmp": b"user", "notes.txt": b"user"}
    for name, data in users.items():
        (run_dir / name).write_bytes(data)
    ours = run_dir / f"{TEMPORARY_PREFIX}x1y2z3w4{TEMPORARY_SUFFIX}"
    ours.write_bytes(b"half a write")
    cli("train", "--resume", "run", "--epochs", "3", "--quiet", cwd=tmp_path, check_status=0)
    assert not ours.exists()
    for name, data in users.items():
        assert (run_dir / name).read_bytes() == data, f"{name} was touched"


def test_compare_never_overwrites_its_output_directory(tmp_path, capsys):
    out = tmp_path / "compare"
    args = ["compare", "mlp-ae", "--epochs", "1", *SMALL, "--out", str(out)]
    assert main(args) == 0
    before = run_directory_contents(out)
    assert "compare.json" in before
    capsys.readouterr()
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "already holds a run" in line and str(out) in line, line
    assert run_directory_contents(out) == before


def test_a_run_directory_error_is_a_value_error_for_library_callers():
    assert issubclass(RunDirectoryError, ValueError)


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_lock_file_that_is_not_a_plain_file_is_refused_in_one_line(tmp_path, capsys, kind):
    out = tmp_path / "run"
    out.mkdir()
    if kind == "fifo":
        os.mkfifo(out / LOCK_NAME)
    else:
        (out / LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    status = main(["train", "mlp-ae", "--epochs", "1", *SMALL, "--out", str(out)])
    line = _one_line(capsys.readouterr().err)
    assert status == 2 and "cannot take the run directory's lock" in line, line
    assert not (tmp_path / "elsewhere").exists()
