"""Feature-cache entries packed into shards: files of up to `MAX_ENTRIES` entries (or `MAX_BYTES`), each written
once, atomically, and never changed, so that a warm run reads its features in a few large reads and `aimonk cache`
counts a folder's entries from the shards' headers.

A shard is a 32-byte header (the magic, the number of entries, the bytes of one entry), then the SHA-256 of each
entry's image (32 bytes each), then the entries, one after the other, as `FeatureCache` stores them. Its name
sorts by the time it was written: where two shards hold the same image, the newest is read. A shard that is not
what its header says (empty, torn, of another shape) is set aside whole and its images recomputed; an entry that
is not finite, alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

MAGIC = b"aimonk-shard-v1\n"
HEADER_BYTES = 32  # MAGIC, then the number of entries and the bytes of one entry, as little-endian int64
DIGEST_BYTES = 32
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


def encode_shard(digests: list[str], entries: list[np.ndarray]) -> bytes:
    """What a shard of these entries (arrays of one shape and dtype) holds, header first."""
    entry_bytes = entries[0].nbytes if entries else 0
    header = MAGIC + np.array([len(entries), entry_bytes], "<i8").tobytes()
    return b"".join([header, *(bytes.fromhex(digest) for digest in digests),
                     *(np.ascontiguousarray(entry).tobytes() for entry in entries)])


def parse_header(header: bytes) -> tuple[int, int]:
    """(entries, bytes of one entry) from a shard's first bytes; DamagedShard if they are not a shard header."""
    if len(header) < HEADER_BYTES:
        raise DamagedShard("empty" if not header else "truncated" if MAGIC.startswith(header[:16]) else
                           "not a shard file")
    if not header.startswith(MAGIC):
        raise DamagedShard("not a shard file")
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


def read_shard(path: Path, entry_bytes: int) -> tuple[list[bytes], np.ndarray]:
    """The image digests of a shard and its entries as rows of bytes (entries, entry_bytes), in one read;
    DamagedShard if it is not a complete shard of entries of that size (OSError if it cannot be read)."""
    with open(path, "rb") as file:
        data = file.read()
    count, size = parse_header(data[:HEADER_BYTES])
    if size != entry_bytes and count:
        raise DamagedShard("of another shape or dtype")
    expected = HEADER_BYTES + count * (DIGEST_BYTES + entry_bytes)
    if len(data) != expected:
        raise DamagedShard("truncated" if len(data) < expected else "longer than its header says")
    start = HEADER_BYTES + count * DIGEST_BYTES
    digests = [data[i : i + DIGEST_BYTES] for i in range(HEADER_BYTES, start, DIGEST_BYTES)]
    return digests, np.frombuffer(data, np.uint8, count * entry_bytes, offset=start).reshape(count, entry_bytes)


def finite_rows(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Which rows (entries as bytes) hold finite values only: bf16 bits (int16) have not all exponent bits set."""
    values = rows.view(dtype)
    if dtype == np.int16:
        return ((values.view(np.uint16) & 0x7F80) != 0x7F80).all(axis=1)
    return np.isfinite(values).all(axis=1)


def read_shards(folder: Path, wanted: list[bytes], entry_bytes: int, dtype: np.dtype,
                damaged: Counter[str]) -> tuple[np.ndarray, np.ndarray]:
    """The entries (rows of bytes, one per wanted image digest) that the shards in `folder` hold intact, the newest
    shard's where several do, and which were found. Damaged shards and entries are counted in `damaged` by why; a
    damaged shard is deleted (its images are recomputed into a new one)."""
    position = {name: i for i, name in enumerate(wanted)}
    rows, found = np.empty((len(wanted), entry_bytes), np.uint8), np.zeros(len(wanted), bool)
    left = len(wanted)
    for path in shard_paths(folder):
        if not left:
            break
        try:
            names, entries = read_shard(path, entry_bytes)
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
        keep = ~found[target] & finite_rows(entries, dtype)[source]
        if not_finite := int((~found[target] & ~keep).sum()):
            damaged["not finite"] += not_finite
        source, target = source[keep], target[keep]
        if len(source) and (np.diff(source) == 1).all() and (np.diff(target) == 1).all():  # in order: one copy
            rows[target[0] : target[-1] + 1] = entries[source[0] : source[-1] + 1]
        else:
            rows[target] = entries[source]
        found[target] = True
        left = len(wanted) - int(found.sum())
    return rows, found
