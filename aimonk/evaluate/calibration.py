"""Calibration: whether a probability of 0.8 means "present 8 times in 10". Reliability bins, expected calibration
error (ECE), and a per-attribute temperature (p = sigmoid(logit / T)) kept only where it helps out of fold.

Positive weights and asymmetric losses shift probabilities on purpose; a temperature cannot fix a shift, only
over- or under-confidence, so it is fitted and then kept only if cross-fitting shows a lower held-out log loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aimonk.data.labels import cross_fitting_folds

# A perfectly separated validation set drives the fitted temperature to 0 (probabilities of exactly 0 or 1); the
# range keeps such a degenerate fit from making new images look certain.
TEMPERATURE_RANGE = (0.25, 4.0)


def reliability(truth: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-width probability bins: how many predictions, their mean probability, how often the label is present."""
    truth, probabilities = np.asarray(truth, dtype=bool), np.asarray(probabilities, dtype=np.float64)
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(inside.sum()),
                     "mean_probability": probabilities[inside].mean() if inside.any() else np.nan,
                     "frequency": truth[inside].mean() if inside.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(truth: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """The mean |frequency - mean probability| over the bins, weighted by how many predictions fall in each."""
    table = reliability(truth, probabilities, bins)
    filled = table[table["count"] > 0]
    if filled.empty:
        return float("nan")
    gaps = (filled["frequency"] - filled["mean_probability"]).abs()
    return float((gaps * filled["count"]).sum() / filled["count"].sum())


def log_losses(truth: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Each label's negative log-likelihood under sigmoid(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return np.logaddexp(0.0, np.where(np.asarray(truth, dtype=bool), -scaled, scaled))


def log_loss(truth: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under sigmoid(logits / temperature)."""
    return float(np.mean(log_losses(truth, logits, temperature)))


def fit_temperature(truth: np.ndarray, logits: np.ndarray) -> float:
    """The temperature that minimises the log loss of these labels (1 if they hold a single class)."""
    from scipy.optimize import minimize_scalar

    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return 1.0
    low, high = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: log_loss(truth, logits, np.exp(log_t)), bounds=(low, high),
                             method="bounded")
    return float(np.exp(result.x))


def temperature_if_it_helps(
    truth: np.ndarray, logits: np.ndarray, folds: int = 5, seed: int = 0
) -> tuple[float, float, float]:
    """(temperature to use, out-of-fold log loss without, with a temperature fitted on the other folds), for one
    attribute's known labels and their logits.

    The temperature is fitted on all the labels, and used only if the cross-fitted log loss is lower than without;
    otherwise 1. Too few labels of a class for the folds: 1. Labels the logits separate perfectly: 1, for the log
    loss then falls without end as the temperature shrinks, on every fold alike, and the fit would only run to the
    bound of TEMPERATURE_RANGE (sharpening a confident model further, on no evidence).
    """
    truth, logits = np.asarray(truth, dtype=bool), np.asarray(logits, dtype=np.float64)
    splits = cross_fitting_folds(truth, folds, seed)
    if splits is None or logits[truth].min() > logits[~truth].max():
        return 1.0, float("nan"), float("nan")
    before, after = np.zeros(len(truth)), np.zeros(len(truth))
    for fit, held_out in splits:
        temperature = fit_temperature(truth[fit], logits[fit])
        before[held_out] = log_losses(truth[held_out], logits[held_out])
        after[held_out] = log_losses(truth[held_out], logits[held_out], temperature)
    helps = after.mean() < before.mean()
    return (fit_temperature(truth, logits) if helps else 1.0), float(before.mean()), float(after.mean())
