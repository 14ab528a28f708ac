"""The place of a process in a torchrun job: shares of the inputs gathered back in order, and SIGTERM held like
Ctrl-C. The launches themselves: e2e/test_torchrun.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from helpers import needs_gloo

from aimonk.distributed import Distributed

pytestmark = needs_gloo


@pytest.mark.slow
def test_under_torchrun_sigterm_is_an_interrupt_held_like_ctrl_c(tmp_path):
    """torchrun stops the workers with SIGTERM when it is terminated or a worker failed (a world of one here)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    script = (
        "import os, signal\n"
        "from aimonk.distributed import start\n"
        "from aimonk.train.resume import held_interrupts\n"
        "assert start().world_size == 1\n"
        "try:\n"
        "    with held_interrupts():\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        print('held', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    environment = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(port)}
    run = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["held", "interrupted"], run.stderr


@pytest.mark.parametrize(("world", "total", "chunk"), [(2, 13, 3), (3, 14, 2), (3, 2, 4), (4, 17, 1), (2, 8, 4)])
def test_shares_hold_every_input_once_and_are_gathered_back_in_input_order(world, total, chunk):
    inputs = [f"image_{i}" for i in range(total)]
    shares = [Distributed(rank, world).shard(inputs) for rank in range(world)]
    assert sorted(item for share in shares for item in share) == sorted(inputs)  # no padding, no duplicates
    others = [iter([share[start : start + chunk] for start in range(0, total + chunk, chunk)]) for share in shares]

    class Rank0(Distributed):  # the other ranks' parts, round by round, as all_gather would bring them
        def all_gather(self, value: list) -> list:
            return [value, *(next(other) for other in others[1:])]

    assert list(Rank0(0, world).gather_in_order(iter(shares[0]), total, chunk)) == inputs
