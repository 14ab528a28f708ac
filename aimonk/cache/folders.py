"""`aimonk cache`: the feature cache's folders under a cache root, what each holds, and clearing exactly the files the
cache made there. A folder without the marker (a user's, even one holding a
key.json) is never listed nor touched; a file the cache did not make stays, and so does its folder."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from aimonk.cache.store import ENTRY, INDEX, KEY, LOCK, MARKER, SHARD, is_cache_folder, read_json, shard_entries
from aimonk.errors import AimonkError
from aimonk.io import listed


def made_by_cache(relative: str) -> bool:
    """Whether a file at this path inside a cache folder is one the cache writes: the marker, key.json, a shard, the
    digest index and its lock, an entry of the old layout ('ab/abcd....npy'), or a temporary file of one of them
    left by an interrupted atomic write."""
    folder, _, name = relative.rpartition("/")
    if name.startswith(".") and name.endswith(".tmp"):  # atomic_file's ".{name}.{random}.tmp"
        name = name[1:].rsplit(".", 2)[0]
    path = f"{folder}/{name}" if folder else name
    return path in (MARKER, KEY, INDEX, LOCK) or SHARD.fullmatch(path) is not None or ENTRY.fullmatch(path) is not None


def _files(folder: Path) -> list[str]:
    """Every file under `folder` as a relative POSIX path; symbolic links are files here, never followed."""
    found = []
    for top, folders, names in os.walk(folder):
        links = [name for name in folders if os.path.islink(os.path.join(top, name))]
        found += [Path(top, name).relative_to(folder).as_posix() for name in names + links]
    return sorted(found)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def cache_contents(root: Path) -> list[dict]:
    """One entry per cache folder under `root`: its key (what was run) and how many entries ("files", from each
    shard's header, and old one-file entries) and bytes it holds."""
    entries = []
    for folder in sorted(marker.parent for marker in Path(root).glob(f"*/{MARKER}") if is_cache_folder(marker.parent)):
        names = _files(folder)
        shards = [folder / name for name in names if SHARD.fullmatch(name)]
        old = [folder / name for name in names if ENTRY.fullmatch(name)]
        key = read_json(folder / KEY)
        entries.append({"folder": folder, "key": key if isinstance(key, dict) else {},
                        "files": sum(map(shard_entries, shards)) + len(old), "bytes": sum(map(_size, shards + old))})
    return entries


def clear_cache(root: Path) -> int:
    """Delete the files the cache made under `root`, and the folders that leaves empty; bytes freed. Files it did not
    make are kept, with their folders, and named in one warning."""
    freed, kept = 0, []
    for entry in cache_contents(root):
        freed += _clear_folder(entry["folder"], kept)
    if kept:
        warnings.warn(f"kept {len(kept)} file(s) that the feature cache did not make, and their folders: "
                      f"{listed([str(path) for path in kept])}", stacklevel=2)
    return freed


def _clear_folder(folder: Path, kept: list[Path]) -> int:
    """Delete the files the cache made in `folder` (the marker last: an interrupted clear leaves a folder that is
    still the cache's), then the folders emptied; bytes freed. Appends the files kept."""
    names = _files(folder)
    kept += [folder / name for name in names if not made_by_cache(name)]
    freed = 0
    for name in sorted(filter(made_by_cache, names), key=lambda name: name == MARKER):
        freed += _size(folder / name)
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError as error:
            raise AimonkError(f"{folder / name}: cannot delete: {error.strerror or error}") from None
    for top, _, _ in os.walk(folder, topdown=False):
        if not os.path.islink(top):
            with contextlib.suppress(OSError):  # not empty: it holds what was kept
                os.rmdir(top)
    return freed


def describe_folder(entry: dict) -> str:
    """One line of `aimonk cache` for an entry of `cache_contents`: its name, entries, size and what was run."""
    key = entry["key"]
    what = (f"{key.get('frozen_stages', '?')} frozen stage(s), {key.get('precision', '?')}, "
            f"{key.get('preprocessing', {}).get('image_size', '?')} px, "
            f"{key.get('preprocessing', {}).get('resize', 'squash')}")
    return f"{entry['folder'].name}  {entry['files']:7d} images  {entry['bytes'] / 2**20:9.1f} MiB  {what}"
