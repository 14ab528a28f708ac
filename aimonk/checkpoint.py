"""Checkpoints: plain dicts of tensors and Python values, written atomically, read with weights_only=True.

The model checkpoint's layout is written and checked here, in one place (`model_checkpoint` and `save_checkpoint`,
`load_checkpoint`, `save_tuning`), with its `DecisionRule`: per attribute the temperature, threshold and verdict that
turn the model's logits into decisions, applied alike by predict, evaluate, the model card, the threshold explorer
and the ONNX export. The resumable state of an interrupted training run is the other file read back (`save_train_state`,
`load_train_state`): what changes as the run goes and only a fingerprint of the frozen weights (`aimonk.train.adam`).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import reprlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aimonk.config import PRECISIONS
from aimonk.data.images import INTERPOLATIONS, RESIZES  # the module that registers the resizes a checkpoint may name
from aimonk.data.labels import shortage
from aimonk.errors import AimonkError, CheckpointError
from aimonk.io import STATE_FILE, atomic_file, attribute_names_problem

FORMAT = "aimonk-checkpoint-v1"
REQUIRED_KEYS = ("format", "state_dict", "attributes", "backbone", "weights_origin", "preprocessing", "thresholds")
STATE_FORMAT = "aimonk-train-state-v4"
OLD_STATE_FORMATS = ("aimonk-train-state-v1",  # the whole model in the state
                     "aimonk-train-state-v2",  # no digest of the training labels
                     "aimonk-train-state-v3")  # no validation per epoch, no best epoch (--patience)
STATE_KEYS = ("config", "model", "frozen_sha256", "optimizer", "history", "epoch", "step", "train_files",
              "labels_sha256", "rng", "epochs", "best")
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
    _check_values(path, data)
    if attributes is not None:
        check_attributes(path, data, attributes)
    if backbone is not None and backbone != data["backbone"]:
        raise CheckpointError(f"{path}: the checkpoint's backbone is {data['backbone']}, not {backbone}")
    for key in PER_ATTRIBUTE:
        if key in data and len(data[key]) != len(data["attributes"]):
            raise CheckpointError(f"{path}: {len(data[key])} {key} for {len(data['attributes'])} attributes")
    return data


def check_attributes(path: str | Path, checkpoint: dict, attributes: Sequence[str]) -> dict:
    """The checkpoint, refused in one line unless it predicts exactly `attributes`."""
    if list(attributes) != list(checkpoint["attributes"]):
        raise CheckpointError(
            f"{path}: the checkpoint predicts attributes {checkpoint['attributes']}, but {list(attributes)} were "
            "asked for"
        )
    return checkpoint


def _check_values(path: Path | str, data: dict, intro: str = "malformed") -> None:
    """Refuse a checkpoint any of whose entries (those present, of CHECKS) holds what aimonk would not write."""
    problems = {key: problem for key, check in CHECKS.items() if key in data and (problem := check(key, data[key]))}
    if problems:
        raise CheckpointError(f"{path}: {intro} {', '.join(problems)}: {'; '.join(problems.values())}")


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """The logistic function in float64, without overflow for any x."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


@dataclass(frozen=True)
class DecisionRule:
    """What turns a model's logits into decisions, per attribute: the probability sigmoid(logit / temperature), and
    "present" where it reaches the threshold, for an attribute judged learnable; one that is not (no better than
    chance on the validation images) is never decided, and one that cannot be judged at all (no known positive or
    negative label: `shortages` says which) has no probability. `aimonk tune` sets it; until then temperatures are 1,
    thresholds 0.5 and every attribute with labels of both kinds is decided."""

    attributes: tuple[str, ...]
    thresholds: tuple[float, ...]
    temperatures: tuple[float, ...]
    learnable: tuple[bool, ...]
    verdicts: tuple[str, ...] | None = None  # as `aimonk tune` judged them; None before
    # per attribute, why it cannot be judged at all (no known positive or negative label among those the model
    # learned from: `shortage`), else None; such an attribute has no probability (NaN) and is never decided
    shortages: tuple[str | None, ...] | None = None

    @classmethod
    def untuned(cls, attributes: Sequence[str], shortages: Sequence[str | None] | None = None) -> DecisionRule:
        n = len(attributes)
        shortages = tuple(shortages) if shortages is not None and any(shortages) else None
        return cls(tuple(attributes), (0.5,) * n, (1.0,) * n, tuple(why is None for why in shortages or (None,) * n),
                   None, shortages)

    @classmethod
    def of(cls, checkpoint: dict) -> DecisionRule:
        """The rule a (loaded) checkpoint holds; an attribute without a known positive or negative label in the
        labels it was trained on (`label_counts`) cannot be judged, whatever else it says."""
        n = len(checkpoint["attributes"])
        verdicts = checkpoint.get("verdicts")
        counts = checkpoint.get("label_counts") or {}
        known, positive = counts.get("known", []), counts.get("positive", [])
        shortages = tuple(map(shortage, known, positive)) if len(known) == len(positive) == n else (None,) * n
        learnable = checkpoint.get("learnable", [True] * n)
        return cls(tuple(checkpoint["attributes"]), tuple(map(float, checkpoint["thresholds"])),
                   tuple(map(float, checkpoint.get("temperatures", [1.0] * n))),
                   tuple(bool(judged) and why is None for judged, why in zip(learnable, shortages, strict=True)),
                   None if verdicts is None else tuple(verdicts), shortages if any(shortages) else None)

    def entries(self) -> dict[str, list]:
        """The rule as checkpoint entries (one value per attribute each): the thresholds alone until `aimonk tune`
        judged the attributes (a checkpoint without verdicts says that no attribute was judged yet)."""
        if self.verdicts is None:
            return {"thresholds": list(self.thresholds)}
        return {"thresholds": list(self.thresholds), "temperatures": list(self.temperatures),
                "learnable": list(self.learnable), "verdicts": list(self.verdicts)}

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64) of logits (..., attributes); NaN for an attribute that cannot be judged
        at all (its output learned nothing: any number there would be made up)."""
        return self.judged(sigmoid(np.asarray(logits, dtype=np.float64) / np.asarray(self.temperatures, np.float64)))

    def judged(self, probabilities: np.ndarray) -> np.ndarray:
        """`probabilities` (float64, ..., attributes) with NaN for each attribute that cannot be judged at all (an
        ONNX export's graph, which applies the temperatures itself, gives a number there too)."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if self.shortages and any(self.shortages):
            probabilities = probabilities.copy()
            probabilities[..., [why is not None for why in self.shortages]] = np.nan
        return probabilities

    def decisions(self, probabilities: Sequence[float]) -> list[bool | None]:
        """Per attribute: present (its probability reaches its threshold), absent, or None where none is made."""
        return [bool(p >= t) if learnable else None
                for p, t, learnable in zip(probabilities, self.thresholds, self.learnable, strict=True)]

    def present(self, probabilities: Sequence[float]) -> list[str]:
        """Names of the attributes decided present."""
        return [name for name, present in zip(self.attributes, self.decisions(probabilities), strict=True) if present]

    @property
    def cannot_judge(self) -> list[str]:
        """Attributes the model was found no better than chance at (or too rarely labelled to tell): never decided."""
        return [name for name, learnable in zip(self.attributes, self.learnable, strict=True) if not learnable]

    def why_not_judged(self) -> dict[str, str]:
        """Each attribute that is never decided, and why, in words."""
        shortages = self.shortages or (None,) * len(self.attributes)
        return {name: f"{why} in its training labels: no probability" if why else
                "no better than chance on its validation images" for name, learnable, why in
                zip(self.attributes, self.learnable, shortages, strict=True) if not learnable}


def model_checkpoint(
    model: nn.Module, *, attributes: list[str], backbone: str, weights_origin: str, preprocessing: dict,
    precision: str, train_config: dict, train_files: list[str], val_files: list[str], skipped_files: list[str],
    label_counts: dict, validation: dict | None = None, training: dict | None = None, data: dict | None = None,
) -> dict:
    """The inference checkpoint: weights plus everything needed to predict and evaluate, with the untuned decision
    rule and the metrics on the validation images at it (`validation`, if any were held out), and how the training
    went (`training`: the epochs run, the one kept and why it stopped; the checkpoint it started from, if any)."""
    checkpoint = {
        "format": FORMAT,
        "state_dict": {key: value.contiguous() for key, value in model.state_dict().items()},
        "attributes": list(attributes),
        "backbone": backbone,
        "weights_origin": weights_origin,
        "preprocessing": preprocessing,
        "precision": precision,
        **DecisionRule.untuned(attributes).entries(),
        "train_config": train_config,
        "train_files": list(train_files),
        "val_files": list(val_files),
        "skipped_files": list(skipped_files),
        "label_counts": label_counts,
        **({} if data is None else {"data": data}),
    }
    optional = {"validation": validation, "training": training}
    return {**checkpoint, **{key: value for key, value in optional.items() if value is not None}}


def data_record(labels: Path | None, images: Path, model_path: Path) -> dict:
    """Where a run's labels (None: given as a table, not a file) and images were: absolute, and relative to the
    checkpoint's folder, so that the checkpoint finds them from any working folder, and after the whole tree moved."""
    def both(path: Path | None) -> tuple[str | None, str | None]:
        if path is None:
            return None, None
        absolute = Path(os.path.abspath(path))
        return str(absolute), os.path.relpath(absolute, os.path.abspath(Path(model_path).parent))

    (labels_at, labels_relative), (images_at, images_relative) = both(labels), both(images)
    return {"labels": labels_at, "labels_relative": labels_relative, "images": images_at,
            "images_relative": images_relative}


def recorded_data(checkpoint: dict, model_path: str | Path) -> tuple[Path | None, Path | None]:
    """The labels file and image folder a checkpoint's run read (each None where not recorded): the absolute path
    where it exists, else the one relative to the checkpoint where that exists, else the absolute one."""
    data, folder = checkpoint.get("data") or {}, Path(model_path).parent

    def found(key: str) -> Path | None:
        if not data.get(key):
            return None
        absolute = Path(data[key])
        relative = Path(os.path.normpath(folder.absolute() / data.get(f"{key}_relative", data[key])))
        return absolute if absolute.exists() or not relative.exists() else relative

    return found("labels"), found("images")


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write a model checkpoint atomically; one that could not be read back is refused, and nothing written."""
    _check_values(path, checkpoint, "not saved, invalid")
    return save_atomic(checkpoint, path)


def _is(value: object, kind: type) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, kind)


# What each entry may hold: a check gives the problem with the entry named (`thresholds[2] is nan; ...`), or None.
Check = Callable[[str, object], "str | None"]
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)  # counters (num_batches_tracked)
MAX_IMAGE_SIZE = 4096  # as --image-size
_SHOWN = reprlib.Repr()  # a crafted value is shown shortened, to keep the message one short line
_SHOWN.maxstring, _SHOWN.maxother = 120, 60


def _kind(kind: type, what: str) -> Check:
    return lambda name, value: None if _is(value, kind) else f"{name} is {_SHOWN.repr(value)}, not {what}"


def _number(rule: str, valid: Callable[[float], bool]) -> Check:
    """A finite int or float for which `valid` holds; `rule` says which those are."""
    def check(name: str, value: object) -> str | None:
        return _kind(float, "a number")(name, value) or (None if _finite(value) and valid(value)
                                                         else f"{name} is {_SHOWN.repr(value)}; {rule}")
    return check


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _list(item: Check, length: int | None = None, types: tuple[type, ...] = (list,)) -> Check:
    """A list (or one of `types`) whose every item passes `item`; of `length` items if given."""
    def check(name: str, value: object) -> str | None:
        if not isinstance(value, types) or (length is not None and len(value) != length):
            return f"{name} is {_SHOWN.repr(value)}, not a list{'' if length is None else f' of {length}'}"
        return next((problem for i, v in enumerate(value) if (problem := item(f"{name}[{i}]", v))), None)
    return check


def _fields(checks: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    """A dict with each of these keys (and maybe others, the `optional` ones checked if present), each value passing
    its check."""
    def check(name: str, value: object) -> str | None:
        if not isinstance(value, dict):
            return f"{name} is {_SHOWN.repr(value)}, not a dict with keys {', '.join(checks)}"
        if missing := [key for key in checks if key not in value]:
            return f"{name} has no {', '.join(missing)}"
        present = {**checks, **{key: item for key, item in (optional or {}).items() if key in value}}
        return next((problem for key, item in present.items() if (problem := item(f"{name}.{key}", value[key]))), None)
    return check


def _tensors(name: str, value: object) -> str | None:
    if not isinstance(value, dict):
        return f"{name} is {_SHOWN.repr(value)}, not a dict of tensors"
    for key, tensor in value.items():
        if not isinstance(key, str):
            return f"{name} has a key {_SHOWN.repr(key)}, not a str"
        if problem := _tensor(tensor):
            return f"{name}[{_SHOWN.repr(key)}] {problem}"
    return None


def _tensor(tensor: object) -> str | None:
    if not isinstance(tensor, torch.Tensor):
        return f"is {_SHOWN.repr(tensor)}, not a tensor"
    if tensor.layout != torch.strided or tensor.device.type != "cpu":
        return f"is a {tensor.layout} tensor on {tensor.device}, not a dense one in memory"
    if tensor.dtype != torch.float32 and tensor.dtype not in INTEGER_DTYPES:
        return f"is {str(tensor.dtype).removeprefix('torch.')}; weights are float32 (counters integers)"
    return None if tensor.dtype != torch.float32 or torch.isfinite(tensor).all() else "holds NaN or infinite values"


def _names(name: str, value: object) -> str | None:
    problem = TEXTS(name, value) or (None if value else f"{name} is empty")
    return problem or (f"{name}: {reason}" if (reason := attribute_names_problem(value)) else None)


def _one_of(choices: tuple[str, ...]) -> Check:
    return lambda name, value: None if value in choices else f"{name} is {_SHOWN.repr(value)}, not one of {choices}"


COUNT = _number("a count is an int >= 0", lambda v: isinstance(v, int) and v >= 0)
TEXT, TEXTS, MEAN = _kind(str, "a str"), _list(_kind(str, "a str")), _number("a mean is finite", lambda v: True)
CHECKS: dict[str, Check] = {
    "state_dict": _tensors,
    "attributes": _names,
    "backbone": TEXT,
    "weights_origin": TEXT,
    "preprocessing": _fields({
        "image_size": _number(f"an image size is an int from 1 to {MAX_IMAGE_SIZE}",
                              lambda v: isinstance(v, int) and 1 <= v <= MAX_IMAGE_SIZE),
        "mean": _list(MEAN, 3, (list, tuple)),
        "std": _list(_number("a standard deviation is finite and > 0", lambda v: v > 0), 3, (list, tuple)),
    }, {"resize": lambda name, value: _one_of(tuple(RESIZES))(name, value),  # none: squashed, as before it was one
        "interpolation": _one_of(tuple(INTERPOLATIONS)),  # none: bilinear
        "crop_share": _number("a crop share is in (0, 1]", lambda v: 0 < v <= 1)}),
    "precision": _one_of(PRECISIONS),
    "thresholds": _list(_number("a threshold is a probability in [0, 1]", lambda v: 0 <= v <= 1)),
    "temperatures": _list(_number("a temperature is finite and > 0", lambda v: v > 0)),
    "verdicts": TEXTS,
    "learnable": _list(_kind(bool, "true or false")),
    "train_config": _kind(dict, "a dict"),
    "train_files": TEXTS,
    "val_files": TEXTS,
    "skipped_files": TEXTS,
    "data": _kind(dict, "a dict"),  # where the labels and images were (data_record)
    "label_counts": _fields({  # the images a run used and, per attribute, its known and positive labels
        **dict.fromkeys(("images", "train", "validation", "skipped"), COUNT), "known": _list(COUNT),
        "positive": _list(COUNT)}),
    "training": _fields({  # how the run went: epochs run, the one whose weights were kept, why it stopped
        "epochs_run": COUNT, "kept_epoch": COUNT, "stopped": TEXT},
        {"init_from": _fields({"path": TEXT, "sha256": TEXT})}),  # the checkpoint it started from (--init-from)
    "validation": _fields({  # metrics on the validation images at the saved thresholds (aimonk.card shows them)
        "images": COUNT, "bootstrap": COUNT, "seed": COUNT, "metrics": _kind(dict, "a dict"),
        "confidence": _number("a confidence is in (0, 1)", lambda v: 0 < v < 1)}),
}


def save_tuning(path: str | Path, validation: dict | None = None, **per_attribute: list) -> dict:
    """Store per-attribute entries (those of a decision rule: thresholds, temperatures, learnable, verdicts), and the
    `validation` metrics if given, into a checkpoint, atomically; a value that the checkpoint could not be read back
    with is refused, and nothing written. Returns the checkpoint as saved."""
    data = load_checkpoint(path)
    if validation is not None:
        data["validation"] = validation
    for key, values in per_attribute.items():
        if key not in PER_ATTRIBUTE:
            raise ValueError(f"{key} is not a per-attribute entry of a checkpoint")
        if len(values) != len(data["attributes"]):
            raise CheckpointError(f"{path}: {len(values)} {key} for {len(data['attributes'])} attributes")
        data[key] = [PER_ATTRIBUTE[key](value) for value in values]
    save_checkpoint(data, path)
    return data


def save_train_state(out_dir: str | Path, **state: object) -> None:
    """What `--resume` needs (the STATE_KEYS), written atomically: a kill leaves the previous or the new state."""
    save_atomic({"format": STATE_FORMAT, **state}, Path(out_dir) / STATE_FILE)


def load_train_state(out_dir: str | Path) -> dict:
    """The saved state of an interrupted run, refused with a clear message if absent or not a training state."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise AimonkError(f"{path}: nothing to resume (no saved training state)")
    state = load_safely(path)
    if state.get("format") in OLD_STATE_FORMATS:
        raise AimonkError(f"{path}: saved by an older version of aimonk ({state['format']}), which this one cannot "
                          "resume; train again without --resume")
    if state.get("format") != STATE_FORMAT or any(key not in state for key in STATE_KEYS):
        raise AimonkError(f"{path}: not an aimonk training state")
    if not isinstance(state["config"], dict):
        raise AimonkError(f"{path}: the training state's settings are not those of this version of aimonk")
    return state
