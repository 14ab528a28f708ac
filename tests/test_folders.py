"""Finding images in folders: recursive, hidden entries skipped, symbolic-link loops safe, a stable natural order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from aimonk.cli import main
from aimonk.data.images import image_files


def _image(path: Path, kind: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format=kind)
    return path


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """A photo collection in parts: mixed formats, hidden entries, a notes file, a link loop and a second link."""
    root = tmp_path / "photos"
    _image(root / "top.JPG")
    _image(root / "part_10" / "image_1.png", "PNG")
    _image(root / "part_2" / "image_10.webp", "WEBP")
    _image(root / "part_2" / "image_2.tif", "TIFF")
    _image(root / "part_2" / "deeper" / "x.bmp", "BMP")
    _image(root / "part_2" / ".thumbnail.jpg")
    _image(root / ".cache" / "hidden.jpg")
    (root / "part_2" / "notes.txt").write_text("not an image")
    os.symlink("..", root / "part_2" / "deeper" / "loop")  # back to part_2: a loop
    os.symlink("part_10", root / "zz_alias")  # a folder reached twice: listed once
    return root


EXPECTED = ["part_2/deeper/x.bmp", "part_2/image_2.tif", "part_2/image_10.webp", "part_10/image_1.png", "top.JPG"]


def test_folders_are_searched_recursively_in_natural_order(collection):
    assert image_files([collection]) == [collection / name for name in EXPECTED]


def test_names_are_relative_to_the_folder_given(collection, monkeypatch):
    monkeypatch.chdir(collection.parent)
    assert [str(path) for path in image_files(["photos"])] == [f"photos/{name}" for name in EXPECTED]
    monkeypatch.chdir(collection)
    assert [str(path) for path in image_files(["."])] == EXPECTED


def test_files_are_kept_as_given_even_hidden_and_mixed_with_folders(collection):
    hidden = collection / "part_2" / ".thumbnail.jpg"
    assert image_files([hidden, collection / "part_10"]) == [hidden, collection / "part_10" / "image_1.png"]


def test_predict_on_a_folder_of_subfolders(collection, tiny_model, capsys):
    assert main(["predict", str(collection), "--model", str(tiny_model)]) == 0
    printed = [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == [str(collection / name) for name in EXPECTED]
