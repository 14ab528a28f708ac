"""On-disk cache of frozen-backbone features, keyed by image content, backbone weights and preprocessing.

Each image is decoded once and run through the backbone in both orientations (as is and flipped), so
training with a random horizontal flip can pick either without touching the image again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from aimonk.images import ImageDataset, Preprocessing
from aimonk.runtime import BackboneRunner, backbone_batches, inference_backbone

FEATURES_VERSION = "pil-draft-bilinear-bnfold-v2"  # bump when decoding, resizing or the forward pass changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("AIMONK_CACHE_DIR") or Path.home() / ".cache" / "aimonk" / "features")


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: a renamed or copied image hits the cache, an edited one misses."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """One folder per (backbone weights, preprocessing, precision); one `.npy` file of shape (2, dim) per image."""

    def __init__(self, root: Path, backbone: nn.Module, preprocessing: Preprocessing, precision: str):
        description = {
            "backbone_sha256": module_fingerprint(backbone),
            "preprocessing": preprocessing.as_dict(),
            "precision": precision,
            "features_version": FEATURES_VERSION,
        }
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
        self.folder = Path(root) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        description_file = self.folder / "key.json"
        if not description_file.exists():
            description_file.write_text(json.dumps(description, indent=2))

    def _file(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def load(self, digest: str) -> np.ndarray | None:
        try:
            return np.load(self._file(digest), allow_pickle=False)
        except (OSError, ValueError):  # absent, or a partial file from a killed run: recompute
            return None

    def store(self, digest: str, features: np.ndarray) -> None:
        target = self._file(digest)
        target.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            np.save(file, features, allow_pickle=False)
        os.replace(temporary, target)


def extract_features(
    backbone: nn.Module,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    cache: FeatureCache | None,
    precision: str = "bf16",
    batch_size: int = 8,  # images, so 16 forward passes: the fastest size on a 2-core CPU (measured)
    num_workers: int = 2,
    progress: bool = True,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Features (n_readable, 2, dim) for the readable images, their indices into `paths`, and read errors.

    Returns an empty (0, 2, 0) tensor if no image is readable.

    Cached images are not decoded; the rest stream through a DataLoader so memory stays bounded.
    """
    digests = [file_digest(path) for path in paths]
    found = {i: cache.load(digest) for i, digest in enumerate(digests)} if cache else {}
    found = {i: features for i, features in found.items() if features is not None}
    todo = [i for i in range(len(paths)) if i not in found]
    errors: list[str] = []
    if todo:
        dataset = ImageDataset.unlabelled([paths[i] for i in todo], preprocessing, both_orientations=True)
        runner = BackboneRunner(inference_backbone(backbone), precision)
        batches = backbone_batches(runner, dataset, batch_size, num_workers)
        for batch in tqdm(batches, total=-(-len(todo) // batch_size), desc="backbone features", unit="batch",
                          disable=not progress):
            errors.extend(message for _, message in batch["errors"])
            if batch["features"] is None:
                continue
            for position, features_of_one in zip(batch["index"].tolist(), batch["features"].numpy(), strict=True):
                original = todo[position]
                found[original] = features_of_one
                if cache:
                    cache.store(digests[original], features_of_one)
    readable = sorted(found)
    if not readable:
        return torch.zeros(0, 2, 0), [], errors
    return torch.from_numpy(np.stack([found[i] for i in readable])), readable, errors
