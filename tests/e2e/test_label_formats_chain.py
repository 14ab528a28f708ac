"""Labels in every form train the same model, and a checkpoint scores any labelled images honestly: the demo as
labels.txt, as a CSV with a header and empty unknowns, as CelebA's 1/-1 (TSV) and as a pandas DataFrame give the same
split and the same loss history; `evaluate` finds the training labels from any folder, scores a test set whole,
warning only about images that really were training images; the mAP is the same in the train summary, the card and
evaluate."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT

from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.data.labels import read_labels
from aimonk.io import CARD_FILE, HISTORY_FILE, MODEL_FILE
from aimonk.metrics import map_line
from aimonk.train.training import train

pytestmark = pytest.mark.slow  # four trainings of the demo set (features cached after the first) and evaluations
QUICK = ["--weights", "none", "--image-size", "32", "--workers", "0", "--no-progress", "--epochs", "2"]


def _run(*argv: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(list(argv)) == 0, (argv, err.getvalue())
    return out.getvalue(), err.getvalue()


def _as_table(delimiter: str, spelling: dict[str, str], rows: list[int] | None = None) -> str:
    table = read_labels(ROOT / "labels.txt")
    rows = range(len(table)) if rows is None else rows
    lines = [delimiter.join(["image", *table.attributes])]
    lines += [delimiter.join([table.filenames[i], *(spelling[v] for v in table.values(i))]) for i in rows]
    return "\n".join(lines) + "\n"


CSV = {"1": "1", "0": "0", "NA": ""}
CELEBA = {"1": "1", "0": "-1", "NA": ""}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The demo trained from labels.txt, a CSV, a 1/-1 TSV and a DataFrame: (checkpoint, train's output) by form."""
    work, cache = tmp_path_factory.mktemp("forms"), tmp_path_factory.mktemp("cache")
    (work / "labels.csv").write_text(_as_table(",", CSV))
    (work / "celeba.tsv").write_text(_as_table("\t", CELEBA))
    runs = {}
    for form, labels in (("txt", ROOT / "labels.txt"), ("csv", work / "labels.csv"), ("celeba", work / "celeba.tsv")):
        out = work / form
        printed, _ = _run("train", "--labels", str(labels), "--image-dir", str(ROOT / "images"), "--out-dir",
                          str(out), "--cache-dir", str(cache), *QUICK)
        runs[form] = (out / MODEL_FILE, printed)
    config = TrainConfig(labels=None, image_dir=str(ROOT / "images"), out_dir=str(work / "frame"), cache_dir=str(cache),
                         weights="none", image_size=32, workers=0, progress=False, epochs=2)
    from aimonk.cache import config_stores

    result = train(config, stores=config_stores(config), labels=pd.read_csv(work / "labels.csv"))
    runs["frame"] = (result.model_path, "")
    return runs


def test_every_form_of_the_labels_trains_the_same_split_and_loss_history(runs):
    reference = load_checkpoint(runs["txt"][0])
    history = (runs["txt"][0].parent / HISTORY_FILE).read_text()
    for form in ("csv", "celeba", "frame"):
        checkpoint = load_checkpoint(runs[form][0])
        assert checkpoint["train_files"] == reference["train_files"], form
        assert checkpoint["val_files"] == reference["val_files"], form
        assert (runs[form][0].parent / HISTORY_FILE).read_text() == history, form
    assert load_checkpoint(runs["celeba"][0])["data"]["labels"].endswith("celeba.tsv")
    assert load_checkpoint(runs["frame"][0])["data"]["labels"] is None  # a table, not a file


def test_evaluate_finds_the_training_labels_from_any_folder_and_reads_them_as_training_did(runs, tmp_path,
                                                                                          monkeypatch):
    model = runs["celeba"][0]
    here = json.loads(_run("evaluate", "--model", str(model), "--json", "--bootstrap", "200")[0])
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    monkeypatch.chdir(moved)
    relative = os.path.relpath(model, moved)
    there = json.loads(_run("evaluate", "--model", relative, "--json", "--bootstrap", "200")[0])
    assert here["scope"] == there["scope"] == "validation"
    assert {**here, "model": None} == {**there, "model": None}


def test_the_map_of_the_train_summary_the_card_and_evaluate_are_one(runs):
    model, printed = runs["txt"]
    evaluated = json.loads(_run("evaluate", "--model", str(model), "--json")[0])
    saved = load_checkpoint(model)["validation"]["map"]
    assert (evaluated["map"], evaluated["map_low"], evaluated["map_high"]) == pytest.approx(
        (saved["map"], saved["map_low"], saved["map_high"]), rel=1e-12)
    assert map_line(saved) in (model.parent / CARD_FILE).read_text(encoding="utf-8")
    assert f"validation {map_line(saved)}, on " in printed
    shown = _run("evaluate", "--model", str(model))[0]
    assert map_line(saved) in shown


@pytest.fixture(scope="module")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    """A model trained on the demo's first 300 images (a CSV); the other 100 are a test set it never saw."""
    work = tmp_path_factory.mktemp("split")
    (work / "train.csv").write_text(_as_table(",", CSV, list(range(300))))
    _run("train", "--labels", str(work / "train.csv"), "--image-dir", str(ROOT / "images"), "--out-dir",
         str(work / "out"), "--cache-dir", str(work / "cache"), *QUICK)
    return work / "out" / MODEL_FILE, work, list(range(300, 400))


def test_a_test_set_is_scored_whole_with_no_warning_and_training_images_mixed_in_are_counted(split_model, tmp_path):
    model, _, test_rows = split_model
    table = read_labels(ROOT / "labels.txt")
    (tmp_path / "test.csv").write_text(_as_table(",", CSV, test_rows))
    printed, warned = _run("evaluate", "--model", str(model), "--labels", str(tmp_path / "test.csv"), "--images",
                           str(ROOT / "images"), "--json", "--bootstrap", "200")
    result = json.loads(printed)
    assert result["scope"] == "test" and result["images"] == 100 and warned == ""
    assert 0 <= result["map_low"] <= result["map"] <= result["map_high"] <= 1
    # 20 training images mixed in, and an image named as a training image but another picture: 20 counted
    trained = load_checkpoint(model)["train_files"]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in test_rows:
        shutil.copy(ROOT / "images" / table.filenames[i], mixed)
    for name in trained[:20]:
        shutil.copy(ROOT / "images" / name, mixed)
    shutil.copy(ROOT / "images" / table.filenames[test_rows[0]], mixed / trained[20])
    rows = test_rows + [table.filenames.index(name) for name in trained[:21]]
    (tmp_path / "mixed.csv").write_text(_as_table(",", CSV, rows))
    printed, warned = _run("evaluate", "--model", str(model), "--labels", str(tmp_path / "mixed.csv"), "--images",
                           str(mixed), "--bootstrap", "0")
    assert warned.count("\n") == 1 and "20 of the 121 labelled images were training images" in warned
    assert "on 121 of the labelled images of" in printed
