"""Solvers: lbfgs solves the same problem as scikit-learn's logistic regression and never sees validation labels;
the head's standardisation folds exactly; Adam's groups and schedules do what the options say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset
from sklearn.linear_model import LogisticRegression

import aimonk.data
from aimonk.config import TrainConfig
from aimonk.linear_heads import L2_GRID, choose_l2, fit_linear_heads
from aimonk.losses import bce_terms
from aimonk.model import build_model
from aimonk.solvers import LR_SCHEDULES, parameter_groups
from aimonk.training import train


def test_lbfgs_matches_scikit_learn_logistic_regression_with_weights_and_missing_labels():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(120, 6))
    truth = rows @ rng.normal(size=(6, 2)) + rng.normal(size=(120, 2)) > 0.3
    known = rng.random((120, 2)) > 0.2
    weights = rng.choice([1.0, 2.0], size=120)
    l2 = np.array([0.05, 0.01])
    weight, bias = fit_linear_heads(torch.tensor(rows), torch.tensor(truth, dtype=torch.float64), torch.tensor(known),
                               torch.tensor(weights)[None], None, torch.tensor(l2)[None], bce_terms)
    for j in range(2):
        # ours: weighted mean loss + l2/2 |w|^2  <=>  scikit-learn: C * weighted sum + 1/2 |w|^2, C = 1 / (l2 * sum w)
        reference = LogisticRegression(C=1 / (l2[j] * weights[known[:, j]].sum()), tol=1e-10, max_iter=10_000)
        reference.fit(rows[known[:, j]], truth[known[:, j], j], sample_weight=weights[known[:, j]])
        np.testing.assert_allclose(weight[0, j].numpy(), reference.coef_[0], atol=2e-4)
        assert bias[0, j].item() == pytest.approx(reference.intercept_[0], abs=2e-4)


def test_lbfgs_never_looks_at_the_validation_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two label files that differ only on the validation images train the same head (a fixed split)."""
    names = [f"img_{i}.jpg" for i in range(30)]
    monkeypatch.setattr(aimonk.data, "stratified_split", lambda table, fraction, seed: (np.arange(20),
                                                                                        np.arange(20, 30)))
    heads = []
    for flip in (False, True):
        rows = [f"{name} {(i % 2) ^ (flip and i >= 20)} {(i // 2) % 2}" for i, name in enumerate(names)]
        data = write_dataset(tmp_path / f"data{flip}", rows, size=32)
        config = TrainConfig.from_recipe("recommended", data_dir=str(data), out_dir=str(tmp_path / f"out{flip}"),
                                         weights="none", image_size=32, workers=0, progress=False, cv_folds=2)
        heads.append(torch.load(train(config).model_path, weights_only=True)["state_dict"]["head.weight"])
    assert torch.equal(heads[0], heads[1])


def test_standardised_head_folds_into_a_plain_linear_head_with_the_same_outputs():
    model, _ = build_model(3, weights="none")
    features = torch.randn(50, 512) * torch.linspace(0.01, 10, 512) + 4
    features[:, 7] = 2.0  # a dimension without spread keeps scale 1
    model.standardise_head_input(features)
    assert model.input_scaling[1][7] == 1
    before = model.head_logits(features)
    model.fold_input_scaling()
    assert model.input_scaling is None
    assert torch.allclose(model.head(features), before, atol=1e-4)


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
    plain = train(TrainConfig(out_dir=str(tmp_path / "a"), **settings)).history
    decayed = train(TrainConfig(out_dir=str(tmp_path / "b"), weight_decay=0.5, **settings)).history
    cosine = train(TrainConfig(out_dir=str(tmp_path / "c"), lr_schedule="cosine", **settings)).history
    assert plain[0] == decayed[0] == cosine[0]  # the first step's loss comes before any update
    assert plain[1:] != decayed[1:] and plain[1:] != cosine[1:]


def test_lbfgs_chooses_strong_l2_for_noise_and_weak_l2_for_a_clean_signal():
    rng = np.random.default_rng(0)
    rows = torch.tensor(rng.normal(size=(300, 60)))  # many dimensions: weak L2 overfits noise visibly
    clean = rows[:, 0] + 0.3 * rows[:, 1] > 0  # attribute 0: a clean linear signal
    noise = torch.tensor(rng.random(300) > 0.5)  # attribute 1: unrelated to the rows
    targets = torch.stack([clean, noise], 1).double()
    l2 = choose_l2(bce_terms, rows, targets, torch.ones(300, 2, dtype=torch.bool), torch.ones(300, dtype=torch.float64),
                    None, torch.arange(300) % 4)
    assert l2[0] <= 1e-2 and l2[1] == max(L2_GRID)  # (seeds 0-5 tried: clean 1e-3..1e-2, noise the maximum 5 times)
