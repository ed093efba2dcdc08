"""Fault injection for the crash tests: kill this process, or fill its disk, at a named point of a run.

``AUTOENCODERS_FAULT_KILL_AT=<point>`` in the environment kills the process (SIGKILL: no cleanup,
no flush, exactly what a power cut or the OOM killer does) when it reaches ``<point>``;
``AUTOENCODERS_FAULT_FAIL_AT=<point>`` raises ``OSError(ENOSPC)`` there instead, as a full disk
would. ``<point>#N`` means the N-th time that point is reached (a name that recurs every epoch).
Points: ``checkpoint-<epoch>:<phase>`` inside ``write_checkpoint`` (phases in
``CHECKPOINT_PHASES``); ``write:<file name>`` inside every atomic file write, between writing the
temporary file and renaming it; and in an epoch's completion step, ``metrics-<epoch>`` (metrics
written), ``published-<epoch>`` (``RUN_DIR/model.safetensors`` written) and ``artifacts-<epoch>``
(before the pictures). Unset, each point costs two dictionary lookups.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

KILL_AT_VARIABLE = "AUTOENCODERS_FAULT_KILL_AT"
FAIL_AT_VARIABLE = "AUTOENCODERS_FAULT_FAIL_AT"
CHECKPOINT_PHASES = ("staging", "weights-staged", "state-staged", "renamed", "latest")
COMPLETION_POINTS = ("metrics", "published", "artifacts")
_reached: Counter = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process, or raise a full disk's ``OSError``, if the environment names this point."""
    kill, fail = os.environ.get(KILL_AT_VARIABLE), os.environ.get(FAIL_AT_VARIABLE)
    if not (kill or fail):
        return
    _reached[name] += 1
    if _names(kill, name):
        os.kill(os.getpid(), signal.SIGKILL)
    if _names(fail, name):
        raise OSError(errno.ENOSPC, "No space left on device (injected at a fault point)", name)


def _names(spec: str | None, name: str) -> bool:
    return spec is not None and spec in (name, f"{name}#{_reached[name]}")
