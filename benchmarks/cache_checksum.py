"""What checking the feature cache's entries costs a warm run: 100,000 images' features (ResNet18's shape in bf16,
2 x 512 values, 2 KiB an entry, in shards of 4,096) read as a warm `aimonk train` reads them (`read_shards`, page
cache warm), and the CRC-32 of every entry alone, against BLAKE2b (8-byte digests, the other fast checksum in the
standard library) over the same entries. Each timing the median of 5, with the CPU seconds beside.

    python benchmarks/cache_checksum.py [--images 100000]

The shards are synthetic (random entries written with `encode_shard`) into a temporary folder, removed after.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import machine

from aimonk.cache import store

SHAPE, DTYPE = (2, 512), np.dtype(np.int16)  # bf16 kept as its bits


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as the cache stores bf16 ones: their top 16 bits."""
    return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.int16)


def timed(function, repeats: int = 5) -> tuple[float, float]:  # noqa: ANN001
    """Median wall and CPU seconds of `function()`."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    images = parser.parse_args().images
    print(machine())
    rng = np.random.default_rng(0)
    entry_bytes = int(np.prod(SHAPE)) * DTYPE.itemsize
    digests = [rng.bytes(32) for _ in range(images)]
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "0123456789abcdef01234567"  # a cache folder's name: its key
        folder.mkdir()
        for start in range(0, images, store.MAX_ENTRIES):
            names = digests[start : start + store.MAX_ENTRIES]
            entries = [bf16_bits(rng.standard_normal(SHAPE, np.float32)) for _ in names]
            (folder / store.shard_name()).write_bytes(store.encode_shard(folder.name, [n.hex() for n in names],
                                                                           entries))
        damaged: Counter[str] = Counter()
        rows, found = store.read_shards(folder, digests, entry_bytes, DTYPE, damaged)  # and the page cache warm
        assert found.all() and not damaged
        size = sum(path.stat().st_size for path in folder.iterdir()) / 2**20
        reading = timed(lambda: store.read_shards(folder, digests, entry_bytes, DTYPE, Counter()))
        crc = timed(lambda: store.entry_checksums(folder.name, digests, rows))
        blake = timed(lambda: [hashlib.blake2b(row, digest_size=8, key=folder.name.encode(), salt=name[:16]).digest()
                               for name, row in zip(digests, rows, strict=True)])
    print(f"{images:,} entries of {entry_bytes} bytes in {len(range(0, images, store.MAX_ENTRIES))} shards "
          f"({size:.0f} MiB), page cache warm; median of 5, wall (CPU) seconds:")
    print(f"  reading them as a warm run does, checksums checked: {reading[0]:.3f} s ({reading[1]:.3f} s)")
    print(f"  of which the CRC-32 of every entry:                 {crc[0]:.3f} s ({crc[1]:.3f} s), "
          f"{crc[0] / reading[0]:.0%}")
    print(f"  BLAKE2b-64 of every entry instead:                  {blake[0]:.3f} s ({blake[1]:.3f} s), "
          f"{blake[0] / crc[0]:.1f}x the CRC-32")


if __name__ == "__main__":
    main()
