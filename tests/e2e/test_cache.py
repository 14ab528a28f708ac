"""The feature cache under `aimonk train` and `aimonk cache`: a damaged cache healed (bit rot and a shard of another
model included: the model trained equals the clean cache's), a full one outlived, a file
given as the cache one warning, each cache folder shown and only what the cache made cleared (never a user's folder
with a key.json, nor a file of the user's inside a cache folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import (
    DAMAGE,
    feature_cache_message,
    flip_signs,
    rewrite_shard,
    train_arguments,
    train_cached,
    train_config,
)

from aimonk.cli import main
from aimonk.io import HISTORY_FILE


def test_aimonk_train_heals_a_damaged_cache_and_outlives_a_full_one(small_dataset, tmp_path, capsys, full_disk):
    cache = tmp_path / "cache"
    arguments = ["train", "--data-dir", str(small_dataset), "--out-dir", str(tmp_path / "out"), "--cache-dir",
                 str(cache), "--weights", "none", "--image-size", "32", "--epochs", "1", "--workers", "0",
                 "--quiet"]
    assert main(arguments) == 0
    [shard] = sorted(cache.rglob("shard-*.bin"))
    DAMAGE["truncated"](shard)
    capsys.readouterr()
    assert main(arguments) == 0
    warning = capsys.readouterr().err
    assert warning == f"aimonk: warning: {feature_cache_message(shard.parent, '1 truncated')}\n"
    assert main(arguments) == 0 and capsys.readouterr().err == ""

    shutil.rmtree(cache)
    full_disk(room=0, under=cache)
    assert main(arguments) == 0
    warning = capsys.readouterr().err
    assert warning.startswith(f"aimonk: warning: {cache}") and warning.count("\n") == 1, warning
    assert ": cannot write: No space left on device; the feature cache is not written" in warning
    assert (tmp_path / "out" / "aimonk_model.pth").is_file()


@pytest.mark.parametrize("damage", ["bit flips", "a shard of another model"])
def test_aimonk_train_on_a_cache_whose_bytes_changed_warns_once_and_trains_the_clean_model(small_dataset, tmp_path,
                                                                                          capsys, damage):
    """The sign bit of every 32nd bf16 value flipped (all finite), or a shard written for another model (its entries
    the same images', from another cache folder): each entry's checksum no longer matches; the entries are computed
    again, with one warning, and the loss history is the clean cache's, digit for digit."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    arguments = train_arguments(small_dataset, out, "--epochs", "1", "--precision", "bf16")
    assert main(arguments) == 0
    clean = (out / HISTORY_FILE).read_text()
    [shard] = sorted(cache.rglob("shard-*.bin"))
    if damage == "bit flips":
        flip_signs(shard, itemsize=2)
    else:
        rewrite_shard(shard, lambda rows: rows, key="another-cache-folder")
    capsys.readouterr()
    assert main(arguments) == 0
    entries = len((small_dataset / "labels.txt").read_text().splitlines())
    message = feature_cache_message(shard.parent, f"{entries} not as written", entries)
    assert capsys.readouterr().err == f"aimonk: warning: {message}\n"
    assert (out / HISTORY_FILE).read_text() == clean
    assert main(arguments) == 0 and capsys.readouterr().err == ""  # healed: read from the new shard


@pytest.mark.slow
def test_aimonk_cache_shows_each_cache_folder_and_clears_only_what_the_cache_made(small_dataset, tmp_path, capsys):
    cache = tmp_path / "cache"
    train_cached(train_config(small_dataset, cache))
    train_cached(train_config(small_dataset, cache, trainable_stages=1, out_dir=str(tmp_path / "finetuned")))
    (cache / "notes.txt").write_text("mine")  # not the cache's: never deleted
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "24 images" in lines[0] and "24 images" in lines[1]
    assert {"5 frozen stage(s)" in lines[0] + lines[1], "4 frozen stage(s)" in lines[0] + lines[1]} == {True}
    assert lines[2].startswith(f"{cache}: 2 cache folder(s)")
    assert main(["cache", "--cache-dir", str(cache), "--clear"]) == 0
    assert sorted(path.name for path in cache.iterdir()) == ["notes.txt"]


def test_aimonk_cache_clear_never_deletes_a_user_folder_with_a_key_json(small_dataset, tmp_path, capsys):
    project, credentials = tmp_path / "project", tmp_path / "project" / "credentials"
    credentials.mkdir(parents=True)
    (credentials / "key.json").write_text('{"api_key": "secret"}')
    (credentials / "notes.txt").write_text("where the key came from")
    assert main(train_arguments(small_dataset, tmp_path / "out", "--epochs", "1", "--cache-dir", str(project))) == 0
    [cache] = [path for path in project.iterdir() if path != credentials]
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(project)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{cache.name}       24 images")
    assert lines[1].startswith(f"{project}: 1 cache folder(s)")
    assert main(["cache", "--clear", "--cache-dir", str(project)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"cleared {project}: ") and err == ""
    assert sorted(path.relative_to(project).as_posix() for path in project.rglob("*")) == \
        ["credentials", "credentials/key.json", "credentials/notes.txt"]
    assert (credentials / "key.json").read_text() == '{"api_key": "secret"}'
    assert main(["cache", "--clear", "--cache-dir", str(credentials)]) == 0  # the folder itself as the cache root
    assert sorted(path.name for path in credentials.iterdir()) == ["key.json", "notes.txt"]


def test_aimonk_cache_clear_keeps_a_stray_file_in_a_cache_folder_and_says_so(small_dataset, tmp_path, capsys):
    assert main(train_arguments(small_dataset, tmp_path / "out", "--epochs", "1")) == 0
    [cache] = list((tmp_path / "cache").iterdir())
    (cache / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["cache", "--clear", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().err == f"aimonk: warning: kept 1 file(s) that the feature cache did not make, and " \
                                      f"their folders: {cache / 'notes.txt'}\n"
    assert [path.relative_to(tmp_path / "cache") for path in (tmp_path / "cache").rglob("*")] == \
        [Path(cache.name), Path(cache.name) / "notes.txt"]


def test_aimonk_train_with_a_file_as_cache_dir_warns_once_and_trains(small_dataset, tmp_path, capsys):
    (tmp_path / "cache").write_text("a file, not a folder")
    assert main(train_arguments(small_dataset, tmp_path / "out", "--epochs", "1")) == 0
    assert capsys.readouterr().err == f"aimonk: warning: {tmp_path / 'cache'}: is a file, not a folder; the feature " \
                                      f"cache is not used for this run\n"
    assert (tmp_path / "out" / "aimonk_model.pth").is_file()
    assert (tmp_path / "cache").read_text() == "a file, not a folder"


def test_the_end_of_run_line_says_how_many_processes_trained_and_how_many_features_came_from_the_cache(
        small_dataset, tmp_path, capsys):
    arguments = train_arguments(small_dataset, tmp_path / "out", "--epochs", "1")
    for from_cache in (0, 24):
        assert main(arguments) == 0
        [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trained on ")]
        assert line.startswith("trained on 18 images by 1 process, 6 held out for validation, 0 skipped, "
                               f"{from_cache} of 24 images' features from the cache; final loss "), line
    assert main([*arguments, "--no-feature-cache"]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trained on ")]
    assert line.startswith("trained on 18 images by 1 process, 6 held out for validation, 0 skipped; final loss ")
