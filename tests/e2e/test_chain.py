"""Commands chained as a user chains them, their numbers compared across commands: train -> tune -> export ->
onnxruntime make the decisions `aimonk predict` makes, and so does `aimonk predict` with the export (fp32, or int8
on nearly every image); the model card says what `aimonk evaluate` prints; evaluate and tune read the features
training stored; a warm `aimonk train` reads no image and writes its checkpoint once, never reading it back. The
chain runs for a torchvision backbone and a timm one (timm's 0.5 M-parameter `test_resnet`)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import ROOT

import aimonk.checkpoint
from aimonk.card import interval
from aimonk.checkpoint import DecisionRule, load_checkpoint, save_tuning
from aimonk.cli import main
from aimonk.data.images import Preprocessing
from aimonk.evaluate.onnx_inference import rule_of
from aimonk.evaluate.prediction import Predictor
from aimonk.io import CARD_FILE, MODEL_FILE
from aimonk.metrics import METRICS

pytestmark = pytest.mark.slow  # a training run, tuning and an export of the demo set
# How far bf16 PyTorch (predict) and fp32 ONNX may put an image's logit apart: bf16 keeps 8 bits of each value, so a
# few percent of the logit, and an entry this close to its threshold may be decided either way.


def noise(logit: float) -> float:
    return 0.1 + 0.05 * abs(logit)



def _run(*argv: str) -> str:
    printed = StringIO()
    with redirect_stdout(printed):
        assert main(list(argv)) == 0, argv
    return printed.getvalue()


@pytest.fixture(scope="module", params=["resnet18", pytest.param("timm:test_resnet", marks=pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="timm is the extra aimonk[timm]"))])
def tuned(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The demo set's `recommended` model (a random backbone at 64 px sees some attributes, not the rare one), trained
    then tuned by the command line, its features in the feature cache of its training run. timm's test_resnet runs
    in fp32: its 96 standardised features carry bf16's rounding beyond `noise`, which is ResNet18's."""
    out, cache = tmp_path_factory.mktemp("tuned"), tmp_path_factory.mktemp("cache")
    _run("train", "--data-dir", str(ROOT), "--out-dir", str(out), "--recipe", "recommended", "--weights", "none",
         "--image-size", "64", "--workers", "0", "--no-progress", "--cache-dir", str(cache),
         "--backbone", request.param, *(["--precision", "fp32"] if request.param.startswith("timm:") else []))
    _run("tune", "--model", str(out / MODEL_FILE), "--data-dir", str(ROOT))
    return out / MODEL_FILE


def _predicted(model: Path, table: Path) -> list[dict]:
    """`aimonk predict` with `model` over the demo images, its --csv rows."""
    _run("predict", str(ROOT / "images"), "--model", str(model), "--csv", str(table))
    return list(csv.DictReader(table.open(encoding="utf-8")))


@pytest.fixture(scope="module")
def predicted(tuned: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What `aimonk predict` with the tuned checkpoint says of the demo images (its --csv rows)."""
    return _predicted(tuned, tmp_path_factory.mktemp("predicted") / "predictions.csv")


def test_after_tune_the_model_card_holds_the_numbers_aimonk_evaluate_prints(tuned):
    evaluated = json.loads(_run("evaluate", "--model", str(tuned), "--data-dir", str(ROOT), "--json"))
    saved = load_checkpoint(tuned)["validation"]
    card = (tuned.parent / CARD_FILE).read_text(encoding="utf-8").split("## On the validation images")[1]
    assert evaluated["images"] == saved["images"] and (evaluated["bootstrap"], evaluated["seed"]) == \
        (saved["bootstrap"], saved["seed"])
    for row in evaluated["attributes"]:
        stored = saved["metrics"][row["attribute"]]
        for key in (f"{metric}{end}" for metric in METRICS for end in ("", "_low", "_high")):
            same = (row[key] is None and math.isnan(stored[key])) or row[key] == pytest.approx(stored[key], rel=1e-9)
            assert same, (row["attribute"], key, row[key], stored[key])
        cells = [cell.strip() for cell in next(line for line in card.splitlines()
                                               if line.startswith(f"| {row['attribute']} |")).split("|")]
        assert [cells[3], cells[5], cells[6]] == [interval(stored, metric) for metric in ("ap", "roc_auc", "f1")]


def test_tune_sets_thresholds_where_the_validation_labels_put_them(tuned):
    checkpoint = load_checkpoint(tuned)
    rule = DecisionRule.of(checkpoint)
    # ResNet18's head on the demo: no threshold up at saturation (the lbfgs head once put them at 0.9999996); timm's
    # 0.5 M-parameter test_resnet, standardised, separates some attributes and gives 0.9998: strictly inside (0, 1)
    highest = 0.999 if checkpoint["backbone"] == "resnet18" else 1.0
    assert rule.verdicts is not None and all(0.0 < t < highest for t in rule.thresholds)


@pytest.mark.parametrize("temperatures", [None, (0.5, 2.0, 0.7, 3.0)], ids=["as tuned", "far from 1"])
def test_train_tune_export_onnxruntime_decide_as_predict_does(tuned, predicted, tmp_path, temperatures):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if temperatures and load_checkpoint(tuned)["backbone"] != "resnet18":
        pytest.skip("the temperatures' way into the graph is the same whatever the backbone: checked with resnet18")
    model = tmp_path / MODEL_FILE
    model.write_bytes(tuned.read_bytes())
    if temperatures:  # the bug this guards against dropped them on the way to the export
        save_tuning(model, temperatures=list(temperatures))
    _run("export", "--model", str(model))
    session = onnxruntime.InferenceSession(str(model.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert rule_of(meta) == DecisionRule.of(load_checkpoint(model))  # the temperatures included
    preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    rows = _predicted(model, tmp_path / "predictions.csv") if temperatures else predicted
    images = torch.stack([preprocessing.load(row["image"]) for row in rows]).numpy()
    exported = np.concatenate([session.run(["probabilities"], {"images": images[start : start + 50]})[0]
                               for start in range(0, len(images), 50)])
    # `aimonk predict` with the export prints what onnxruntime computes, decided by the same rule
    _run("predict", str(ROOT / "images"), "--model", str(model.with_suffix(".onnx")), "--csv",
         str(tmp_path / "onnx.csv"))
    onnx_rows = list(csv.DictReader((tmp_path / "onnx.csv").open(encoding="utf-8")))
    assert [row["image"] for row in onnx_rows] == [row["image"] for row in rows]
    for row, theirs in zip(onnx_rows, exported, strict=True):
        assert [row[f"p_{name}"] for name in meta["attributes"]] == [f"{q:.6f}" for q in theirs.astype(float)]
        assert [row[name] for name in meta["attributes"]] == \
            ["" if d is None else str(int(d)) for d in rule_of(meta).decisions(theirs.astype(float).tolist())]
    predicted = [prediction.probabilities for prediction in Predictor(model).predict([row["image"] for row in rows])]
    decided_entries, differ = 0, 0
    for row, ours, theirs in zip(rows, predicted, exported, strict=True):
        for name, p, q, threshold, decided in zip(meta["attributes"], ours, theirs, meta["thresholds"],
                                                  meta["decided"], strict=True):
            if not decided:
                assert row[name] == ""
                continue
            assert int(row[name]) == int(p >= threshold)  # the CSV's decision is the probability's
            assert abs(_logit(p) - _logit(q)) < noise(_logit(p)), (row["image"], name, p, q)
            if int(row[name]) != int(q >= threshold):  # only where the two sit on either side, within the noise
                differ += 1
                assert abs(_logit(p) - _logit(threshold)) < noise(_logit(p)), (row["image"], name, p, q, threshold)
            decided_entries += 1
    assert len(rows) == 400 and differ <= 0.01 * decided_entries


def test_export_int8_then_predict_with_it_decides_as_predict_does_on_nearly_every_entry(tuned, predicted, tmp_path):
    """int8 moves the probabilities (measured here: at most 0.06 on the demo set's random 64 px backbones), so a
    decision near its threshold may flip: at most 2 % of the decided entries may differ, each within 0.1 of its
    threshold. The rule in the file is the checkpoint's."""
    onnxruntime, onnx = pytest.importorskip("onnxruntime"), pytest.importorskip("onnx")
    printed = _run("export", "--model", str(tuned), "--quantize", "int8", "--out", str(tmp_path / "m.int8.onnx"))
    assert "int8 (QDQ, per-channel True), calibrated on 256 images of the training images in" in printed
    session = onnxruntime.InferenceSession(str(tmp_path / "m.int8.onnx"), providers=["CPUExecutionProvider"])
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert rule_of(meta) == DecisionRule.of(load_checkpoint(tuned)) and meta["format"] == "aimonk-onnx-v2"
    assert meta["quantization"]["type"] == "int8" and meta["quantization"]["calibration_images"] == 256
    assert any(node.op_type == "DequantizeLinear" for node in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node)
    tables = {"pth": predicted, "int8": _predicted(tmp_path / "m.int8.onnx", tmp_path / "int8.csv")}
    decided_entries, differ = 0, 0
    for ours, theirs in zip(tables["pth"], tables["int8"], strict=True):
        assert ours["image"] == theirs["image"]
        for name, threshold, decided in zip(meta["attributes"], meta["thresholds"], meta["decided"], strict=True):
            assert (ours[name] == "") == (theirs[name] == "") == (not decided)
            if decided:
                decided_entries += 1
                if ours[name] != theirs[name]:
                    differ += 1
                    assert abs(float(ours[f"p_{name}"]) - threshold) < 0.1, (ours["image"], name)
    assert len(tables["int8"]) == 400 and differ <= 0.02 * decided_entries, (differ, decided_entries)


def _logit(p: float) -> float:
    """The logit, within what float32 probabilities (ONNX's) tell apart: +-16."""
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def test_evaluate_and_tune_read_the_features_training_stored(tuned, monkeypatch):
    opened = []
    monkeypatch.setattr(PIL.Image, "open", lambda *args, **kwargs: opened.append(args[0]))
    _run("evaluate", "--model", str(tuned), "--data-dir", str(ROOT), "--bootstrap", "0")
    assert opened == []


def test_a_warm_train_reads_no_image_and_never_reads_back_its_checkpoint(tmp_path, monkeypatch):
    common = ["--data-dir", str(ROOT), "--weights", "none", "--image-size", "32", "--workers", "0", "--no-progress",
              "--cache-dir", str(tmp_path / "cache")]
    _run("train", "--out-dir", str(tmp_path / "cold"), "--epochs", "1", *common)
    opened, loaded = [], []
    monkeypatch.setattr(PIL.Image, "open", lambda *args, **kwargs: opened.append(args[0]))
    load = aimonk.checkpoint.load_safely
    monkeypatch.setattr(aimonk.checkpoint, "load_safely", lambda path: loaded.append(path) or load(path))
    printed = _run("train", "--out-dir", str(tmp_path / "warm"), "--epochs", "2", "--lr", "1e-3", *common)
    assert "400 of 400 images' features from the cache" in printed
    assert opened == [] and loaded == []
    warm = load_checkpoint(tmp_path / "warm" / MODEL_FILE)
    assert warm["validation"]["images"] == len(warm["val_files"]) == 83  # scored, from the stored features
