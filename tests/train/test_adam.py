"""Adam's parameter groups and learning-rate schedules do what the options say."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import train_cached

from aimonk.config import TrainConfig
from aimonk.model.classifier import build_model
from aimonk.registry import LR_SCHEDULES
from aimonk.train.adam import parameter_groups


def test_parameter_groups_scale_the_backbone_and_never_decay_biases_or_norms():
    model, _ = build_model(2, weights="none", trainable_stages=1)
    config = TrainConfig(lr=1e-3, backbone_lr_factor=0.1, weight_decay=0.05)
    groups = parameter_groups(model, config)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for group in groups for p in group["params"]} == trainable
    for group in groups:
        in_head = any(p is model.head.weight or p is model.head.bias for p in group["params"])
        assert group["lr"] == pytest.approx(1e-3 if in_head else 1e-4)
        assert group["weight_decay"] == (0.05 if all(p.ndim > 1 for p in group["params"]) else 0.0)


def test_schedules_warm_up_then_hold_or_decay_to_zero():
    constant, cosine = LR_SCHEDULES["constant"], LR_SCHEDULES["cosine"]
    assert [constant(step, 100, 4) for step in (0, 1, 3, 50)] == [0.25, 0.5, 1.0, 1.0]
    assert cosine(0, 100, 0) == 1.0 and cosine(50, 100, 0) == pytest.approx(0.5)
    assert 0 < cosine(99, 100, 0) < 1e-3  # the last update still moves; zero would come one step later
    assert cosine(1, 100, 4) == 0.5 and cosine(4, 100, 4) == 1.0


def test_weight_decay_and_schedule_change_the_run(small_dataset: Path, tmp_path: Path):
    settings = dict(data_dir=str(small_dataset), weights="none", epochs=2, batch_size=4, lr=1e-2, image_size=32,
                    workers=0, progress=False)
    plain = train_cached(TrainConfig(out_dir=str(tmp_path / "a"), **settings)).history
    decayed = train_cached(TrainConfig(out_dir=str(tmp_path / "b"), weight_decay=0.5, **settings)).history
    cosine = train_cached(TrainConfig(out_dir=str(tmp_path / "c"), lr_schedule="cosine", **settings)).history
    assert plain[0] == decayed[0] == cosine[0]  # the first step's loss comes before any update
    assert plain[1:] != decayed[1:] and plain[1:] != cosine[1:]
