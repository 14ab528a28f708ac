"""On-disk cache of frozen-backbone features, keyed by image content, backbone weights and preprocessing.

Each image is decoded once and run through the backbone in both orientations (as is and flipped), so
training with a random horizontal flip can pick either without touching the image again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from aimonk.data import ImageDataset, Preprocessing, collate_readable

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


def inference_backbone(backbone: nn.Module) -> nn.Module:
    """A copy of a backbone for inference, in channels_last, with each BatchNorm folded into its convolution.

    Same function (to float rounding), one pass less over every activation: about 25 % faster on CPU.
    """
    return fuse(backbone.eval()).to(memory_format=torch.channels_last)


def backbone_autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast when asked for (CPU and GPU), otherwise a disabled context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class BackboneCollate:
    """A DataLoader `collate_fn` that also runs the backbone: readable images of a batch -> "features" (float32, CPU).

    Items may hold one image (3, H, W) or several, e.g. both orientations (k, 3, H, W): features follow that shape.
    """

    def __init__(self, backbone: nn.Module, precision: str):
        self.backbone = backbone
        self.precision = precision

    def __call__(self, items: list[dict]) -> dict:
        return self.embed(collate_readable(items))

    def embed(self, batch: dict) -> dict:
        images = batch.pop("image")
        batch["features"] = None if images is None else self.features(images)
        return batch

    def features(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.backbone.parameters()).device
        flat = images.flatten(0, -4).to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), backbone_autocast(self.precision, device):
            features = self.backbone(flat).float()
        return features.view(*images.shape[:-3], -1).cpu().clone()  # clone: a normal tensor, not an inference one


def backbone_batches(embed: BackboneCollate, dataset: Dataset, batch_size: int, num_workers: int) -> Iterator[dict]:
    """`collate_readable` batches of `dataset` with "features" in place of "image".

    On a CPU with at least one worker per thread, each (single-threaded) worker decodes and runs the backbone on its
    own batches: decoding then never stalls a forward pass spread over all cores (20-25 % faster on 2 cores,
    measured). Otherwise workers only decode and the main process runs the backbone. (A forked worker must stay
    single-threaded: OpenMP hangs in a child whose parent already ran threads.)
    """
    on_cpu = next(embed.backbone.parameters()).device.type == "cpu"
    in_workers = on_cpu and num_workers >= torch.get_num_threads()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=embed if in_workers else collate_readable)
    for batch in loader:
        yield batch if in_workers else embed.embed(batch)


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
        embed = BackboneCollate(inference_backbone(backbone), precision)
        batches = backbone_batches(embed, dataset, batch_size, num_workers)
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
