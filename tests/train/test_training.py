"""train(): a seed repeats a run; a run takes its output folder's lock; SIGTERM is Ctrl-C while it runs; fine-tuning
depth: the last N stages train, the frozen ones never change, and the frozen stages' output is cached so that
fine-tuning does not re-run them every epoch, with the same loss history as without the cache."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_cached

import aimonk.data.images
from aimonk.checkpoint import load_train_state
from aimonk.config import TrainConfig
from aimonk.data.images import open_rgb
from aimonk.errors import AimonkError
from aimonk.io import LOCK_FILE, output_lock
from aimonk.model.classifier import build_model
from aimonk.train.training import TrainingInterrupted


def test_same_seed_repeats_a_run_and_another_seed_does_not(small_dataset: Path, tmp_path: Path):
    def run(seed: int, out: str) -> list[float]:
        config = TrainConfig(data_dir=str(small_dataset), out_dir=str(tmp_path / out), weights="none", epochs=2,
                             batch_size=4, lr=1e-3, seed=seed, image_size=64, workers=0, progress=False)
        return train_cached(config).history

    assert run(0, "a") == run(0, "b")
    assert run(0, "a") != run(1, "c")


def test_training_from_python_or_a_notebook_takes_the_lock_too(dataset_32px, tmp_path):
    out = tmp_path / "out"
    config = TrainConfig(data_dir=str(dataset_32px), out_dir=str(out), weights="none", image_size=32, epochs=1,
                         workers=0, progress=False, cache_dir=str(tmp_path / "cache"))
    with output_lock(out):  # another holder, here in this process
        with pytest.raises(AimonkError, match=f"in use by process {os.getpid()} "):
            train_cached(config)
        assert list(out.iterdir()) == [out / LOCK_FILE]
    train_cached(config)
    assert not (out / LOCK_FILE).exists()


def test_sigterm_during_training_from_python_saves_the_state_and_raises_training_interrupted(
    dataset_32px, tmp_path, monkeypatch
):
    """What `docker stop` or Slurm sends a notebook's kernel: held until the step ends, then as Ctrl-C."""
    out = tmp_path / "out"
    config = TrainConfig(data_dir=str(dataset_32px), out_dir=str(out), weights="none", image_size=32, epochs=2,
                         batch_size=4, workers=0, progress=False, cache_dir=str(tmp_path / "cache"))
    steps, step = [], torch.optim.Adam.step

    def step_then_sigterm(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        steps.append(len(steps) + 1)
        if len(steps) == 3:
            signal.raise_signal(signal.SIGTERM)  # during the 3rd step
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_sigterm)
    received: list[int] = []

    def record(number: int, frame: object) -> None:  # the handler before train(): a SIGTERM let through ends here
        received.append(number)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        with pytest.raises(TrainingInterrupted):
            train_cached(config)
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [] and after is record  # handled by train(), and the handler from before it is back
    assert steps == [1, 2, 3] and len(load_train_state(out)["history"]) == 3  # the 3rd step whole, then saved
    assert not (out / LOCK_FILE).exists()


# --- fine-tuning ---


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data), out_dir=str(out), weights="none", epochs=2, batch_size=4, lr=1e-2,
                    image_size=64, workers=0, progress=False, precision="fp32", trainable_stages=1,
                    backbone_lr_factor=1.0, cache_dir=str(out.parent / "cache"))
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.slow
def test_only_the_last_stages_train_and_frozen_batchnorm_statistics_never_change(small_dataset, tmp_path):
    result = train_cached(_config(small_dataset, tmp_path / "out", trainable_stages=2))
    initial, _ = build_model(3, weights="none")  # a random backbone is initialised the same way in every run
    trained = torch.load(result.model_path, weights_only=True)["state_dict"]
    for name, before in initial.state_dict().items():
        if not name.startswith("backbone."):
            continue
        changed = not torch.equal(before, trained[name])
        frozen = not name.startswith(("backbone.layer3.", "backbone.layer4."))
        if frozen:  # weights, biases, running means and variances alike
            assert not changed, name
    assert not torch.equal(initial.state_dict()["backbone.layer4.1.conv2.weight"],
                           trained["backbone.layer4.1.conv2.weight"])
    assert not torch.equal(initial.state_dict()["backbone.layer3.0.bn1.running_mean"],
                           trained["backbone.layer3.0.bn1.running_mean"])  # a trained stage's BatchNorm learns


@pytest.mark.slow
def test_cached_last_frozen_stage_gives_the_uncached_loss_history_and_is_reused(small_dataset, tmp_path, monkeypatch):
    decoded: list[str] = []

    def counting_open_rgb(path, min_size=None):  # noqa: ANN001, ANN202
        decoded.append(Path(path).name)
        return open_rgb(path, min_size)

    monkeypatch.setattr(aimonk.data.images, "open_rgb", counting_open_rgb)
    cached = train_cached(_config(small_dataset, tmp_path / "cached"))
    assert cached.data.features.shape[1:] == (2, 256, 4, 4)  # layer3's map of a 64-px image, both orientations
    decoded.clear()
    again = train_cached(_config(small_dataset, tmp_path / "again"))
    assert decoded == []  # the frozen stages did not run again
    uncached = train_cached(_config(small_dataset, tmp_path / "uncached", feature_cache=False))
    # Once each to find unreadable images, then every training image in each of the 2 epochs, then the validation
    # images after each epoch and at the end, to score them (no features are held without the cache, and the
    # fine-tuned stages change).
    assert len(decoded) == len(uncached.data.table) + 2 * len(uncached.data.train_rows) + \
        3 * len(uncached.data.val_rows)
    np.testing.assert_allclose(cached.history, uncached.history, rtol=1e-5)
    assert cached.history == again.history
