"""Data-parallel training with ``torch.distributed`` (gloo on CPU, NCCL on GPU), started by torchrun:

    torchrun --nproc_per_node 4 -m circuit_trace.cli train --cache CACHE ...

Every rank walks the same deterministic stream and reads only its slice of each global batch
(``batch_size`` is the global batch); gradients are averaged with one all-reduce per step, so the
result equals one process training on the whole batch, to float tolerance. Rank 0 writes
checkpoints and the final transcoder; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands in a data-parallel run (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run created the process group and destroys it at the end

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1), if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized():
        return DistInfo()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns)


def finish(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Replace each gradient by its mean over the ranks (one flat all-reduce)."""
    if not info.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    at = 0
    for g in grads:
        g.copy_(flat[at : at + g.numel()].view_as(g))
        at += g.numel()


def all_reduce_(t: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place sum / max over the ranks (a no-op in a single process)."""
    if info.active:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def broadcast_(tensors: Iterable[torch.Tensor], info: DistInfo) -> None:
    """Copy rank 0's values into every rank's tensors."""
    if info.active:
        for t in tensors:
            dist.broadcast(t.data, 0)


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()
