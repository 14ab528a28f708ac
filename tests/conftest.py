"""Fixtures shared by the test files (plain helpers: helpers.py). Tests never touch the network, ~/.cache or
../shared."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import photo_collection, tiny_checkpoint, write_dataset


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


@pytest.fixture(scope="module")
def dataset_32px(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 random 32x32 images, two attributes with some NA; shared by a test module."""
    rows = [f"img_{i}.jpg {i % 2} {'NA' if i % 5 == 0 else (i // 2) % 2}" for i in range(20)]
    return write_dataset(tmp_path_factory.mktemp("data"), rows, size=32)


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """24 random images with a mix of 1/0/NA labels over 3 attributes."""
    values = ["1", "0", "NA"]
    rows = [f"img_{i}.jpg {values[i % 3]} {values[(i + 1) % 2]} {values[(i // 3) % 3]}" for i in range(24)]
    return write_dataset(tmp_path / "data", rows)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of two attributes trained one epoch on 16 generated 32x32 images (random backbone), 4 held out."""
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny-data"), tmp_path_factory.mktemp("tiny-model"),
                           ["1", "0", "NA", "1"], 16)


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """A photo collection in parts (`helpers.photo_collection`): its images in order are `helpers.COLLECTION_ORDER`."""
    return photo_collection(tmp_path / "photos")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
