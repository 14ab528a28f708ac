"""Resumable training: the saved state's format, random-number states, and Ctrl-C handling around updates.

The state holds what changes as the run goes (the trainable weights, optimizer, counters, random-number states, loss
history) and only a fingerprint of the frozen weights: `--resume` rebuilds them from the run's settings and checks the
fingerprint. For a frozen backbone that is a few kilobytes instead of the whole network after every epoch.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from aimonk.checkpoint import load_safely, save_atomic
from aimonk.config import TrainConfig, setting_names
from aimonk.errors import AimonkError
from aimonk.io import STATE_FILE
from aimonk.model.classifier import AttributeClassifier
from aimonk.model.features import state_fingerprint

STATE_FORMAT = "aimonk-train-state-v2"
OLD_FORMATS = ("aimonk-train-state-v1",)  # the whole model in the state
STATE_KEYS = ("config", "model", "frozen_sha256", "optimizer", "history", "epoch", "step", "train_files", "rng")


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


def save_train_state(
    out_dir: Path, *, config: dict, model: AttributeClassifier, frozen_sha256: str, optimizer: dict,
    history: list[float], epoch: int, step: int, train_files: list[str],
) -> None:
    """Everything `--resume` needs, written atomically: a kill leaves the previous or the new state."""
    trainable = {name: tensor.detach().contiguous() for name, tensor in model.split_state()[0].items()}
    state = {"format": STATE_FORMAT, "config": config, "model": trainable, "frozen_sha256": frozen_sha256,
             "optimizer": optimizer, "history": list(history), "epoch": epoch, "step": step,
             "train_files": list(train_files), "rng": capture_rng()}
    save_atomic(state, Path(out_dir) / STATE_FILE)


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


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends; a no-op outside the main thread or under a foreign handler."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)


def resumed_config(saved: dict, out_dir: Path, progress: bool) -> TrainConfig:
    """The interrupted run's settings, in the folder it is resumed from."""
    if not saved.keys() <= set(setting_names()):
        raise AimonkError(f"{out_dir / STATE_FILE}: the training state's settings are not those of this version "
                          "of aimonk")
    return TrainConfig(**{**saved, "out_dir": str(out_dir), "progress": progress})
