"""Honest thresholds: F1 at a tuned threshold is estimated out of fold, and attributes the model cannot tell get
no tuned threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from aimonk.labels import LabelTable
from aimonk.thresholds import DEFAULT_THRESHOLD, best_f1_threshold, out_of_fold_decisions, tune_out_of_fold


def test_each_image_is_decided_by_a_threshold_tuned_without_it():
    rng = np.random.default_rng(0)
    truth = rng.random(60) < 0.4
    scores = np.where(truth, rng.normal(0.6, 0.2, 60), rng.normal(0.4, 0.2, 60))
    decisions = out_of_fold_decisions(truth, scores, folds=5, seed=3)
    splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=3)
    for fit, held_out in splitter.split(scores, truth):
        threshold = best_f1_threshold(truth[fit], scores[fit])
        assert np.array_equal(decisions[held_out], scores[held_out] >= threshold)


def test_on_scores_unrelated_to_the_labels_in_sample_f1_flatters_and_out_of_fold_does_not():
    gaps = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        truth = rng.random(80) < 0.3
        table = LabelTable(Path("x"), [f"{i}.jpg" for i in range(80)], ["A"], truth[:, None].astype(np.float32),
                           np.ones((80, 1), dtype=bool))
        tuned = tune_out_of_fold(table, rng.random((80, 1)), [True])
        gaps.append(tuned.loc["A", "f1_in_sample"] - tuned.loc["A", "f1_out_of_fold"])
    assert np.mean(gaps) > 0.03  # the in-sample number is optimistic; the out-of-fold one is not


def test_an_attribute_that_is_not_learnable_keeps_the_default_threshold():
    rng = np.random.default_rng(1)
    truth = rng.random((50, 2)) < 0.5
    table = LabelTable(Path("x"), [f"{i}.jpg" for i in range(50)], ["A", "B"], truth.astype(np.float32),
                       np.ones((50, 2), dtype=bool))
    scores = rng.random((50, 2)) * 0.2  # best F1 would be "everything present": a threshold near 0
    tuned = tune_out_of_fold(table, scores, [True, False])
    assert tuned.loc["A", "threshold"] < 0.2
    assert tuned.loc["B", "threshold"] == DEFAULT_THRESHOLD and np.isnan(tuned.loc["B", "f1_out_of_fold"])
