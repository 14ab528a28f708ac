"""On-disk cache of what the frozen part of a model outputs for each image, keyed by image content, the frozen
weights, preprocessing and precision.

With a frozen backbone that is the feature vector; when the last stages are fine-tuned it is the feature map of the
last frozen stage, so the frozen stages run once per image instead of every epoch. Each image is decoded once and
run in both orientations (as is and flipped), so training with a random horizontal flip can pick either without
touching the image again. Outputs are kept as computed: bf16 values as their raw bits (lossless, half the size).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from aimonk.images import ImageDataset, Preprocessing
from aimonk.runtime import BackboneRunner, backbone_batches, inference_backbone

FEATURES_VERSION = "pil-draft-bilinear-bnfold-stages-v3"  # bump when decoding, resizing or the forward pass changes


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


def to_storable(outputs: torch.Tensor) -> np.ndarray:
    """A numpy array that keeps the values exactly: bf16 as its raw 16 bits (numpy has no bf16)."""
    if outputs.dtype == torch.bfloat16:
        return outputs.contiguous().view(torch.int16).numpy()
    return outputs.float().contiguous().numpy()


def from_storable(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if tensor.dtype == torch.int16 else tensor


class FeatureCache:
    """One folder per (frozen weights, preprocessing, precision); one `.npy` file per image: (2, *output shape)."""

    def __init__(self, root: Path, backbone: nn.Module, preprocessing: Preprocessing, precision: str):
        description = {
            "backbone_sha256": module_fingerprint(backbone),
            "frozen_stages": len(backbone) if isinstance(backbone, nn.Sequential) else None,
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
    """Outputs of `backbone` (n_readable, 2, ...) for the readable images, their indices into `paths`, read errors.

    Returns an empty (0, 2, 0) tensor if no image is readable. The dtype is bf16 or float32, as computed.
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
            for position, features_of_one in zip(batch["index"].tolist(), to_storable(batch["features"]), strict=True):
                original = todo[position]
                found[original] = features_of_one
                if cache:
                    cache.store(digests[original], features_of_one)
    readable = sorted(found)
    if not readable:
        return torch.zeros(0, 2, 0), [], errors
    return from_storable(np.stack([found[i] for i in readable])), readable, errors


def cache_contents(root: Path) -> list[dict]:
    """One entry per cache folder under `root`: its key (what was run) and how many files and bytes it holds."""
    entries = []
    for folder in sorted(Path(root).glob("*/key.json")):
        files = list(folder.parent.rglob("*.npy"))
        try:
            key = json.loads(folder.read_text())
        except (OSError, ValueError):
            key = {}
        entries.append({"folder": folder.parent, "key": key, "files": len(files),
                        "bytes": sum(path.stat().st_size for path in files)})
    return entries


def clear_cache(root: Path) -> int:
    """Delete every cache folder under `root` (only folders the cache made: those with a key.json); bytes freed."""
    freed = 0
    for entry in cache_contents(root):
        freed += entry["bytes"]
        shutil.rmtree(entry["folder"])
    return freed
