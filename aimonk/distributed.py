"""torchrun: the processes of one job, joined into a process group, and the few collective steps aimonk takes.

`torchrun --nproc_per_node=N -m aimonk ...` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK in their
environment; the command line imports this module, which installs `join` as `aimonk.world.JOIN`, and the core's
`world.start(device)` then joins the job (NCCL between GPUs, gloo on CPUs). The core never imports this module: it
calls the steps of `aimonk.world.WORLD`, which this module's `Torchrun` performs over every process.
"""

from __future__ import annotations

import atexit
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from aimonk import world
from aimonk.errors import AimonkError
from aimonk.io import handle_interrupts

T = TypeVar("T")


class Torchrun(world.World):
    """A process of a torchrun job: the collective steps of `World`, over the job's process group."""

    def all_gather(self, value: T) -> list[T]:
        if self.world_size == 1:
            return [value]
        values: list = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        total = tensor.detach().clone()
        torch_dist.all_reduce(total)
        return total

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def gather_in_order(self, mine: Iterable[T], total: int, chunk: int) -> Iterator[T]:
        """Each round takes `chunk` items from every process, so output streams and memory stays bounded."""
        if self.world_size == 1:
            yield from mine
            return
        mine = iter(mine)
        for _ in range(-(-total // (self.world_size * chunk))):  # the rounds rank 0, with the largest share, needs
            parts = self.all_gather(list(itertools.islice(mine, chunk)))
            if self.is_main:
                # Rank r holds inputs r, r + world, r + 2 world, ...: position by position, rank by rank is input order.
                yield from (share[i] for i in range(chunk) for share in parts if i < len(share))

    def in_shares(self, paths: list[Path], work: world.Work) -> tuple[torch.Tensor | None, list[int], list[str]]:
        if self.world_size == 1:
            return work(paths)
        share = self.shard(range(len(paths)))
        outputs, readable, errors = work([paths[i] for i in share])
        failed = sorted(set(range(len(share))) - set(readable))
        parts = self.all_gather((outputs, [share[i] for i in readable],
                                 list(zip([share[i] for i in failed], errors, strict=True))))
        found = [index for _, indices, _ in parts for index in indices]
        order = torch.as_tensor(np.argsort(found, kind="stable"), dtype=torch.long)
        pieces = [part for part, indices, _ in parts if part is not None and len(indices)]
        if outputs is not None:
            outputs = torch.cat(pieces)[order] if pieces else outputs
        errors = [message for _, message in sorted(error for _, _, failures in parts for error in failures)]
        return outputs, sorted(found), errors

    def peer_lost(self, error: BaseException) -> bool:
        if not isinstance(error, RuntimeError) or not torch_dist.is_initialized():
            return False
        return isinstance(error, torch_dist.DistError) or any(
            words in str(error) for words in ("closed by peer", "reset by peer", "Broken pipe"))


def join(device: torch.device) -> Torchrun:
    """This process's place in the torchrun job, joining its process group on the first call.

    `--device cuda` means this node's GPU number LOCAL_RANK, and the processes talk over NCCL; on CPUs, over gloo.
    """
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= torch.cuda.device_count():
            raise AimonkError(f"--device {device}: process {local_rank} of this node has no GPU of its own "
                              f"({torch.cuda.device_count()} visible); start at most that many per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        if device.type == "cuda":
            torch_dist.init_process_group("nccl", device_id=device)
        else:
            torch_dist.init_process_group("gloo")
        atexit.register(torch_dist.destroy_process_group)
        # torchrun passes Ctrl-C on as SIGINT, but stops the workers with SIGTERM when it is itself terminated or
        # when another worker failed: both are an interrupt, for the whole life of a worker.
        handle_interrupts()
    return Torchrun(torch_dist.get_rank(), torch_dist.get_world_size(), device)


world.JOIN = join
