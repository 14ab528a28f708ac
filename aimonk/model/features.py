"""Features: what the frozen stages of a model output for a list of images, from one function (`features_of`) for
every consumer (training, the validation scores at the end of a run, evaluate, tune, the labels workflow).

With a frozen backbone that is the feature vector; when the last stages are fine-tuned it is the feature map of the
last frozen stage, so the frozen stages run once per image instead of every epoch. Each image is decoded once and
run in both orientations (as is and flipped), so training with a random horizontal flip can pick either without
touching the image again. The backbone runs fast: BatchNorm folded, channels_last, bf16 autocast, inside the
DataLoader workers on a CPU.

Features kept between runs come from a `FeatureStore`, given by the caller: the on-disk cache (`aimonk.cache`) is
one, an extra the core never imports. An image the store holds is not decoded.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.fx.experimental.optimization import fuse
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from aimonk.data.images import ImageDataset, Preprocessing, collate_readable
from aimonk.model.classifier import backbone_autocast


class FeatureStore(Protocol):
    """Features kept between runs for one frozen backbone, preprocessing and precision: entries of shape
    (2, *output shape), bf16 as its raw bits (`to_storable`)."""

    hits: int  # images whose features came from the store

    def get(self, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        """(entries, one per path; which were found)."""

    def put(self, index: int, entry: np.ndarray) -> None:
        """Keep the entry computed for `paths[index]` of the last `get`."""

    def close(self) -> None:
        """Write what is kept; report what was found damaged."""


# The store of features for (frozen stages, preprocessing, precision)
Stores = Callable[[nn.Module, Preprocessing, str], FeatureStore]


def features_of(
    backbone: nn.Module,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    store: FeatureStore | None = None,
    precision: str = "bf16",
    batch_size: int = 8,  # images, so 16 forward passes: the fastest size on a 2-core CPU (measured)
    num_workers: int = 2,
    progress: bool = True,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Outputs of `backbone` (n_readable, 2, ...) for the readable images, their indices into `paths`, read errors.

    Returns an empty (0, 2, 0) tensor if no image is readable. The dtype is bf16 or float32, as computed. Images the
    store holds are not decoded; the rest stream through a DataLoader so memory stays bounded, into the store.
    """
    stored, hit = store.get(paths) if store else (None, np.zeros(len(paths), bool))
    todo, computed = np.flatnonzero(~hit).tolist(), {}
    errors: list[str] = []
    if store:
        store.hits += len(paths) - len(todo)
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
                for position, entry in zip(batch["index"].tolist(), to_storable(batch["features"]), strict=True):
                    computed[todo[position]] = entry
                    if store:
                        store.put(todo[position], entry)
    finally:
        if store:
            store.close()  # what was computed is kept, even when the run stops here
    readable = sorted({*np.flatnonzero(hit).tolist(), *computed})
    if not readable:
        return torch.zeros(0, 2, 0), [], errors
    if stored is None or not hit.any():
        return from_storable(np.stack([computed[i] for i in readable])), readable, errors
    for i, entry in computed.items():
        stored[i] = entry
    return from_storable(stored if len(readable) == len(paths) else stored[readable]), readable, errors


def to_storable(outputs: torch.Tensor) -> np.ndarray:
    """A numpy array that keeps the values exactly: bf16 as its raw 16 bits (numpy has no bf16)."""
    if outputs.dtype == torch.bfloat16:
        return outputs.contiguous().view(torch.int16).numpy()
    return outputs.float().contiguous().numpy()


def from_storable(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if tensor.dtype == torch.int16 else tensor


def inference_backbone(backbone: nn.Module) -> nn.Module:
    """A copy of a backbone for inference, in channels_last, with each BatchNorm folded into its convolution.

    Same function (to float rounding), one pass less over every activation: about 25 % faster on CPU.
    """
    return fuse(backbone.eval()).to(memory_format=torch.channels_last)


def output_shape(backbone: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of `backbone`'s output for an input of `input_shape`, in eval mode.

    Found on the meta device (shapes only, no arithmetic: milliseconds, and nothing of `backbone` is touched).
    """
    modes = {module: module.training for module in backbone.modules()}
    meta = {name: torch.empty_like(value, device="meta") for name, value in backbone.state_dict().items()}
    try:
        return tuple(functional_call(backbone.eval(), meta, (torch.empty(input_shape, device="meta"),)).shape)
    finally:
        for module, training in modes.items():
            module.training = training


class BackboneRunner:
    """Images -> outputs of a (frozen) backbone in inference mode; also a DataLoader `collate_fn` (outputs on CPU).

    Items may hold one image (3, H, W) or several, e.g. both orientations (k, 3, H, W): outputs follow that shape.
    The output is a feature vector, or a feature map when the backbone is the frozen part of a fine-tuned model.
    """

    def __init__(self, backbone: nn.Module, precision: str):
        self.backbone = backbone
        self.precision = precision

    def __call__(self, items: list[dict]) -> dict:
        return self.embed(collate_readable(items))

    def embed(self, batch: dict) -> dict:
        """A `collate_readable` batch with "features" in place of "image"."""
        images = batch.pop("image")
        batch["features"] = None if images is None else self.features(images).cpu()
        return batch

    @property
    def device(self) -> torch.device:
        """Where the backbone's weights are (the CPU for a backbone of no stage: every stage fine-tuned)."""
        return next(self.backbone.parameters(), torch.empty(0)).device

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's output on its device: bf16 at precision bf16, else float32; the images themselves (float32)
        for a backbone of no stage."""
        if next(self.backbone.parameters(), None) is None:
            return images
        device = self.device
        flat = images.flatten(0, -4).to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), backbone_autocast(self.precision, device):
            # bf16 for every backbone (autocast leaves some, e.g. ConvNeXt's last LayerNorm, in float32), so the
            # feature store knows each entry's dtype before reading it
            output = self.backbone(flat).to(torch.bfloat16 if self.precision == "bf16" else torch.float32)
        # clone: a normal tensor, not an inference one
        return output.view(*images.shape[:-3], *output.shape[1:]).clone()


def backbone_batches(runner: BackboneRunner, dataset: Dataset, batch_size: int, num_workers: int) -> Iterator[dict]:
    """`collate_readable` batches of `dataset` with "features" in place of "image".

    On a CPU with at least one worker per thread, each (single-threaded) worker decodes and runs the backbone on its
    own batches: decoding then never stalls a forward pass spread over all cores (20-25 % faster on 2 cores,
    measured). Otherwise workers only decode and the main process runs the backbone. (A forked worker must stay
    single-threaded: OpenMP hangs in a child whose parent already ran threads.)
    """
    on_cpu = runner.device.type == "cpu"
    in_workers = on_cpu and num_workers >= torch.get_num_threads()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=runner if in_workers else collate_readable)
    for batch in loader:
        yield batch if in_workers else runner.embed(batch)


# What identifies frozen weights, in the feature cache's key and in the resumable state: SHA-256 of a module's weights
# (names, shapes, values).

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
