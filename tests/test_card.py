"""The model card: written by `aimonk train`, rewritten by `aimonk tune`, every number on it from the checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import train_arguments, write_dataset

from aimonk.card import loss_curve_figure, write_model_card
from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.errors import AimonkError
from aimonk.io import CARD_FILE, MODEL_FILE

pytestmark = pytest.mark.slow  # trains through the command line


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`aimonk train` on 40 images, two attributes with both classes and some NA, 10 held out."""
    values = ["1", "0", "NA", "1", "0"]
    rows = [f"img_{i}.jpg {values[i % 5]} {values[(i // 2) % 5]}" for i in range(40)]
    data = write_dataset(tmp_path_factory.mktemp("data"), rows, size=32)
    out = tmp_path_factory.mktemp("run") / "models"
    assert main(train_arguments(data, out, "--epochs", "1", "--val-fraction", "0.25")) == 0
    return out / MODEL_FILE


NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")
FIXED = {"0.5", "03"}  # the card's own text: the ROC AUC of a constant score, notebook 03


def _three(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _numbers_from(checkpoint: dict) -> set[str]:
    """Every number the card may show: the checkpoint's entries (counts, sizes, settings, metrics, thresholds,
    temperatures), formatted as the card formats them, and the NA share of each attribute."""
    counts, validation = checkpoint["label_counts"], checkpoint.get("validation", {})
    found = {str(counts[key]) for key in ("images", "train", "validation", "skipped")}
    for known, positive in zip(counts["known"], counts["positive"], strict=True):
        found |= {str(known), str(positive), str(known - positive), f"{100 * (1 - known / counts['images']):.1f}"}
    found |= {str(value) for value in checkpoint["train_config"].values()}
    found.add(str(checkpoint["preprocessing"]["image_size"]))
    if validation:
        found |= {str(validation["images"]), str(validation["bootstrap"]), str(validation["seed"]),
                  f"{100 * validation['confidence']:.0f}"}
        for row in validation["metrics"].values():
            found |= {str(value) if isinstance(value, int) else _three(value) for value in row.values()
                      if isinstance(value, (int, float))}
            found |= set(NUMBER.findall(row["verdict"]))
        overall = validation["map"]  # the mAP line: value, interval, and over how many attributes
        found |= {_three(overall[key]) for key in ("map", "map_low", "map_high")} | {str(len(overall["attributes"]))}
    training = checkpoint.get("training", {})
    found |= {str(training[key]) for key in ("epochs_run", "kept_epoch") if key in training}
    found |= set(NUMBER.findall(training.get("stopped", "")))
    found |= {_three(value) for value in checkpoint["thresholds"]}
    found |= {_three(value) for value in checkpoint.get("temperatures", [1.0])}
    found |= {number for verdict in checkpoint.get("verdicts", []) for number in NUMBER.findall(verdict)}
    return found | FIXED


def _table(card: str, header: str) -> list[dict[str, str]]:
    """The rows of the card's table that starts with `header`, as {column: cell}."""
    lines = card[card.index(header):].split("\n\n")[0].splitlines()
    columns = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(columns, [cell.strip() for cell in line.strip("|").split("|")], strict=True))
            for line in lines[2:]]


def _check_card(model: Path) -> str:
    card, checkpoint = (model.parent / CARD_FILE).read_text(encoding="utf-8"), load_checkpoint(model)
    shown = NUMBER.findall(re.sub(r"`[^`]*`", "", card))  # paths (in backquotes) aside
    assert set(shown) <= _numbers_from(checkpoint), set(shown) - _numbers_from(checkpoint)
    counts = checkpoint["label_counts"]
    assert f"{counts['images']} labelled images used: {counts['train']} for training, {counts['validation']} held " \
           f"out for validation; {counts['skipped']} skipped" in card
    for j, row in enumerate(_table(card, "| attribute | known labels")):
        known, positive = counts["known"][j], counts["positive"][j]
        assert row == {"attribute": checkpoint["attributes"][j], "known labels": str(known), "present": str(positive),
                       "absent": str(known - positive), "NA share": f"{100 * (1 - known / counts['images']):.1f} %"}
    metrics = checkpoint["validation"]["metrics"]
    temperatures = checkpoint.get("temperatures", [1.0] * len(checkpoint["attributes"]))
    for j, row in enumerate(_table(card, "| attribute | verdict")):
        name = checkpoint["attributes"][j]
        assert row["attribute"] == name
        assert row["verdict"] == checkpoint.get("verdicts", [metrics[name]["verdict"]] * 2)[j]
        for column, metric in (("AP", "ap"), ("ROC AUC", "roc_auc"), ("F1", "f1"), ("precision", "precision"),
                               ("recall", "recall")):
            point, low, high = (_three(metrics[name][f"{metric}{end}"]) for end in ("", "_low", "_high"))
            assert row[column] == (point if low == "n/a" else f"{point} [{low}, {high}]")
        assert row["AP baseline"] == _three(metrics[name]["prevalence"])
        assert row["F1 all present"] == _three(metrics[name]["f1_all_positive"])
        assert row["threshold"] == _three(checkpoint["thresholds"][j])
        assert row["temperature"] == _three(temperatures[j])
    return card


def test_aimonk_train_writes_a_card_whose_every_number_is_the_checkpoints(trained: Path):
    checkpoint = load_checkpoint(trained)
    assert checkpoint["label_counts"]["images"] == 40 and checkpoint["label_counts"]["validation"] == 10
    validation = checkpoint["validation"]
    assert validation["images"] == 10 and set(validation["metrics"]) == {"Attr1", "Attr2"}
    card = _check_card(trained)
    assert "backbone: resnet18, weights: random" in card
    assert "reference with weights=none, epochs=1, val_fraction=0.25, image_size=32" in card
    assert "Not decided yet" in card and "## Limitations" in card


def test_aimonk_tune_rewrites_the_card_with_its_verdicts_thresholds_and_temperatures(trained: Path, tmp_path: Path):
    model = tmp_path / MODEL_FILE
    model.write_bytes(trained.read_bytes())
    data = load_checkpoint(trained)["train_config"]["data_dir"]
    assert main(["tune", "--model", str(model), "--data-dir", data, "--bootstrap", "100"]) == 0
    checkpoint = load_checkpoint(model)
    assert checkpoint["validation"]["bootstrap"] == 100 and "verdicts" in checkpoint
    # the validation metrics are those at the tuned thresholds, on the calibrated probabilities
    assert [checkpoint["validation"]["metrics"][name]["threshold"] for name in checkpoint["attributes"]] == \
        checkpoint["thresholds"]
    card = _check_card(model)
    unable = [name for name, learnable in zip(checkpoint["attributes"], checkpoint["learnable"], strict=True)
              if not learnable]
    assert all(f"- {name}: " in card for name in unable)
    assert unable or "Every attribute is better than chance" in card


def test_the_card_is_written_atomically_a_failed_write_leaves_the_old_one(trained: Path, tmp_path: Path, full_disk):
    model = tmp_path / MODEL_FILE
    model.write_bytes(trained.read_bytes())
    (tmp_path / CARD_FILE).write_text("the old card")
    full_disk(room=100)
    with pytest.raises(AimonkError, match=CARD_FILE):
        write_model_card(model)
    assert (tmp_path / CARD_FILE).read_text() == "the old card"
    assert sorted(path.name for path in tmp_path.iterdir()) == [CARD_FILE, MODEL_FILE]  # no temporary left


def test_a_run_trained_from_python_has_the_scored_card_of_the_command_line(tiny_model: Path):
    """train() scores its validation images itself (once, from the features it holds): the card a Python run writes
    is the command line's, not a "Not scored" one."""
    card = (tiny_model.parent / CARD_FILE).read_text(encoding="utf-8")
    assert "Not scored" not in card and "| attribute | verdict" in card
    assert str(load_checkpoint(tiny_model)["label_counts"]["images"]) in card


def test_loss_curve_axes_and_title():
    axes = loss_curve_figure([0.9, 0.7, 0.6]).axes[0]
    assert axes.get_xlabel() == "iteration_number"
    assert axes.get_ylabel() == "training_loss"
    assert axes.get_title() == "Aimonk_multilabel_problem"
    assert list(axes.lines[0].get_xdata()) == [1, 2, 3]
