"""What identifies an input: SHA-256 of a file's bytes, and of a module's weights (names, shapes, values).

The feature cache is keyed by both; the resumable state names the frozen weights by theirs.
"""

from __future__ import annotations

import hashlib
import weakref
from pathlib import Path

import torch
from torch import nn


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: a renamed or copied image hits the cache, an edited one misses."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
