"""End to end on the embedded demo data: `aimonk train` then `aimonk predict`, outputs and checkpoint."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT
from sklearn.metrics import roc_auc_score

from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.data.labels import read_labels
from aimonk.evaluate.prediction import Predictor

pytestmark = pytest.mark.slow  # the demo training of the module's fixture takes seconds


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`aimonk train --weights none` on the shipped demo data, with a short but learning schedule."""
    out_dir = tmp_path_factory.mktemp("models")
    argv = ["train", "--data-dir", str(ROOT), "--out-dir", str(out_dir), "--weights", "none",
            "--lr", "1e-3", "--epochs", "20", "--no-progress"]
    assert main(argv) == 0
    return out_dir


def test_training_writes_model_history_and_curve(demo_model: Path):
    with open(demo_model / "loss_history.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["iteration_number", "training_loss"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, len(rows)))
    batches_per_epoch = -(-len(load_checkpoint(demo_model / "aimonk_model.pth")["train_files"]) // 16)
    assert len(rows) - 1 == 20 * batches_per_epoch
    losses = [float(row[1]) for row in rows[1:]]
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    assert (demo_model / "loss_curve.png").read_bytes().startswith(b"\x89PNG")


def test_checkpoint_round_trips_with_weights_only(demo_model: Path):
    raw = torch.load(demo_model / "aimonk_model.pth", weights_only=True)
    checkpoint = load_checkpoint(demo_model / "aimonk_model.pth", attributes=["Attr1", "Attr2", "Attr3", "Attr4"])
    assert raw.keys() == checkpoint.keys()
    assert checkpoint["backbone"] == "resnet18" and checkpoint["weights_origin"] == "random"
    assert checkpoint["thresholds"] == [0.5] * 4
    assert checkpoint["preprocessing"]["image_size"] == 224
    assert checkpoint["train_config"]["lr"] == 1e-3
    assert len(checkpoint["train_files"]) + len(checkpoint["val_files"]) == 400
    assert 70 <= len(checkpoint["val_files"]) <= 90  # about 20 %, as stratification allows
    assert not set(checkpoint["train_files"]) & set(checkpoint["val_files"])
    predictor = Predictor(demo_model / "aimonk_model.pth")
    trained = predictor.model.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in checkpoint["state_dict"].items())


def test_short_training_on_demo_data_beats_chance_clearly(demo_model: Path):
    checkpoint = load_checkpoint(demo_model / "aimonk_model.pth")
    table = read_labels(ROOT / "labels.txt")
    val = table.subset([table.filenames.index(name) for name in checkpoint["val_files"]])
    predictions = Predictor(demo_model / "aimonk_model.pth").predict([ROOT / "images" / n for n in val.filenames])
    probabilities = np.array([prediction.probabilities for prediction in predictions])
    aucs = [roc_auc_score(val.targets[val.known[:, j], j], probabilities[val.known[:, j], j]) for j in range(3)]
    # Colour, circle and stripes are learnt from a random backbone; the small square (Attr4) is not.
    assert min(aucs) > 0.9, aucs


def test_predict_prints_attributes_per_image(demo_model: Path, capsys: pytest.CaptureFixture[str]):
    images = [str(ROOT / "images" / f"image_{i}.jpg") for i in range(3)]
    assert main(["predict", *images, "--model", str(demo_model / "aimonk_model.pth")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == images
    names = {"Attr1", "Attr2", "Attr3", "Attr4", "none"}
    assert all(set(line.split(": ")[1].split(", ")) <= names for line in lines)


def test_predict_folder_as_json_with_probabilities(demo_model: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["predict", str(ROOT / "images"), "--model", str(demo_model / "aimonk_model.pth"), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 400
    assert Path(records[10]["image"]).name == "image_10.jpg"  # natural order
    for record in records[:20]:
        assert set(record["probabilities"]) == {"Attr1", "Attr2", "Attr3", "Attr4"}
        assert record["attributes"] == [name for name, p in record["probabilities"].items() if p >= 0.5]


def test_thresholds_in_the_checkpoint_decide_what_is_printed(demo_model: Path, tmp_path: Path, capsys):
    from aimonk.checkpoint import save_tuning

    model = tmp_path / "model.pth"
    model.write_bytes((demo_model / "aimonk_model.pth").read_bytes())
    image = str(ROOT / "images" / "image_0.jpg")
    save_tuning(model, thresholds=[0.0, 0.0, 0.0, 0.0])
    main(["predict", image, "--model", str(model)])
    save_tuning(model, thresholds=[1.0, 1.0, 1.0, 1.0])
    main(["predict", image, "--model", str(model)])
    assert capsys.readouterr().out.splitlines() == [f"{image}: Attr1, Attr2, Attr3, Attr4", f"{image}: none"]


def test_console_command_trains_and_predicts_from_the_current_directory(tmp_path: Path, small_dataset: Path):
    """`aimonk train` defaults: images/ + labels.txt of the working directory, output to models/."""
    aimonk = Path(sys.executable).with_name("aimonk")
    train_run = subprocess.run(
        [aimonk, "train", "--weights", "none", "--epochs", "1", "--image-size", "64", "--workers", "0"],
        cwd=small_dataset, capture_output=True, text=True, timeout=300,
    )
    assert train_run.returncode == 0, train_run.stderr
    assert (small_dataset / "models" / "aimonk_model.pth").is_file()
    predict_run = subprocess.run([aimonk, "predict", "images"], cwd=small_dataset, capture_output=True, text=True,
                                 timeout=300)
    assert predict_run.returncode == 0, predict_run.stderr
    assert len(predict_run.stdout.splitlines()) == 24


def test_recommended_recipe_converges_on_the_demo_and_says_what_ran(demo_model: Path, tmp_path: Path, capsys):
    """The same cached features as the reference run above; the head fitted to convergence in one call."""
    assert main(["train", "--recipe", "recommended", "--data-dir", str(ROOT), "--out-dir", str(tmp_path),
                 "--weights", "none", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "recipe: recommended with weights=none" in out
    assert "lbfgs: L2 per attribute, chosen on 5 folds of the training images: Attr1" in out
    checkpoint = load_checkpoint(tmp_path / "aimonk_model.pth")
    table = read_labels(ROOT / "labels.txt")
    val = table.subset([table.filenames.index(name) for name in checkpoint["val_files"]])
    predictions = Predictor(tmp_path / "aimonk_model.pth").predict([ROOT / "images" / n for n in val.filenames])
    probabilities = np.array([prediction.probabilities for prediction in predictions])
    aucs = [roc_auc_score(val.known_labels(j)[1], probabilities[val.known_labels(j)[0], j]) for j in range(3)]
    assert min(aucs) > 0.99, aucs  # the reference schedule above reaches 0.9


def test_tune_records_verdicts_and_predict_never_claims_what_the_model_cannot_judge(demo_model, tmp_path, capsys):
    """With a random backbone the demo's small square (Attr4) is at chance: tuning must not make it 'present'."""
    model = tmp_path / "model.pth"
    model.write_bytes((demo_model / "aimonk_model.pth").read_bytes())
    assert main(["tune", "--model", str(model), "--data-dir", str(ROOT), "--bootstrap", "300"]) == 0
    assert "not learnable, never reported present by aimonk predict: Attr4" in capsys.readouterr().out
    checkpoint = load_checkpoint(model)
    assert checkpoint["learnable"] == [True, True, True, False]
    assert checkpoint["verdicts"][3].startswith("no better than chance")
    assert checkpoint["thresholds"][3] == 0.5 and checkpoint["temperatures"][3] == 1.0

    images = [str(ROOT / "images" / f"image_{i}.jpg") for i in range(40)]
    assert main(["predict", *images, "--model", str(model), "--json", "--csv", str(tmp_path / "p.csv")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(record["cannot_judge"] == ["Attr4"] and "Attr4" not in record["attributes"] for record in records)
    assert any(record["attributes"] for record in records)  # the learnable ones are still decided
    import pandas as pd

    table = pd.read_csv(tmp_path / "p.csv")
    assert table["Attr4"].isna().all() and table["p_Attr4"].notna().all()
    assert main(["predict", images[0], "--model", str(model)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("aimonk: note: this model cannot judge Attr4")
