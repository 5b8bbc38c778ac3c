"""Data-parallel training under ``torchrun``: each rank computes its share of every batch.

``torchrun --nproc-per-node N cycler train ...`` starts N processes (ranks) with ``RANK`` and
``WORLD_SIZE`` set. Every rank draws the same global batch and the same randomness (one seed,
one generator), computes the loss of its contiguous share of the batch, weighted so that the
average over ranks that ``DistributedDataParallel`` takes of the gradients is the gradient of
the whole batch's mean loss. N ranks therefore take the optimiser steps one process takes on
the same global batches, to round-off. Rank 0 alone validates, logs and writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes: `rank` of `world`."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The rank that validates, logs and writes."""
        return self.rank == 0

    def share(self, batch: int) -> slice:
        """This rank's contiguous share of a batch of `batch` samples (shares differ by at most one)."""
        per, extra = divmod(batch, self.world)
        start = self.rank * per + min(self.rank, extra)
        return slice(start, start + per + (self.rank < extra))

    def weighted(self, loss: Tensor, batch: int) -> Tensor:
        """This rank's mean `loss` over its share, weighted so that the mean over ranks is the
        batch mean (a rank with an empty share contributes zero)."""
        part = self.share(batch)
        weight = self.world * (part.stop - part.start) / batch
        return torch.nan_to_num(loss) * weight if weight == 0 else loss * weight

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` under DistributedDataParallel when there are several ranks (it averages the
        gradients over ranks in backward and starts every rank from rank 0's parameters)."""
        return DistributedDataParallel(module) if self.world > 1 else module

    def mean(self, value: float) -> float:
        """The mean of a float over ranks."""
        if self.world == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def main_first(self, make: Callable[[], T]) -> T:
        """`make()` on rank 0, then on the others, which find what it cached (the nature run,
        statistics, prior pairs) instead of making it again at the same time."""
        if not self.main:
            self.barrier()
        value = make()
        if self.main:
            self.barrier()
        return value


ONE_RANK = Ranks()  # single-process training


def training_ranks(device: str = "cpu") -> Ranks:
    """The ranks of a ``torchrun`` launch (gloo on CPU, nccl on CUDA), or one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return ONE_RANK
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks(dist.get_rank(), dist.get_world_size())
