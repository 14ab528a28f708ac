"""`aimonk demo` writes the demo dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import label_rows
from PIL import Image

from aimonk.cli import main as aimonk_main


def test_cli_writes_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert aimonk_main(["demo", "--out-dir", str(tmp_path), "--n-images", "5", "--seed", "2", "--size", "40"]) == 0
    assert len(label_rows(tmp_path / "labels.txt")) == 5
    assert Image.open(tmp_path / "images" / "image_0.jpg").size == (40, 40)
    assert "labels.txt" in capsys.readouterr().out
