"""Per-attribute thresholds tuned for F1 on validation labels, with a fallback where F1 is undefined; F1 at a tuned
threshold estimated out of fold, and attributes the model cannot tell get no tuned threshold."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import label_table
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from aimonk.data.labels import LabelTable
from aimonk.evaluate.thresholds import DEFAULT_THRESHOLD, best_f1_threshold, out_of_fold_decisions, tune_out_of_fold


@pytest.mark.parametrize("seed", range(5))
def test_the_threshold_reaches_the_best_f1_over_all_cut_points(seed: int):
    rng = np.random.default_rng(seed)
    truth = rng.random(120) < 0.3
    scores = np.round(np.clip(0.3 * truth + rng.random(120) * 0.7, 0, 1), 2)  # rounding makes ties
    threshold = best_f1_threshold(truth, scores)
    best = max(f1_score(truth, scores >= cut) for cut in np.unique(scores))
    assert f1_score(truth, scores >= threshold) == pytest.approx(best)
    assert threshold in scores


def test_separable_scores_get_a_threshold_between_the_classes():
    truth = np.array([0, 0, 0, 1, 1], dtype=bool)
    assert best_f1_threshold(truth, np.array([0.05, 0.1, 0.2, 0.3, 0.9])) == pytest.approx(0.3)


def test_cut_points_with_no_true_positive_are_never_chosen():
    """The highest scores are negatives: cutting there has precision and recall 0, so F1 0 (not undefined)."""
    truth = np.array([0, 0, 1, 1, 0], dtype=bool)
    assert best_f1_threshold(truth, np.array([0.95, 0.9, 0.6, 0.5, 0.1])) == pytest.approx(0.5)


def test_a_weak_ranking_still_gets_its_best_cut():
    """4 positives in 40, ranked 3rd, 5th, 39th and 40th: the best cut keeps the top 5 (precision 0.4, recall 0.5,
    F1 0.44), although precision and recall add up to less than 1 there; predicting all positive scores 0.18."""
    truth = np.zeros(40, dtype=bool)
    truth[[2, 4, 38, 39]] = True
    scores = np.linspace(1.0, 0.025, 40)
    assert best_f1_threshold(truth, scores) == pytest.approx(scores[4])


@pytest.mark.parametrize("truth", [[0, 0, 0], [1, 1, 1], []])
def test_without_both_classes_the_default_is_kept(truth: list[int]):
    assert best_f1_threshold(np.array(truth, dtype=bool), np.linspace(0, 1, len(truth))) == 0.5


def test_tuning_uses_known_labels_only():
    targets = np.array([[0], [0], [1], [1], [0], [1]], dtype=np.float32)
    known = np.array([[True], [True], [True], [True], [False], [False]])
    # Unknown rows would pull the threshold up (a high-scoring "negative") or down (a low-scoring "positive").
    probabilities = np.array([[0.1], [0.2], [0.6], [0.7], [0.95], [0.05]])
    tuned = tune_out_of_fold(label_table(targets, known), probabilities, learnable=[True])
    assert tuned["threshold"].tolist() == [pytest.approx(0.6)]


# --- out of fold ---


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


def _table(truth: np.ndarray) -> LabelTable:
    truth = truth.reshape(len(truth), -1)
    return LabelTable(Path("x"), [f"{i}.jpg" for i in range(len(truth))], [f"A{j}" for j in range(truth.shape[1])],
                      truth.astype(np.float32), np.ones(truth.shape, dtype=bool))


def test_by_default_five_folds_seed_zero_and_an_image_at_the_threshold_is_decided_present():
    """Scores with many ties (one decimal), so held-out images fall exactly on thresholds tuned without them."""
    rng = np.random.default_rng(5)
    truth = rng.random(60) < 0.4
    scores = np.round(np.clip(np.where(truth, 0.6, 0.4) + rng.normal(0, 0.2, 60), 0, 1), 1)
    expected = np.zeros(60, bool)
    for fit, held_out in StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(scores, truth):
        expected[held_out] = scores[held_out] >= best_f1_threshold(truth[fit], scores[fit])
    decisions = out_of_fold_decisions(truth, scores)
    assert decisions.dtype == bool and np.array_equal(decisions, expected)
    assert np.array_equal(out_of_fold_decisions(truth.astype(int), scores), expected)  # 0/1 labels read as booleans
    assert not np.array_equal(out_of_fold_decisions(truth, scores, seed=1), expected)  # the seed matters here


def test_out_of_fold_decisions_need_as_many_images_of_each_class_as_folds():
    scores = np.linspace(0, 1, 25)
    assert out_of_fold_decisions(np.arange(25) < 5, scores) is not None  # 5 positives, 20 negatives
    assert out_of_fold_decisions(np.arange(25) < 4, scores) is None
    assert out_of_fold_decisions(np.arange(25) >= 4, scores) is None  # 4 negatives
    assert out_of_fold_decisions(np.arange(25) < 5, scores, folds=6) is None


def test_the_tuning_table_reports_each_f1_on_the_decisions_it_names():
    rng = np.random.default_rng(6)
    truth = rng.random((60, 2)) < 0.4
    scores = np.round(np.clip(np.where(truth, 0.6, 0.4) + rng.normal(0, 0.2, (60, 2)), 0, 1), 1)
    for seed, tuned in ((0, tune_out_of_fold(_table(truth), scores, [True, True])),
                        (3, tune_out_of_fold(_table(truth), scores, [True, True], seed=3))):
        assert list(tuned.columns) == ["learnable", "threshold", "f1_out_of_fold", "f1_in_sample", "f1_at_default"]
        for j, name in enumerate(tuned.index):
            row, labels, column = tuned.loc[name], truth[:, j], scores[:, j]
            assert row["learnable"] and row["threshold"] == best_f1_threshold(labels, column)
            assert row["f1_out_of_fold"] == f1_score(labels, out_of_fold_decisions(labels, column, 5, seed))
            assert row["f1_in_sample"] == f1_score(labels, column >= row["threshold"])
            assert row["f1_at_default"] == f1_score(labels, column >= DEFAULT_THRESHOLD)
    assert (tune_out_of_fold(_table(truth), scores, [True, True], folds=6)["f1_out_of_fold"]
            != tune_out_of_fold(_table(truth), scores, [True, True])["f1_out_of_fold"]).any()


def test_f1_at_the_default_is_zero_without_a_positive_decision_and_warns_nothing():
    truth = np.arange(20) < 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tuned = tune_out_of_fold(_table(truth), np.full((20, 1), 0.1), [False])
    assert tuned.loc["A0", "f1_at_default"] == 0.0 and tuned.loc["A0", "threshold"] == DEFAULT_THRESHOLD
