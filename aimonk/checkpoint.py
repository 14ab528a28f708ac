"""Checkpoints: plain dicts of tensors and Python values, written atomically, read with weights_only=True.

The model checkpoint's layout is written and checked here, in one place (`save_model_checkpoint`,
`load_checkpoint`); the resumable training state has its own format in `aimonk.train.resume`.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from aimonk.errors import CheckpointError
from aimonk.io import atomic_file

FORMAT = "aimonk-checkpoint-v1"
REQUIRED_KEYS = ("format", "state_dict", "attributes", "backbone", "weights_origin", "preprocessing", "thresholds")
# One value per attribute, and its type. All but thresholds are written by `aimonk tune` (notebook 03); where they
# are absent, every attribute counts as learnable and its temperature is 1.
PER_ATTRIBUTE = {"thresholds": float, "verdicts": str, "learnable": bool, "temperatures": float}


def save_atomic(obj: object, path: str | Path) -> Path:
    """torch.save to `path` atomically (see `atomic_file`): a crash leaves the old file or the new, never half."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # in memory first: torch turns a failed write (no space left) into a bare RuntimeError
    with atomic_file(path) as file:
        file.write(buffer.getbuffer())
    return Path(path)


def load_safely(path: str | Path) -> dict:
    """torch.load with weights_only=True; anything that is not plain data is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols; the outcome is reported below
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused: not a file of plain weights ({_unpickling_reason(error)}); nothing in it was run. "
            "Only load checkpoints from sources you trust."
        ) from None
    except Exception as error:  # noqa: BLE001 - a corrupt zip, EOF, or wrong format raise many types
        raise CheckpointError(
            f"{path}: not a readable checkpoint: damaged, or not a PyTorch file ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an aimonk checkpoint (holds a {type(data).__name__})")
    return data


def _unpickling_reason(error: Exception) -> str:
    """The one informative sentence of torch's long weights-only error message."""
    for line in str(error).splitlines():
        if "Unsupported" in line:
            reason = line[line.index("Unsupported") :].split(". ")[0]
            return f"it holds pickled Python objects: {reason}" if "global" in reason else reason
    return "unreadable pickle data"


def load_checkpoint(
    path: str | Path, attributes: list[str] | None = None, backbone: str | None = None
) -> dict:
    """A model checkpoint, refused with a clear message if malformed or not matching what is asked."""
    data = load_safely(path)
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if data.get("format") != FORMAT or missing:
        raise CheckpointError(f"{path}: not an aimonk model checkpoint (missing {', '.join(missing) or 'format'})")
    _check_types(path, data)
    if attributes is not None and list(attributes) != list(data["attributes"]):
        raise CheckpointError(
            f"{path}: the checkpoint predicts attributes {data['attributes']}, but {attributes} were asked for"
        )
    if backbone is not None and backbone != data["backbone"]:
        raise CheckpointError(f"{path}: the checkpoint's backbone is {data['backbone']}, not {backbone}")
    for key in PER_ATTRIBUTE:
        if key in data and len(data[key]) != len(data["attributes"]):
            raise CheckpointError(f"{path}: {len(data[key])} {key} for {len(data['attributes'])} attributes")
    return data


def _check_types(path: Path | str, data: dict) -> None:
    """Refuse a checkpoint whose entries have the right names but the wrong kind of content."""
    valid = {
        "state_dict": isinstance(data["state_dict"], dict)
        and all(isinstance(value, torch.Tensor) for value in data["state_dict"].values()),
        "attributes": isinstance(data["attributes"], list) and all(isinstance(a, str) for a in data["attributes"]),
        "backbone": isinstance(data["backbone"], str),
        "preprocessing": isinstance(data["preprocessing"], dict)
        and {"image_size", "mean", "std"} <= data["preprocessing"].keys(),
        **{key: isinstance(data[key], list) and all(_is(value, kind) for value in data[key])
           for key, kind in PER_ATTRIBUTE.items() if key in data},
    }
    malformed = [key for key, ok in valid.items() if not ok]  # (thresholds: required, so present here)
    if malformed:
        raise CheckpointError(f"{path}: not an aimonk model checkpoint (malformed {', '.join(malformed)})")


def save_model_checkpoint(
    path: Path, model: nn.Module, *, attributes: list[str], backbone: str, weights_origin: str, preprocessing: dict,
    precision: str, train_config: dict, train_files: list[str], val_files: list[str], skipped_files: list[str],
) -> Path:
    """The inference checkpoint: weights plus everything needed to predict and evaluate."""
    return save_atomic(
        {
            "format": FORMAT,
            "state_dict": {key: value.contiguous() for key, value in model.state_dict().items()},
            "attributes": list(attributes),
            "backbone": backbone,
            "weights_origin": weights_origin,
            "preprocessing": preprocessing,
            "precision": precision,
            "thresholds": [0.5] * len(attributes),
            "train_config": train_config,
            "train_files": list(train_files),
            "val_files": list(val_files),
            "skipped_files": list(skipped_files),
        },
        path,
    )


def _is(value: object, kind: type) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, kind)


def save_tuning(path: str | Path, **per_attribute: list) -> None:
    """Store per-attribute entries (thresholds, verdicts, learnable, temperatures) into a checkpoint, atomically."""
    data = load_checkpoint(path)
    for key, values in per_attribute.items():
        if key not in PER_ATTRIBUTE:
            raise ValueError(f"{key} is not a per-attribute entry of a checkpoint")
        if len(values) != len(data["attributes"]):
            raise CheckpointError(f"{path}: {len(values)} {key} for {len(data['attributes'])} attributes")
        data[key] = [PER_ATTRIBUTE[key](value) for value in values]
    save_atomic(data, path)
