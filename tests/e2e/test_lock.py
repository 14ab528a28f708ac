"""One writer per output folder: a second run fails at once naming the first; a killed run never blocks the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import holder_pid, train_arguments

from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.io import LOCK_FILE, MODEL_FILE

pytestmark = pytest.mark.slow


def _holding(arguments: list[str], out: Path, ready=lambda process: True) -> subprocess.Popen:  # noqa: ANN001
    """A real `aimonk train` (own process group), returned once it holds `out` and `ready(process)` is true."""
    process = subprocess.Popen([sys.executable, "-m", "aimonk", *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (holder_pid(out) == process.pid and ready(process)):
        assert process.poll() is None, f"exited early ({process.returncode}): {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
    return process


def _children(pid: int) -> list[str]:
    """Process ids of the children of `pid` (Linux)."""
    try:
        return [child for task in Path(f"/proc/{pid}/task").glob("*")
                for child in (task / "children").read_text().split()]
    except OSError:  # a thread ended meanwhile
        return []


def test_a_second_run_into_a_folder_in_use_fails_at_once_naming_the_first(dataset_32px, tmp_path, capsys):
    out = tmp_path / "out"
    first = _holding(train_arguments(dataset_32px, out, "--epochs", "2"), out)
    os.killpg(first.pid, signal.SIGSTOP)  # caught in the act, however fast this machine is
    try:
        started = time.monotonic()
        assert main(train_arguments(dataset_32px, out, "--lr", "1e-3")) == 2
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert err.startswith(f"aimonk: error: {out}: in use by process {first.pid} (aimonk train --data-dir "), err
        assert ", started 20" in err and err.endswith("; wait for it or use another --out-dir\n"), err
        assert err.count("\n") == 1 and len(err) < 400
        assert not (out / MODEL_FILE).exists()  # the second run wrote nothing
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert first.wait(timeout=120) == 0, first.communicate()[1]
    assert load_checkpoint(out / MODEL_FILE)["train_config"]["lr"] == 1e-5  # the first run's model, complete
    assert not (out / LOCK_FILE).exists()  # released and removed


def test_a_run_killed_with_sigkill_does_not_block_the_next(dataset_32px, tmp_path):
    out = tmp_path / "out"
    arguments = train_arguments(dataset_32px, out, "--image-size", "224", "--workers", "2")  # slow enough to be caught
    first = _holding(arguments, out, ready=lambda process: len(_children(process.pid)) == 2)  # extracting
    try:
        os.kill(first.pid, signal.SIGKILL)  # the main process only: its data-loader workers may outlive it a moment
        first.wait(timeout=60)
        assert holder_pid(out) == first.pid  # the lock file stays behind, its lock does not
        assert main(train_arguments(dataset_32px, out, "--epochs", "1")) == 0
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert (out / MODEL_FILE).is_file() and not (out / LOCK_FILE).exists()
