"""Shared fixtures. Tests never touch the network, ~/.cache or ../shared."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimonk.config import TrainConfig
from aimonk.data.labels import LabelTable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Feature cache and torch hub cache in a temporary folder, shared by the whole session."""
    patch = pytest.MonkeyPatch()
    patch.setenv("AIMONK_CACHE_DIR", str(tmp_path_factory.mktemp("feature-cache")))
    patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
    yield
    patch.undo()


class _FullDisk:
    """A file opened on a disk with `room[0]` bytes left (shared by its files): a write beyond that raises ENOSPC,
    as the kernel's would."""

    def __init__(self, file, room: list[int]):  # noqa: ANN001
        self._file, self._room = file, room

    def write(self, data) -> int:  # noqa: ANN001
        size = memoryview(data).nbytes if isinstance(data, (bytes, bytearray, memoryview)) else len(data)
        if size > self._room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room[0] -= size
        return self._file.write(data)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._file, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """`full_disk(room=0, under=None)`: files that aimonk writes (under `under`, or anywhere) fail with ENOSPC once
    `room` bytes are written in all. aimonk writes every output through a temporary file from `os.fdopen`."""
    fdopen, mkstemp = os.fdopen, tempfile.mkstemp
    opened: dict[int, Path] = {}

    def fill(room: int = 0, under: Path | None = None) -> None:
        left = [room]

        def recording_mkstemp(*args, **kwargs) -> tuple[int, str]:  # noqa: ANN002, ANN003
            handle, path = mkstemp(*args, **kwargs)
            opened[handle] = Path(path)
            return handle, path

        def full_fdopen(handle: int, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            file = fdopen(handle, *args, **kwargs)
            where = opened.pop(handle, None)
            if where is None or (under is not None and not where.is_relative_to(under)):
                return file
            return _FullDisk(file, left)

        monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
        monkeypatch.setattr(os, "fdopen", full_fdopen)

    return fill


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """`read_only(folder, code=errno.EROFS)`: creating a file or folder under `folder` fails as on a read-only
    filesystem (or with `code`, e.g. EACCES); reading still works. Injected: root ignores permission bits."""
    mkstemp, mkdir = tempfile.mkstemp, os.mkdir

    def refuse(folder: Path, code: int = errno.EROFS) -> None:
        def check(path: object) -> None:
            if Path(str(path)).resolve().is_relative_to(Path(folder).resolve()):
                raise OSError(code, os.strerror(code), str(path))

        def refusing_mkstemp(*args, **kwargs) -> tuple[int, str]:  # noqa: ANN002, ANN003
            check(Path(kwargs.get("dir") or tempfile.gettempdir()) / "x")
            return mkstemp(*args, **kwargs)

        def refusing_mkdir(path, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
            if not os.path.exists(path):  # an existing folder is EEXIST, as on a read-only filesystem
                check(path)
            mkdir(path, *args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refusing_mkstemp)
        monkeypatch.setattr(os, "mkdir", refusing_mkdir)

    return refuse


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


@pytest.fixture(scope="module")
def dataset_32px(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 random 32x32 images, two attributes with some NA; shared by a test module."""
    rows = [f"img_{i}.jpg {i % 2} {'NA' if i % 5 == 0 else (i // 2) % 2}" for i in range(20)]
    return write_dataset(tmp_path_factory.mktemp("data"), rows, size=32)


def train_arguments(dataset: Path, out: Path, *options: str) -> list[str]:
    """`aimonk train` on `dataset` into `out`: random weights, 32 px, no workers or progress, the cache beside `out`."""
    return ["train", "--data-dir", str(dataset), "--out-dir", str(out), "--weights", "none", "--image-size", "32",
            "--workers", "0", "--no-progress", "--cache-dir", str(out.parent / "cache"), *options]


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
    from aimonk.train.training import train

    values = ["1", "0", "NA", "1"]
    rows = [f"img_{i}.jpg {values[i % 4]} {values[(i // 2) % 4]}" for i in range(16)]
    data = write_dataset(tmp_path_factory.mktemp("tiny-data"), rows, size=32)
    config = TrainConfig(data_dir=str(data), out_dir=str(tmp_path_factory.mktemp("tiny-model")), weights="none",
                         image_size=32, epochs=1, val_fraction=0.25, workers=0, progress=False)
    return train(config).model_path
