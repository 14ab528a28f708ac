"""Paired comparisons of runs on the same validation images: every metric on the same bootstrap resamples, so a
difference comes with an interval and the share of resamples where one run wins."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import label_table

from aimonk.evaluate.comparison import METRICS, OVERALL, Comparison
from aimonk.metrics import Scores, evaluate


def _labelled(rng: np.random.Generator, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Two attributes of prevalence about 0.4, with about 15 % of the labels unknown (NA)."""
    return rng.random((n, 2)) < 0.4, rng.random((n, 2)) > 0.15


def _runs(truth: np.ndarray, known: np.ndarray, rng: np.random.Generator) -> tuple[Scores, Scores]:
    """A good run (0.9 on positives, 0.1 on negatives) and a poor one (anywhere in [0.2, 0.8]): on every image the
    good run's probability is the closer to the label, and only the good run ranks the images perfectly."""
    table = label_table(truth, known)
    good = Scores(table, np.where(truth, 0.9, 0.1), [0.5, 0.5])
    poor = Scores(table, 0.2 + 0.6 * rng.random(truth.shape), [0.5, 0.5])
    return good, poor


def test_a_run_against_itself_differs_by_exactly_zero_on_every_resample(rng):
    truth, known = _labelled(rng)
    _, poor = _runs(truth, known, rng)
    copy = Scores(poor.table, poor.probabilities.copy(), list(poor.thresholds))
    comparison = Comparison(poor.table, {"run": poor, "copy": copy}, n_bootstrap=200)
    for attribute in comparison.attributes:
        for metric in METRICS:
            assert comparison.difference("run", "copy", attribute, metric) == (0.0, 0.0, 0.0, 0.0)
    assert comparison.sentence("run", "copy").endswith(": no clear difference (the interval contains 0)")


def test_a_run_better_on_every_image_wins_on_every_resample_and_is_called_better(rng):
    truth, known = _labelled(rng)
    good, poor = _runs(truth, known, rng)
    comparison = Comparison(good.table, {"good": good, "poor": poor}, n_bootstrap=200, seed=3)
    for attribute in comparison.attributes:
        for metric in METRICS:
            difference, low, high, p_better = comparison.difference("good", "poor", attribute, metric)
            assert difference > 0 and 0 < low <= high and p_better == 1.0, (attribute, metric)
            reverse = comparison.difference("poor", "good", attribute, metric)
            assert reverse == pytest.approx((-difference, -high, -low, 0.0), abs=1e-12)
    assert comparison.sentence("good", "poor").endswith("better in 100% of resamples: better")
    assert comparison.sentence("poor", "good").endswith("better in 0% of resamples: worse")


def test_the_estimate_is_the_point_metric_of_evaluate_and_its_interval_needs_resamples(rng):
    truth, known = _labelled(rng)
    _, poor = _runs(truth, known, rng)
    run = Scores(poor.table, poor.probabilities, [0.3, 0.6])  # F1 at each attribute's own threshold
    expected = evaluate(run.table, run.probabilities, run.thresholds, n_bootstrap=0)
    for n_bootstrap in (0, 100):
        comparison = Comparison(run.table, {"run": run}, n_bootstrap=n_bootstrap)
        for attribute in run.table.attributes:
            for metric in METRICS:
                value, low, high = comparison.estimate("run", attribute, metric)
                assert value == pytest.approx(expected.loc[attribute, metric], abs=1e-12), (attribute, metric)
                assert (np.isnan(low) and np.isnan(high)) if n_bootstrap == 0 else low < high
        for metric in METRICS:  # over all attributes: their mean
            overall = comparison.estimate("run", OVERALL, metric)[0]
            assert overall == pytest.approx(expected[metric].mean(), abs=1e-12)


def test_runs_alike_but_for_noise_show_no_clear_difference(rng):
    truth, known = _labelled(rng)
    _, poor = _runs(truth, known, rng)
    _, other = _runs(truth, known, rng)
    comparison = Comparison(poor.table, {"poor": poor, "other": other}, n_bootstrap=200)
    difference, low, high, p_better = comparison.difference("poor", "other", OVERALL, "ap")
    assert low < 0 < high and 0 < p_better < 1
    assert comparison.sentence("poor", "other").endswith(
        f"better in {p_better:.0%} of resamples: no clear difference (the interval contains 0)")


def test_an_attribute_undefined_for_a_metric_is_left_out_of_the_mean_over_attributes(rng):
    truth, known = _labelled(rng)
    truth[:, 1] = False  # Attr2 has no positive: AP and ROC AUC undefined
    good, _ = _runs(truth, known, rng)
    comparison = Comparison(good.table, {"good": good}, n_bootstrap=50)
    assert np.isnan(comparison.estimate("good", "Attr2", "ap")[0])
    assert comparison.estimate("good", OVERALL, "ap") == comparison.estimate("good", "Attr1", "ap")


def test_the_resamples_are_a_function_of_the_seed_and_shared_by_every_run(rng):
    truth, known = _labelled(rng)
    good, poor = _runs(truth, known, rng)
    first, again, other = (Comparison(good.table, {"good": good, "poor": poor}, n_bootstrap=100, seed=seed)
                           for seed in (1, 1, 2))
    assert np.array_equal(first.weights, again.weights) and not np.array_equal(first.weights, other.weights)
    alone = Comparison(poor.table, {"poor": poor}, n_bootstrap=100, seed=1)  # another run beside it changes nothing
    np.testing.assert_array_equal(alone.values["poor"], first.values["poor"])


def test_the_readable_table_puts_the_best_ap_first_with_each_runs_difference_from_the_reference(rng):
    truth, known = _labelled(rng)
    good, poor = _runs(truth, known, rng)
    comparison = Comparison(good.table, {"poor": poor, "good": good}, n_bootstrap=100)
    shown = comparison.readable("poor")
    assert list(shown.index) == ["good", "poor"]
    assert list(shown.columns) == ["mAP", "mean ROC AUC", "macro-F1", "mAP - poor", "better than poor"]
    assert shown.loc["poor", "mAP - poor"] == "+0.000 [+0.000, +0.000]"
    assert shown.loc["poor", "better than poor"] == "0%" and shown.loc["good", "better than poor"] == "100%"
    assert shown.loc["good", "mAP"] == "1.000 [1.000, 1.000]"
    rows = comparison.table_against("poor")
    assert rows.loc[("good", "Attr1"), "ap_p_better"] == 1.0 and rows.loc[("poor", OVERALL), "ap_diff"] == 0.0
