"""Interrupted training, with real signals to a real `aimonk train` process.

A SIGKILL at any moment leaves an intact state (and model) file; `--resume` then reproduces the loss history of an
uninterrupted run. Ctrl-C saves the state, or, before training has begun, exits without touching anything.

Where a signal lands is chosen, not timed: `hold_at_save.py` runs the same command and holds it still at its N-th
save of the training state (after it, or in the middle of it), and the test signals it there.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import train_arguments, write_dataset
from torchvision import models

from aimonk.checkpoint import load_checkpoint, save_atomic
from aimonk.cli import main
from aimonk.io import HISTORY_FILE, MODEL_FILE, STATE_FILE
from aimonk.train.resume import load_train_state

HOLD = Path(__file__).with_name("hold_at_save.py")
CACHED = ["--epochs", "3"]
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


def _resume(out: Path) -> list[str]:
    return ["train", "--resume", "--out-dir", str(out), "--no-progress"]


def _popen(command: list[str]) -> subprocess.Popen:
    """Started as from a terminal: its own process group, and Ctrl-C's default disposition even where this test
    runs with SIGINT ignored (a background job of a shell without job control, whose children inherit that)."""
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _start(arguments: list[str]) -> subprocess.Popen:
    return _popen([sys.executable, "-m", "aimonk", *arguments])


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited early ({process.returncode}): {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _signal(process: subprocess.Popen, number: int) -> tuple[int, str]:
    """Send `number` to the process and its data-loader workers, as a terminal would; (exit code, stderr).

    A process still there after 120 s is killed, so a failing test leaves nothing running."""
    os.killpg(process.pid, number)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return process.returncode, stderr


def _signal_at_save(arguments: list[str], save: int, moment: str, number: int, marker: Path) -> tuple[int, str]:
    """Run `aimonk ARGUMENTS`, held `before` or `after` its `save`-th save of the state, and send it `number` there.

    The process is still running when the signal comes (a run that ended first fails here), so it cannot be missed.
    """
    process = _popen([sys.executable, str(HOLD), str(marker), str(save), moment, *arguments])
    try:
        _wait_for(marker.exists, process)
    except AssertionError:
        _signal(process, signal.SIGKILL)
        raise
    return _signal(process, number)


def _history(out: Path) -> list[tuple[int, float]]:
    with open(out / HISTORY_FILE, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["iteration_number", "training_loss"]
    return [(int(number), float(loss)) for number, loss in rows[1:]]


def _reference(dataset: Path, tmp_path_factory: pytest.TempPathFactory, options: list[str]) -> tuple[list, set]:
    """The loss history of the same run, uninterrupted (in this process, without the periodic saves), and the names
    of the files it leaves in its output folder."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_arguments(dataset, out, options) + ["--checkpoint-every", "0"]) == 0
    return _history(out), {path.name for path in out.iterdir()}


@pytest.fixture(scope="module")
def reference_cached(dataset, tmp_path_factory) -> tuple[list, set]:
    return _reference(dataset, tmp_path_factory, CACHED)


def _assert_same_history(resumed: list, reference: list) -> None:
    assert [number for number, _ in resumed] == [number for number, _ in reference]
    assert max(abs(a - b) for (_, a), (_, b) in zip(resumed, reference, strict=True)) <= 1e-6


def _saved_history(out: Path, reference: list) -> list[float]:
    """The loss history in the saved state, refused if the state (or model) file is damaged; it must be the start of
    the uninterrupted run's."""
    history = load_train_state(out)["history"]  # raises if the file is truncated or corrupt
    if (out / MODEL_FILE).exists():
        load_checkpoint(out / MODEL_FILE)
    assert 0 < len(history) < len(reference), "the kill landed mid-run"
    assert max(abs(a - b) for a, (_, b) in zip(history, reference[: len(history)], strict=True)) <= 1e-6
    return history


@pytest.mark.slow
def test_sigkill_after_a_save_and_during_one_then_resume_reproduces_history(dataset, tmp_path, reference_cached):
    reference, files = reference_cached
    out = tmp_path / "out"
    code, _ = _signal_at_save(_arguments(dataset, out, CACHED), 3, "after", signal.SIGKILL, tmp_path / "held-1")
    assert code == -signal.SIGKILL
    assert len(_saved_history(out, reference)) == 3  # --checkpoint-every 1: one save per iteration
    assert not (out / MODEL_FILE).exists()

    # Resumed, then killed in the middle of its 4th save: the previous state stays in place, intact.
    code, _ = _signal_at_save(_resume(out), 4, "before", signal.SIGKILL, tmp_path / "held-2")
    assert code == -signal.SIGKILL
    assert 3 < len(_saved_history(out, reference))
    assert {path.name for path in out.iterdir()} - files, "the interrupted save left its temporary file"

    assert main(_resume(out)) == 0
    _assert_same_history(_history(out), reference)
    assert {path.name for path in out.iterdir()} == files, "temporary files of killed saves are cleaned up"


@pytest.mark.slow
def test_sigkill_mid_run_without_feature_cache_then_resume_reproduces_history(dataset, tmp_path, tmp_path_factory):
    reference, files = _reference(dataset, tmp_path_factory, UNCACHED)
    out = tmp_path / "out"
    code, _ = _signal_at_save(_arguments(dataset, out, UNCACHED), 2, "after", signal.SIGKILL, tmp_path / "held")
    assert code == -signal.SIGKILL
    assert len(_saved_history(out, reference)) == 2
    assert not (out / MODEL_FILE).exists()

    assert main(_resume(out)) == 0
    _assert_same_history(_history(out), reference)
    assert {path.name for path in out.iterdir()} == files


@pytest.mark.slow
def test_ctrl_c_saves_the_state_exits_130_and_resume_completes(dataset, tmp_path, reference_cached):
    reference, _ = reference_cached
    out = tmp_path / "out"
    arguments = _arguments(dataset, out, CACHED) + ["--workers", "2"]  # workers also get the signal
    # Interrupted in the middle of its 3rd save: the state on disk is the 2nd until Ctrl-C's own save replaces it.
    code, stderr = _signal_at_save(arguments, 3, "before", signal.SIGINT, tmp_path / "held")
    assert code == 130
    assert stderr == f"aimonk: interrupted; state saved, continue with: aimonk train --resume --out-dir {out}\n"
    assert len(_saved_history(out, reference)) == 3

    assert main(_resume(out)) == 0
    _assert_same_history(_history(out), reference)


@pytest.mark.slow
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


# --- the resumable state holds what changes, and a fingerprint of the frozen weights instead of the weights ---


def _train(dataset: Path, out: Path, *options: str) -> list[str]:
    return train_arguments(dataset, out, "--batch-size", "4", "--epochs", "3", "--lr", "1e-2", *options)


def _interrupted_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C arrives just before the `step`-th optimizer step (numbered from 1)."""
    steps = [0]
    original = torch.optim.Adam.step

    def step_or_interrupt(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        steps[0] += 1
        if steps[0] == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_or_interrupt)


@pytest.mark.parametrize(("options", "interrupted_at"), [
    ([], 7),  # 3 epochs of 4 steps
    (["--trainable-stages", "1", "--precision", "fp32", "--epochs", "2", "--batch-size", "8"], 3),
], ids=["frozen", "last stage trained"])
@pytest.mark.slow
def test_the_state_holds_the_trainable_part_only_and_resume_reproduces_the_run(
    dataset_32px, tmp_path, monkeypatch, options, interrupted_at
):
    reference = tmp_path / "reference"
    assert main(_train(dataset_32px, reference, *options)) == 0
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _interrupted_at(interrupted_at, patch)
        assert main(_train(dataset_32px, out, *options)) == 130
    state = load_train_state(out)
    assert len(state["history"]) == interrupted_at - 1
    trained = {"head.weight", "head.bias"}
    if "--trainable-stages" in options:
        assert {name for name in state["model"] if not name.startswith("backbone.layer4.")} == trained
        assert any(name.startswith("backbone.layer4.") for name in state["model"])
    else:
        assert set(state["model"]) == trained and (out / STATE_FILE).stat().st_size < 50_000
    assert main(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 0
    assert (out / HISTORY_FILE).read_text() == (reference / HISTORY_FILE).read_text()


def test_resume_with_other_frozen_weights_is_refused_in_one_line(dataset_32px, tmp_path, monkeypatch, capsys):
    weights = tmp_path / "weights.pth"
    torch.manual_seed(1)
    save_atomic(models.resnet18().state_dict(), weights)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _interrupted_at(3, patch)
        assert main(_train(dataset_32px, out, "--weights", str(weights))) == 130
    torch.manual_seed(2)
    save_atomic(models.resnet18().state_dict(), weights)  # the file was replaced meanwhile
    capsys.readouterr()
    assert main(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == (f"aimonk: error: {out / STATE_FILE}: the frozen backbone weights differ from the interrupted run's "
                   "(another --weights file, or ImageNet weights that cannot be had here?); resume where they are the "
                   "same\n")


def test_a_state_of_the_previous_format_is_refused_in_one_line(tmp_path, capsys):
    save_atomic({"format": "aimonk-train-state-v1", "model": {"head.weight": torch.zeros(2, 2)}},
                tmp_path / STATE_FILE)
    assert main(["train", "--resume", "--out-dir", str(tmp_path), "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"aimonk: error: {tmp_path / STATE_FILE}: saved by an older version of aimonk "
                                       "(aimonk-train-state-v1), which this one cannot resume; train again without "
                                       "--resume\n")
