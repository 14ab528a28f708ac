"""The resumable state holds what changes, and a fingerprint of the frozen weights instead of the weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import train_arguments
from torchvision import models

from aimonk.checkpoint import save_atomic
from aimonk.cli import main
from aimonk.io import HISTORY_FILE, STATE_FILE
from aimonk.train.resume import load_train_state


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
