"""The on-disk feature cache: what the frozen part of a model outputs for each image, kept between runs, keyed by the
image's content, the frozen weights, preprocessing and precision. `FeatureCache` implements the core's `FeatureStore`
(`aimonk.model.features`); `disk_stores` gives one per frozen backbone, preprocessing and precision.

- A folder per key, made the cache's by its marker (`aimonk-cache.json`) and `key.json`; a folder the cache did not
  make is never used nor touched.
- Entries packed into shards (their format: "Shards of entries" below): files of up to `MAX_ENTRIES` entries (or
  `MAX_BYTES`), each written once, atomically, and never changed, so that a warm run reads its features in a few
  large reads; each entry with a checksum, compared when it is read. A shard that is not what its header says
  (empty, torn, of another shape, of an older format) is set aside whole and its images recomputed; an entry that
  is not as written (its checksum) or not finite, alone.
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
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from aimonk.config import TrainConfig
from aimonk.data.images import Preprocessing
from aimonk.errors import AimonkError
from aimonk.io import atomic_file, file_digest
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


# Shards of entries. A shard is a 32-byte header (the magic, the number of entries, the bytes of one entry), then the
# SHA-256 of each entry's image, then a CRC-32 of each entry, then the entries. An entry's CRC-32 covers the key of the
# cache folder it was written into (the folder's name), its image's digest and its bytes: an entry whose bytes changed
# on disk (a bit flipped, a block of another file) or that was written for another model (a shard copied from another
# cache folder) does not match, and is recomputed. zlib's CRC-32 because it is the cheapest check in the standard
# library, 3.6x cheaper than BLAKE2b here (benchmarks/cache_checksum.py); it is no defence against forged entries.

MAGIC = b"aimonk-shard-v2\n"  # v1: no checksums (set aside as "of an older format", its images recomputed)
SHARD_MAGIC = b"aimonk-shard-v"  # what every version's magic starts with
HEADER_BYTES = 32  # MAGIC, then the number of entries and the bytes of one entry, as little-endian int64
DIGEST_BYTES = 32
CHECKSUM = np.dtype("<u4")
MAX_ENTRIES = 4096
MAX_BYTES = 64 * 2**20
SHARD = re.compile(r"shard-[0-9a-f]{16}-[0-9a-f]{8}\.bin")  # shard-<time written, ns>-<random>.bin


class DamagedShard(ValueError):
    """A file that is not a complete shard of the expected entry size; says why."""


def shard_name() -> str:
    """A new shard's name: after every name written before it (its time in ns), unique (a random part)."""
    return f"shard-{time.time_ns():016x}-{os.urandom(4).hex()}.bin"


def shard_paths(folder: Path) -> list[Path]:
    """The shards in `folder`, newest first."""
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries if SHARD.fullmatch(entry.name)]
    except OSError:
        return []
    return [Path(folder) / name for name in sorted(names, reverse=True)]


def entry_checksums(key: str, names: Iterable[bytes], rows: Iterable[np.ndarray | bytes]) -> np.ndarray:
    """The CRC-32 of each entry (its bytes) with its image's digest (`names`), in the cache folder of `key`."""
    seed = zlib.crc32(key.encode())
    return np.fromiter((zlib.crc32(row, zlib.crc32(name, seed)) for name, row in zip(names, rows, strict=True)),
                       CHECKSUM)


def encode_shard(key: str, digests: list[str], entries: list[np.ndarray]) -> bytes:
    """What a shard of these entries (arrays of one shape and dtype) for the cache folder of `key` holds."""
    entry_bytes = entries[0].nbytes if entries else 0
    names = [bytes.fromhex(digest) for digest in digests]
    rows = [np.ascontiguousarray(entry).tobytes() for entry in entries]
    header = MAGIC + np.array([len(entries), entry_bytes], "<i8").tobytes()
    return b"".join([header, *names, entry_checksums(key, names, rows).tobytes(), *rows])


def parse_header(header: bytes) -> tuple[int, int]:
    """(entries, bytes of one entry) from a shard's first bytes; DamagedShard if they are not a shard header."""
    if len(header) < HEADER_BYTES:
        raise DamagedShard("empty" if not header else "truncated" if MAGIC.startswith(header[:16]) else
                           "not a shard file")
    if not header.startswith(MAGIC):
        raise DamagedShard("of an older format" if header.startswith(SHARD_MAGIC) else "not a shard file")
    count, entry_bytes = np.frombuffer(header, "<i8", 2, offset=len(MAGIC)).tolist()
    if count < 0 or entry_bytes < 0:
        raise DamagedShard("not a shard file")
    return count, entry_bytes


def shard_entries(path: Path) -> int:
    """How many entries the shard holds, from its header alone (0 if it has none)."""
    try:
        with open(path, "rb") as file:
            return parse_header(file.read(HEADER_BYTES))[0]
    except (OSError, DamagedShard):
        return 0


def read_shard(path: Path, entry_bytes: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """The image digests of a shard, the checksums of its entries and its entries as rows of bytes (entries,
    entry_bytes), in one read; DamagedShard if it is not a complete shard of entries of that size (OSError if it
    cannot be read). The checksums are the caller's to compare, over the rows it uses."""
    with open(path, "rb") as file:
        data = file.read()
    count, size = parse_header(data[:HEADER_BYTES])
    if size != entry_bytes and count:
        raise DamagedShard("of another shape or dtype")
    expected = HEADER_BYTES + count * (DIGEST_BYTES + CHECKSUM.itemsize + entry_bytes)
    if len(data) != expected:
        raise DamagedShard("truncated" if len(data) < expected else "longer than its header says")
    checksums_at = HEADER_BYTES + count * DIGEST_BYTES
    start = checksums_at + count * CHECKSUM.itemsize
    digests = [data[i : i + DIGEST_BYTES] for i in range(HEADER_BYTES, checksums_at, DIGEST_BYTES)]
    checksums = np.frombuffer(data, CHECKSUM, count, offset=checksums_at)
    return digests, checksums, np.frombuffer(data, np.uint8, count * entry_bytes, offset=start).reshape(
        count, entry_bytes)


def finite_rows(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Which rows (entries as bytes) hold finite values only: bf16 bits (int16) have not all exponent bits set."""
    values = rows.view(dtype)
    if dtype == np.int16:
        return ((values.view(np.uint16) & 0x7F80) != 0x7F80).all(axis=1)
    return np.isfinite(values).all(axis=1)


def read_shards(folder: Path, wanted: list[bytes], entry_bytes: int, dtype: np.dtype,
                damaged: Counter[str]) -> tuple[np.ndarray, np.ndarray]:
    """The entries (rows of bytes, one per wanted image digest) that the shards in `folder` hold intact, the newest
    shard's where several do, and which were found. An entry is intact when its checksum matches (written in this
    folder, for that image, unchanged since) and its values are finite. Damaged shards and entries are counted in
    `damaged` by why; a damaged shard is deleted (its images are recomputed into a new one)."""
    position = {name: i for i, name in enumerate(wanted)}
    rows, found = np.empty((len(wanted), entry_bytes), np.uint8), np.zeros(len(wanted), bool)
    left = len(wanted)
    for path in shard_paths(folder):
        if not left:
            break
        try:
            names, checksums, entries = read_shard(path, entry_bytes)
        except DamagedShard as error:
            damaged[str(error)] += 1
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        except OSError as error:
            damaged[f"unreadable: {error.strerror or error}"] += 1
            continue
        pairs = [(row, position[name]) for row, name in enumerate(names) if name in position]
        source, target = np.array(pairs, np.int64).reshape(-1, 2).T
        new = ~found[target]
        source, target = source[new], target[new]
        as_written = entry_checksums(folder.name, (names[i] for i in source), (entries[i] for i in source)) \
            == checksums[source]
        finite = finite_rows(entries, dtype)[source]
        if changed := int((~as_written).sum()):
            damaged["not as written"] += changed
        if not_finite := int((as_written & ~finite).sum()):
            damaged["not finite"] += not_finite
        keep = as_written & finite
        source, target = source[keep], target[keep]
        if len(source) and (np.diff(source) == 1).all() and (np.diff(target) == 1).all():  # in order: one copy
            rows[target[0] : target[-1] + 1] = entries[source[0] : source[-1] + 1]
        else:
            rows[target] = entries[source]
        found[target] = True
        left = len(wanted) - int(found.sum())
    return rows, found


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
