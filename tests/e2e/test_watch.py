"""Training a user can watch, stop early, continue and never lose (issue 29), chained with its neighbour commands:
the per-epoch log of a redirected run, metrics.csv's last row = the model card = `aimonk evaluate --json`; --patience
keeps the best epoch, and a run interrupted and resumed under it ends as the uninterrupted one; --init-from continues
a run where it ended; TensorBoard's own reader finds metrics.csv's numbers; train, tune, train again keeps the tuned
model where the run says, and `aimonk runs` lists both."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch
from helpers import ROOT, write_dataset

import aimonk.train.adam
from aimonk.card import validation_map
from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.io import (
    CARD_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RUNS_FOLDER,
    VALIDATION_CURVE_FILE,
    previous_runs,
)

pytestmark = pytest.mark.slow  # a dozen short trainings of the demo set on cached features

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)  loss \d+\.\d{4}  val_loss \d+\.\d{4}  val_mAP (\d\.\d{3})  "
                        r"\d+(\.\d)? m?s( {2}best)?")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _train(out: Path, cache: Path, *options: str, progress: bool = True, code: int = 0) -> tuple[str, str]:
    """`aimonk train` on the demo set (random ResNet18 at 64 px, its features cached), stderr not a terminal;
    (stdout, stderr)."""
    arguments = ["train", "--data-dir", str(ROOT), "--out-dir", str(out), "--cache-dir", str(cache), "--weights",
                 "none", "--image-size", "64", "--workers", "0", "--lr", "1e-3", *options]
    return _run(*arguments, *([] if progress else ["--no-progress"]), code=code)


def _run(*arguments: str, code: int = 0) -> tuple[str, str]:
    printed, errors = StringIO(), StringIO()
    stderr, sys.stderr = sys.stderr, errors
    try:
        with redirect_stdout(printed):
            assert main(list(arguments)) == code, errors.getvalue()
    finally:
        sys.stderr = stderr
    return printed.getvalue(), errors.getvalue()


def _metrics(out: Path) -> list[dict]:
    with open(out / METRICS_FILE, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _history(out: Path) -> list[float]:
    with open(out / HISTORY_FILE, newline="") as file:
        return [float(row["training_loss"]) for row in csv.DictReader(file)]


def test_a_redirected_run_logs_a_line_per_epoch_and_its_last_row_is_the_card_and_evaluate(tmp_path, cache):
    out = tmp_path / "model"
    printed, log = _train(out, cache, "--epochs", "6")
    assert "\r" not in log
    lines = [line for line in log.splitlines() if line.startswith("epoch ")]
    assert [EPOCH_LINE.fullmatch(line) is not None for line in lines] == [True] * 6, log
    rows = _metrics(out)
    assert [int(row["epoch"]) for row in rows] == list(range(1, 7))
    assert [f"{float(row['validation_mAP']):.3f}" for row in rows] == [EPOCH_LINE.match(line)[3] for line in lines]
    assert (out / VALIDATION_CURVE_FILE).stat().st_size > 0

    checkpoint = load_checkpoint(out / MODEL_FILE)
    evaluated = json.loads(_run("evaluate", "--model", str(out / MODEL_FILE), "--data-dir", str(ROOT), "--json")[0])
    last = float(rows[-1]["validation_mAP"])
    assert validation_map(checkpoint) == pytest.approx(last, abs=1e-8)
    assert evaluated["map"] == pytest.approx(last, abs=1e-8)
    assert f"mAP {last:.3f} [" in (out / CARD_FILE).read_text(encoding="utf-8")
    assert f"validation mAP {last:.3f} [" in printed and f"on {evaluated['images']} images;" in printed
    for name, row in checkpoint["validation"]["metrics"].items():  # the summary: the card's AP and verdict
        assert f"  {name}  AP {row['ap']:.3f}  {row['verdict']}" in printed
        assert float(rows[-1][f"AP_{name}"]) == pytest.approx(row["ap"], abs=1e-8)
    assert checkpoint["training"] == {"epochs_run": 6, "kept_epoch": 6,
                                      "stopped": "no early stop; the last epoch's weights kept"}

    quiet, quiet_log = _train(tmp_path / "quiet", cache, "--epochs", "2", "--quiet")
    assert quiet_log == "" and "validation mAP" in quiet


PATIENCE = ["--epochs", "40", "--lr", "3e-3", "--patience", "3", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, cache) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("patience") / "model"
    return out, _train(out, cache, *PATIENCE, progress=False)[0]


def test_patience_stops_when_the_map_no_longer_improves_and_keeps_the_best_epoch(stopped):
    out, printed = stopped
    rows = _metrics(out)
    maps = [float(row["validation_mAP"]) for row in rows]
    best = maps.index(max(maps)) + 1
    assert len(rows) == best + 3 < 40
    checkpoint = load_checkpoint(out / MODEL_FILE)
    assert checkpoint["training"]["kept_epoch"] == best and checkpoint["training"]["epochs_run"] == len(rows)
    assert validation_map(checkpoint) == pytest.approx(maps[best - 1], abs=1e-8)  # the best epoch's weights
    said = f"stopped early: the validation mAP did not improve for 3 epochs after epoch {best} (--patience 3)"
    assert said in printed and said in (out / CARD_FILE).read_text(encoding="utf-8")


def test_a_run_interrupted_under_patience_resumes_to_the_same_end(stopped, tmp_path, cache, monkeypatch):
    out = tmp_path / "model"
    save, saves = aimonk.train.adam.save_train_state, []

    def interrupted_after_the_fourth(*arguments, **state):  # noqa: ANN002, ANN003
        save(*arguments, **state)
        saves.append(state["epoch"])
        if len(saves) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(aimonk.train.adam, "save_train_state", interrupted_after_the_fourth)
    _train(out, cache, *PATIENCE, progress=False, code=130)
    monkeypatch.undo()
    assert len(_metrics(out)) == 4 and not (out / MODEL_FILE).exists()
    _run("train", "--resume", "--out-dir", str(out), "--no-progress")
    reference, resumed = _metrics(stopped[0]), _metrics(out)
    assert [{**row, "seconds": ""} for row in resumed] == [{**row, "seconds": ""} for row in reference]
    assert _history(out) == pytest.approx(_history(stopped[0]), abs=1e-6)
    assert load_checkpoint(out / MODEL_FILE)["training"] == load_checkpoint(stopped[0] / MODEL_FILE)["training"]


def test_patience_without_held_out_images_is_refused_in_one_line(tmp_path):
    _, error = _run("train", "--out-dir", str(tmp_path), "--val-fraction", "0", "--patience", "2", code=2)
    assert error == "aimonk: error: --patience stops on the validation mAP, but --val-fraction 0 holds no image " \
                    "out\n"


def test_init_from_continues_a_run_where_it_ended_and_tensorboard_reads_its_numbers(tmp_path, cache):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first, second = tmp_path / "first", tmp_path / "second"
    _train(first, cache, "--epochs", "5")
    _train(second, cache, "--epochs", "5", "--init-from", str(first / MODEL_FILE), "--tensorboard")
    before, after = _metrics(first), _metrics(second)
    last, continued, scratch = (float(rows[i]["training_loss"]) for rows, i in ((before, -1), (after, 0), (before, 0)))
    assert abs(continued - last) < 0.03 < 3 * 0.03 < abs(scratch - last)
    digest = hashlib.sha256((first / MODEL_FILE).read_bytes()).hexdigest()
    assert load_checkpoint(second / MODEL_FILE)["training"]["init_from"] == {"path": str(first / MODEL_FILE),
                                                                            "sha256": digest}

    folder, = (second / "tensorboard").iterdir()
    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert scalars["train/loss"] == pytest.approx(_history(second), rel=1e-6)
    assert scalars["validation/mAP"] == pytest.approx([float(row["validation_mAP"]) for row in after], rel=1e-6)
    assert scalars["validation/loss"] == pytest.approx([float(row["validation_loss"]) for row in after], rel=1e-6)
    for name in load_checkpoint(second / MODEL_FILE)["attributes"]:
        assert scalars[f"validation/AP/{name}"] == pytest.approx([float(row[f"AP_{name}"]) for row in after],
                                                                 rel=1e-6)
    assert scalars["hparam/validation_mAP"] == pytest.approx([float(after[-1]["validation_mAP"])], rel=1e-6)
    assert events.Tags()["images"] == ["loss_curve"]

    _, error = _train(tmp_path / "other", cache, "--init-from", str(first / MODEL_FILE), "--backbone", "resnet34",
                      code=2)
    assert error == f"aimonk: error: --init-from {first / MODEL_FILE}: its backbone resnet18, not resnet34 as " \
                    "here: a run starts from a model of the same backbone and attributes\n"


def test_init_from_a_fine_tuned_model_starts_from_all_its_weights(tmp_path):
    rows = [f"img_{i}.jpg {i % 2} {'NA' if i % 5 == 0 else (i // 2) % 2}" for i in range(16)]
    data = write_dataset(tmp_path / "data", rows, size=32)
    common = ["--data-dir", str(data), "--weights", "none", "--image-size", "32", "--workers", "0", "--no-progress",
              "--trainable-stages", "1", "--no-feature-cache", "--precision", "fp32", "--batch-size", "4",
              "--epochs", "1"]
    _run("train", *common, "--out-dir", str(tmp_path / "first"), "--lr", "1e-2")
    _run("train", *common, "--out-dir", str(tmp_path / "second"), "--lr", "1e-12", "--seed", "7",
         "--init-from", str(tmp_path / "first" / MODEL_FILE))
    first, second = (load_checkpoint(tmp_path / name / MODEL_FILE)["state_dict"] for name in ("first", "second"))
    assert first.keys() == second.keys()
    for name, tensor in first.items():  # the fine-tuned stage's BatchNorm statistics move at any learning rate
        if name.startswith("backbone.layer4.") and ("running_" in name or "num_batches" in name):
            continue
        assert torch.allclose(tensor.float(), second[name].float(), atol=1e-6), name


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    _, error = _run("train", "--out-dir", str(tmp_path), "--tensorboard", code=2)
    assert error == 'aimonk: error: --tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"\n'


def test_train_tune_train_again_keeps_the_tuned_model_where_it_says(tmp_path, cache):
    out = tmp_path / "model"
    _train(out, cache, "--epochs", "2", progress=False)
    _run("tune", "--model", str(out / MODEL_FILE), "--data-dir", str(ROOT), "--bootstrap", "50")
    tuned = load_checkpoint(out / MODEL_FILE)
    card = (out / CARD_FILE).read_text(encoding="utf-8")

    printed, log = _train(out, cache, "--epochs", "3", progress=False)
    kept, = (out / RUNS_FOLDER).iterdir()
    assert f"the model it replaced, with its files, is in {kept}\n" in printed
    assert f"moved with its files to {kept}" in log
    moved = load_checkpoint(kept / MODEL_FILE)
    for key in ("thresholds", "temperatures", "verdicts", "learnable", "validation", "training"):
        assert json.dumps(moved[key]) == json.dumps(tuned[key]), key  # NaN metrics too
    assert (kept / CARD_FILE).read_text(encoding="utf-8") == card
    assert len(_metrics(kept)) == 2 and len(_metrics(out)) == 3
    assert "verdicts" not in load_checkpoint(out / MODEL_FILE)

    listing = _run("runs", "--out-dir", str(out))[0].splitlines()
    current = load_checkpoint(out / MODEL_FILE)
    assert listing[1:] == [
        f"(current) | reference | resnet18 | 3/3 | 0.001 | {validation_map(current):.3f} | no",
        f"{kept} | reference | resnet18 | 2/2 | 0.001 | {validation_map(tuned):.3f} | yes"]

    # Continued in place: the model it starts from is moved first, and the new checkpoint points to where it went
    digest = hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest()
    _train(out, cache, "--epochs", "1", "--init-from", str(out / MODEL_FILE), progress=False)
    newest = previous_runs(out)[0]
    continued = load_checkpoint(out / MODEL_FILE)
    assert continued["training"]["init_from"] == {"path": str(newest / MODEL_FILE), "sha256": digest}
    assert continued["train_config"]["init_from"] == str(newest / MODEL_FILE)  # where --resume would find it

    # The same after a move a killed run left half done: the next run finishes it and starts from where it went
    digest = hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest()
    partial = out / "runs" / ".20990101T000000Z.partial"
    partial.mkdir()
    os.replace(out / CARD_FILE, partial / CARD_FILE)
    _train(out, cache, "--epochs", "1", "--init-from", str(out / MODEL_FILE), progress=False)
    finished = out / "runs" / "20990101T000000Z"
    assert (finished / CARD_FILE).is_file() and (finished / MODEL_FILE).is_file()
    assert load_checkpoint(out / MODEL_FILE)["training"]["init_from"] == {"path": str(finished / MODEL_FILE),
                                                                          "sha256": digest}
