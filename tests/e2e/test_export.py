"""`aimonk export`: an ONNX file of the whole model that onnxruntime runs as PyTorch does, with its metadata."""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT

from aimonk.cli import main
from aimonk.evaluate.export import Probabilities, check_images
from aimonk.evaluate.prediction import Predictor

onnx = pytest.importorskip("onnx")  # the optional extra aimonk[onnx], part of aimonk[dev]
onnxruntime = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # the export of the module's fixture takes seconds
DEMO_IMAGES = [str(ROOT / "images" / f"image_{i}.jpg") for i in range(12)]


def _one_error_line(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("aimonk: error: "), err
    assert all(word in err for word in words), err


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(model, ONNX file, what the command printed): checked by default on the checkpoint's validation images."""
    model = tmp_path_factory.mktemp("export") / "model.pth"
    model.write_bytes(tiny_model.read_bytes())
    printed = StringIO()
    with redirect_stdout(printed):
        assert main(["export", "--model", str(model)]) == 0
    return model, model.with_suffix(".onnx"), printed.getvalue()


def test_the_export_is_checked_on_the_validation_images_and_says_so(exported):
    model, path, printed = exported
    checkpoint = Predictor(model).checkpoint
    first, second = printed.splitlines()
    folder = Path(checkpoint["train_config"]["data_dir"]) / "images"
    assert first.startswith(f"checked on {len(checkpoint['val_files'])} images of {folder}: probabilities differ "
                            "from PyTorch fp32 by at most ")
    assert second == f"wrote {path}"


def test_onnxruntime_gives_pytorchs_probabilities_on_the_demo_images(exported):
    model, path, _ = exported
    predictor = Predictor(model)
    images, _ = check_images(predictor, DEMO_IMAGES)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = Probabilities(predictor.model, predictor.rule.temperatures).eval()(images).numpy()
    for batch in (images[:1], images[1:6], images):  # the batch axis is dynamic
        start = 0 if len(batch) != 5 else 1
        got = session.run(["probabilities"], {"images": batch.numpy()})[0]
        np.testing.assert_allclose(got, expected[start : start + len(batch)], atol=1e-4, rtol=0)
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]


def test_the_metadata_says_what_inference_needs(exported):
    model, path, _ = exported
    checkpoint = Predictor(model).checkpoint
    meta = {key: json.loads(value) for key, value in
            onnxruntime.InferenceSession(str(path)).get_modelmeta().custom_metadata_map.items()}
    assert meta["attributes"] == ["Attr1", "Attr2"] and meta["thresholds"] == checkpoint["thresholds"]
    assert meta["preprocessing"] == {**checkpoint["preprocessing"], "resize": "squash", "interpolation": "bilinear",
                                     "crop_share": 0.875}
    assert meta["backbone"] == "resnet18" and meta["weights_origin"] == "random"
    assert meta["output"].startswith("probabilities: ") and meta["input"].startswith("images: ")


def test_a_failed_check_is_an_error_and_leaves_no_file(exported, tmp_path, monkeypatch, capsys):
    model, path, _ = exported
    monkeypatch.setattr("aimonk.evaluate.export._onnx_model", lambda *args: onnx.load(str(path)))  # no second export
    monkeypatch.setattr("aimonk.evaluate.export.TOLERANCE", -1.0)
    out = tmp_path / "model.onnx"
    assert main(["export", "--model", str(model), "--out", str(out), "--check-images", *DEMO_IMAGES[:3]]) == 2
    _one_error_line(capsys.readouterr().err, f"{out}: not written", "differ from PyTorch's", "on 3 images")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not-onnx", "no-metadata", "no-onnxruntime"])
def test_predict_with_an_onnx_file_that_is_not_an_export_is_one_error_line(exported, tmp_path, monkeypatch, capsys,
                                                                          case):
    path = tmp_path / "model.onnx"
    if case == "not-onnx":
        path.write_text("not a model")
    elif case == "no-metadata":
        proto = onnx.load(str(exported[1]))
        del proto.metadata_props[:]
        onnx.save(proto, str(path))
    elif case == "no-onnxruntime":
        path = exported[1]
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
    words = {"missing": [f"{path}: model file not found"], "not-onnx": [f"{path}: onnxruntime cannot load it"],
             "no-metadata": [f"{path}: not an aimonk ONNX export of format aimonk-onnx-v2"],
             "no-onnxruntime": ["needs onnxruntime: pip install 'aimonk[onnx]'"]}[case]
    assert main(["predict", DEMO_IMAGES[0], "--model", str(path)]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, *words)
    assert captured.out == ""


def test_int8_without_calibration_images_is_one_error_line_and_writes_nothing(exported, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "m.int8.onnx"
    assert main(["export", "--model", str(exported[0]), "--quantize", "int8", "--out", str(out),
                 "--check-images", DEMO_IMAGES[0], "--calibration-images", str(tmp_path / "empty")]) == 2
    _one_error_line(capsys.readouterr().err, "no readable image in", "--calibration-images")
    assert not out.exists()


@pytest.mark.parametrize("case", ["unknown-format", "unwritable", "no-check-images", "no-onnxruntime"])
def test_bad_input_is_one_error_line(exported, tmp_path, monkeypatch, capsys, case):
    model = exported[0]
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    argv = ["export", "--model", str(model), "--out", str(tmp_path / "out.onnx"), "--check-images", DEMO_IMAGES[0]]
    words = {"unknown-format": ["unknown export format 'tflite'", "formats: onnx"],
             "unwritable": [str(tmp_path / "file" / "m.onnx"), "cannot write"],
             "no-check-images": ["no readable image in", "--check-images"],
             "no-onnxruntime": ["onnxruntime is missing", "pip install 'aimonk[onnx]'"]}[case]
    if case == "unknown-format":
        argv += ["--format", "tflite"]
    elif case == "unwritable":
        argv += ["--out", str(tmp_path / "file" / "m.onnx")]
    elif case == "no-check-images":
        argv += ["--check-images", str(tmp_path / "empty")]
    else:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr("aimonk.evaluate.export._onnx_model", lambda *args: pytest.fail("exported despite bad input"))
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err, *words)
    assert not (tmp_path / "out.onnx").exists()


def test_the_export_pages_snippet_gives_pytorchs_probabilities(exported, capsys):
    model, path, _ = exported
    page = (ROOT / "docs" / "export.md").read_text()
    snippet = page.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'ort.InferenceSession("models/aimonk_model.onnx")' in snippet and '"photo.jpg"' in snippet
    namespace: dict = {}
    exec(snippet.replace("models/aimonk_model.onnx", str(path)).replace("photo.jpg", DEMO_IMAGES[0]), namespace)
    predictor = Predictor(model)
    images, _ = check_images(predictor, DEMO_IMAGES[:1])
    with torch.inference_mode():
        expected = Probabilities(predictor.model, predictor.rule.temperatures).eval()(images)[0].numpy()
    np.testing.assert_allclose(namespace["probabilities"], expected, atol=1e-4, rtol=0)
    present = [name for name, p, t in zip(predictor.attributes, namespace["probabilities"], predictor.thresholds,
                                          strict=True) if p >= t]
    assert capsys.readouterr().out == f"{present}\n"
