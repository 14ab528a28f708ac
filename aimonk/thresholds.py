"""One decision threshold per attribute, tuned on validation data (the one that maximises F1)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from aimonk.labels import LabelTable

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


def tune_thresholds(table: LabelTable, probabilities: np.ndarray) -> list[float]:
    """The best-F1 threshold of every attribute, over that attribute's known labels only."""
    thresholds = []
    for j in range(len(table.attributes)):
        known, truth = table.known_labels(j)
        thresholds.append(best_f1_threshold(truth, probabilities[known, j]))
    return thresholds
