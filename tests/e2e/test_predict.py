"""`aimonk predict`: a folder of subfolders in natural order; `--csv`, one row per image with probabilities,
decisions and errors, written atomically; and the start-up budget: nothing it imports pulls in the heavy analysis or
ONNX libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import COLLECTION_ORDER as EXPECTED
from helpers import write_dataset
from PIL import Image

from aimonk.checkpoint import save_tuning
from aimonk.cli import main
from aimonk.evaluate.prediction import Predictor


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested images, one of them unreadable (text saved as .jpg)."""
    rng = np.random.default_rng(0)
    for name in ["a/img_1.jpg", "a/img_2.png", "b/img_3.jpg", "img_4.jpg"]:
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / name)
    (tmp_path / "images" / "b" / "broken.jpg").write_text("not an image")
    return tmp_path / "images"


@pytest.fixture
def model(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model with thresholds that make some decisions 1 and some 0."""
    copy = tmp_path / "model.pth"
    copy.write_bytes(tiny_model.read_bytes())
    save_tuning(copy, thresholds=[0.0, 1.0])
    return copy


def test_csv_round_trip_one_row_per_image_with_the_error_column(model, folder, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(folder), "--model", str(model), "--csv", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    table = pd.read_csv(out)  # empty cells read as missing
    assert list(table.columns) == ["image", "p_Attr1", "p_Attr2", "Attr1", "Attr2", "error"]
    names = ["a/img_1.jpg", "a/img_2.png", "b/broken.jpg", "b/img_3.jpg", "img_4.jpg"]
    assert list(table["image"]) == [str(folder / name) for name in names]
    broken = table["image"] == str(folder / "b/broken.jpg")
    assert table.loc[broken, "error"].item().startswith(f"{folder / 'b/broken.jpg'}: cannot read image")
    assert table.loc[broken, ["p_Attr1", "p_Attr2", "Attr1", "Attr2"]].isna().all(axis=None)
    good = table[~broken]
    assert good["error"].isna().all()
    assert good[["p_Attr1", "p_Attr2"]].apply(lambda p: p.between(0, 1)).all(axis=None)
    assert list(good["Attr1"]) == [1] * 4 and list(good["Attr2"]) == [0] * 4  # thresholds 0 and 1
    printed = [json.loads(line) for line in captured.out.splitlines()]  # stdout is as without --csv
    assert [record["image"] for record in printed] == list(good["image"])
    np.testing.assert_allclose(good["p_Attr1"], [r["probabilities"]["Attr1"] for r in printed],
                               atol=1e-4)
    assert "broken.jpg" in captured.err


def test_csv_decisions_follow_the_predictors_decisions(model, folder, tmp_path):
    out = tmp_path / "predictions.csv"
    main(["predict", str(folder / "a"), "--model", str(model), "--csv", str(out)])
    predictor = Predictor(model)
    table = pd.read_csv(out)
    for row in table.itertuples(index=False):
        probabilities = [row.p_Attr1, row.p_Attr2]
        assert [row.Attr1, row.Attr2] == [int(d) for d in predictor.decisions(probabilities)]


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_unwritable_csv_is_one_error_line_before_any_work(model, folder, tmp_path, capsys, where):
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "out.csv" if where == "under-a-file" else folder
    assert main(["predict", str(folder), "--model", str(model), "--csv", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"aimonk: error: {out}: "), captured.err


def test_an_interrupted_run_leaves_the_previous_csv_whole(model, folder, tmp_path, monkeypatch):
    out = tmp_path / "predictions.csv"
    out.write_text("previous\n")
    original = Predictor.predict

    def interrupted(self, *args, **kwargs):
        yield next(original(self, *args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "predict", interrupted)
    assert main(["predict", str(folder), "--model", str(model), "--csv", str(out)]) == 130
    assert out.read_text() == "previous\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images", "model.pth", "predictions.csv"]


def test_predict_on_a_folder_of_subfolders(collection, tiny_model, capsys):
    assert main(["predict", str(collection), "--model", str(tiny_model)]) == 0
    printed = [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == [str(collection / name) for name in EXPECTED]


HEAVY = ("matplotlib", "sklearn", "pandas", "iterstrat", "scipy", "seaborn", "onnx", "onnxruntime", "onnxscript")


@pytest.mark.slow
def test_predict_imports_no_plotting_or_analysis_library_and_no_training_code(tmp_path: Path):
    data = write_dataset(tmp_path / "data", [f"img_{i}.jpg {i % 2} 1" for i in range(6)], size=32)
    out = tmp_path / "model"
    assert main(["train", "--data-dir", str(data), "--out-dir", str(out), "--weights", "none", "--image-size", "32",
                 "--epochs", "1", "--workers", "0", "--no-progress", "--val-fraction", "0"]) == 0
    image, model = str(data / "images" / "img_0.jpg"), str(out / "aimonk_model.pth")
    script = (
        "import sys\n"
        "from aimonk.cli import main\n"
        f"code = main(['predict', {image!r}, '--model', {model!r}])\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))\n"
        "print(sorted(name for name in sys.modules if name.startswith(('aimonk.train', 'aimonk.labelling', "
        "'aimonk.commands.training', 'aimonk.commands.labelling', 'aimonk.cache', 'aimonk.distributed'))))\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-2] == "[]", run.stdout
    assert run.stdout.splitlines()[-1] == "[]", run.stdout  # no training, labelling, cache or torchrun module


def test_a_named_pipe_among_the_images_is_one_line_and_the_others_are_predicted(model, folder, tmp_path):
    """A FIFO opened for reading waits for a writer forever: it is refused unopened, named in one line, the files
    around it predicted, and a folder holding it is read as if it were not there."""
    pipe = folder / "pipe.png"
    os.mkfifo(pipe)
    good = [folder / "img_4.jpg", folder / "a" / "img_1.jpg"]
    done = subprocess.run([sys.executable, "-m", "aimonk", "predict", str(good[0]), str(pipe), str(good[1]),
                           "--model", str(model), "--workers", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1  # as for a missing file: the run says one image failed
    assert done.stderr == f"aimonk: error: {pipe}: not an image file but a named pipe, so not opened\n"
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == [str(path) for path in good]
    assert main(["predict", str(folder), "--model", str(model), "--workers", "0"]) == 1  # broken.jpg alone fails
