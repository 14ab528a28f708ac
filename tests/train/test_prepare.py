"""The data a training run uses (prepare_data): missing and unreadable images named and left out, or the run
stopped under --strict (by rank 0's word under torchrun); the split fixed by its own seed; hidden labels only among
the training images; nothing to learn from (every label NA, or none among the training images) or a part of the split
empty refused in one line, an attribute without a known training label named in a warning."""

from __future__ import annotations

import math
import re
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pytest
import torch
from helpers import label_table, train_cached, write_dataset

import aimonk.train.training
import aimonk.world
from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.errors import AimonkError, ImageReadError
from aimonk.train.training import report_left_out, split_rows
from aimonk.world import World

# --- training: a bad image is named and skipped with a warning, or fails the run under strict ---


def _config(data_dir: Path, tmp_path: Path, recipe: str = "reference", **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data_dir), out_dir=str(tmp_path / "out"), weights="none", image_size=32, epochs=1,
                    batch_size=8, workers=0, progress=False, cache_dir=str(tmp_path / "cache"))
    return TrainConfig.from_recipe(recipe, **{**settings, **overrides})


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
        result = train_cached(config)
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
        train_cached(_config(small_dataset, tmp_path, feature_cache=feature_cache, strict=True))
    assert not (tmp_path / "out" / "aimonk_model.pth").exists()


def test_strict_training_fails_naming_the_missing_images(damaged_dataset, tmp_path):
    (damaged_dataset / "images" / "img_9.jpg").unlink()
    with pytest.raises(AimonkError, match=r"2 missing image\(s\) \(--strict\): img_7\.jpg, img_9\.jpg"):
        train_cached(_config(damaged_dataset, tmp_path, strict=True))


def test_split_seed_fixes_the_split_while_the_seed_changes_training(small_dataset: Path, tmp_path: Path):
    settings = dict(data_dir=str(small_dataset), weights="none", epochs=1, batch_size=4, lr=1e-2, image_size=32,
                    workers=0, progress=False, val_fraction=0.25)
    runs = [train_cached(TrainConfig(out_dir=str(tmp_path / str(seed)), seed=seed, split_seed=0, **settings))
            for seed in (0, 1)]
    assert runs[0].data.files(runs[0].data.val_rows) == runs[1].data.files(runs[1].data.val_rows)
    assert runs[0].history != runs[1].history
    other = train_cached(TrainConfig(out_dir=str(tmp_path / "other"), seed=0, split_seed=5, **settings))
    assert other.data.files(other.data.val_rows) != runs[0].data.files(runs[0].data.val_rows)


def test_hidden_training_labels_leave_the_validation_labels_whole(small_dataset: Path, tmp_path: Path):
    settings = dict(data_dir=str(small_dataset), weights="none", epochs=1, image_size=32, workers=0, progress=False,
                    val_fraction=0.25)
    whole = train_cached(TrainConfig(out_dir=str(tmp_path / "a"), **settings)).data
    hidden = train_cached(TrainConfig(out_dir=str(tmp_path / "b"), hide_labels=0.5, **settings)).data
    assert np.array_equal(hidden.table.known[hidden.val_rows], whole.table.known[whole.val_rows])
    assert hidden.table.known[hidden.train_rows].sum() < 0.6 * whole.table.known[whole.train_rows].sum()


def test_under_strict_every_process_stops_and_rank_0_alone_says_why(tmp_path, monkeypatch, capsys):
    config = TrainConfig(out_dir=str(tmp_path / "out"), strict=True)
    names = [f"image_{i}.jpg" for i in range(7)]
    with pytest.raises(AimonkError, match=r"^7 unreadable image\(s\) \(--strict\)$"):
        monkeypatch.setattr(aimonk.world, "WORLD", World(rank=1, world_size=2))
        report_left_out("unreadable", names, config)
    assert not (tmp_path / "out").exists()  # the full list is rank 0's to write
    with pytest.raises(AimonkError, match=r"\(full list in .*unreadable_images.txt\)$"):
        monkeypatch.setattr(aimonk.world, "WORLD", World(rank=0, world_size=2))
        report_left_out("unreadable", names, config)
    assert (tmp_path / "out" / "unreadable_images.txt").read_text().split() == names

    monkeypatch.setenv("RANK", "1")  # what every process meets alike, rank 0 reports; an unreadable image, its reader
    assert main(["train", "--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(aimonk.train.training, "train", Mock(side_effect=ImageReadError("x.jpg: cannot read image")))
    assert main(["train"]) == 2
    assert capsys.readouterr().err == "aimonk: error: x.jpg: cannot read image\n"


# --- nothing to learn from, and splits with an empty part ---


def _labelled(tmp_path: Path, values: list[str]) -> Path:
    """A data set of one 32-px image per label line `values[i]` (after the file name)."""
    return write_dataset(tmp_path / "data", [f"img_{i}.jpg {line}" for i, line in enumerate(values)], size=32)


def _fixed_split(monkeypatch: pytest.MonkeyPatch, train_rows: int, images: int) -> None:
    """The first `train_rows` images train, the rest validate."""
    monkeypatch.setattr(aimonk.train.training, "stratified_split",
                        lambda table, fraction, seed: (np.arange(train_rows), np.arange(train_rows, images)))


@pytest.mark.parametrize("recipe", ["reference", "recommended"])
def test_every_label_na_is_refused_in_one_line_before_anything_is_written(tmp_path, recipe):
    data = _labelled(tmp_path, ["NA NA"] * 12)
    config = _config(data, tmp_path, recipe)
    message = f"{data / 'labels.txt'}: no known label among the 12 labelled images: nothing to learn from"
    with pytest.raises(AimonkError, match=f"^{re.escape(message)}$"):
        train_cached(config)
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "cache").exists()  # no image was read


def test_known_labels_on_validation_images_only_are_refused_as_nothing_to_train_on(tmp_path, monkeypatch):
    data = _labelled(tmp_path, ["NA NA"] * 9 + ["1 0", "0 1", "1 NA"])
    _fixed_split(monkeypatch, 9, 12)
    message = f"{data / 'labels.txt'}: no known label among the 9 training images: nothing to learn from"
    with pytest.raises(AimonkError, match=f"^{re.escape(message)}$"):
        train_cached(_config(data, tmp_path))
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("recipe", "pos_weight"), [("reference", "none"), ("reference", "balanced"),
                                                    ("recommended", "none"), ("recommended", "balanced")])
def test_an_attribute_without_a_known_training_label_is_named_in_a_warning_and_nothing_is_nan(
    tmp_path, monkeypatch, recipe, pos_weight
):
    """Attr2 is known on validation images only, Attr3 nowhere: the model still trains Attr1, all finite."""
    data = _labelled(tmp_path, [f"{i % 2} {'NA' if i < 12 else i % 2} NA" for i in range(16)])
    _fixed_split(monkeypatch, 12, 16)
    config = _config(data, tmp_path, recipe, pos_weight=pos_weight)
    message = (f"{data / 'labels.txt'}: no known label of Attr2, Attr3 among the 12 training images: the outputs of "
               "these 2 learn nothing")
    with pytest.warns(UserWarning, match=f"^{re.escape(message)}$"):
        result = train_cached(config)
    head = torch.load(result.model_path, weights_only=True)["state_dict"]
    assert result.history and all(math.isfinite(loss) for loss in result.history)
    assert torch.isfinite(head["head.weight"]).all() and torch.isfinite(head["head.bias"]).all()


def test_a_single_known_label_is_something_to_learn_from(tmp_path, recwarn):
    data = _labelled(tmp_path, ["1 NA"] + ["NA NA"] * 11)
    result = train_cached(_config(data, tmp_path, val_fraction=0.0))
    assert len(result.data.train_rows) == 12 and math.isfinite(result.history[-1])
    assert [str(warning.message).rsplit(": ", 1)[-1] for warning in recwarn] == ["its output learns nothing"]


@pytest.mark.parametrize(("fraction", "images", "held_out"), [(0.95, 12, 12), (0.92, 12, 12), (0.2, 1, 1),
                                                              (0.5, 1, 1)])
def test_a_val_fraction_leaving_nothing_to_train_on_is_refused_naming_it_and_the_counts(fraction, images, held_out):
    message = (f"--val-fraction {fraction} on {images} usable images: {held_out} held out for validation, 0 left to "
               "train on; each part needs an image (lower it, or 0 to train on all of them)")
    with pytest.raises(AimonkError, match=f"^{re.escape(message)}$"):
        split_rows(label_table(np.arange(images) % 2), fraction, 0)


def test_a_split_that_leaves_no_validation_image_is_refused(monkeypatch):
    _fixed_split(monkeypatch, 12, 12)  # iterative stratification can miss the count, down to nothing held out
    message = ("--val-fraction 0.05 on 12 usable images: 0 held out for validation, 12 left to train on; each part "
               "needs an image (raise it, or 0 to train on all of them)")
    with pytest.raises(AimonkError, match=f"^{re.escape(message)}$"):
        split_rows(label_table(np.arange(12) % 2), 0.05, 0)


@pytest.mark.parametrize(("fraction", "images"), [(0.9, 12), (0.5, 2), (0.01, 12), (0.0, 1), (0.0, 12)])
def test_a_val_fraction_leaving_an_image_in_each_part_or_0_splits_as_before(fraction, images):
    table = label_table(np.arange(images)[:, None] // [1, 2] % 2)
    train_rows, val_rows = split_rows(table, fraction, 0)
    assert (len(val_rows) > 0) == (fraction > 0) and len(train_rows) > 0
    assert sorted([*train_rows, *val_rows]) == list(range(images))


def test_the_reported_val_fraction_of_0_95_on_12_images_is_refused_before_training(tmp_path):
    data = _labelled(tmp_path, [f"{i % 2} {(i // 2) % 2}" for i in range(12)])
    with pytest.raises(AimonkError, match=r"^--val-fraction 0\.95 on 12 usable images: 12 held out for validation"):
        train_cached(_config(data, tmp_path, val_fraction=0.95))
    assert list((tmp_path / "out").iterdir()) == []
