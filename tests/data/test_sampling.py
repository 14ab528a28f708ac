"""Samplers: rare positives are visited more often, and every sampler keeps cached, uncached and resumed runs
on the same batches (the rule of aimonk.data.images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_cached, write_dataset

import aimonk.train.adam
from aimonk.config import TrainConfig
from aimonk.data.images import epoch_generator, epoch_plan
from aimonk.data.labels import LabelTable
from aimonk.registry import SAMPLERS
from aimonk.train.training import TrainingInterrupted


def _table(targets: list[list[float]], known: list[list[bool]]) -> LabelTable:
    names = [f"{i}.jpg" for i in range(len(targets))]
    return LabelTable(Path("labels.txt"), names, ["A", "B"], np.array(targets, dtype=np.float32), np.array(known))


def test_repeat_factor_visits_images_with_rare_known_positives_more_often():
    # A: positive in 1 of 10 known labels (rare), B: 5 of 9 (common; one NA, and a positive behind an NA).
    targets = [[1, 1]] + [[0, 1]] * 4 + [[0, 0]] * 4 + [[0, 1]]
    known = [[True, True]] * 9 + [[True, False]]
    visits = SAMPLERS["repeat_factor"](_table(targets, known), TrainConfig(repeat_threshold=0.4))
    assert visits[0] == pytest.approx(np.sqrt(0.4 / 0.1))  # the only image with the rare positive
    assert np.all(visits[1:] == 1)  # common positives (0.56 > 0.4), negatives and NA entries: once


def test_epoch_plans_round_fractional_visits_at_random_and_repeat_exactly():
    visits = np.array([1.0, 2.5, 1.0, 3.0])
    counts = []
    for epoch in range(200):
        plan = [pair for batch in epoch_plan(visits, 3, seed=7, epoch=epoch) for pair in batch]
        counts.append(np.bincount([row for row, _ in plan], minlength=4))
    counts = np.array(counts)
    assert set(counts[:, 1]) == {2, 3} and 0.4 < counts[:, 1].mean() - 2 < 0.6
    assert np.all(counts[:, [0, 2, 3]] == [1, 1, 3])
    assert epoch_plan(visits, 3, 7, 5) == epoch_plan(visits, 3, 7, 5) != epoch_plan(visits, 3, 7, 6)


def test_whole_visits_draw_nothing_for_rounding_so_a_uniform_epoch_keeps_the_reference_plan():
    """Whole visits leave the epoch's stream to the shuffle and the flips: the plan of training before samplers
    existed, so runs of the uniform sampler repeat earlier runs of the same seed."""
    generator = epoch_generator(4, 2)
    order = torch.randperm(10, generator=generator).tolist()
    flips = (torch.rand(10, generator=generator) < 0.5).tolist()
    assert epoch_plan(np.ones(10), 10, seed=4, epoch=2) == [[(row, flips[row]) for row in order]]


def test_epoch_plan_flips_each_image_once_per_epoch_and_varies_by_epoch():
    plan = [pair for batch in epoch_plan(np.ones(50), 16, seed=3, epoch=0) for pair in batch]
    assert sorted(row for row, _ in plan) == list(range(50))
    assert 10 < sum(flip for _, flip in plan) < 40
    assert [len(batch) for batch in epoch_plan(np.ones(50), 16, seed=3, epoch=0)] == [16, 16, 16, 2]
    assert epoch_plan(np.ones(50), 16, 3, 0) != epoch_plan(np.ones(50), 16, 3, 1)
    # A function of (seed, epoch) alone: the global random state (restored on resume, used by the model) plays no part.
    torch.manual_seed(1)
    first = epoch_plan(np.ones(50), 16, 3, 2)
    torch.manual_seed(2)
    assert epoch_plan(np.ones(50), 16, 3, 2) == first


@pytest.fixture(scope="module")
def rare_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [f"img_{i}.jpg {int(i % 7 == 0)} {'NA' if i % 5 == 0 else i % 2}" for i in range(28)]
    return write_dataset(tmp_path_factory.mktemp("rare"), rows, size=32)


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data), out_dir=str(out), weights="none", epochs=3, batch_size=4, lr=1e-2,
                    image_size=32, workers=0, progress=False, precision="fp32", sampler="repeat_factor",
                    repeat_threshold=0.5, cache_dir=str(data.parent / "cache"))
    return TrainConfig(**{**settings, **overrides})


def test_repeat_factor_training_is_the_same_cached_and_uncached(rare_dataset: Path, tmp_path: Path):
    cached = train_cached(_config(rare_dataset, tmp_path / "cached"))
    uncached = train_cached(_config(rare_dataset, tmp_path / "uncached", feature_cache=False))
    uniform = train_cached(_config(rare_dataset, tmp_path / "uniform", sampler="uniform"))
    assert len(cached.history) > len(uniform.history)  # rare positives visited more often
    np.testing.assert_allclose(cached.history, uncached.history, rtol=1e-5)


def test_repeat_factor_training_interrupted_and_resumed_follows_the_same_batches(
    rare_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    reference = train_cached(_config(rare_dataset, tmp_path / "reference")).history
    real_save, saves = aimonk.train.adam.save_train_state, []

    def interrupting_save(*args, **kwargs):  # Ctrl-C just after the 5th periodic save
        real_save(*args, **kwargs)
        saves.append(1)
        if len(saves) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(aimonk.train.adam, "save_train_state", interrupting_save)
    with pytest.raises(TrainingInterrupted):
        train_cached(_config(rare_dataset, tmp_path / "out", checkpoint_every=1))
    monkeypatch.setattr(aimonk.train.adam, "save_train_state", real_save)
    resumed = train_cached(TrainConfig(out_dir=str(tmp_path / "out"), progress=False), resume=True).history
    assert resumed == pytest.approx(reference, rel=1e-6)
