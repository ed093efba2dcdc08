"""Data-parallel training on torch.distributed (gloo): the same run as one process, over N.

Each process (rank) takes its slice of every global batch (``shard``), runs forward and backward
on it, and the ranks all-reduce what one process would have summed:

- **scratch:** the model's gradients live in one flat buffer (``Module.flatten_parameters``);
  ``torch.from_numpy`` views it without a copy and gloo all-reduces it in place, after each rank
  scaled its own by its shard's weight (``shard_weight``), so the sum is the one-process gradient;
- **torch:** the twin's loss runs inside ``DistributedDataParallel``, which averages gradients
  over the ranks during backward; the loss is scaled by ``weight * world_size`` first, so the
  average is the same weighted sum.

A loss averaged over the batch weighs a shard of n of the global batch's B images by n / B; a
loss summed over the batch (the VAEs') by 1. Batch statistics (BatchNorm's) are per rank, as in
DDP without SyncBatchNorm, and rank 0's buffers are broadcast to every rank before each step (DDP's
``broadcast_buffers``): those models are data-parallel as DDP makes them, not equal to one process.

The process group comes from the environment that ``torchrun`` (or ``autoencoders train --nproc``)
sets: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Every collective times out after
``timeout_seconds()`` (``AUTOENCODERS_DIST_TIMEOUT``, default 120 s), so a rank that dies or a
rendezvous that never completes ends the others with an error instead of a hang.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np

TIMEOUT_VARIABLE = "AUTOENCODERS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 120.0
ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A process group that cannot start or a collective that failed: one line, every rank ends."""


def timeout_seconds() -> float:
    """How long a rendezvous or a collective may wait for the other ranks."""
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"{TIMEOUT_VARIABLE} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, got {text!r}")
    return value


def requested() -> bool:
    """Whether this process was started as one rank of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


@dataclass
class Group:
    """This process's place in the run: ``rank`` of ``world_size`` (rank 0 writes the run directory)."""

    rank: int
    world_size: int

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def all_reduce(self, array: np.ndarray) -> np.ndarray:
        """Sum ``array`` over the ranks, in place (a zero-copy tensor view of a contiguous array)."""
        import torch
        import torch.distributed as dist

        if not array.flags.c_contiguous:
            raise ValueError(f"all_reduce: the array must be contiguous to be viewed without a copy, got {array.shape}")
        _collective(lambda: dist.all_reduce(torch.from_numpy(array)), "all-reduce")
        return array

    def broadcast(self, array: np.ndarray) -> np.ndarray:
        """Rank 0's ``array`` into every rank's, in place (through a contiguous copy when it is a view
        that a tensor cannot share)."""
        import torch
        import torch.distributed as dist

        target = array if array.flags.c_contiguous else np.ascontiguousarray(array)
        _collective(lambda: dist.broadcast(torch.from_numpy(target), src=0), "broadcast")
        if target is not array:
            array[...] = target
        return array

    def barrier(self) -> None:
        import torch.distributed as dist

        _collective(dist.barrier, "barrier")

    def sum_values(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the ranks (the same keys on every rank, in the same order)."""
        keys = list(values)
        total = self.all_reduce(np.array([float(values[key]) for key in keys], dtype=np.float64))
        return dict(zip(keys, (float(value) for value in total)))

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _collective(call, what: str) -> None:
    """Run a collective; a peer that died or timed out becomes a one-line DistributedError."""
    try:
        call()
    except RuntimeError as error:  # gloo: "Connection closed by peer", "Timed out waiting ..."
        detail = " ".join(str(error).split())[:200]
        raise DistributedError(f"the {what} with the other ranks failed ({detail}); another rank has probably "
                               f"ended") from None


def start() -> Group | None:
    """The process group the environment asks for (None when WORLD_SIZE is 1 or unset)."""
    if not requested():
        return None
    missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
    if missing:
        raise DistributedError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set; start the ranks with "
                               f"autoencoders train --nproc N, or torchrun")
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    seconds = timeout_seconds()
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=seconds))
    except (RuntimeError, ValueError) as error:
        detail = " ".join(str(error).split())[:200]
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        if "EADDRINUSE" in detail or "address already in use" in detail.lower():
            raise DistributedError(f"rank {rank} of {world}: port {os.environ['MASTER_PORT']} is in use by another "
                                   f"process; choose another MASTER_PORT (--nproc picks a free one)") from None
        raise DistributedError(f"rank {rank} of {world}: the rendezvous at {where} did not complete within "
                               f"{seconds:g} s ({detail})") from None
    return Group(rank, world)


def shard(size: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s rows of a global batch of ``size``: contiguous, sizes differing by at most
    one (the first ``size % world_size`` ranks take one more), as ``np.array_split``."""
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def shard_weight(shard_size: int, batch_size: int, loss_reduction: str) -> float:
    """What a rank's gradient (and loss parts) are multiplied by before the sum over ranks: n / B
    for a loss averaged over the batch, 1 for one summed over it."""
    return 1.0 if loss_reduction == "sum" else shard_size / batch_size
