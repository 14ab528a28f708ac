"""Interrupted training, with real signals to a real `aimonk train` process.

A SIGKILL at any moment leaves an intact state (and model) file; `--resume` then reproduces the loss history of an
uninterrupted run. Ctrl-C saves the state, or, before training has begun, exits without touching anything.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import write_dataset

from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.outputs import HISTORY_FILE, MODEL_FILE, STATE_FILE
from aimonk.resume import load_train_state

CACHED = ["--epochs", "20"]  # 100 steps: more than the random kill delay, now that a state save takes milliseconds
# The uncached path trains the whole network, so the state also carries the backbone's optimizer moments.
UNCACHED = ["--epochs", "2", "--no-feature-cache", "--trainable-stages", "5", "--precision", "fp32"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [f"img_{i}.jpg {i % 2} {'NA' if i % 5 == 0 else (i // 2) % 2} {(i // 3) % 2}" for i in range(24)]
    return write_dataset(tmp_path_factory.mktemp("data"), rows, size=32)


def _arguments(dataset: Path, out: Path, options: list[str]) -> list[str]:
    return ["train", "--data-dir", str(dataset), "--out-dir", str(out), "--weights", "none", "--image-size", "32",
            "--batch-size", "4", "--checkpoint-every", "1", "--workers", "0", "--no-progress",
            "--cache-dir", str(dataset.parent / "cache"), *options]


def _start(arguments: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aimonk", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited early ({process.returncode}): {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _changed(path: Path, since: int) -> Callable[[], bool]:
    return lambda: path.stat().st_mtime_ns != since


def _signal(process: subprocess.Popen, number: int) -> tuple[int, str]:
    """Send `number` to the process and its data-loader workers, as a terminal would; (exit code, stderr)."""
    os.killpg(process.pid, number)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def _history(out: Path) -> list[tuple[int, float]]:
    with open(out / HISTORY_FILE, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["iteration_number", "training_loss"]
    return [(int(number), float(loss)) for number, loss in rows[1:]]


def _reference(dataset: Path, tmp_path_factory: pytest.TempPathFactory, options: list[str]) -> list:
    """The loss history of the same run, uninterrupted (in this process, without the periodic saves)."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_arguments(dataset, out, options) + ["--checkpoint-every", "0"]) == 0
    return _history(out)


@pytest.fixture(scope="module")
def reference_cached(dataset, tmp_path_factory) -> list:
    return _reference(dataset, tmp_path_factory, CACHED)


def _assert_same_history(resumed: list, reference: list) -> None:
    assert [number for number, _ in resumed] == [number for number, _ in reference]
    assert max(abs(a - b) for (_, a), (_, b) in zip(resumed, reference, strict=True)) <= 1e-6


def _assert_intact(out: Path) -> dict:
    state = load_train_state(out)  # raises if the file is truncated or corrupt
    if (out / MODEL_FILE).exists():
        load_checkpoint(out / MODEL_FILE)
    return state


def test_sigkill_at_random_moments_never_corrupts_and_resume_reproduces_history(dataset, tmp_path, reference_cached):
    seed = int.from_bytes(os.urandom(4), "little")
    generator = random.Random(seed)
    out = tmp_path / "out"
    process = _start(_arguments(dataset, out, CACHED))
    _wait_for((out / STATE_FILE).exists, process)
    time.sleep(generator.uniform(0, 0.3))
    assert _signal(process, signal.SIGKILL)[0] == -signal.SIGKILL, f"seed {seed}"
    state = _assert_intact(out)
    assert len(state["history"]) < len(reference_cached), "the first kill should land mid-run"

    for _ in range(2):  # resumed runs, killed again at random moments after their first save
        saved = (out / STATE_FILE).stat().st_mtime_ns
        process = _start(["train", "--resume", "--out-dir", str(out), "--no-progress"])
        _wait_for(_changed(out / STATE_FILE, saved), process)
        time.sleep(generator.uniform(0, 0.3))
        code, stderr = _signal(process, signal.SIGKILL)
        assert code in (-signal.SIGKILL, 0), f"seed {seed}: {stderr}"
        _assert_intact(out)

    assert main(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 0
    _assert_same_history(_history(out), reference_cached)
    assert not list(out.glob(".*.tmp")), "temporary files of killed saves are cleaned up"


def test_sigkill_mid_run_without_feature_cache_then_resume_reproduces_history(dataset, tmp_path, tmp_path_factory):
    out = tmp_path / "out"
    process = _start(_arguments(dataset, out, UNCACHED))
    _wait_for((out / STATE_FILE).exists, process)
    assert _signal(process, signal.SIGKILL)[0] == -signal.SIGKILL
    state = _assert_intact(out)
    reference = _reference(dataset, tmp_path_factory, UNCACHED)
    assert 0 < len(state["history"]) < len(reference)
    assert not (out / MODEL_FILE).exists()

    assert main(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 0
    _assert_same_history(_history(out), reference)


def test_ctrl_c_saves_the_state_exits_130_and_resume_completes(dataset, tmp_path, reference_cached):
    out = tmp_path / "out"
    process = _start(_arguments(dataset, out, CACHED) + ["--workers", "2"])  # workers also get the signal
    _wait_for((out / STATE_FILE).exists, process)
    code, stderr = _signal(process, signal.SIGINT)
    assert code == 130
    assert stderr == f"aimonk: interrupted; state saved, continue with: aimonk train --resume --out-dir {out}\n"
    assert len(_assert_intact(out)["history"]) < len(reference_cached)

    assert main(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 0
    _assert_same_history(_history(out), reference_cached)


def test_ctrl_c_during_feature_extraction_exits_130_and_saves_nothing(dataset, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    arguments = _arguments(dataset, out, CACHED)
    arguments[arguments.index("--image-size") + 1] = "224"  # slow enough to be caught extracting
    arguments[arguments.index("--cache-dir") + 1] = str(cache)
    process = _start(arguments + ["--workers", "2"])
    _wait_for(lambda: any(cache.glob("*/key.json")), process)  # the cache is opened just before extraction
    code, stderr = _signal(process, signal.SIGINT)
    assert code == 130
    assert stderr == "aimonk: interrupted before the first training step; nothing new was saved\n"
    assert not (out / STATE_FILE).exists() and not (out / MODEL_FILE).exists()


def test_resume_without_a_saved_state_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", "--out-dir", str(tmp_path), "--no-progress"]) == 2
    message = f"aimonk: error: {tmp_path / STATE_FILE}: nothing to resume (no saved training state)\n"
    assert capsys.readouterr().err == message
