"""The synthetic demo dataset: deterministic, with the intended label statistics, and shipped unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT as REPO
from helpers import label_rows
from PIL import Image

from aimonk.cli import main
from aimonk.data.demo import ATTRIBUTE_PREVALENCE, NA_RATE, draw_image, make_demo_dataset
from aimonk.errors import AimonkError


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root`, by relative path."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset with the default arguments (seed 0, 400 images)."""
    out_dir = tmp_path_factory.mktemp("demo_default")
    make_demo_dataset(out_dir)
    return out_dir


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_demo_dataset(first, n_images=60, seed=3)
    (second / "images").mkdir(parents=True)
    (second / "images" / "image_99.jpg").write_bytes(b"stale")  # must be removed by regeneration
    make_demo_dataset(second, n_images=60, seed=3)
    assert _files(first) == _files(second)
    assert len(list((first / "images").glob("*.jpg"))) == 60


def test_different_seed_gives_different_labels(tmp_path: Path) -> None:
    a = make_demo_dataset(tmp_path / "a", n_images=60, seed=0)
    b = make_demo_dataset(tmp_path / "b", n_images=60, seed=1)
    assert a.read_bytes() != b.read_bytes()


def test_label_file_format(default_set: Path) -> None:
    raw = (default_set / "labels.txt").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n") and not raw.startswith(b"\xef\xbb\xbf")
    rows = label_rows(default_set / "labels.txt")
    assert [row[0] for row in rows] == [f"image_{i}.jpg" for i in range(400)]
    assert all(len(row) == 5 and set(row[1:]) <= {"0", "1", "NA"} for row in rows)


def test_label_statistics(default_set: Path) -> None:
    values = np.array([row[1:] for row in label_rows(default_set / "labels.txt")])
    missing = values == "NA"
    assert not missing.all(axis=1).any()
    assert abs(missing.mean() - NA_RATE) < 0.02
    for column, target in enumerate(ATTRIBUTE_PREVALENCE):
        assert abs(missing[:, column].mean() - NA_RATE) < 0.04
        known = values[~missing[:, column], column]
        assert abs((known == "1").mean() - target) < 0.06, f"Attr{column + 1}"


def test_images_are_small_rgb_jpegs(default_set: Path) -> None:
    with Image.open(default_set / "images" / "image_0.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (96, 96))
    total = sum(path.stat().st_size for path in (default_set / "images").glob("*.jpg"))
    assert total < 4_000_000


def test_attributes_are_visible() -> None:
    """Crude pixel checks: warm vs cool hue, dark circle, yellow square."""
    rng = np.random.default_rng(0)
    warm = np.asarray(draw_image([1, 0, 0, 0], rng), dtype=float)
    cool = np.asarray(draw_image([0, 0, 0, 0], rng), dtype=float)
    assert warm[..., 0].mean() > warm[..., 2].mean() and cool[..., 2].mean() > cool[..., 0].mean()
    circle = np.asarray(draw_image([1, 1, 0, 0], rng), dtype=float)
    assert (circle.max(axis=-1) < 90).mean() > 0.1
    square = np.asarray(draw_image([0, 0, 0, 1], rng), dtype=float)
    yellow = (square[..., 0] > 200) & (square[..., 1] > 200) & (square[..., 2] < 90)
    assert yellow.sum() > 50


def test_shipped_dataset_matches_generator(default_set: Path) -> None:
    """The repo's top-level `labels.txt` and `images/` are what `make_demo_dataset(seed=0)` draws."""
    assert (REPO / "labels.txt").read_bytes() == (default_set / "labels.txt").read_bytes()
    shipped = sorted(path.name for path in (REPO / "images").glob("image_*.jpg"))
    assert shipped == sorted(path.name for path in (default_set / "images").glob("image_*.jpg"))
    for name in shipped:
        # Pixels, not bytes: another libjpeg build may encode the same picture slightly differently.
        ours = np.asarray(Image.open(REPO / "images" / name), dtype=np.int16)
        regenerated = np.asarray(Image.open(default_set / "images" / name), dtype=np.int16)
        assert np.abs(ours - regenerated).mean() < 1.0, name


@pytest.mark.parametrize("theirs", ["labels.txt", "images/holiday.jpg"])
def test_a_folder_holding_a_dataset_is_refused_and_kept_unless_overwrite(tmp_path: Path, theirs: str) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / theirs).write_bytes(b"the user's own")
    (tmp_path / "images" / "image_0.jpg").write_bytes(b"the user's photo")
    before = _files(tmp_path)
    with pytest.raises(AimonkError, match=r"already holds a dataset .*--overwrite"):
        make_demo_dataset(tmp_path, n_images=3)
    assert _files(tmp_path) == before
    make_demo_dataset(tmp_path, n_images=3, overwrite=True)
    assert (tmp_path / "images" / "image_0.jpg").read_bytes() != b"the user's photo"
    assert len(label_rows(tmp_path / "labels.txt")) == 3


def test_the_command_refuses_an_existing_dataset_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "labels.txt").write_text("image_0.jpg 1\n")
    assert main(["demo", "--out-dir", str(tmp_path), "--n-images", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a dataset" in err and "--overwrite" in err
    assert (tmp_path / "labels.txt").read_text() == "image_0.jpg 1\n" and not (tmp_path / "images").exists()
    assert main(["demo", "--out-dir", str(tmp_path), "--n-images", "3", "--overwrite"]) == 0
    assert len(label_rows(tmp_path / "labels.txt")) == 3
