"""The on-disk feature cache: what the frozen part of a model outputs for each image, kept between runs, keyed by the
image's content, the frozen weights, preprocessing and precision. `FeatureCache` implements the core's `FeatureStore`
(`aimonk.model.features`); `disk_stores` gives one per frozen backbone, preprocessing and precision.

- A folder per key, made the cache's by its marker (`aimonk-cache.json`) and `key.json`; a folder the cache did not
  make is never used nor touched.
- Entries packed into shards (aimonk/cache/shards.py): files of up to `MAX_ENTRIES` entries (or `MAX_BYTES`), each
  written once, atomically, and never changed, so that a warm run reads its features in a few large reads; each
  entry with a checksum, compared when it is read. A shard that is not what its header says (empty, torn, of another
  shape, of an older format) is set aside whole and its images recomputed; an entry that is not as written (its
  checksum) or not finite, alone.
- The content digest of each image, remembered with the file's identity (absolute path, size, modification and
  change times, inode, device) in `digests.npz`, so that a warm run stats its images instead of reading and hashing
  them, as git's index and ccache's direct mode do. A file modified less than `FRESH_SECONDS` ago is hashed but not
  remembered (git's "racily clean" rule). Saving reads the index again under a lock and merges, so concurrent runs
  and the processes of a torchrun job keep each other's entries; a damaged index is rebuilt with one warning.

What the cache promises (it never fails a run: damaged entries are recomputed, a cache that cannot be written or
used is left alone, one warning each) is written down once, in docs/validation.md; the tests check each promise.
Entries are not fsynced: one torn by a crash is found and recomputed the next time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from aimonk.cache.shards import MAX_BYTES, MAX_ENTRIES, encode_shard, read_shards, shard_name
from aimonk.config import TrainConfig
from aimonk.data.images import Preprocessing
from aimonk.errors import AimonkError
from aimonk.io import atomic_file
from aimonk.model.features import Stores, module_fingerprint, output_shape

FEATURES_VERSION = "pil-draft-bilinear-bnfold-stages-v4"  # bump when decoding, resizing or the forward pass changes
MARKER = "aimonk-cache.json"  # written by the cache alone, into each folder it makes
MARKER_TEXT = json.dumps({"format": "aimonk-feature-cache-v1"}).encode()
KEY = "key.json"  # what was run: backbone fingerprint, preprocessing, precision
ENTRY = re.compile(r"([0-9a-f]{2})/\1[0-9a-f]{62}\.npy")  # an entry of the layout before shards: one file an image


def read_json(path: Path) -> object:
    """The JSON value in the file, or None if it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def is_cache_folder(folder: Path) -> bool:
    """Whether the cache made `folder`: it holds the marker, as the cache writes it."""
    return read_json(Path(folder) / MARKER) == json.loads(MARKER_TEXT)


def remove_old_entries(folder: Path) -> int:
    """Delete the entries of the layout before shards (`ab/ab....npy`, no longer read) and the folders that leaves
    empty; how many were deleted."""
    removed = 0
    try:
        with os.scandir(folder) as entries:
            prefixes = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False) and len(entry.name) == 2]
    except OSError:
        return 0
    for prefix in map(Path, prefixes):
        for path in prefix.glob("*.npy"):
            if ENTRY.fullmatch(f"{prefix.name}/{path.name}"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        with contextlib.suppress(OSError):
            prefix.rmdir()  # once empty
    return removed


def default_cache_dir() -> Path:
    return Path(os.environ.get("AIMONK_CACHE_DIR") or Path.home() / ".cache" / "aimonk" / "features")


# The digests of the images.

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


# The store.


class FeatureCache:
    """One folder per (frozen weights, preprocessing, precision): shards of entries, each (2, *output shape), and the
    index of the images' digests."""

    def __init__(self, root: Path, backbone: nn.Module, preprocessing: Preprocessing, precision: str):
        # an entry: the output for an image in both orientations; bf16 kept as its raw bits (see to_storable)
        self.shape = output_shape(backbone, (2, 3, preprocessing.image_size, preprocessing.image_size))
        self.dtype = np.dtype(np.int16 if precision == "bf16" else np.float32)
        self.entry_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.writable = self.readable = True  # until a write fails; until the folder is found unusable
        self.damaged: Counter[str] = Counter()  # why shards or entries read this run were not usable
        self.pending: list[tuple[str, np.ndarray]] = []  # stored, not yet in a shard
        self.hits = 0  # images whose features came from the cache
        self._digests: list[str] = []  # of the paths of the last `get`
        description = {
            "backbone_sha256": module_fingerprint(backbone),
            "frozen_stages": len(backbone) if isinstance(backbone, nn.Sequential) else None,
            "preprocessing": preprocessing.as_dict(),
            "precision": precision,
            "features_version": FEATURES_VERSION,
        }
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
        self.folder = Path(root) / key
        self._open(description)
        self.readable = self.readable and os.access(self.folder, os.R_OK | os.X_OK)
        self.index = DigestIndex(self.folder) if self.readable else None
        if self.writable and (removed := remove_old_entries(self.folder)):
            warnings.warn(f"{self.folder}: {removed} entries in the one-file-per-image layout of an older aimonk, "
                          "which is no longer read, were deleted; their images are computed again into shards",
                          stacklevel=2)

    def _open(self, description: dict) -> None:
        """Make the folder the cache's (key.json, then the marker), adopt one an older aimonk made without the
        marker, or give up on a folder that is not the cache's or cannot be one."""
        existing = next((path for path in (self.folder, *self.folder.parents) if os.path.exists(path)), None)
        if existing is not None and not os.path.isdir(existing):
            return self._give_up(f"{existing}: is a file, not a folder")
        key, ours = self.folder / KEY, is_cache_folder(self.folder)
        if not ours and os.path.exists(key) and read_json(key) != json.loads(json.dumps(description)):
            return self._give_up(f"{key}: not written by the feature cache for this model")
        if not os.path.exists(key):
            self._write(key, json.dumps(description, indent=2).encode())
        if not ours:
            self._write(self.folder / MARKER, MARKER_TEXT)
        return None

    def _give_up(self, why: str) -> None:
        self.writable = self.readable = False
        warnings.warn(f"{why}; the feature cache is not used for this run", stacklevel=4)

    def get(self, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        """The entries the cache holds of these images (by content), and which were found."""
        self._digests = self.digests(paths)
        return self.load_many(self._digests)

    def put(self, index: int, entry: np.ndarray) -> None:
        self.store(self._digests[index], entry)

    def close(self) -> None:
        self.flush()
        self.report_damaged()

    def digests(self, paths: Sequence[Path]) -> list[str]:
        """Each image's digest, from the index where the file is as it was when it was hashed."""
        return self.index.digests(paths) if self.index else [file_digest(path) for path in paths]

    def load_many(self, digests: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The entries (one per digest, in order) the cache holds intact of the images with these digests, newest
        shard first, and which were found; damaged shards and entries are counted in `damaged` (a damaged shard is
        deleted: its images are recomputed)."""
        unique = list(dict.fromkeys(digests))
        rows, found = np.zeros((len(unique), self.entry_bytes), np.uint8), np.zeros(len(unique), bool)
        if self.readable:
            rows, found = read_shards(self.folder, [bytes.fromhex(digest) for digest in unique], self.entry_bytes,
                                      self.dtype, self.damaged)
        if len(unique) < len(digests):  # copies of an image: its entry for each
            inverse = np.array(list(map({digest: i for i, digest in enumerate(unique)}.__getitem__, digests)))
            rows, found = rows[inverse], found[inverse]
        return rows.view(self.dtype).reshape(len(digests), *self.shape), found

    def store(self, digest: str, features: np.ndarray) -> None:
        """Keep an entry for the next shard, written once it is full (or at `flush`)."""
        self.pending.append((digest, features))
        if len(self.pending) >= MAX_ENTRIES or len(self.pending) * self.entry_bytes >= MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the entries kept into a new shard and save the digest index."""
        if self.pending:
            digests, entries = map(list, zip(*self.pending, strict=True))
            self._write(self.folder / shard_name(), encode_shard(self.folder.name, digests, entries))
        self.pending.clear()
        if self.writable and self.index:
            self.index.save(self._write)

    def _write(self, path: Path, data: bytes) -> None:
        """Write atomically, unless a write already failed; a failure is one warning, never an error."""
        if not self.writable:
            return
        try:
            with atomic_file(path, durable=False) as file:
                file.write(data)
        except AimonkError as error:
            self.writable = False
            warnings.warn(f"{error}; the feature cache is not written for the rest of this run", stacklevel=2)

    def report_damaged(self) -> None:
        """One warning for the damaged shards and entries read so far (then forgotten)."""
        if self.damaged:
            count = sum(self.damaged.values())
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.damaged.most_common())
            held = "it held was" if count == 1 else "they held were"
            warnings.warn(f"{count} damaged feature-cache {'file was' if count == 1 else 'files were'} set aside "
                          f"({reasons}) in {self.folder}; the images {held} recomputed", stacklevel=2)
            self.damaged.clear()


def disk_stores(feature_cache: bool = True, cache_dir: str | Path | None = None) -> Stores | None:
    """Feature caches under `cache_dir` (default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features), one per frozen
    backbone, preprocessing and precision; None where `feature_cache` is off (`config_stores` for a training
    config)."""
    if not feature_cache:
        return None
    root = Path(cache_dir) if cache_dir else default_cache_dir()

    def store(backbone: nn.Module, preprocessing: Preprocessing, precision: str) -> FeatureCache:
        return FeatureCache(root, backbone, preprocessing, precision)

    return store


def config_stores(config: TrainConfig) -> Stores | None:
    """The feature caches a training config names (its `feature_cache` and `cache_dir` settings)."""
    return disk_stores(config.feature_cache, config.cache_dir)


def model_stores(checkpoint: dict) -> Stores | None:
    """The feature caches a checkpoint's training run used (its `feature_cache` and `cache_dir` settings), where its
    validation images' features already are; the default cache where that folder is not on this machine."""
    settings = checkpoint.get("train_config") or {}
    cache_dir = settings.get("cache_dir")
    here = isinstance(cache_dir, str) and Path(cache_dir).is_dir()
    return disk_stores(settings.get("feature_cache", True) is not False, cache_dir if here else None)
