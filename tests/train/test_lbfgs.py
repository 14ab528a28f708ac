"""The lbfgs solver: the head fitted on the training images never sees a validation label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_dataset

import aimonk.train.prepare
from aimonk.config import TrainConfig
from aimonk.train.training import train


def test_lbfgs_never_looks_at_the_validation_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two label files that differ only on the validation images train the same head (a fixed split)."""
    names = [f"img_{i}.jpg" for i in range(30)]
    monkeypatch.setattr(aimonk.train.prepare, "stratified_split", lambda table, fraction, seed: (np.arange(20),
                                                                                        np.arange(20, 30)))
    heads = []
    for flip in (False, True):
        rows = [f"{name} {(i % 2) ^ (flip and i >= 20)} {(i // 2) % 2}" for i, name in enumerate(names)]
        data = write_dataset(tmp_path / f"data{flip}", rows, size=32)
        config = TrainConfig.from_recipe("recommended", data_dir=str(data), out_dir=str(tmp_path / f"out{flip}"),
                                         weights="none", image_size=32, workers=0, progress=False, cv_folds=2)
        heads.append(torch.load(train(config).model_path, weights_only=True)["state_dict"]["head.weight"])
    assert torch.equal(heads[0], heads[1])
