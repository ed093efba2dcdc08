"""Fault injection for the crash tests: SIGKILL this process at a named point of a run.

``AUTOENCODERS_FAULT_KILL_AT=<point>`` in the environment kills the process (SIGKILL: no cleanup,
no flush, exactly what a power cut or the OOM killer does) when it reaches ``<point>``. Points:
``checkpoint-<epoch>:<phase>`` inside ``write_checkpoint`` (phases in ``CHECKPOINT_PHASES``),
``write:<file name>`` inside every atomic file write, between writing the temporary file and
renaming it, and ``artifacts-<epoch>`` before an epoch's pictures. Unset, each point costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_AT_VARIABLE = "AUTOENCODERS_FAULT_KILL_AT"
CHECKPOINT_PHASES = ("staging", "weights-staged", "state-staged", "renamed", "latest", "done")


def kill_point(name: str) -> None:
    """SIGKILL this process if ``AUTOENCODERS_FAULT_KILL_AT`` names this point."""
    if os.environ.get(KILL_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
