"""The place of a process in a torchrun job: shares of the inputs gathered back in order, and SIGTERM held like
Ctrl-C, under torchrun and within `sigterm_as_interrupt` (training in one process). The launches themselves:
e2e/test_torchrun.py; a real SIGTERM to `aimonk train`: e2e/test_resume.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from helpers import needs_gloo

from aimonk.distributed import Torchrun
from aimonk.io import held_interrupts, sigterm_as_interrupt


@pytest.fixture
def sigterm_recorded() -> list[int]:
    """SIGTERM recorded by a handler of the test's own (so that a SIGTERM let through never ends the test run)."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    yield received
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(params=["ctrl-c handled", "ctrl-c ignored"])
def ctrl_c(request: pytest.FixtureRequest) -> object:
    """Ctrl-C as Python handles it, or ignored (a background job of a shell without job control inherits that)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler if request.param == "ctrl-c handled"
                             else signal.SIG_IGN)
    yield request.param
    signal.signal(signal.SIGINT, previous)


def test_within_the_block_sigterm_is_ctrl_c_and_the_previous_handler_is_back_after(sigterm_recorded, ctrl_c):
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is previous
    signal.raise_signal(signal.SIGTERM)  # after the block, the previous handler's again
    assert sigterm_recorded == [signal.SIGTERM]


def test_within_the_block_sigterm_is_held_where_ctrl_c_is_then_interrupts(sigterm_recorded, ctrl_c):
    steps = []
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        with held_interrupts():
            signal.raise_signal(signal.SIGTERM)
            steps.append("held")
        steps.append("went on")
    assert steps == ["held"] and sigterm_recorded == []


def test_ctrl_c_ignored_stays_ignored_within_the_block(sigterm_recorded):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt(), held_interrupts():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_ignored_on_purpose_stays_ignored_within_the_block():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            signal.raise_signal(signal.SIGTERM)
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_the_block_changes_nothing(sigterm_recorded):
    seen = []

    def in_a_thread() -> None:
        with sigterm_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert len(seen) == 1 and seen[0] is signal.getsignal(signal.SIGTERM)  # the test's handler throughout


@needs_gloo
@pytest.mark.slow
def test_under_torchrun_sigterm_is_an_interrupt_held_like_ctrl_c(tmp_path):
    """torchrun stops the workers with SIGTERM when it is terminated or a worker failed (a world of one here)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    script = (
        "import os, signal\n"
        "import aimonk.distributed\n"
        "from aimonk.io import held_interrupts\n"
        "from aimonk.world import start\n"
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


@needs_gloo
@pytest.mark.parametrize(("world", "total", "chunk"), [(2, 13, 3), (3, 14, 2), (3, 2, 4), (4, 17, 1), (2, 8, 4)])
def test_shares_hold_every_input_once_and_are_gathered_back_in_input_order(world, total, chunk):
    inputs = [f"image_{i}" for i in range(total)]
    shares = [Torchrun(rank, world).shard(inputs) for rank in range(world)]
    assert sorted(item for share in shares for item in share) == sorted(inputs)  # no padding, no duplicates
    others = [iter([share[start : start + chunk] for start in range(0, total + chunk, chunk)]) for share in shares]

    class Rank0(Torchrun):  # the other ranks' parts, round by round, as all_gather would bring them
        def all_gather(self, value: list) -> list:
            return [value, *(next(other) for other in others[1:])]

    assert list(Rank0(0, world).gather_in_order(iter(shares[0]), total, chunk)) == inputs
