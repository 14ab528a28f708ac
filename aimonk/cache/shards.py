"""The feature cache's shard files: entries (one image's features each, as bytes) written once, read in one read.

A shard is a 32-byte header (the magic, the number of entries, the bytes of one entry), then the SHA-256 of each
entry's image, then a CRC-32 of each entry, then the entries. An entry's CRC-32 covers the key of the cache folder
it was written into, its image's digest and its bytes: an entry whose bytes changed on disk (a bit flipped, a block
of another file) or that was written for another model (a shard copied from another cache folder) does not match,
and is recomputed. CRC-32 (zlib's) because it is the cheapest check in the standard library, several times cheaper
than BLAKE2b here (benchmarks/cache_checksum.py); it is not a defence against someone forging entries on purpose.
A shard's name sorts by the time it was written: where two shards hold the same image, the newest is read.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

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
