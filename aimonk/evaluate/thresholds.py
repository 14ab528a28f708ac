"""One decision threshold per attribute, tuned on validation data (the one that maximises F1), with its F1
estimated out of fold; attributes the model cannot tell get no tuned threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, precision_recall_curve

from aimonk.data.labels import LabelTable, cross_fitting_folds

DEFAULT_THRESHOLD = 0.5


def best_f1_threshold(truth: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (predict positive when score >= threshold) with the highest F1 on these labels.

    F1 is undefined without positives, and maximising it without negatives just says "everything is
    positive": both cases keep the default 0.5. Ties go to the lowest threshold.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return DEFAULT_THRESHOLD
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    # The last (precision 1, recall 0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return float(thresholds[np.argmax(f1)])


def out_of_fold_decisions(truth: np.ndarray, scores: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray | None:
    """Each image decided by a best-F1 threshold tuned on the other folds only (cross-fitting), so that the F1 of
    these decisions estimates honestly what a tuned threshold does on new images. None with too few of a class."""
    truth, splits = np.asarray(truth, dtype=bool), cross_fitting_folds(truth, folds, seed)
    if splits is None:
        return None
    decisions = np.zeros(len(truth), dtype=bool)
    for fit, held_out in splits:
        decisions[held_out] = scores[held_out] >= best_f1_threshold(truth[fit], scores[fit])
    return decisions


def tune_out_of_fold(
    table: LabelTable, probabilities: np.ndarray, learnable: list[bool], folds: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Per attribute: the threshold to use, tuned on all the labels given (the default where the attribute is not
    learnable: no threshold is tuned to say "present" for an attribute the model cannot tell), its F1 out of fold
    (cross-fitted, honest), in sample (optimistic) and at the default."""
    rows = []
    for j, name in enumerate(table.attributes):
        known, truth = table.known_labels(j)
        scores = probabilities[known, j]
        threshold = best_f1_threshold(truth, scores) if learnable[j] else DEFAULT_THRESHOLD
        decisions = out_of_fold_decisions(truth, scores, folds, seed) if learnable[j] else None
        rows.append({"attribute": name, "learnable": learnable[j], "threshold": threshold,
                     "f1_out_of_fold": _f1(truth, decisions), "f1_in_sample": _f1(truth, scores >= threshold),
                     "f1_at_default": _f1(truth, scores >= DEFAULT_THRESHOLD)})
    return pd.DataFrame(rows).set_index("attribute")


def _f1(truth: np.ndarray, decisions: np.ndarray | None) -> float:
    if decisions is None or not np.asarray(truth).any():
        return float("nan")
    return float(f1_score(truth, decisions, zero_division=0.0))
