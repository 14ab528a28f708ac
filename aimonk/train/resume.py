"""Resumable training: the saved state's format, random-number states, and Ctrl-C handling around updates.

The state holds what changes as the run goes (the trainable weights, optimizer, counters, random-number states, loss
history) and only a fingerprint of the frozen weights: `--resume` rebuilds them from the run's settings and checks the
fingerprint. For a frozen backbone that is a few kilobytes instead of the whole network after every epoch. Resume is
exact or refused: other settings, other training images or other training labels are refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from aimonk.checkpoint import load_safely, save_atomic
from aimonk.config import PLACES, TrainConfig, setting_names
from aimonk.data.labels import LabelTable
from aimonk.errors import AimonkError
from aimonk.io import STATE_FILE
from aimonk.model.classifier import AttributeClassifier
from aimonk.model.features import state_fingerprint

STATE_FORMAT = "aimonk-train-state-v3"
OLD_FORMATS = ("aimonk-train-state-v1",  # the whole model in the state
               "aimonk-train-state-v2")  # no digest of the training labels
STATE_KEYS = ("config", "model", "frozen_sha256", "optimizer", "history", "epoch", "step", "train_files",
              "labels_sha256", "rng")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised after the resumable state was saved."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng() -> dict:
    """The torch, numpy and Python random states, as tensors and ints (loadable with weights_only)."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_position": int(np.random.get_state()[2]),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_position"], 0, 0.0))
    random.setstate((3, tuple(rng["python"].tolist()), None))


def frozen_fingerprint(model: AttributeClassifier) -> str:
    """What identifies the weights that do not train (computed once per run: they never change)."""
    return state_fingerprint(model.split_state()[1])


def labels_digest(table: LabelTable) -> str:
    """SHA-256 of a table's attribute names, file names and labels (1, 0 or unknown): what the run learns from."""
    digest = hashlib.sha256(json.dumps([table.attributes, table.filenames]).encode())
    digest.update(np.ascontiguousarray(np.where(table.known, table.targets, 0), dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(table.known, dtype=bool).tobytes())
    return digest.hexdigest()


def save_train_state(
    out_dir: Path, *, config: dict, model: AttributeClassifier, frozen_sha256: str, optimizer: dict,
    history: list[float], epoch: int, step: int, train_files: list[str], labels_sha256: str,
) -> None:
    """Everything `--resume` needs, written atomically: a kill leaves the previous or the new state."""
    trainable = {name: tensor.detach().contiguous() for name, tensor in model.split_state()[0].items()}
    state = {"format": STATE_FORMAT, "config": config, "model": trainable, "frozen_sha256": frozen_sha256,
             "optimizer": optimizer, "history": list(history), "epoch": epoch, "step": step,
             "train_files": list(train_files), "labels_sha256": labels_sha256,
             "rng": capture_rng()}
    save_atomic(state, Path(out_dir) / STATE_FILE)


def restore_run(model: AttributeClassifier, state: dict, train_table: LabelTable, path: Path) -> None:
    """Continue from a saved state: its trainable weights into `model` and its random-number states, refused with
    one line if the training images or their labels are not the interrupted run's."""
    if state["train_files"] != train_table.filenames:
        raise AimonkError(f"{path}: the training images differ from the interrupted run's")
    digest = labels_digest(train_table)
    if state["labels_sha256"] != digest:
        raise AimonkError(f"{path}: the labels of the training images in {train_table.path} differ from the "
                          f"interrupted run's (labels digest {digest[:12]}, saved {str(state['labels_sha256'])[:12]}); "
                          "resume with the same labels, or train anew into another --out-dir")
    restore_trainable(model, state, path)
    restore_rng(state["rng"])


def restore_trainable(model: AttributeClassifier, state: dict, path: Path) -> None:
    """Load a saved state's trainable weights into `model`, built from the same settings; refused with one line if
    its frozen weights are not those of the interrupted run (e.g. another --weights file)."""
    trainable, frozen = model.split_state()
    if state_fingerprint(frozen) != state["frozen_sha256"]:
        raise AimonkError(f"{path}: the frozen backbone weights differ from the interrupted run's (another --weights "
                          "file, or ImageNet weights that cannot be had here?); resume where they are the same")
    saved = state["model"]
    if not isinstance(saved, dict) or saved.keys() != trainable.keys():
        raise AimonkError(f"{path}: the saved weights are not those of this model's trainable part")
    try:
        model.load_state_dict(saved, strict=False)
    except RuntimeError as error:
        raise AimonkError(f"{path}: the saved weights do not fit the model ({str(error).splitlines()[-1].strip()})") \
            from None


def load_train_state(out_dir: Path) -> dict:
    """The saved state of an interrupted run, refused with a clear message if absent or not a training state."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise AimonkError(f"{path}: nothing to resume (no saved training state)")
    state = load_safely(path)
    if state.get("format") in OLD_FORMATS:
        raise AimonkError(f"{path}: saved by an older version of aimonk ({state['format']}), which this one cannot "
                          "resume; train again without --resume")
    if state.get("format") != STATE_FORMAT or any(key not in state for key in STATE_KEYS):
        raise AimonkError(f"{path}: not an aimonk training state")
    if not isinstance(state["config"], dict):
        raise AimonkError(f"{path}: the training state's settings are not those of this version of aimonk")
    return state


def resume_optimizer(optimizer: torch.optim.Optimizer, state: dict | None) -> tuple[int, int]:
    """(epoch, step) to continue from, with the saved optimizer state loaded; (0, 0) without a state."""
    if state is None:
        return 0, 0
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["step"]


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT), and SIGTERM where Python handles it (as Ctrl-C, during training), until the block ends,
    then pass them on; a no-op outside the main thread or under a foreign SIGINT handler."""
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    if threading.current_thread() is not threading.main_thread() or previous[signal.SIGINT] is None:
        yield
        return
    held = [number for number, handler in previous.items() if number == signal.SIGINT or callable(handler)]
    received: list[int] = []
    for number in held:
        signal.signal(number, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for number in held:
            signal.signal(number, previous[number])
        for number in dict.fromkeys(received):  # each once, in the order they came
            if callable(previous[number]):
                previous[number](number, None)


def resumed_config(saved: dict, path: Path, given: TrainConfig) -> TrainConfig:
    """The interrupted run's settings (saved in the state at `path`), where `given` says things live and how the run
    is shown (PLACES); refused in one line if another setting given explicitly differs from the saved one."""
    if not saved.keys() <= set(setting_names()):
        raise AimonkError(f"{path}: the training state's settings are not those of this version of aimonk")
    run = TrainConfig(**saved)
    differ = [f"{name}={getattr(given, name)} (saved: {getattr(run, name)})" for name in setting_names()
              if name in given.given and name not in PLACES and getattr(given, name) != getattr(run, name)]
    if differ:
        raise AimonkError(f"{path}: --resume continues the saved run as it was, but these settings given differ from "
                          f"it: {', '.join(differ)}; drop them to resume, or train anew into another --out-dir")
    places = {name: getattr(given, name) for name in PLACES & given.given}
    return TrainConfig(**{**saved, **places, "out_dir": given.out_dir, "progress": given.progress})
