"""The content digest (SHA-256) of each image, remembered with the file's identity so that a warm run stats its
images instead of reading and hashing their bytes, as git's index and ccache's direct mode do.

The identity is the file's absolute path, size, modification and change times (ns), inode and device: anything
that writes the file changes one of them, and the file is hashed again. A file modified less than
`FRESH_SECONDS` ago is hashed but not remembered (git's "racily clean" rule: a write within the clock's
resolution might not change the times). A renamed or copied image has a new identity: it is hashed once, and its
digest (its bytes') finds its features, as before.

The index is one file beside the cache's entries (`digests.npz`), replaced atomically. Saving reads the file
again under a lock and merges, so concurrent runs and the processes of a torchrun job keep each other's entries.
A damaged index is rebuilt, with one warning; one that cannot be written is left as it is (the cache says so).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

INDEX = "digests.npz"
LOCK = "digests.lock"  # held while the index is read, merged and replaced
FRESH_SECONDS = 2.0  # a file modified this recently is hashed every time (its times may not show the next write)
Identity = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: a renamed or copied image hits the cache, an edited one misses."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def identity(stat: os.stat_result) -> Identity:
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev


class DigestIndex:
    """What `digests.npz` in `folder` remembers: absolute path -> (identity, digest)."""

    def __init__(self, folder: Path):
        self.path, self.lock = Path(folder) / INDEX, Path(folder) / LOCK
        self.known: dict[str, tuple[Identity, bytes]] | None = None  # read at the first use
        self.added: dict[str, tuple[Identity, bytes]] = {}  # remembered this run, not saved yet
        self.hashed = 0  # files read and hashed this run

    def digests(self, paths: Sequence[Path]) -> list[str]:
        """The digest of each file (OSError if one cannot be read), hashing only those not remembered as they are."""
        if self.known is None:
            self.known = self._read(warn=True)
        now, found = time.time_ns(), []
        for path in paths:
            name = os.path.abspath(path)
            stat = os.stat(name)
            now_is, known = identity(stat), self.known.get(name)
            if known is not None and known[0] == now_is:
                found.append(known[1].hex())
                continue
            found.append(file_digest(Path(name)))
            self.hashed += 1
            if now - stat.st_mtime_ns >= FRESH_SECONDS * 1e9:
                self.added[name] = self.known[name] = (now_is, bytes.fromhex(found[-1]))
        return found

    def save(self, write: Callable[[Path, bytes], None]) -> None:
        """Merge what this run remembered into the index on disk, written with `write(path, data)` (atomic)."""
        if not self.added:
            return
        try:
            with self._locked():
                merged = {**self._read(warn=False), **self.added}
                write(self.path, encode(merged))
        except OSError:
            return  # cannot even lock: a read-only cache; the entries are hashed again next time
        self.added.clear()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self, warn: bool) -> dict[str, tuple[Identity, bytes]]:
        try:
            data = self.path.read_bytes()
        except OSError:
            return {}
        try:
            return decode(data)
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as error:
            if warn:
                warnings.warn(f"{self.path}: damaged ({str(error) or 'not an index'}); it is rebuilt, every image "
                              f"hashed once", stacklevel=4)
            return {}


def encode(entries: dict[str, tuple[Identity, bytes]]) -> bytes:
    names = [name.encode("utf-8", "surrogateescape") for name in entries]
    buffer = io.BytesIO()
    np.savez(buffer, names=np.frombuffer(b"\0".join(names), np.uint8),
             identities=np.array([identity for identity, _ in entries.values()], np.int64).reshape(-1, 5),
             digests=np.frombuffer(b"".join(digest for _, digest in entries.values()), np.uint8).reshape(-1, 32))
    return buffer.getvalue()


def decode(data: bytes) -> dict[str, tuple[Identity, bytes]]:
    """The entries of an index file; ValueError (KeyError, OSError, EOFError, BadZipFile) if not a complete one."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        names, identities, digests = arrays["names"], arrays["identities"], arrays["digests"]
    names = names.tobytes().decode("utf-8", "surrogateescape").split("\0") if len(names) else []
    if identities.shape != (len(names), 5) or digests.shape != (len(names), 32) or identities.dtype != np.int64:
        raise ValueError("its arrays do not match")
    rows, hashes = identities.tolist(), digests.tobytes()
    return {name: (tuple(row), hashes[32 * i : 32 * i + 32])
            for i, (name, row) in enumerate(zip(names, rows, strict=True))}
