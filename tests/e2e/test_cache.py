"""The feature cache under `aimonk train` and `aimonk cache`: a damaged cache healed, a full one outlived, each
cache folder shown and only what the cache made cleared."""

from __future__ import annotations

import shutil

import pytest
from helpers import DAMAGE, train_config

from aimonk.cli import main
from aimonk.train.training import train


def test_aimonk_train_heals_a_damaged_cache_and_outlives_a_full_one(small_dataset, tmp_path, capsys, full_disk):
    cache = tmp_path / "cache"
    arguments = ["train", "--data-dir", str(small_dataset), "--out-dir", str(tmp_path / "out"), "--cache-dir",
                 str(cache), "--weights", "none", "--image-size", "32", "--epochs", "1", "--workers", "0",
                 "--no-progress"]
    assert main(arguments) == 0
    entries = sorted(cache.rglob("*.npy"))
    for kind, entry in zip(["empty", "truncated", "garbage", "another shape"], entries, strict=False):
        DAMAGE[kind](entry)
    capsys.readouterr()
    assert main(arguments) == 0
    warning = capsys.readouterr().err
    assert warning.startswith("aimonk: warning: 4 damaged feature-cache entries were recomputed (") and \
        warning.count("\n") == 1, warning
    assert all(f"1 {kind}" in warning for kind in ["empty", "truncated", "not an array file", "of another shape"])
    assert main(arguments) == 0 and capsys.readouterr().err == ""

    shutil.rmtree(cache)
    full_disk(room=0, under=cache)
    assert main(arguments) == 0
    warning = capsys.readouterr().err
    assert warning.startswith(f"aimonk: warning: {cache}") and warning.count("\n") == 1, warning
    assert ": cannot write: No space left on device; the feature cache is not written" in warning
    assert (tmp_path / "out" / "aimonk_model.pth").is_file()


@pytest.mark.slow
def test_aimonk_cache_shows_each_cache_folder_and_clears_only_what_the_cache_made(small_dataset, tmp_path, capsys):
    cache = tmp_path / "cache"
    train(train_config(small_dataset, cache))
    train(train_config(small_dataset, cache, trainable_stages=1, out_dir=str(tmp_path / "finetuned")))
    (cache / "notes.txt").write_text("mine")  # not the cache's: never deleted
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "24 images" in lines[0] and "24 images" in lines[1]
    assert {"5 frozen stage(s)" in lines[0] + lines[1], "4 frozen stage(s)" in lines[0] + lines[1]} == {True}
    assert lines[2].startswith(f"{cache}: 2 cache folder(s)")
    assert main(["cache", "--cache-dir", str(cache), "--clear"]) == 0
    assert sorted(path.name for path in cache.iterdir()) == ["notes.txt"]
