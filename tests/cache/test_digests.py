"""The digest index: a file is hashed again exactly when its identity (path, size, times, inode) changes, a renamed
or copied file is hashed once, an edited one always; concurrent savers keep each other's entries; a damaged index is
rebuilt with one warning; a file written in the last seconds is never remembered."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest

import aimonk.cache.store
from aimonk.cache.store import INDEX, DigestIndex, decode
from aimonk.io import atomic_file

AN_HOUR_AGO = time.time() - 3600


def write(path: Path, data: bytes) -> None:
    with atomic_file(path, durable=False) as file:
        file.write(data)


def old_file(path: Path, data: bytes) -> Path:
    """A file last modified an hour ago: old enough to be remembered."""
    path.write_bytes(data)
    os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files hashed, in order."""
    names: list[str] = []
    digest = aimonk.cache.store.file_digest

    def counting(path: Path) -> str:
        names.append(Path(path).name)
        return digest(path)

    monkeypatch.setattr(aimonk.cache.store, "file_digest", counting)
    return names


def warm(folder: Path, paths: list[Path]) -> list[str]:
    """The digests of `paths` from a new index on `folder`, saved after."""
    index = DigestIndex(folder)
    digests = index.digests(paths)
    index.save(write)
    return digests


def test_a_remembered_file_is_not_hashed_until_its_identity_changes(tmp_path, hashed):
    paths = [old_file(tmp_path / f"{i}.jpg", bytes([i]) * 100) for i in range(3)]
    assert warm(tmp_path, paths) == [sha(bytes([i]) * 100) for i in range(3)] and len(hashed) == 3
    hashed.clear()
    assert warm(tmp_path, paths) == [sha(bytes([i]) * 100) for i in range(3)] and hashed == []
    os.utime(paths[1], (AN_HOUR_AGO - 60, AN_HOUR_AGO - 60))  # touched, not changed: hashed again, same digest
    assert warm(tmp_path, paths)[1] == sha(bytes([1]) * 100) and hashed == ["1.jpg"]


def test_an_edited_file_misses_even_with_its_size_and_time_kept(tmp_path, hashed):
    path = old_file(tmp_path / "a.jpg", b"A" * 100)
    assert warm(tmp_path, [path]) == [sha(b"A" * 100)]
    old_file(path, b"B" * 100)  # same size, same modification time: its change time tells
    hashed.clear()
    assert warm(tmp_path, [path]) == [sha(b"B" * 100)] and hashed == ["a.jpg"]
    replacement = old_file(tmp_path / "new.jpg", b"C" * 100)
    os.replace(replacement, path)  # another file under the same name (another inode)
    hashed.clear()
    assert warm(tmp_path, [path]) == [sha(b"C" * 100)] and hashed == ["a.jpg"]


def test_a_renamed_or_copied_file_is_hashed_once_and_gives_the_same_digest(tmp_path, hashed):
    original = old_file(tmp_path / "a.jpg", b"an image")
    warm(tmp_path, [original])
    renamed = tmp_path / "b.jpg"
    os.rename(original, renamed)
    copied = tmp_path / "c.jpg"
    shutil.copy2(renamed, copied)
    os.utime(copied, (AN_HOUR_AGO, AN_HOUR_AGO))
    hashed.clear()
    assert warm(tmp_path, [renamed, copied]) == [sha(b"an image")] * 2 and hashed == ["b.jpg", "c.jpg"]
    hashed.clear()
    assert warm(tmp_path, [renamed, copied]) == [sha(b"an image")] * 2 and hashed == []


def test_a_file_written_in_the_last_seconds_is_hashed_every_time_and_not_remembered(tmp_path, hashed):
    fresh, old = tmp_path / "fresh.jpg", old_file(tmp_path / "old.jpg", b"old")
    fresh.write_bytes(b"fresh")
    for _ in range(2):
        assert warm(tmp_path, [fresh, old]) == [sha(b"fresh"), sha(b"old")]
    assert hashed == ["fresh.jpg", "old.jpg", "fresh.jpg"]
    assert list(decode((tmp_path / INDEX).read_bytes())) == [str(old)]
    before = (tmp_path / INDEX).stat()
    warm(tmp_path, [fresh])  # nothing new to remember: the index is not written again
    assert (tmp_path / INDEX).stat() == before


def test_concurrent_savers_keep_each_others_entries(tmp_path, hashed):
    first, second = DigestIndex(tmp_path), DigestIndex(tmp_path)  # both opened before either saved
    mine = [old_file(tmp_path / f"mine_{i}.jpg", bytes([i])) for i in range(3)]
    theirs = [old_file(tmp_path / f"theirs_{i}.jpg", bytes([10 + i])) for i in range(2)]
    first.digests(mine)
    second.digests(theirs)
    first.save(write)
    second.save(write)
    assert sorted(decode((tmp_path / INDEX).read_bytes())) == sorted(str(path) for path in mine + theirs)
    hashed.clear()
    warm(tmp_path, mine + theirs)
    assert hashed == []


@pytest.mark.parametrize("content", [b"", b"not an index", b"PK\x03\x04 torn zip"], ids=["empty", "garbage", "torn"])
def test_a_damaged_index_is_rebuilt_with_one_warning(tmp_path, hashed, content):
    path = old_file(tmp_path / "a.jpg", b"an image")
    warm(tmp_path, [path])
    (tmp_path / INDEX).write_bytes(content)
    hashed.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warm(tmp_path, [path]) == [sha(b"an image")]
    [message] = [str(warning.message) for warning in caught]
    assert message.startswith(f"{tmp_path / INDEX}: damaged (") and message.endswith("); it is rebuilt, every image "
                                                                                     "hashed once")
    assert hashed == ["a.jpg"]
    hashed.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warm(tmp_path, [path]) == [sha(b"an image")]
    assert caught == [] and hashed == []
