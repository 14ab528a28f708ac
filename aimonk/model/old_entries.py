"""Entries of the layout that aimonk wrote before shards: one `.npy` file per image, `<2 hex>/<image sha256>.npy`
in the cache folder. A run still reads them, moves those it reads into a shard and deletes their files, saying so
in one line; `aimonk cache` lists and clears them as before."""

from __future__ import annotations

import functools
import io
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from aimonk.model.shards import finite_rows

ENTRY = re.compile(r"([0-9a-f]{2})/\1[0-9a-f]{62}\.npy")  # <2 hex>/<image sha256>.npy
PREFIX = re.compile(r"[0-9a-f]{2}")


class DamagedEntry(ValueError):
    """A file that is not a complete entry of the expected shape, dtype and finite values; says why."""


def entry_path(folder: Path, digest: str) -> Path:
    return Path(folder) / digest[:2] / f"{digest}.npy"


def has_old_entries(folder: Path) -> bool:
    """Whether the folder holds a folder of old entries (one listing of the cache folder)."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.is_dir() and PREFIX.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


@functools.cache
def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """What `np.save` writes before the values of an array of this shape and dtype."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype))
    return buffer.getvalue()[: -int(np.prod(shape)) * dtype.itemsize or None]


def read_entry(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array at `path`, which must be exactly what `np.save` writes for `shape` and `dtype` (so only a bounded
    read, and no parsing); DamagedEntry saying why not (OSError if it cannot be opened). Values are not checked."""
    header, size = npy_header(shape, dtype), int(np.prod(shape)) * dtype.itemsize
    with open(path, "rb") as file:
        data = file.read(len(header) + size + 1)
    if not data.startswith(header):
        if not data:
            raise DamagedEntry("empty")
        if header.startswith(data):
            raise DamagedEntry("truncated")
        raise DamagedEntry("of another shape or dtype" if data.startswith(b"\x93NUMPY") else "not an array file")
    if len(data) != len(header) + size:
        raise DamagedEntry("truncated" if len(data) < len(header) + size else "longer than its header says")
    return np.frombuffer(data, dtype, offset=len(header)).reshape(shape)


def read_old_entries(folder: Path, digests: list[str], shape: tuple[int, ...], dtype: np.dtype,
                     damaged: Counter[str]) -> dict[str, np.ndarray]:
    """The intact old entries of these image digests; damaged ones are counted in `damaged` by why."""
    found = {}
    for digest in dict.fromkeys(digests):
        try:
            entry = read_entry(entry_path(folder, digest), shape, dtype)
        except FileNotFoundError:
            continue
        except DamagedEntry as error:
            damaged[str(error)] += 1
            continue
        except OSError as error:
            damaged[f"unreadable: {error.strerror or error}"] += 1
            continue
        if finite_rows(entry.reshape(1, -1).view(np.uint8), dtype)[0]:
            found[digest] = entry
        else:
            damaged["not finite"] += 1
    return found
