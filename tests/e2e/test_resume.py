"""Interrupted training, with real signals to a real `aimonk train` process; resume is exact or refused.

A SIGKILL at any moment leaves an intact state (and model) file; `--resume` then reproduces the loss history of an
uninterrupted run. Ctrl-C, and SIGTERM (docker stop, Slurm, systemd) alike, saves the state, or, before training has
begun, exits without touching anything. A resume with other settings given, or other training labels, is refused.

Where a signal lands is chosen, not timed: `hold_at_save.py` runs the same command and holds it still at its N-th
save of the training state (after it, or in the middle of it), and the test signals it there.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import train_arguments, train_cached, write_dataset
from torchvision import models

from aimonk.checkpoint import load_checkpoint, load_train_state, save_atomic
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.errors import AimonkError
from aimonk.io import HISTORY_FILE, MODEL_FILE, STATE_FILE

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


def _popen(command: list[str], ctrl_c: signal.Handlers = signal.SIG_DFL) -> subprocess.Popen:
    """Started as from a terminal: its own process group, and Ctrl-C's default disposition even where this test
    runs with SIGINT ignored (a background job of a shell without job control, whose children inherit that); or,
    with `ctrl_c=signal.SIG_IGN`, as such a background job."""
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, ctrl_c))


def _start(arguments: list[str]) -> subprocess.Popen:
    return _popen([sys.executable, "-m", "aimonk", *arguments])


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited early ({process.returncode}): {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _signal(process: subprocess.Popen, number: int, group: bool = True) -> tuple[int, str]:
    """Send `number` to the process and its data-loader workers, as a terminal would (or, without `group`, to the
    process alone, as `docker stop` does); (exit code, stderr).

    A process still there after 120 s is killed, so a failing test leaves nothing running."""
    if group:
        os.killpg(process.pid, number)
    else:
        os.kill(process.pid, number)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return process.returncode, stderr


def _signal_at_save(arguments: list[str], save: int, moment: str, number: int, marker: Path, group: bool = True,
                    ctrl_c: signal.Handlers = signal.SIG_DFL) -> tuple[int, str]:
    """Run `aimonk ARGUMENTS`, held `before` or `after` its `save`-th save of the state, and send it `number` there
    (see `_signal` and `_popen` for `group` and `ctrl_c`).

    The process is still running when the signal comes (a run that ended first fails here), so it cannot be missed.
    """
    process = _popen([sys.executable, str(HOLD), str(marker), str(save), moment, *arguments], ctrl_c)
    try:
        _wait_for(marker.exists, process)
    except AssertionError:
        _signal(process, signal.SIGKILL)
        raise
    return _signal(process, number, group)


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


def _stopped_at_a_save_then_resumed(dataset: Path, tmp_path: Path, reference: list, number: int, **how) -> None:
    """Signal a run in the middle of its 3rd save (`how`: see `_signal_at_save`): the state on disk is the 2nd until
    the interrupt's own save replaces it; exit 130 saying how to resume, which reaches the uninterrupted history."""
    out = tmp_path / "out"
    arguments = _arguments(dataset, out, CACHED) + ["--workers", "2"]  # workers also get the signal
    code, stderr = _signal_at_save(arguments, 3, "before", number, tmp_path / "held", **how)
    assert code == 130
    assert stderr == f"aimonk: interrupted; state saved, continue with: aimonk train --resume --out-dir {out}\n"
    assert len(_saved_history(out, reference)) == 3

    assert main(_resume(out)) == 0
    _assert_same_history(_history(out), reference)


@pytest.mark.slow
def test_ctrl_c_saves_the_state_exits_130_and_resume_completes(dataset, tmp_path, reference_cached):
    _stopped_at_a_save_then_resumed(dataset, tmp_path, reference_cached[0], signal.SIGINT)


@pytest.mark.parametrize("how", [{"group": False}, {"group": True}, {"group": False, "ctrl_c": signal.SIG_IGN}],
                         ids=["the process (docker stop)", "its process group (Slurm, systemd)",
                              "a background job, Ctrl-C ignored"])
@pytest.mark.slow
def test_sigterm_saves_the_state_exits_130_and_resume_completes(dataset, tmp_path, reference_cached, how):
    _stopped_at_a_save_then_resumed(dataset, tmp_path, reference_cached[0], signal.SIGTERM, **how)


def _stopped_extracting(dataset: Path, tmp_path: Path, number: int) -> None:
    """Signal a run and its data-loader workers while they extract features: exit 130, nothing saved."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    arguments = _arguments(dataset, out, CACHED)
    arguments[arguments.index("--image-size") + 1] = "224"  # slow enough to be caught extracting
    arguments[arguments.index("--cache-dir") + 1] = str(cache)
    process = _start(arguments + ["--workers", "2"])
    _wait_for(lambda: any(cache.glob("*/key.json")), process)  # the cache is opened just before extraction
    code, stderr = _signal(process, number)
    assert code == 130
    assert stderr == "aimonk: interrupted before the first training step; nothing new was saved\n"
    assert not (out / STATE_FILE).exists() and not (out / MODEL_FILE).exists()


@pytest.mark.slow
def test_ctrl_c_during_feature_extraction_exits_130_and_saves_nothing(dataset, tmp_path):
    _stopped_extracting(dataset, tmp_path, signal.SIGINT)


@pytest.mark.slow
def test_sigterm_during_feature_extraction_exits_130_and_saves_nothing(dataset, tmp_path):
    _stopped_extracting(dataset, tmp_path, signal.SIGTERM)


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


@pytest.mark.parametrize("old", ["aimonk-train-state-v1", "aimonk-train-state-v2",  # v2: no labels' digest
                                 "aimonk-train-state-v3"])  # v3: no epochs' rows or best epoch (--patience)
def test_a_state_of_the_previous_format_is_refused_in_one_line(tmp_path, capsys, old):
    save_atomic({"format": old, "model": {"head.weight": torch.zeros(2, 2)}},
                tmp_path / STATE_FILE)
    assert main(["train", "--resume", "--out-dir", str(tmp_path), "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"aimonk: error: {tmp_path / STATE_FILE}: saved by an older version of aimonk "
                                       f"({old}), which this one cannot resume; train again without "
                                       "--resume\n")


# --- resume is exact or refused: settings given, training labels ---


@pytest.fixture
def interrupted(dataset_32px: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run on a copy of the 32-px data (tmp_path/data, every image trains) into tmp_path/out, interrupted by
    Ctrl-C before its 3rd step."""
    shutil.copytree(dataset_32px, tmp_path / "data")
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _interrupted_at(3, patch)
        assert main(_train(tmp_path / "data", out, "--val-fraction", "0")) == 130
    return out


def test_resume_with_other_settings_given_is_refused_listing_each_and_writes_nothing(interrupted, capsys):
    state = interrupted / STATE_FILE
    saved = state.read_bytes()
    capsys.readouterr()
    assert main(_resume(interrupted) + ["--epochs", "2", "--lr", "0.5", "--batch-size", "4"]) == 2
    assert capsys.readouterr().err == (
        f"aimonk: error: {state}: --resume continues the saved run as it was, but these settings given differ from "
        "it: epochs=2 (saved: 3), lr=0.5 (saved: 0.01); drop them to resume, or train anew into another --out-dir\n")
    assert main(_resume(interrupted) + ["--recipe", "recommended"]) == 2
    assert ": recipe=recommended (saved: reference); drop them" in capsys.readouterr().err
    with pytest.raises(AimonkError, match=r"differ from it: focal_gamma=1\.0 \(saved: 2\.0\), seed=1 \(saved: 0\); "):
        train_cached(TrainConfig(out_dir=str(interrupted), seed=1, focal_gamma=1.0, progress=False), resume=True)
    assert state.read_bytes() == saved and not (interrupted / MODEL_FILE).exists()


def test_resume_with_the_same_settings_given_and_the_data_moved_reaches_the_uninterrupted_history(interrupted,
                                                                                                  tmp_path):
    reference = tmp_path / "reference"
    assert main(_train(tmp_path / "data", reference, "--val-fraction", "0")) == 0
    moved = shutil.move(tmp_path / "data", tmp_path / "moved")
    same = ["--epochs", "3", "--lr", "0.01", "--recipe", "reference", "--val-fraction", "0"]
    places = ["--data-dir", str(moved), "--workers", "1", "--cache-dir", str(tmp_path / "other-cache"),
              "--device", "cpu"]  # where things are and how the run is shown: taken as given
    assert main(_resume(interrupted) + same + places) == 0
    assert (interrupted / HISTORY_FILE).read_text() == (reference / HISTORY_FILE).read_text()
    assert load_checkpoint(interrupted / MODEL_FILE)["train_config"]["data_dir"] == str(moved)


def test_resume_after_the_training_labels_were_edited_is_refused_and_the_same_labels_written_otherwise_are_not(
    interrupted, tmp_path, capsys
):
    labels, state = tmp_path / "data" / "labels.txt", interrupted / STATE_FILE
    lines = labels.read_text().splitlines()
    assert lines[:3] == ["img_0.jpg 0 NA", "img_1.jpg 1 0", "img_2.jpg 0 1"]
    capsys.readouterr()
    for line, edited in [(1, "img_1.jpg 0 0"), (2, "img_2.jpg 0 NA"), (0, "img_0.jpg 0 1")]:  # a value, known, NA
        labels.write_text("\n".join([*lines[:line], edited, *lines[line + 1 :]]) + "\n")
        assert main(_resume(interrupted)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"aimonk: error: {state}: the labels of the training images in {labels} differ from "
                              "the interrupted run's (labels digest ")
        assert err.endswith("); resume with the same labels, or train anew into another --out-dir\n")
        assert err.count("\n") == 1 and not (interrupted / MODEL_FILE).exists()
    labels.write_bytes("\r\n".join(line.replace(" ", "\t") for line in lines).encode())  # same labels, CRLF, tabs
    assert main(_resume(interrupted)) == 0
