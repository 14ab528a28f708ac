"""Per-attribute thresholds tuned for F1 on validation labels, with a fallback where F1 is undefined."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import label_table
from sklearn.metrics import f1_score

from aimonk.evaluate.thresholds import best_f1_threshold, tune_out_of_fold


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
