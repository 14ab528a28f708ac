"""`aimonk explain` writes one overlay per image and attribute; bad input is one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_dataset
from PIL import Image

from aimonk.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_dataset(tmp_path_factory.mktemp("data"), [f"img_{i}.jpg {i % 2} 1" for i in range(8)], size=32)
    out = tmp_path_factory.mktemp("model")
    assert main(["train", "--data-dir", str(data), "--out-dir", str(out), "--weights", "none", "--image-size", "32",
                 "--epochs", "1", "--workers", "0", "--no-progress", "--val-fraction", "0"]) == 0
    return out / "aimonk_model.pth"


def test_explain_writes_one_overlay_per_image_and_attribute_for_files_and_folders(model, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "part").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "a.jpg")
    Image.new("RGB", (40, 30), (10, 200, 10)).save(folder / "part" / "b.png")
    (folder / "part" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["explain", str(folder), "--model", str(model), "--out", str(out)]) == 1  # one image failed
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    base = folder.relative_to(folder.anchor).as_posix()
    expected = [f"{base}/{name}__{attribute}.png" for name in ("a", "part/b") for attribute in ("Attr1", "Attr2")]
    assert written == expected
    assert Image.open(out / written[0]).size == (40, 30)  # laid over the picture at its own size
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.jpg" in err


@pytest.mark.parametrize(("arguments", "message"), [
    (["--attributes", "Colour"], "no attribute Colour; it has Attr1, Attr2"),
    (["--out", "/dev/null/x"], "cannot write"),
])
def test_explain_bad_input_is_one_line(model, tmp_path, capsys, arguments, message):
    image = tmp_path / "a.jpg"
    Image.new("RGB", (20, 20)).save(image)
    argv = ["explain", str(image), "--model", str(model), "--out", str(tmp_path / "out"), *arguments]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aimonk: error: ") and err.count("\n") == 1 and message in err, err


def test_a_cropping_model_lays_its_maps_over_the_central_square_it_sees(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", [f"img_{i}.jpg {i % 2} 1" for i in range(8)], size=32)
    assert main(["train", "--data-dir", str(data), "--out-dir", str(tmp_path / "model"), "--weights", "none",
                 "--image-size", "32", "--resize", "crop", "--epochs", "1", "--workers", "0", "--no-progress",
                 "--val-fraction", "0"]) == 0
    Image.new("RGB", (80, 40), (200, 10, 10)).save(tmp_path / "wide.jpg")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "wide.jpg"), "--model", str(tmp_path / "model" / "aimonk_model.pth"),
                 "--out", str(out), "--attributes", "Attr1"]) == 0
    [written] = out.rglob("*.png")
    assert Image.open(written).size == (35, 35)  # the central 7/8 of the shorter side, what the model read
