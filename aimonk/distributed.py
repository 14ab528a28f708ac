"""torchrun's processes: which one this is, the device it computes on, and the few collective steps aimonk takes.

`torchrun --nproc_per_node=N -m aimonk ...` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK in their
environment; `start` joins them into one process group (NCCL between GPUs, gloo on CPUs). Without those variables it
gives a world of one process whose collective steps do nothing, so a single process runs exactly as without it.
`sigterm_as_interrupt` makes SIGTERM Ctrl-C, as it is for torchrun's workers, for training in one process too.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from aimonk.errors import AimonkError

T = TypeVar("T")


ACCELERATORS = {"cuda": "CUDA GPU", "mps": "Apple MPS device", "xpu": "Intel XPU"}  # torch.<type> has is_available


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


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: its rank among `world_size` processes, and its device."""

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
        if self.world_size == 1:
            return [value]
        values: list = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the processes (a new tensor; `tensor` itself with one process)."""
        if self.world_size == 1:
            return tensor
        total = tensor.detach().clone()
        torch_dist.all_reduce(total)
        return total

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` in DistributedDataParallel (gradients averaged over the processes), or itself with one process."""
        if self.world_size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def gather_in_order(self, mine: Iterable[T], total: int, chunk: int, everywhere: bool = False) -> Iterator[T]:
        """The items of every process, each computed on the `shard` of `total` inputs: on rank 0 (every rank with
        `everywhere`) in the order of the inputs, as they come; nothing on the other ranks.

        Each round takes `chunk` items from every process, so output streams and memory stays bounded.
        """
        if self.world_size == 1:
            yield from mine
            return
        mine = iter(mine)
        for _ in range(-(-total // (self.world_size * chunk))):  # the rounds rank 0, with the largest share, needs
            parts = self.all_gather(list(itertools.islice(mine, chunk)))
            if everywhere or self.is_main:
                # Rank r holds inputs r, r + world, r + 2 world, ...: position by position, rank by rank is input order.
                yield from (share[i] for i in range(chunk) for share in parts if i < len(share))


_world: Distributed | None = None  # this process's place, once `start` has found it


def world() -> Distributed:
    """This process's place in the job, as `start` found it; a world of one on the CPU before."""
    return _world or Distributed()


def is_main() -> bool:
    """Whether this process reports and writes: rank 0 of a torchrun job, or the only process. Outside a job of
    several (before `start`, say, for an error in the input), from torchrun's environment."""
    if _world is not None and _world.world_size > 1:
        return _world.is_main
    return os.environ.get("RANK", "0") == "0"


def start(device: str = "cpu") -> Distributed:
    """This process's place in a torchrun job, joining its process group on the first call; a world of one (on
    `device`) outside torchrun. An unusable `device` is refused in one line before anything else.

    Under torchrun, `--device cuda` means this node's GPU number LOCAL_RANK, and the processes talk over NCCL;
    on CPUs they talk over gloo.
    """
    global _world
    chosen = resolve_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        _world = Distributed(device=chosen)
        return _world
    if chosen.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= torch.cuda.device_count():
            raise AimonkError(f"--device {device}: process {local_rank} of this node has no GPU of its own "
                              f"({torch.cuda.device_count()} visible); start at most that many per node")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if not torch_dist.is_initialized():
        if chosen.type == "cuda":
            torch_dist.init_process_group("nccl", device_id=chosen)
        else:
            torch_dist.init_process_group("gloo")
        atexit.register(torch_dist.destroy_process_group)
        # torchrun passes Ctrl-C on as SIGINT, but stops the workers with SIGTERM when it is itself terminated or
        # when another worker failed: both are an interrupt, for the whole life of a worker.
        signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    _world = Distributed(torch_dist.get_rank(), torch_dist.get_world_size(), chosen)
    return _world


def _sigterm_as_sigint(number: int, frame: object) -> None:
    """SIGTERM handled as Ctrl-C: SIGINT raised (so that it is held wherever Ctrl-C is); a KeyboardInterrupt where
    Ctrl-C itself is ignored (a background job), so that SIGTERM still stops the process."""
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:
        raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (what `docker stop`, Slurm, systemd and torchrun send) is Ctrl-C: raised as SIGINT,
    a KeyboardInterrupt where nothing holds it. The previous handler is restored after. A no-op outside the main
    thread, where SIGTERM is ignored on purpose, or where its handler was not set from Python (it could not be put
    back)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) in (
            None, signal.SIG_IGN):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def peer_lost(error: BaseException) -> bool:
    """Whether `error` is a collective step failing because another process of the job stopped or was killed."""
    if not isinstance(error, RuntimeError) or not torch_dist.is_initialized():
        return False
    return isinstance(error, torch_dist.DistError) or any(
        words in str(error) for words in ("closed by peer", "reset by peer", "Broken pipe"))
