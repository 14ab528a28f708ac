"""The lbfgs solver: the head fitted on the training images never sees a validation label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_cached, write_dataset
from PIL import Image

import aimonk.train.training
from aimonk.config import TrainConfig
from aimonk.model.linear_heads import L2_GRID
from aimonk.train.lbfgs import l2_notes


def test_lbfgs_never_looks_at_the_validation_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two label files that differ only on the validation images train the same head (a fixed split)."""
    names = [f"img_{i}.jpg" for i in range(30)]
    monkeypatch.setattr(aimonk.train.training, "stratified_split", lambda table, fraction, seed: (np.arange(20),
                                                                                        np.arange(20, 30)))
    heads = []
    for flip in (False, True):
        rows = [f"{name} {(i % 2) ^ (flip and i >= 20)} {(i // 2) % 2}" for i, name in enumerate(names)]
        data = write_dataset(tmp_path / f"data{flip}", rows, size=32)
        config = TrainConfig.from_recipe("recommended", data_dir=str(data), out_dir=str(tmp_path / f"out{flip}"),
                                         weights="none", image_size=32, workers=0, progress=False, cv_folds=2)
        heads.append(torch.load(train_cached(config).model_path, weights_only=True)["state_dict"]["head.weight"])
    assert torch.equal(heads[0], heads[1])


def test_features_without_spread_still_give_a_loss_history_and_a_model(tmp_path: Path):
    """12 identical pictures: standardised features are all zero and L-BFGS-B stops before a first iteration; the run
    still records its loss (it used to end in an IndexError after writing an empty history)."""
    (tmp_path / "images").mkdir()
    for i in range(12):
        Image.new("RGB", (32, 32), (120, 30, 200)).save(tmp_path / "images" / f"i{i}.jpg")
    (tmp_path / "labels.txt").write_text("".join(f"i{i}.jpg {i % 2} {(i // 2) % 2}\n" for i in range(12)))
    config = TrainConfig.from_recipe("recommended", data_dir=str(tmp_path), out_dir=str(tmp_path / "out"),
                                     weights="none", image_size=32, workers=0, progress=False)
    result = train_cached(config)
    assert len(result.history) >= 1 and np.isfinite(result.history).all() and result.model_path.is_file()


def test_the_run_says_which_l2_fell_back_to_the_ranking_and_which_sits_on_an_edge_of_the_grid():
    notes = l2_notes(["a", "b", "c", "d"], [1e-2, min(L2_GRID), max(L2_GRID), 1e-3], fell_back=[0])
    assert notes == [
        "lbfgs: a's L2 1e-02 is the middle of the strengths that rank its held-out labels best: its held-out loss was "
        "still falling at the weakest strength (1e-05; the folds separate its labels)",
        "lbfgs: b's L2 1e-05 is the weakest strength of the grid (1e-05 to 1e+01): the best may lie beyond it",
        "lbfgs: c's L2 1e+01 is the strongest strength of the grid (1e-05 to 1e+01): the best may lie beyond it",
    ]
