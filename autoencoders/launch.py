"""``autoencoders train ... --nproc N``: N local ranks of one data-parallel run (``autoencoders.distributed``).

Each rank is ``python -m autoencoders train ...`` (the same command without ``--nproc``) with the
environment torchrun sets: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free
MASTER_PORT. Rank 0 prints the epoch lines; every rank's stderr is kept. When a rank fails, the
others are stopped (SIGTERM, then SIGKILL after a grace period) and the command ends with one
line naming that rank and its last message, and the command that resumes the run; the newest
checkpoint, written by rank 0 alone and moved into place atomically, is intact. Several machines:
run the same command without ``--nproc`` under ``torchrun`` on each (docs/distributed.md).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRACE_S = 5.0  # after SIGTERM, before SIGKILL
POLL_S = 0.05


class LaunchError(RuntimeError):
    """A rank failed; the message is the one line the command prints, ``status`` its exit status
    (2 when the rank refused its input, as the one-process command would; else 1)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def free_port() -> int:
    """A TCP port free on the loopback interface now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(arguments: list[str], nproc: int, run_dir: str, port: int | None = None) -> int:
    """Run ``autoencoders ARGUMENTS`` as ``nproc`` ranks; 0 when every rank succeeded.

    ``arguments``: the train command's arguments without ``--nproc``, with ``--out`` (or
    ``--resume``) naming ``run_dir`` and ``--threads`` set. Raises ``LaunchError`` (one line)
    when a rank fails, after stopping the others."""
    port = free_port() if port is None else port
    with tempfile.TemporaryDirectory(prefix="autoencoders-ranks-") as logs:
        ranks = [_start_rank(arguments, rank, nproc, port, Path(logs)) for rank in range(nproc)]
        try:
            failed = _wait(ranks)
        except KeyboardInterrupt:  # Ctrl-C reached every rank too; their own lines went to the captured stderr
            _stop(ranks)
            resume = " ".join(["autoencoders", "train", "--resume", shlex.quote(run_dir), "--nproc", str(nproc)])
            raise KeyboardInterrupt(f"interrupted; continue with: {resume}") from None
        if failed is None:
            _replay(ranks[0])
            return 0
        _stop(ranks)
        raise LaunchError(_failure_line(failed, ranks, nproc, run_dir, arguments),
                          2 if failed["process"].returncode == 2 else 1)


def _start_rank(arguments, rank: int, nproc: int, port: int, logs: Path) -> dict:
    environment = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                   "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    stderr_path = logs / f"rank{rank}.err"
    stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in _wait
    process = subprocess.Popen([sys.executable, "-m", "autoencoders", *arguments], env=environment,
                               stdout=None if rank == 0 else subprocess.DEVNULL, stderr=stderr)
    return {"rank": rank, "process": process, "stderr": stderr, "stderr_path": stderr_path}


def _wait(ranks: list[dict]) -> dict | None:
    """Until every rank ended well (None) or one ended badly (that rank)."""
    while True:
        running = False
        for rank in ranks:
            status = rank["process"].poll()
            if status is None:
                running = True
            elif status != 0:
                return rank
        if not running:
            for rank in ranks:
                rank["stderr"].close()
            return None
        time.sleep(POLL_S)


def _stop(ranks: list[dict]) -> None:
    """SIGTERM every rank still running, then SIGKILL what is left after ``GRACE_S``."""
    for rank in ranks:
        if rank["process"].poll() is None:
            rank["process"].send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for rank in ranks:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            rank["process"].wait(remaining)
        except subprocess.TimeoutExpired:
            rank["process"].kill()
            rank["process"].wait()
        rank["stderr"].close()


def _replay(rank: dict) -> None:
    """Rank 0's stderr (warnings, notes) on this process's stderr once it is done."""
    text = rank["stderr_path"].read_text(errors="replace")
    if text:
        sys.stderr.write(text)


def _last_line(rank: dict) -> str:
    lines = [line.strip() for line in rank["stderr_path"].read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _failure_line(failed: dict, ranks: list[dict], nproc: int, run_dir: str, arguments: list[str]) -> str:
    """One line: which rank failed and how, its own last message, what became of the others, and
    how to continue."""
    message = _last_line(failed)
    prefix = "autoencoders train: "
    message = message[len(prefix):] if message.startswith(prefix) else message
    if failed["process"].returncode == 2 and message:  # the rank refused its input: that is the whole story
        return message
    detail = f" ({message})" if message else ""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if pointer.exists():
        resume = " ".join(["autoencoders", "train", "--resume", shlex.quote(run_dir), "--nproc", str(nproc)])
        after = f"the newest checkpoint in {run_dir} is intact: continue with: {resume}"
    else:
        after = "no checkpoint was written yet"
    return f"rank {failed['rank']} of {nproc} {_describe(failed['process'].returncode)}{detail}; the other ranks " \
           f"were stopped; {after}"
