"""A warm `aimonk train` at scale: where its time goes with 10,000 or 100,000 images, for small and large files, in
the feature cache's layout of this checkout (digest index and shards) and, with --old-commit, beside an older one's
(one SHA-256 of each image's bytes and one .npy file per image).

    python benchmarks/cache_scale.py --images 10000                       # 5 KB and 150 KB images
    python benchmarks/cache_scale.py --images 10000 100000 --old-commit f1b42be

The images are generated (noise pictures, each file made distinct by trailing bytes) into benchmarks/data/ (git
ignored), with labels. Each layout's cache is filled once by a cold run whose backbone is replaced by random
features of a ResNet18's shape (bf16, 2 x 512: the reading costs the same, and 100,000 images fill in minutes, not
hours; `train_speed.py` times real extraction), then each recipe runs warm in a fresh process, timed in parts: start-up
(the process, imports, labels, model: everything before the images' digests), finding the digests, reading the
features, training (the rest: split, epochs, writing the model). Peak resident memory of that process too. The
baseline: the same bytes of features read in one large read from one file (page cache warm, as for the runs).
On a shared machine wall times swell with the load; the CPU seconds of the digest and reading parts (one thread,
no workers there) much less.
The older checkout is made with `git worktree add` into /tmp and run with PYTHONPATH.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, machine
from PIL import Image

DATA = ROOT / "benchmarks" / "data" / "cache_scale"
RUN = ["--weights", "none", "--workers", "2", "--no-progress", "--val-fraction", "0.1"]


def picture(kilobytes: int, rng: np.random.Generator) -> bytes:
    """A JPEG of smooth noise of about `kilobytes` KB."""
    side = 32
    while True:
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        if buffer.tell() >= kilobytes * 1000 * 0.9:
            return buffer.getvalue()
        side = int(side * 1.25) + 1


def dataset(images: int, kilobytes: int) -> Path:
    """benchmarks/data/cache_scale/<images>x<kb>kb: images/ (distinct files from 16 pictures) and labels.txt."""
    folder = DATA / f"{images}x{kilobytes}kb"
    if (folder / "labels.txt").exists():
        return folder
    rng = np.random.default_rng(images + kilobytes)
    bases = [picture(kilobytes, rng) for _ in range(16)]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, 2, (images, 4))
    lines = []
    for i in range(images):  # bytes after the JPEG end marker: the same picture, another file
        (folder / "images" / f"image_{i}.jpg").write_bytes(bases[i % 16] + f"{i}".encode())
        lines.append(f"image_{i}.jpg {' '.join(map(str, labels[i]))}\n")
    (folder / "labels.txt").write_text("".join(lines))
    old = time.time() - 3600  # as photos are: not written in the last seconds (those are hashed every run)
    for path in (folder / "images").iterdir():
        os.utime(path, (old, old))
    return folder


def child(arguments: list[str]) -> None:
    """In a fresh process: run `aimonk train` with the cache's reading timed, print the parts as JSON."""
    started = time.perf_counter()
    from aimonk.cache import store
    from aimonk.cli import main
    from aimonk.model import features

    marks: dict[str, float] = {}

    def timed(name: str, function):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                marks.setdefault(f"{name}_start", start)
                marks[name] = marks.get(name, 0.0) + time.perf_counter() - start
                marks[f"{name}_cpu"] = marks.get(f"{name}_cpu", 0.0) + time.process_time() - cpu
        return wrapper

    if arguments[0] == "--fill":  # features of the right shape without running the backbone: what they cost to read
        features.backbone_batches = fake_batches
        arguments = arguments[1:]
    store.FeatureCache.digests = timed("digests", store.FeatureCache.digests)  # the index, then the shards
    store.FeatureCache.load_many = timed("reading", store.FeatureCache.load_many)
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        code = main(["train", *arguments])
        sys.stdout = stdout
    end = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(json.dumps({"code": code, "before": marks.get("digests_start", end) - started, "total": end - started,
                      "peak_mib": peak, **{name: marks.get(name, 0.0) for name in
                                           ("digests", "reading", "digests_cpu", "reading_cpu")}}))


def fake_batches(runner, dataset, batch_size, num_workers):  # noqa: ANN001, ANN201, ARG001
    """What `backbone_batches` yields, with random bf16 features of a ResNet18 (512 per orientation); no decoding."""
    import torch

    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(dataset), 1024):
        index = torch.arange(start, min(len(dataset), start + 1024))
        features = torch.randn(len(index), 2, 512, generator=generator).bfloat16()
        yield {"errors": [], "index": index, "features": features}


def warm_run(root: Path, arguments: list[str]) -> dict:
    """One warm run in a fresh process with `root` first on the path: its parts (start-up from the launch)."""
    launched = time.perf_counter()
    run = subprocess.run([sys.executable, __file__, "--child", *arguments], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, cwd=root, check=False)
    wall = time.perf_counter() - launched
    if run.returncode:
        raise SystemExit(f"warm run failed:\n{run.stderr[-3000:]}")
    parts = json.loads(run.stdout.splitlines()[-1])
    if parts["code"]:
        raise SystemExit(f"warm run failed:\n{run.stderr[-3000:]}")
    parts["startup"] = wall - parts["total"] + parts["before"]
    parts["training"] = parts["total"] - parts["before"] - parts["digests"] - parts["reading"]
    parts["wall"] = wall
    return parts


def one_large_read(cache: Path) -> tuple[float, int]:
    """Seconds to read, in one read from one file, as many bytes as the cache's features; those bytes."""
    size = sum(path.stat().st_size for path in cache.rglob("*") if path.is_file() and path.suffix in (".bin", ".npy"))
    blob = cache.parent / f"{cache.name}.blob"
    if not blob.exists() or blob.stat().st_size != size:
        with open(blob, "wb") as file:
            file.truncate(size)
    np.fromfile(blob, np.uint8)  # into the page cache, as the runs' features are
    start = time.perf_counter()
    np.fromfile(blob, np.uint8)
    return time.perf_counter() - start, size


def old_checkout(commit: str) -> Path:
    place = Path(f"/tmp/old_{commit}")
    if not place.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(place), commit], check=True,
                       capture_output=True)
    return place


def measure(images: int, kilobytes: int, layouts: dict[str, Path], recipes: list[str], repeats: int) -> None:
    data = dataset(images, kilobytes)
    for layout, root in layouts.items():
        cache, out = DATA / f"cache_{layout}_{images}x{kilobytes}kb", DATA / f"out_{layout}_{images}x{kilobytes}kb"
        common = ["--data-dir", str(data), "--out-dir", str(out), "--cache-dir", str(cache), "--image-size", "64",
                  *RUN]
        if not cache.exists():
            start = time.perf_counter()
            warm_run(root, ["--fill", *common, "--epochs", "1"])  # cold: fills the cache
            print(f"  {layout}: cache filled in {time.perf_counter() - start:.0f} s")
        baseline, size = one_large_read(cache)
        for recipe in recipes:
            runs = [warm_run(root, [*common, "--recipe", recipe]) for _ in range(repeats)]
            best = min(runs, key=lambda parts: parts["wall"])
            print(f"{images:>7} x {kilobytes:>3} KB  {layout:>3}  {recipe:<11}  start-up {best['startup']:5.2f} s  "
                  f"digests {best['digests']:6.2f} s (CPU {best['digests_cpu']:5.2f} s)  reading "
                  f"{best['reading']:6.2f} s (CPU {best['reading_cpu']:5.2f} s)  training "
                  f"{best['training']:6.2f} s  total {best['wall']:6.2f} s  peak {best['peak_mib']:6.0f} MiB  "
                  f"(one read of the {size / 2**20:.0f} MiB: {baseline:.2f} s; digests + reading "
                  f"{best['digests'] + best['reading'] - baseline:+.2f} s over it)", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10000])
    parser.add_argument("--kilobytes", type=int, nargs="+", default=[5, 150], help="size of each image file")
    parser.add_argument("--recipes", nargs="+", default=["reference", "recommended"])
    parser.add_argument("--old-commit", help="also time this commit's cache layout on the same images")
    parser.add_argument("--repeats", type=int, default=1, help="warm runs of each kind; the fastest is shown")
    parser.add_argument("--clean", action="store_true", help="delete benchmarks/data/cache_scale first")
    options = parser.parse_args()
    if options.clean:
        shutil.rmtree(DATA, ignore_errors=True)
    print(machine())
    layouts = {"new": ROOT} | ({"old": old_checkout(options.old_commit)} if options.old_commit else {})
    for images in options.images:
        for kilobytes in options.kilobytes:
            measure(images, kilobytes, layouts, options.recipes, options.repeats)
    return None


if __name__ == "__main__":
    main()
