"""The data a training run uses (prepare_data): missing and unreadable images named and left out, or the run
stopped under --strict (by rank 0's word under torchrun); the split fixed by its own seed; hidden labels only among
the training images."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pytest

import aimonk.distributed
import aimonk.train.training
from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.distributed import Distributed
from aimonk.errors import AimonkError, ImageReadError
from aimonk.train.prepare import report_left_out
from aimonk.train.training import train

# --- training: a bad image is named and skipped with a warning, or fails the run under strict ---


def _config(data_dir: Path, tmp_path: Path, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data_dir), out_dir=str(tmp_path / "out"), weights="none", image_size=32, epochs=1,
                    batch_size=8, workers=0, progress=False, cache_dir=str(tmp_path / "cache"))
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture
def damaged_dataset(small_dataset: Path) -> Path:
    """The small dataset with one unreadable image (text named .jpg) and one missing image."""
    (small_dataset / "images" / "img_5.jpg").write_text("not an image")
    (small_dataset / "images" / "img_7.jpg").unlink()
    return small_dataset


@pytest.mark.parametrize(("feature_cache", "workers"), [(True, 0), (False, 0), (True, 2), (False, 2)])
def test_training_skips_bad_images_with_a_warning_naming_them(damaged_dataset, tmp_path, feature_cache, workers):
    config = _config(damaged_dataset, tmp_path, feature_cache=feature_cache, workers=workers)
    with pytest.warns(UserWarning) as caught:
        result = train(config)
    messages = [str(warning.message) for warning in caught]
    assert any("missing" in message and "img_7.jpg" in message for message in messages), messages
    assert any("unreadable" in message and "img_5.jpg" in message for message in messages), messages
    assert sorted(result.data.skipped) == ["img_5.jpg", "img_7.jpg"]
    assert len(result.data.train_rows) + len(result.data.val_rows) == 22
    assert sorted(load_checkpoint(result.model_path)["skipped_files"]) == ["img_5.jpg", "img_7.jpg"]  # on record


@pytest.mark.parametrize("feature_cache", [True, False])
def test_strict_training_fails_naming_the_unreadable_image(small_dataset, tmp_path, feature_cache):
    (small_dataset / "images" / "img_5.jpg").write_bytes(b"")
    with pytest.raises(AimonkError, match=r"1 unreadable image\(s\) \(--strict\): .*img_5\.jpg"):
        train(_config(small_dataset, tmp_path, feature_cache=feature_cache, strict=True))
    assert not (tmp_path / "out" / "aimonk_model.pth").exists()


def test_strict_training_fails_naming_the_missing_images(damaged_dataset, tmp_path):
    (damaged_dataset / "images" / "img_9.jpg").unlink()
    with pytest.raises(AimonkError, match=r"2 missing image\(s\) \(--strict\): img_7\.jpg, img_9\.jpg"):
        train(_config(damaged_dataset, tmp_path, strict=True))


def test_split_seed_fixes_the_split_while_the_seed_changes_training(small_dataset: Path, tmp_path: Path):
    settings = dict(data_dir=str(small_dataset), weights="none", epochs=1, batch_size=4, lr=1e-2, image_size=32,
                    workers=0, progress=False, val_fraction=0.25)
    runs = [train(TrainConfig(out_dir=str(tmp_path / str(seed)), seed=seed, split_seed=0, **settings))
            for seed in (0, 1)]
    assert runs[0].data.files(runs[0].data.val_rows) == runs[1].data.files(runs[1].data.val_rows)
    assert runs[0].history != runs[1].history
    other = train(TrainConfig(out_dir=str(tmp_path / "other"), seed=0, split_seed=5, **settings))
    assert other.data.files(other.data.val_rows) != runs[0].data.files(runs[0].data.val_rows)


def test_hidden_training_labels_leave_the_validation_labels_whole(small_dataset: Path, tmp_path: Path):
    settings = dict(data_dir=str(small_dataset), weights="none", epochs=1, image_size=32, workers=0, progress=False,
                    val_fraction=0.25)
    whole = train(TrainConfig(out_dir=str(tmp_path / "a"), **settings)).data
    hidden = train(TrainConfig(out_dir=str(tmp_path / "b"), hide_labels=0.5, **settings)).data
    assert np.array_equal(hidden.table.known[hidden.val_rows], whole.table.known[whole.val_rows])
    assert hidden.table.known[hidden.train_rows].sum() < 0.6 * whole.table.known[whole.train_rows].sum()


def test_under_strict_every_process_stops_and_rank_0_alone_says_why(tmp_path, monkeypatch, capsys):
    config = TrainConfig(out_dir=str(tmp_path / "out"), strict=True)
    names = [f"image_{i}.jpg" for i in range(7)]
    with pytest.raises(AimonkError, match=r"^7 unreadable image\(s\) \(--strict\)$"):
        monkeypatch.setattr(aimonk.distributed, "_world", Distributed(rank=1, world_size=2))
        report_left_out("unreadable", names, config)
    assert not (tmp_path / "out").exists()  # the full list is rank 0's to write
    with pytest.raises(AimonkError, match=r"\(full list in .*unreadable_images.txt\)$"):
        monkeypatch.setattr(aimonk.distributed, "_world", Distributed(rank=0, world_size=2))
        report_left_out("unreadable", names, config)
    assert (tmp_path / "out" / "unreadable_images.txt").read_text().split() == names

    monkeypatch.setenv("RANK", "1")  # what every process meets alike, rank 0 reports; an unreadable image, its reader
    assert main(["train", "--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(aimonk.train.training, "train", Mock(side_effect=ImageReadError("x.jpg: cannot read image")))
    assert main(["train"]) == 2
    assert capsys.readouterr().err == "aimonk: error: x.jpg: cannot read image\n"
