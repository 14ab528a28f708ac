"""On-disk cache of what the frozen part of a model outputs for each image, keyed by image content, the frozen
weights, preprocessing and precision.

With a frozen backbone that is the feature vector; when the last stages are fine-tuned it is the feature map of the
last frozen stage, so the frozen stages run once per image instead of every epoch. Each image is decoded once and
run in both orientations (as is and flipped), so training with a random horizontal flip can pick either without
touching the image again. Outputs are kept as computed: bf16 values as their raw bits (lossless, half the size).

What the cache promises (it never fails a run: damaged entries are recomputed, a cache that cannot be written or
used is left alone, one warning each) is written down once, in docs/validation.md; the tests check each promise.
Entries are not fsynced: one torn by a crash is found and recomputed the next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
import weakref
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from aimonk.data.images import ImageDataset, Preprocessing
from aimonk.errors import AimonkError
from aimonk.io import atomic_file
from aimonk.model.cache_folders import KEY, MARKER, MARKER_TEXT, is_cache_folder, read_json
from aimonk.model.digests import DigestIndex, file_digest
from aimonk.model.old_entries import entry_path, has_old_entries, read_old_entries
from aimonk.model.runtime import BackboneRunner, backbone_batches, inference_backbone, output_shape
from aimonk.model.shards import MAX_BYTES, MAX_ENTRIES, encode_shard, read_shards, shard_name

FEATURES_VERSION = "pil-draft-bilinear-bnfold-stages-v4"  # bump when decoding, resizing or the forward pass changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("AIMONK_CACHE_DIR") or Path.home() / ".cache" / "aimonk" / "features")


def to_storable(outputs: torch.Tensor) -> np.ndarray:
    """A numpy array that keeps the values exactly: bf16 as its raw 16 bits (numpy has no bf16)."""
    if outputs.dtype == torch.bfloat16:
        return outputs.contiguous().view(torch.int16).numpy()
    return outputs.float().contiguous().numpy()


def from_storable(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if tensor.dtype == torch.int16 else tensor


class FeatureCache:
    """One folder per (frozen weights, preprocessing, precision): shards of entries, each (2, *output shape), and the
    index of the images' digests."""

    def __init__(self, root: Path, backbone: nn.Module, preprocessing: Preprocessing, precision: str):
        # an entry: the output for an image in both orientations; bf16 kept as its raw bits (see to_storable)
        self.shape = output_shape(backbone, (2, 3, preprocessing.image_size, preprocessing.image_size))
        self.dtype = np.dtype(np.int16 if precision == "bf16" else np.float32)
        self.entry_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.writable = self.readable = True  # until a write fails; until the folder is found unusable
        self.damaged: Counter[str] = Counter()  # why shards or entries read this run were not usable
        self.pending: list[tuple[str, np.ndarray]] = []  # stored, not yet in a shard
        self.repacked: list[Path] = []  # old one-file entries now pending: deleted once in a shard
        self.hits = 0  # images whose features came from the cache
        description = {
            "backbone_sha256": module_fingerprint(backbone),
            "frozen_stages": len(backbone) if isinstance(backbone, nn.Sequential) else None,
            "preprocessing": preprocessing.as_dict(),
            "precision": precision,
            "features_version": FEATURES_VERSION,
        }
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
        self.folder = Path(root) / key
        self._open(description)
        self.readable = self.readable and os.access(self.folder, os.R_OK | os.X_OK)
        self.index = DigestIndex(self.folder) if self.readable else None

    def _open(self, description: dict) -> None:
        """Make the folder the cache's (key.json, then the marker), adopt one an older aimonk made without the
        marker, or give up on a folder that is not the cache's or cannot be one."""
        existing = next((path for path in (self.folder, *self.folder.parents) if os.path.exists(path)), None)
        if existing is not None and not os.path.isdir(existing):
            return self._give_up(f"{existing}: is a file, not a folder")
        key, ours = self.folder / KEY, is_cache_folder(self.folder)
        if not ours and os.path.exists(key) and read_json(key) != json.loads(json.dumps(description)):
            return self._give_up(f"{key}: not written by the feature cache for this model")
        if not os.path.exists(key):
            self._write(key, json.dumps(description, indent=2).encode())
        if not ours:
            self._write(self.folder / MARKER, MARKER_TEXT)
        return None

    def _give_up(self, why: str) -> None:
        self.writable = self.readable = False
        warnings.warn(f"{why}; the feature cache is not used for this run", stacklevel=4)

    def digests(self, paths: Sequence[Path]) -> list[str]:
        """Each image's digest, from the index where the file is as it was when it was hashed."""
        return self.index.digests(paths) if self.index else [file_digest(path) for path in paths]

    def load_many(self, digests: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The entries (one per digest, in order) the cache holds intact of the images with these digests, newest
        shard first, and which were found; damaged shards and entries are counted in `damaged` (a damaged shard is
        deleted: its images are recomputed)."""
        unique = list(dict.fromkeys(digests))
        rows, found = np.zeros((len(unique), self.entry_bytes), np.uint8), np.zeros(len(unique), bool)
        if self.readable:
            rows, found = read_shards(self.folder, [bytes.fromhex(digest) for digest in unique], self.entry_bytes,
                                      self.dtype, self.damaged)
        missing = [digest for digest, hit in zip(unique, found.tolist(), strict=True) if not hit]
        if missing and self.readable and has_old_entries(self.folder):
            old = read_old_entries(self.folder, missing, self.shape, self.dtype, self.damaged)
            position = {digest: i for i, digest in enumerate(unique)}
            for digest, entry in old.items():  # moved into the next shard; their files deleted once it is written
                rows[position[digest]], found[position[digest]] = entry.reshape(-1).view(np.uint8), True
                self.repacked.append(entry_path(self.folder, digest))
                self.store(digest, entry)
            if old:
                warnings.warn(f"{self.folder}: {len(old)} entries in the one-file-per-image layout of an older "
                              f"aimonk were read{' and moved into shards' if self.writable else ''}", stacklevel=3)
        if len(unique) < len(digests):  # copies of an image: its entry for each
            inverse = np.array(list(map({digest: i for i, digest in enumerate(unique)}.__getitem__, digests)))
            rows, found = rows[inverse], found[inverse]
        return rows.view(self.dtype).reshape(len(digests), *self.shape), found

    def store(self, digest: str, features: np.ndarray) -> None:
        """Keep an entry for the next shard, written once it is full (or at `flush`)."""
        self.pending.append((digest, features))
        if len(self.pending) >= MAX_ENTRIES or len(self.pending) * self.entry_bytes >= MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the entries kept into a new shard, delete the old files moved into it, save the digest index."""
        if self.pending:
            self._write(self.folder / shard_name(), encode_shard(*map(list, zip(*self.pending, strict=True))))
        self.pending.clear()
        if self.writable:
            for path in self.repacked:
                with contextlib.suppress(OSError):
                    path.unlink()
                    path.parent.rmdir()  # once empty
            if self.index:
                self.index.save(self._write)
        self.repacked.clear()

    def _write(self, path: Path, data: bytes) -> None:
        """Write atomically, unless a write already failed; a failure is one warning, never an error."""
        if not self.writable:
            return
        try:
            with atomic_file(path, durable=False) as file:
                file.write(data)
        except AimonkError as error:
            self.writable = False
            warnings.warn(f"{error}; the feature cache is not written for the rest of this run", stacklevel=2)

    def report_damaged(self) -> None:
        """One warning for the damaged shards and entries read so far (then forgotten)."""
        if self.damaged:
            count = sum(self.damaged.values())
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.damaged.most_common())
            held = "it held was" if count == 1 else "they held were"
            warnings.warn(f"{count} damaged feature-cache {'file was' if count == 1 else 'files were'} set aside "
                          f"({reasons}) in {self.folder}; the images {held} recomputed", stacklevel=2)
            self.damaged.clear()


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
    Cached images are not decoded (`cache.hits` counts them); the rest stream through a DataLoader so memory stays
    bounded, into new shards of the cache.
    """
    digests = cache.digests(paths) if cache else []
    stored, hit = cache.load_many(digests) if cache else (None, np.zeros(len(paths), bool))
    todo, computed = np.flatnonzero(~hit).tolist(), {}
    errors: list[str] = []
    if cache:
        cache.hits += len(paths) - len(todo)
    try:
        if todo:
            dataset = ImageDataset.unlabelled([paths[i] for i in todo], preprocessing, both_orientations=True)
            runner = BackboneRunner(inference_backbone(backbone), precision)
            batches = backbone_batches(runner, dataset, batch_size, num_workers)
            for batch in tqdm(batches, total=-(-len(todo) // batch_size), desc="backbone features", unit="batch",
                              disable=not progress):
                errors.extend(message for _, message in batch["errors"])
                if batch["features"] is None:
                    continue
                for position, features_of_one in zip(batch["index"].tolist(), to_storable(batch["features"]),
                                                     strict=True):
                    original = todo[position]
                    computed[original] = features_of_one
                    if cache:
                        cache.store(digests[original], features_of_one)
    finally:
        if cache:
            cache.flush()  # what was computed is kept, even when the run stops here
    if cache:
        cache.report_damaged()
    readable = sorted({*np.flatnonzero(hit).tolist(), *computed})
    if not readable:
        return torch.zeros(0, 2, 0), [], errors
    if stored is None or not hit.any():
        return from_storable(np.stack([computed[i] for i in readable])), readable, errors
    for i, features_of_one in computed.items():
        stored[i] = features_of_one
    return from_storable(stored if len(readable) == len(paths) else stored[readable]), readable, errors


# What identifies the frozen weights, in the cache's key: SHA-256 of a module's weights (names, shapes, values). The
# resumable state names the frozen weights by theirs too. An image's is in `aimonk.model.digests`.

def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (names, shapes and values)."""
    return state_fingerprint(module.state_dict(keep_vars=True))


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors (names, shapes and values), whatever their memory layout."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor_digest(tensor))
    return digest.hexdigest()


_digests: dict[int, tuple[tuple[int, int], bytes, weakref.ref]] = {}  # id(tensor) -> (version and data, digest, tensor)


def tensor_digest(tensor: torch.Tensor) -> bytes:
    """SHA-256 of a tensor's values; remembered for the tensor object until it changes (in place, or its data is
    replaced), so the cache key and the resumable state fingerprint the same 45 MB of frozen weights once."""
    key, mark = id(tensor), (tensor._version, tensor.data_ptr())
    known = _digests.get(key)
    if known is not None and known[0] == mark and known[2]() is tensor:
        return known[1]
    digest = hashlib.sha256(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).digest()
    _digests[key] = (mark, digest, weakref.ref(tensor, lambda _: _digests.pop(key, None)))
    return digest
