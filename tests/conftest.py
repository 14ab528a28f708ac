"""Shared fixtures. Tests never touch the network, ~/.cache or ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimonk.config import TrainConfig
from aimonk.labels import LabelTable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Feature cache and torch hub cache in a temporary folder, shared by the whole session."""
    patch = pytest.MonkeyPatch()
    patch.setenv("AIMONK_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
    patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
    yield
    patch.undo()


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


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """24 random images with a mix of 1/0/NA labels over 3 attributes."""
    values = ["1", "0", "NA"]
    rows = [f"img_{i}.jpg {values[i % 3]} {values[(i + 1) % 2]} {values[(i // 3) % 3]}" for i in range(24)]
    return write_dataset(tmp_path / "data", rows)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of two attributes trained one epoch on 16 generated 32x32 images (random backbone), 4 held out."""
    from aimonk.config import TrainConfig
    from aimonk.training import train

    values = ["1", "0", "NA", "1"]
    rows = [f"img_{i}.jpg {values[i % 4]} {values[(i // 2) % 4]}" for i in range(16)]
    data = write_dataset(tmp_path_factory.mktemp("tiny-data"), rows, size=32)
    config = TrainConfig(data_dir=str(data), out_dir=str(tmp_path_factory.mktemp("tiny-model")), weights="none",
                         image_size=32, epochs=1, val_fraction=0.25, workers=0, progress=False)
    return train(config).model_path
