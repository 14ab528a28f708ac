"""This process: its place in a job and the device it computes on.

The core reads `world.WORLD`: one process (rank 0 of 1) whose collective steps do nothing, unless a torchrun job was
joined by `start`. Joining is the torchrun extra's (`aimonk.distributed`, imported by the command line when torchrun's
environment is set): it installs `JOIN`, and the core never imports it. So a single process runs exactly as without
torchrun, and the training loop reads the same either way (`WORLD.shard(batch)`, `WORLD.sum(loss)`, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from aimonk.errors import AimonkError

T = TypeVar("T")
Work = Callable[[list[Path]], tuple[torch.Tensor | None, list[int], list[str]]]  # images -> (outputs, readable, errors)
ACCELERATORS = {"cuda": "CUDA GPU", "mps": "Apple MPS device", "xpu": "Intel XPU"}  # torch.<type> has is_available


@dataclass(frozen=True)
class World:
    """This process's place in the job: its rank among `world_size` processes, and its device. This class is one
    process alone; the torchrun extra's subclass does the collective steps over several."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reports and writes every output."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share: every world_size-th item from its rank. No padding: each item is in one share."""
        return list(items[self.rank :: self.world_size])

    def all_gather(self, value: T) -> list[T]:
        """Every process's `value` (any picklable object), in rank order, on every process."""
        return [value]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the processes."""
        return tensor

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` with its gradients averaged over the processes."""
        return module

    def gather_in_order(self, mine: Iterable[T], total: int, chunk: int) -> Iterator[T]:
        """The items of every process, each computed on the `shard` of `total` inputs: on rank 0 in the order of the
        inputs, as they come; nothing on the other ranks."""
        yield from mine

    def in_shares(self, paths: list[Path], work: Work) -> tuple[torch.Tensor | None, list[int], list[str]]:
        """`work(paths)`: (outputs of the readable images or None, their indices, one error per unreadable image, in
        order), each process of a job doing its share; every process gets the whole, in the order of `paths`, as one
        process doing it all would."""
        return work(paths)

    def peer_lost(self, error: BaseException) -> bool:
        """Whether `error` is a collective step failing because another process of the job stopped."""
        return False


WORLD = World()  # replaced by `start`
JOIN: Callable[[torch.device], World] | None = None  # set by aimonk.distributed: joins torchrun's job


def start(device: str | torch.device = "cpu") -> World:
    """This process's place, on `device` (refused in one line if unusable): one process, or under torchrun (RANK and
    WORLD_SIZE set) the job joined by the torchrun extra, once."""
    global WORLD
    chosen = resolve_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        WORLD = World(device=chosen)
    elif JOIN is None:
        raise AimonkError("torchrun's environment is set (RANK, WORLD_SIZE) but its support is not loaded: run "
                          "`torchrun ... -m aimonk`, or `import aimonk.distributed` first")
    else:
        WORLD = JOIN(chosen)
    return WORLD


def is_main() -> bool:
    """Whether this process reports and writes: rank 0 of a job, or the only process. Before a job is joined (an
    error in the input, say), from torchrun's environment."""
    return WORLD.is_main if WORLD.world_size > 1 else os.environ.get("RANK", "0") == "0"


def available_devices() -> list[str]:
    """The devices usable here: `cpu`, then `cuda:0`, `cuda:1`, ... and any other accelerator found."""
    found = ["cpu"]
    for kind in ACCELERATORS:
        backend = getattr(torch, kind, None)
        if backend is not None and backend.is_available():
            found += [f"{kind}:{index}" for index in range(backend.device_count())]
    return found


def resolve_device(name: str | torch.device) -> torch.device:
    """The device `name` names, refused with one line if it is not a device name or not usable on this machine.

    Cheap (no GPU context is created), so every command calls it before any work.
    """
    available = f"available: {', '.join(available_devices())}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise AimonkError(f"--device {name}: not a device name, e.g. cpu, cuda, cuda:1 ({available})") from None
    if device.type == "cpu":
        return device
    if device.type not in ACCELERATORS:
        raise AimonkError(f"--device {name}: aimonk does not run on {device.type} devices ({available})")
    backend = getattr(torch, device.type, None)
    count = backend.device_count() if backend is not None and backend.is_available() else 0
    if count == 0:
        raise AimonkError(f"--device {name}: no {ACCELERATORS[device.type]} is available here ({available})")
    if device.index is not None and device.index >= count:
        raise AimonkError(f"--device {name}: there is no {device.type} device {device.index} here ({available})")
    return device
