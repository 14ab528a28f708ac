"""Calibration: reliability and ECE, and a temperature that is found when probabilities are over-confident and
kept only when it helps out of fold."""

from __future__ import annotations

import numpy as np
import pytest

from aimonk.checkpoint import sigmoid
from aimonk.evaluate.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability,
    temperature_if_it_helps,
)


def to_logits(probabilities: np.ndarray) -> np.ndarray:
    return np.log(probabilities) - np.log1p(-probabilities)


def calibrated(probabilities: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    """Probabilities with a temperature applied, as a decision rule applies it to logits."""
    return sigmoid(to_logits(probabilities) / temperature)


def _labels(n: int, seed: int, sharpen: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities, and a model's probabilities with logits `sharpen` times too large."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, n)
    truth = rng.random(n) < 1 / (1 + np.exp(-logits))
    return truth, 1 / (1 + np.exp(-sharpen * logits))


def test_reliability_bins_count_and_ece_weighs_the_gaps():
    truth = np.array([0, 0, 1, 1, 1, 1], dtype=bool)
    probabilities = np.array([0.05, 0.15, 0.95, 0.92, 0.97, 0.55])
    table = reliability(truth, probabilities, bins=10)
    assert table["count"].sum() == 6 and table.loc[9, "count"] == 3 and table.loc[9, "frequency"] == 1.0
    gaps = [abs(0 - 0.05), abs(0 - 0.15), abs(1 - 0.55), abs(1 - (0.95 + 0.92 + 0.97) / 3) * 3]
    assert expected_calibration_error(truth, probabilities) == pytest.approx(sum(gaps) / 6)


def test_an_over_confident_model_gets_its_temperature_back():
    truth, probabilities = _labels(4000, 0, sharpen=2.5)
    assert fit_temperature(truth, to_logits(probabilities)) == pytest.approx(2.5, rel=0.1)
    temperature, before, after = temperature_if_it_helps(truth, to_logits(probabilities))
    assert temperature == pytest.approx(2.5, rel=0.1) and after < before
    assert expected_calibration_error(truth, calibrated(probabilities, temperature)) < 0.5 * \
        expected_calibration_error(truth, probabilities)


def test_a_calibrated_model_keeps_temperature_one_unless_cross_fitting_shows_a_gain():
    kept = []
    for seed in range(6):
        truth, probabilities = _labels(150, seed, sharpen=1.0)
        temperature, before, after = temperature_if_it_helps(truth, to_logits(probabilities))
        assert temperature == 1.0 or after < before  # only ever applied where it lowered the held-out log loss
        kept.append(temperature == 1.0)
        assert temperature == 1.0 or 0.5 < temperature < 2  # and then only a small correction
    assert any(kept)


def test_temperatures_are_bounded_so_a_separated_validation_set_does_not_make_certainties():
    truth = np.array([0] * 20 + [1] * 20, dtype=bool)
    probabilities = np.where(truth, 0.9, 0.1)
    temperature = fit_temperature(truth, to_logits(probabilities))
    assert temperature == pytest.approx(0.25, rel=1e-3)
    assert calibrated(np.array([[0.9]]), np.array([temperature]))[0, 0] < 0.99995


def test_labels_the_logits_separate_keep_temperature_one():
    """On separated labels the log loss falls without end as the temperature shrinks, on every fold alike: the fit
    would only run to its bound and make a confident model more so. Overlapping labels still get theirs."""
    truth = np.array([0] * 30 + [1] * 30, dtype=bool)
    separated = np.where(truth, 2.0, -2.0) + np.random.default_rng(0).normal(0, 0.3, 60)
    assert fit_temperature(truth, separated) == pytest.approx(0.25, rel=1e-3)  # what the fit alone would do
    assert temperature_if_it_helps(truth, separated)[0] == 1.0
    overlapping, probabilities = _labels(4000, 0, sharpen=2.5)
    assert temperature_if_it_helps(overlapping, to_logits(probabilities))[0] == pytest.approx(2.5, rel=0.1)
