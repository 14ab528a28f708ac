"""The feature cache's folders: only those with the cache's marker are listed and cleared, and only the files the
cache made in them are deleted (a user's folder with a key.json, or a note beside the entries, stays); the entries
are counted from the shards' headers."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from aimonk.cache.folders import MARKER, cache_contents, clear_cache, is_cache_folder, made_by_cache
from aimonk.cache.store import FeatureCache, shard_paths
from aimonk.data.images import Preprocessing

DIGEST = hashlib.sha256(b"an image").hexdigest()


def real_cache(root: Path, entries: int = 3) -> FeatureCache:
    """A cache folder as a training run leaves it: marker, key.json and `entries` entries."""
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    cache = FeatureCache(root, backbone, Preprocessing(32), "fp32")
    for i in range(entries):
        cache.store(hashlib.sha256(bytes([i])).hexdigest(), np.zeros(cache.shape, cache.dtype))
    cache.flush()
    return cache


def user_folder(folder: Path) -> dict[str, bytes]:
    """The reported example: a user's folder holding a key.json and a notes file; what it holds, by name."""
    files = {"key.json": b'{"api_key": "secret"}', "notes.txt": b"do not lose"}
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def cleared(root: Path) -> tuple[int, list[str]]:
    """clear_cache(root): the bytes it says it freed, and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        freed = clear_cache(root)
    return freed, [str(warning.message) for warning in caught]


def test_clear_cache_never_touches_a_user_folder_with_a_key_json(tmp_path):
    files = user_folder(tmp_path / "credentials")
    cache = real_cache(tmp_path)
    assert [entry["folder"] for entry in cache_contents(tmp_path)] == [cache.folder]
    freed, messages = cleared(tmp_path)
    assert freed > 0 and messages == [] and not cache.folder.exists()
    assert {path.name: path.read_bytes() for path in (tmp_path / "credentials").iterdir()} == files


@pytest.mark.parametrize("marker", [b'{"format": "something else"}', b"not json", b""])
def test_a_folder_whose_marker_the_cache_did_not_write_is_neither_listed_nor_cleared(tmp_path, marker):
    user_folder(tmp_path / "project")
    (tmp_path / "project" / MARKER).write_bytes(marker)
    (tmp_path / "project" / "ab").mkdir()
    (tmp_path / "project" / "ab" / f"ab{DIGEST[2:]}.npy").write_bytes(b"an entry's name, but not the cache's")
    before = sorted(tmp_path.rglob("*"))
    assert not is_cache_folder(tmp_path / "project") and cache_contents(tmp_path) == []
    assert cleared(tmp_path) == (0, []) and sorted(tmp_path.rglob("*")) == before


def test_clear_cache_deletes_a_whole_cache_and_says_how_many_bytes_it_freed(tmp_path):
    cache = real_cache(tmp_path, entries=5)
    [entry] = cache_contents(tmp_path)
    assert entry["folder"] == cache.folder and entry["files"] == 5 and entry["key"]["precision"] == "fp32"
    size = sum(path.stat().st_size for path in cache.folder.rglob("*") if path.is_file())
    assert cleared(tmp_path) == (size, []) and list(tmp_path.iterdir()) == []
    assert cleared(tmp_path) == (0, [])  # nothing left to clear
    assert cleared(tmp_path / "no such folder") == (0, [])


def test_clear_cache_keeps_the_files_it_did_not_make_and_their_folders_and_names_them(tmp_path):
    cache = real_cache(tmp_path)
    [shard] = shard_paths(cache.folder)
    entry = cache.folder / DIGEST[:2] / f"{DIGEST}.npy"  # an entry of the layout before shards
    entry.parent.mkdir()
    np.save(entry, np.zeros(cache.shape, cache.dtype))
    left_by_a_crash = [cache.folder / ".key.json.k3x_9abc.tmp", entry.parent / f".{entry.name}.q1w2e3r4.tmp",
                       cache.folder / f".{shard.name}.a1b2c3.tmp", cache.folder / ".digests.npz.x1y2.tmp"]
    strays = [cache.folder / "notes.txt", cache.folder / "features.npy", entry.parent / "mine.npy",
              cache.folder / "cd" / entry.name, cache.folder / ".notes.txt.abc.tmp", entry.parent / "sub" / "x"]
    for path in left_by_a_crash + strays:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"1234")
    freed, messages = cleared(tmp_path)
    assert sorted(path for path in tmp_path.rglob("*") if path.is_file()) == sorted(strays)
    assert sorted(path for path in tmp_path.rglob("*") if path.is_dir()) == \
        sorted({cache.folder, entry.parent, entry.parent / "sub", strays[3].parent})  # the rest, emptied, removed
    assert freed > 0 and cache_contents(tmp_path) == [] and len(messages) == 1
    assert messages[0].startswith("kept 6 file(s) that the feature cache did not make, and their folders: ")
    full_list = Path(messages[0].rsplit("(full list in ", 1)[1].removesuffix(")"))
    assert sorted(full_list.read_text().splitlines()) == sorted(str(path) for path in strays)


def test_one_stray_file_is_named_in_the_warning(tmp_path):
    cache = real_cache(tmp_path)
    (cache.folder / "notes.txt").write_text("mine")
    assert cleared(tmp_path)[1] == [f"kept 1 file(s) that the feature cache did not make, and their folders: "
                                    f"{cache.folder / 'notes.txt'}"]
    assert sorted(path.name for path in cache.folder.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(("name", "made"), [
    (MARKER, True), ("key.json", True), (f"ab/ab{DIGEST[2:]}.npy", True),
    (f".{MARKER}.a1b2c3d4.tmp", True), (".key.json.zz_9.tmp", True), (f"ab/.ab{DIGEST[2:]}.npy.k2j3h4g5.tmp", True),
    ("notes.txt", False), ("key.json.bak", False), ("Key.json", False), ("ab/key.json", False),
    (f"ab/cd{DIGEST[2:]}.npy", False), (f"AB/AB{DIGEST[2:].upper()}.npy", False), (f"ab/ab{DIGEST[3:]}.npy", False),
    (f"ab{DIGEST[2:]}.npy", False), (f"x/ab/ab{DIGEST[2:]}.npy", False), (f"ab/ab{DIGEST[2:]}.npy.txt", False),
    (".notes.txt.a1b2.tmp", False), (".key.json.tmp", False), ("key.json.a1b2.tmp", False),
    ("shard-0123456789abcdef-01234567.bin", True), (".shard-0123456789abcdef-01234567.bin.k2j3.tmp", True),
    ("digests.npz", True), ("digests.lock", True), (".digests.npz.a1b2.tmp", True),
    ("shard-0123456789abcdef-0123456.bin", False), ("ab/shard-0123456789abcdef-01234567.bin", False),
    ("shard-0123456789ABCDEF-01234567.bin", False), ("ab/digests.npz", False),
])
def test_the_files_the_cache_makes_are_known_by_name(name, made):
    assert made_by_cache(name) is made


def test_an_emptied_cache_folder_is_listed_with_no_entries(tmp_path):
    cache = real_cache(tmp_path, entries=0)
    key = json.loads((cache.folder / "key.json").read_text())
    assert cache_contents(tmp_path) == [{"folder": cache.folder, "key": key, "files": 0, "bytes": 0}]
