"""`aimonk evaluate`: the metrics table of a checkpoint on the validation images it held out at training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import train_cached, write_dataset

from aimonk.checkpoint import load_checkpoint, save_tuning
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.evaluate.prediction import Predictor
from aimonk.evaluate.scoring import score_checkpoint
from aimonk.metrics import METRICS


def _train(data: Path, out_dir: Path, val_fraction: float) -> Path:
    config = TrainConfig(data_dir=str(data), out_dir=str(out_dir), weights="none", image_size=64, epochs=1,
                         val_fraction=val_fraction, progress=False, quiet=True, workers=0)
    return train_cached(config).model_path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 images, two attributes with both classes and some NA."""
    values = ["1", "0", "NA", "1", "0"]
    rows = [f"img_{i}.jpg {values[i % 5]} {values[(i // 2) % 5]}" for i in range(40)]
    return write_dataset(tmp_path_factory.mktemp("data"), rows, size=32)


@pytest.fixture(scope="module")
def model(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(dataset, tmp_path_factory.mktemp("models"), val_fraction=0.25)


def _evaluate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prints_a_row_per_attribute_with_intervals_for_the_held_out_images(model, dataset, capsys):
    code, out, err = _evaluate(capsys, "--model", str(model), "--data-dir", str(dataset), "--bootstrap", "50")
    assert code == 0, err
    n_val = len(load_checkpoint(model)["val_files"])
    assert f"on {n_val} of the validation images" in out
    rows = [line for line in out.splitlines() if line.startswith("Attr")]
    assert [row.split()[0] for row in rows] == ["Attr1", "Attr2"]
    assert all(row.count("[") == 3 for row in rows)  # ROC AUC, AP and F1 with their intervals
    assert "verdict" in out and err == ""
    assert all(len(line) < 100 for line in out.splitlines() if str(model) not in line), out


def test_details_prints_the_full_table(model, dataset, capsys):
    code, out, _ = _evaluate(capsys, "--model", str(model), "--data-dir", str(dataset), "--bootstrap", "50",
                             "--details")
    rows = [line for line in out.splitlines() if line.startswith("Attr")]
    assert code == 0 and len(rows) == 2
    assert all(row.count("[") >= 4 for row in rows) and "F1 all-positive" in out


def test_csv_and_json_carry_every_column(model, dataset, tmp_path, capsys):
    out = tmp_path / "evaluation.csv"
    argv = ("--model", str(model), "--data-dir", str(dataset), "--bootstrap", "50")
    code, printed, _ = _evaluate(capsys, *argv, "--csv", str(out), "--json")
    assert code == 0
    document = json.loads(printed)
    table = pd.read_csv(out, index_col="attribute")
    expected = {"n", "positives", "negatives", "prevalence", "threshold", "f1_all_positive", "verdict"}
    expected |= {f"{metric}{end}" for metric in METRICS for end in ("", "_low", "_high")}
    assert set(table.columns) == expected
    assert list(table.index) == ["Attr1", "Attr2"]
    assert document["images"] == len(load_checkpoint(model)["val_files"]) and document["scope"] == "validation"
    records = pd.DataFrame(document["attributes"]).set_index("attribute")
    pd.testing.assert_frame_equal(records[table.columns], table, check_dtype=False)
    assert table.loc["Attr1", "roc_auc_low"] <= table.loc["Attr1", "roc_auc"] <= table.loc["Attr1", "roc_auc_high"]
    assert _evaluate(capsys, *argv)[1].startswith(str(model))  # the table still, without --json


def test_unwritable_csv_is_one_error_line(model, dataset, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, out, err = _evaluate(capsys, "--model", str(model), "--data-dir", str(dataset), "--csv",
                               str(tmp_path / "file" / "evaluation.csv"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"aimonk: error: {tmp_path / 'file' / 'evaluation.csv'}: ")


def test_scores_are_the_predictors_on_the_recorded_validation_files(model, dataset):
    scores = score_checkpoint(model, dataset / "labels.txt", dataset / "images").scores()
    val_files = load_checkpoint(model)["val_files"]
    assert scores.table.filenames == val_files
    expected = [p.probabilities for p in Predictor(model).predict([dataset / "images" / f for f in val_files])]
    np.testing.assert_allclose(scores.probabilities, expected)


def test_same_seed_prints_the_same_table(model, dataset, capsys):
    argv = ("--model", str(model), "--data-dir", str(dataset), "--bootstrap", "30", "--seed", "3")
    assert _evaluate(capsys, *argv) == _evaluate(capsys, *argv)


def test_all_scores_every_labelled_image_with_a_warning(model, dataset, capsys):
    code, out, err = _evaluate(capsys, "--model", str(model), "--data-dir", str(dataset), "--bootstrap", "0", "--all")
    assert code == 0
    assert "on 40 of all labelled images" in out
    trained = len(load_checkpoint(model)["train_files"])  # those alone: the validation images were not trained on
    assert f"{trained} of the 40 labelled images were training images" in err and err.count("\n") == 1


def test_the_checkpoints_thresholds_are_used(model, dataset, tmp_path, capsys):
    copy = tmp_path / "model.pth"
    copy.write_bytes(model.read_bytes())
    save_tuning(copy, thresholds=[0.25, 0.75])
    code, out, _ = _evaluate(capsys, "--model", str(copy), "--data-dir", str(dataset), "--bootstrap", "0", "--json")
    assert code == 0
    assert [row["threshold"] for row in json.loads(out)["attributes"]] == [0.25, 0.75]


def test_a_missing_validation_image_is_skipped_with_a_warning(model, dataset, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    val_files = load_checkpoint(model)["val_files"]
    for name in val_files[1:]:
        (images / name).write_bytes((dataset / "images" / name).read_bytes())
    code, out, err = _evaluate(capsys, "--model", str(model), "--labels", str(dataset / "labels.txt"),
                               "--image-dir", str(images), "--bootstrap", "0")
    assert code == 0, err
    assert f"on {len(val_files) - 1} of the validation images" in out
    assert "warning" in err and val_files[0] in err


def test_a_checkpoint_without_validation_split_needs_all(dataset, tmp_path, capsys):
    model = _train(dataset, tmp_path / "models", val_fraction=0)
    code, out, err = _evaluate(capsys, "--model", str(model), "--data-dir", str(dataset))
    assert code == 2 and out == ""
    assert err.startswith("aimonk: error:") and "no validation images" in err and "--all" in err
    assert _evaluate(capsys, "--model", str(model), "--data-dir", str(dataset), "--all", "--bootstrap", "0")[0] == 0


def test_labels_with_other_attributes_are_refused(model, dataset, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("filename Colour Shape\n" + (dataset / "labels.txt").read_text())
    code, _, err = _evaluate(capsys, "--model", str(model), "--labels", str(labels),
                             "--image-dir", str(dataset / "images"))
    assert code == 2 and "Attr1" in err and "Colour" in err


@pytest.mark.parametrize("argv", [["--model", "nowhere.pth"], ["--bootstrap", "-1"]])
def test_bad_input_is_one_line_and_exit_2(argv, dataset, capsys):
    code, _, err = _evaluate(capsys, "--data-dir", str(dataset), *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("aimonk: error:")
