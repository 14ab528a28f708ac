"""Plain helpers shared by the tests (`from helpers import ...`: `tests/` is on the path, see `pythonpath` in
pyproject.toml). Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from aimonk.cache.store import encode_shard, parse_header, read_shard, shard_entries
from aimonk.config import TrainConfig
from aimonk.data.labels import LabelTable
from aimonk.io import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]  # the repository: the embedded demo set (images/, labels.txt), README.md

# The torchrun tests need gloo, and Linux's /proc to find a launcher's workers.
needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available())
                                or not Path("/proc/self/environ").exists(), reason="needs gloo and Linux's /proc")


def write_dataset(folder: Path, rows: list[str], size: int = 40, seed: int = 0) -> Path:
    """A small dataset: `rows` are label lines; each named image is drawn with a colour per row."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for line in rows:
        name = line.split()[0]
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / name, format="JPEG")
    (folder / "labels.txt").write_text("\n".join(rows) + "\n")
    return folder


def label_rows(labels_path: Path) -> list[list[str]]:
    """The lines of a labels file, each split at its spaces (as the demo dataset writes them)."""
    return [line.split(" ") for line in labels_path.read_text(encoding="ascii").splitlines()]


def train_arguments(dataset: Path, out: Path, *options: str) -> list[str]:
    """`aimonk train` on `dataset` into `out`: random weights, 32 px, no workers, quiet (stderr: warnings and errors
    alone), the cache beside `out`."""
    return ["train", "--data-dir", str(dataset), "--out-dir", str(out), "--weights", "none", "--image-size", "32",
            "--workers", "0", "--quiet", "--cache-dir", str(out.parent / "cache"), *options]


def label_table(targets: np.ndarray, known: np.ndarray | None = None) -> LabelTable:
    """A LabelTable from arrays (one column per attribute; all labels known unless `known` says otherwise)."""
    targets = np.asarray(targets, dtype=np.float32).reshape(len(targets), -1)
    known = np.ones(targets.shape, dtype=bool) if known is None else np.asarray(known, bool).reshape(targets.shape)
    names = [f"Attr{j + 1}" for j in range(targets.shape[1])]
    return LabelTable(Path("labels.txt"), [f"image_{i}.jpg" for i in range(len(targets))], names,
                      np.where(known, targets, 0).astype(np.float32), known)


def train_config(data_dir: Path, cache_dir: Path, **overrides) -> TrainConfig:
    """A quick training run on a small dataset: random backbone, 64 px, 2 epochs, no workers, fp32."""
    settings = dict(
        data_dir=str(data_dir), out_dir=str(data_dir / "out"), cache_dir=str(cache_dir), weights="none",
        epochs=2, batch_size=4, lr=1e-3, val_fraction=0.25, image_size=64, precision="fp32", workers=0,
        progress=False,
    )
    return TrainConfig(**{**settings, **overrides})


def _image(path: Path, kind: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format=kind)
    return path


def photo_collection(root: Path) -> Path:
    """A photo collection in parts: mixed formats, hidden entries, a notes file, a link loop and a second link."""
    _image(root / "top.JPG")
    _image(root / "part_10" / "image_1.png", "PNG")
    _image(root / "part_2" / "image_10.webp", "WEBP")
    _image(root / "part_2" / "image_2.tif", "TIFF")
    _image(root / "part_2" / "deeper" / "x.bmp", "BMP")
    _image(root / "part_2" / ".thumbnail.jpg")
    _image(root / ".cache" / "hidden.jpg")
    (root / "part_2" / "notes.txt").write_text("not an image")
    os.symlink("..", root / "part_2" / "deeper" / "loop")  # back to part_2: a loop
    os.symlink("part_10", root / "zz_alias")  # a folder reached twice: listed once
    return root


# The images of `photo_collection`, in the order image_files must give them.
COLLECTION_ORDER = ["part_2/deeper/x.bmp", "part_2/image_2.tif", "part_2/image_10.webp", "part_10/image_1.png",
                    "top.JPG"]


def holder_pid(out: Path) -> int | None:
    """The process id that the lock file of output folder `out` names, if it is there and readable."""
    try:
        return json.loads((out / LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def rewrite_shard(shard: Path, change: Callable[[np.ndarray], np.ndarray], key: str | None = None) -> None:
    """Write `shard` again, complete and with right checksums, with its entries (rows of bytes) changed by `change`,
    as the cache folder of `key` (default: its own) would have written it."""
    names, _, rows = read_shard(shard, parse_header(shard.read_bytes()[:32])[1])
    shard.write_bytes(encode_shard(key or shard.parent.name, [name.hex() for name in names], list(change(rows))))


def flip_signs(shard: Path, itemsize: int = 4, every: int = 32) -> None:
    """Flip the sign bit of every `every`-th value (of `itemsize` bytes, little-endian) in the shard's entries: all
    still finite, the file still complete."""
    data = bytearray(shard.read_bytes())
    count, entry_bytes = parse_header(bytes(data[:32]))
    start = 32 + count * (32 + 4)
    for at in range(start + itemsize - 1, start + count * entry_bytes, every * itemsize):
        data[at] ^= 0x80
    shard.write_bytes(bytes(data))


def older_format(shard: Path) -> None:
    """`shard` as aimonk wrote it before entries had checksums (magic v1, no checksums)."""
    data = shard.read_bytes()
    count = parse_header(data[:32])[0]
    checksums = 32 + 32 * count
    shard.write_bytes(b"aimonk-shard-v1\n" + data[16:checksums] + data[checksums + 4 * count:])


# Ways to damage a feature-cache shard (of fp32 entries), by the reason the cache's warning gives.
DAMAGE = {
    "empty": lambda shard: shard.write_bytes(b""),
    "truncated": lambda shard: shard.write_bytes(shard.read_bytes()[:-10]),
    "not a shard file": lambda shard: shard.write_bytes(np.random.default_rng(0).bytes(300)),
    "of another shape or dtype": lambda shard: rewrite_shard(shard, lambda rows: rows[:, :-4]),
    "longer than its header says": lambda shard: shard.write_bytes(shard.read_bytes() + b"\0"),
    "not finite": lambda shard: rewrite_shard(
        shard, lambda rows: np.full((len(rows), rows.shape[1] // 4), np.nan, np.float32).view(np.uint8)),
    "not as written": flip_signs,  # bit rot: the sign of every 32nd value, all finite
    "of an older format": older_format,
}


def scored_labels(truth: np.ndarray, known: np.ndarray, separation: np.ndarray, seed: int = 0,
                  better: np.ndarray | None = None):  # noqa: ANN201  (an OutOfFold)
    """Out-of-fold probabilities whose truth is known (`aimonk.labelling`): logits that tell `truth` apart by
    `separation` (logit units, per attribute) plus unit noise; a weaker attribute gets a wider AP interval."""
    from aimonk.labelling.crossfit import OutOfFold

    rng = np.random.default_rng(seed)
    logits = (2 * truth - 1) * separation + rng.normal(size=truth.shape)
    attributes = [f"Attr{j + 1}" for j in range(truth.shape[1])]
    width = 1 / np.asarray(separation, float)
    metrics = pd.DataFrame({"ap_low": 0.9 - width, "ap_high": np.full(len(attributes), 0.95), "roc_auc": 0.5,
                            "roc_auc_low": 0.4, "roc_auc_high": 0.6, "verdict": "no better than chance"},
                           index=pd.Index(attributes, name="attribute"))
    better = np.ones(len(attributes), bool) if better is None else better
    return OutOfFold([f"image_{i}.jpg" for i in range(len(truth))], attributes, truth * known, known,
                     1 / (1 + np.exp(-logits)), better, metrics, np.ones(len(attributes)),
                     np.arange(len(truth)) % 5, Path("labels.txt"), Path("images"), [])


def planted_flips():  # noqa: ANN201
    """600 images, 3 learnable attributes, 10 % NA, 5 % of the known labels flipped: (OutOfFold, flipped entries)."""
    rng = np.random.default_rng(1)
    truth = (rng.random((600, 3)) < [0.5, 0.3, 0.8]).astype(float)
    known = rng.random(truth.shape) > 0.1
    oof = scored_labels(truth, known, np.array([3.0, 3.0, 3.0]))
    flipped = known & (rng.random(truth.shape) < 0.05)
    oof.targets = np.where(flipped, 1 - truth, truth) * known
    return oof, flipped


def cached_entries(folder: Path) -> int:
    """How many entries the shards under `folder` hold (each image once, unless recomputed)."""
    return sum(shard_entries(path) for path in Path(folder).rglob("shard-*.bin"))


def feature_cache_message(folder: Path, reasons: str, count: int = 1) -> str:
    """The one warning of a run that found `count` damaged shards or entries in cache folder `folder`."""
    held = "it held was" if count == 1 else "they held were"
    return f"{count} damaged feature-cache {'file was' if count == 1 else 'files were'} set aside ({reasons}) in " \
           f"{folder}; the images {held} recomputed"


def train_cached(config: TrainConfig, resume: bool = False):  # noqa: ANN201  (a TrainResult)
    """`train` with the on-disk feature cache its config names, as `aimonk train` runs it."""
    from aimonk.cache import config_stores
    from aimonk.train.training import train

    return train(config, resume, config_stores(config))


def tiny_checkpoint(data_dir: Path, out_dir: Path, values: list[str], n_images: int) -> Path:
    """A checkpoint of two attributes trained one epoch on `n_images` generated 32x32 images (random backbone), a
    quarter held out; image i's labels are values[i % len] and values[(i // 2) % len]."""
    rows = [f"img_{i}.jpg {values[i % len(values)]} {values[(i // 2) % len(values)]}" for i in range(n_images)]
    data = write_dataset(data_dir, rows, size=32)
    config = TrainConfig(data_dir=str(data), out_dir=str(out_dir), weights="none", image_size=32, epochs=1,
                         val_fraction=0.25, workers=0, progress=False)
    return train_cached(config).model_path
