"""Peak memory of filling the feature cache, for growing numbers of images: it should stay flat.

    python benchmarks/cache_memory.py                 # 1,000 then 10,000 images
    python benchmarks/cache_memory.py --n-images 500 2000

Each image is a distinct file (its own bytes, so its own cache entry) made from a handful of 800x800 JPEGs.
Each size runs in a fresh process; peak resident memory of that process and of its largest DataLoader worker
are read from the kernel. Random ResNet18 (no ImageNet weights offline); memory does not depend on the weights.
"""

from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import Stopwatch, machine
from PIL import Image


def write_images(folder: Path, n_images: int, seed: int = 0) -> None:
    """`n_images` distinct JPEG files: 16 different pictures, each file with its own trailing bytes."""
    rng = np.random.default_rng(seed)
    bases = []
    for _ in range(16):
        pixels = rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((800, 800), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        bases.append(buffer.getvalue())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):  # bytes after the JPEG end marker: same picture, another file
        (folder / f"image_{i}.jpg").write_bytes(bases[i % len(bases)] + f"{i}".encode())


def fill_cache(image_dir: Path, cache_dir: Path) -> None:
    """Child process: extract features of every image into an empty cache, then print peak memory."""
    from aimonk.cache.store import FeatureCache
    from aimonk.data.images import Preprocessing
    from aimonk.model.classifier import build_model
    from aimonk.model.features import features_of

    model, _ = build_model(4, "resnet18", weights="none")
    preprocessing = Preprocessing(224)
    cache = FeatureCache(cache_dir, model.backbone, preprocessing, "bf16")
    paths = sorted(image_dir.iterdir())
    with Stopwatch() as watch:
        features, readable, _ = features_of(model.backbone, paths, preprocessing, cache, "bf16", progress=False)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10
    held = features.numel() * features.element_size() / 2**20
    decoded = len(readable) * 2 * 3 * preprocessing.image_size**2 * 4  # both orientations, float32
    print(f"{len(readable):6d} images in {watch.seconds:6.1f} s: peak memory {own:6.0f} MiB main process, "
          f"{worker:5.0f} MiB largest worker; features held {held:5.1f} MiB; "
          f"all images decoded at once would need {decoded / 2**30:5.1f} GiB{watch.note()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--fill", nargs=2, type=Path, metavar=("IMAGE_DIR", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        fill_cache(*args.fill)
        return
    print(machine(), flush=True)
    for n_images in args.n_images:
        with tempfile.TemporaryDirectory() as work:
            write_images(Path(work) / "images", n_images)
            subprocess.run([sys.executable, __file__, "--fill", f"{work}/images", f"{work}/cache"], check=True)


if __name__ == "__main__":
    main()
