"""Per-attribute evaluation: known labels only, seeded bootstrap intervals, baselines, plain-language verdicts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import label_table
from sklearn.metrics import f1_score, roc_auc_score

from aimonk.evaluate.report import format_table
from aimonk.metrics import (
    MIN_PER_CLASS,
    VERDICTS,
    baselines,
    bootstrap_weights,
    confident_mistakes,
    evaluate,
    percentile_interval,
    point_metrics,
    resampled_metrics,
    short_verdict,
)


def test_a_perfect_ranking_scores_one_and_beats_chance(rng: np.random.Generator):
    truth = rng.random(80) < 0.4
    scores = np.where(truth, rng.uniform(0.6, 1.0, 80), rng.uniform(0.0, 0.4, 80))
    row = evaluate(label_table(truth), scores[:, None], n_bootstrap=200).loc["Attr1"]
    for metric in ("precision", "recall", "f1", "ap", "roc_auc"):
        assert row[metric] == pytest.approx(1.0)
        assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
    assert (row["n"], row["positives"], row["negatives"]) == (80, truth.sum(), 80 - truth.sum())
    assert row["verdict"] == "better than chance"


def test_scores_unrelated_to_labels_are_called_no_better_than_chance(rng: np.random.Generator):
    truth = rng.random(200) < 0.5
    results = evaluate(label_table(truth), rng.random((200, 1)), n_bootstrap=300)
    row = results.loc["Attr1"]
    assert row["roc_auc_low"] < 0.5 < row["roc_auc_high"]
    assert row["verdict"].startswith("no better than chance")


def test_point_estimates_match_sklearn_and_use_the_thresholds(rng: np.random.Generator):
    truth = rng.random(100) < 0.3
    scores = np.clip(truth * 0.3 + rng.random(100) * 0.7, 0, 1)
    low, high = evaluate(label_table(np.stack([truth, truth], 1)), np.stack([scores, scores], 1), [0.2, 0.8], 0).loc[
        ["Attr1", "Attr2"]
    ].itertuples()
    assert low.f1 == pytest.approx(f1_score(truth, scores >= 0.2))
    assert high.f1 == pytest.approx(f1_score(truth, scores >= 0.8))
    assert low.recall > high.recall
    assert low.roc_auc == high.roc_auc == pytest.approx(roc_auc_score(truth, scores))
    assert np.isnan(low.roc_auc_low)  # n_bootstrap=0: point estimates only
    assert low.verdict.startswith("not judged")


def test_unknown_labels_are_ignored(rng: np.random.Generator):
    truth = rng.random(60) < 0.5
    known = rng.random(60) < 0.7
    scores = truth.astype(float)
    scores[~known] = 1 - scores[~known]  # wrong wherever the label is NA: must not count
    row = evaluate(label_table(truth, known), scores[:, None], n_bootstrap=50).loc["Attr1"]
    assert row["n"] == known.sum()
    assert row["roc_auc"] == row["f1"] == 1.0


def test_an_attribute_with_one_class_does_not_crash_and_is_not_judged(rng: np.random.Generator):
    truth = np.stack([rng.random(40) < 0.5, np.ones(40, dtype=bool), np.zeros(40, dtype=bool)], 1)
    known = np.ones_like(truth)
    known[:, 0] = False  # an attribute with no known label at all
    results = evaluate(label_table(truth, known), rng.random((40, 3)), n_bootstrap=50)
    assert results["roc_auc"].isna().all()
    assert results.loc["Attr1", "n"] == 0
    assert all(verdict.startswith("not judged: too few") for verdict in results["verdict"])
    assert results.loc["Attr2", "recall"] >= 0  # defined: there are positives
    assert np.isnan(results.loc["Attr3", "ap"])  # undefined: there are none
    assert format_table(results).loc["Attr3", "roc_auc"] == "n/a"


def test_bootstrap_is_seeded(rng: np.random.Generator):
    truth, scores = rng.random(50) < 0.5, rng.random((50, 1))
    table = label_table(truth)
    first, again = (evaluate(table, scores, n_bootstrap=100, seed=1) for _ in range(2))
    other = evaluate(table, scores, n_bootstrap=100, seed=2)
    assert first.equals(again)
    assert first.loc["Attr1", "roc_auc_low"] != other.loc["Attr1", "roc_auc_low"]


def test_a_ranking_that_beats_chance_but_not_the_all_positive_f1_says_so(rng: np.random.Generator):
    truth = rng.random(200) < 0.9
    scores = np.where(truth, rng.uniform(0.1, 0.6, 200), rng.uniform(0.0, 0.3, 200))  # mostly below 0.5
    row = evaluate(label_table(truth), scores[:, None], n_bootstrap=100).loc["Attr1"]
    assert row["roc_auc_low"] > 0.5 and row["f1"] < row["f1_all_positive"]
    assert "no better than predicting all positive" in row["verdict"]


def test_baselines_are_the_trivial_predictors():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)  # prevalence 0.3
    table = baselines(label_table(truth)).loc["Attr1"]
    assert table.loc["all positive"].to_dict() == pytest.approx(
        {"precision": 0.3, "recall": 1.0, "f1": 2 * 0.3 / 1.3, "ap": 0.3, "roc_auc": 0.5}
    )
    assert table.loc["all negative", "recall"] == table.loc["all negative", "f1"] == 0
    assert np.isnan(table.loc["all negative", "precision"])  # nothing predicted positive
    assert table.loc["prevalence"].to_dict() == pytest.approx(
        {"precision": 0.3, "recall": 0.3, "f1": 0.3, "ap": 0.3, "roc_auc": 0.5}
    )


def test_the_interval_is_the_central_percentile_range_of_the_resampled_values():
    grid = np.arange(1001) / 1000  # 0.000, 0.001, ..., 1.000: percentiles fall on grid points
    assert percentile_interval(grid) == pytest.approx((0.025, 0.975))
    assert percentile_interval(grid, confidence=0.9) == pytest.approx((0.05, 0.95))
    skewed = np.random.default_rng(7).exponential(size=500)
    assert percentile_interval(skewed) == pytest.approx(np.percentile(skewed, [2.5, 97.5]), rel=1e-12)
    # Resamples where a metric is undefined (NaN) are left out, not counted as extremes.
    assert percentile_interval(np.concatenate([skewed, [np.nan] * 40])) == percentile_interval(skewed)
    assert all(np.isnan(percentile_interval([np.nan, np.nan])))


def test_the_auc_interval_is_as_wide_as_a_95_percent_interval_should_be():
    """Scores unrelated to 200 labels: ROC AUC has a known standard error, so a 95 % interval spans about 3.92 of it.

    The min..max of the resamples spans 1.3-1.6 times that, a 99 % interval 1.2 times, a 90 % one 0.85 times.
    """
    rng = np.random.default_rng(0)
    truth, scores = rng.random(200) < 0.5, rng.random((200, 1))
    positives, negatives = truth.sum(), (~truth).sum()
    standard_error = np.sqrt((positives + negatives + 1) / (12 * positives * negatives))  # AUC under no signal
    row = evaluate(label_table(truth), scores, n_bootstrap=300).loc["Attr1"]
    width = (row["roc_auc_high"] - row["roc_auc_low"]) / (2 * 1.96 * standard_error)
    assert 0.9 < width < 1.1, width
    assert row["roc_auc_low"] < row["roc_auc"] < row["roc_auc_high"]


def test_each_short_verdict_stands_for_its_full_verdict(rng: np.random.Generator):
    truth = rng.random(100) < 0.4
    ranks_only = np.where(truth, 0.45, 0.1)  # a perfect ranking, but one image only reaches the 0.5 threshold
    ranks_only[np.flatnonzero(truth)[0]] = 0.6
    cases = {"above chance": (truth, np.where(truth, 0.9, 0.1), 50), "chance": (truth, np.full(100, 0.5), 50),
             "no interval": (truth, rng.random(100), 0), "below chance": (truth, np.where(truth, 0.1, 0.9), 50),
             "ranks only": (truth, ranks_only, 50), "too few": (np.arange(100) < 3, rng.random(100), 50)}
    for short, (labels, scores, resamples) in cases.items():
        row = evaluate(label_table(labels), scores[:, None], n_bootstrap=resamples).iloc[0]
        assert short_verdict(row) == short
        assert VERDICTS[short].format(positives=row["positives"], negatives=row["negatives"],
                                      minimum=MIN_PER_CLASS) == row["verdict"]


def test_resampled_metrics_equal_scikit_learn_on_the_resampled_data(rng: np.random.Generator):
    """Weights k on an image are the image drawn k times: every metric equals point_metrics on the redrawn data,
    with ties, one-class resamples and empty resamples of a class included."""
    for _ in range(100):
        n = int(rng.integers(2, 30))
        truth = rng.random(n) < rng.random()
        scores = np.round(rng.random(n), int(rng.integers(1, 3)))  # rounded: many ties
        samples = rng.integers(0, n, size=(4, n))
        fast = resampled_metrics(truth, scores, 0.5, bootstrap_weights(samples, n))
        for b, sample in enumerate(samples):
            slow = point_metrics(truth[sample], scores[sample], 0.5)
            for metric, value in slow.items():
                np.testing.assert_allclose(fast[metric][b], value, atol=1e-12, err_msg=metric)


def test_confident_mistakes_are_the_most_confident_wrong_decisions_per_attribute():
    table = label_table(np.array([[1], [0], [0], [1], [0]], dtype=bool), np.array([[1], [1], [1], [1], [0]], bool))
    mistakes = confident_mistakes(table, np.array([[0.2], [0.9], [0.6], [0.4], [0.99]]), [0.5], count=1)
    assert mistakes[["kind", "image", "probability"]].values.tolist() == [
        ["false positive", "image_1.jpg", 0.9], ["false negative", "image_0.jpg", 0.2]]  # image_4: label unknown


def test_resampled_metrics_of_no_images_are_nan_per_resample_and_accept_zero_one_labels():
    """No known images: a float NaN per resample (row of weights); labels given as 0/1 integers are read as
    booleans (`~` of an integer array is not negation)."""
    empty = resampled_metrics(np.zeros(0, bool), np.zeros(0), 0.5, np.zeros((3, 0)))
    for metric in ("precision", "recall", "f1", "ap", "roc_auc"):
        assert empty[metric].shape == (3,) and empty[metric].dtype == np.float64 and np.isnan(empty[metric]).all()
    assert all(np.isnan(value) and isinstance(value, float) for value in point_metrics(np.zeros(0, bool),
                                                                                      np.zeros(0), 0.5).values())
    truth, scores = np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.8, 0.4, 0.3, 0.1])
    weights = bootstrap_weights(np.array([[0, 1, 2, 3, 4], [0, 0, 1, 2, 4]]), 5)
    as_integers = resampled_metrics(truth, scores, 0.5, weights)
    as_booleans = resampled_metrics(truth.astype(bool), scores, 0.5, weights)
    for metric in as_booleans:
        np.testing.assert_array_equal(as_integers[metric], as_booleans[metric])
    assert as_booleans["roc_auc"][0] == pytest.approx(5 / 6)


def test_bootstrap_weights_count_the_draws_of_each_item():
    np.testing.assert_array_equal(bootstrap_weights(np.array([[0, 0, 2], [1, 2, 2]]), 4),
                                  [[2, 0, 1, 0], [0, 1, 2, 0]])


def test_attributes_with_one_class_or_no_known_labels_are_evaluated_without_warnings(rng: np.random.Generator):
    """NaN metrics and intervals, and not a RuntimeWarning or UndefinedMetricWarning printed per attribute."""
    truth = np.stack([np.ones(20, bool), np.zeros(20, bool), rng.random(20) < 0.5, rng.random(20) < 0.5], 1)
    known = np.ones((20, 4), bool)
    known[:, 3] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = evaluate(label_table(truth, known), rng.random((20, 4)), n_bootstrap=50)
        for labels in truth.T[:2]:
            assert np.isnan(point_metrics(labels, rng.random(20), 0.5)["roc_auc"])
    assert np.isnan(results.loc[["Attr1", "Attr2", "Attr4"], ["roc_auc", "roc_auc_low", "roc_auc_high"]]).all().all()
    assert np.isnan(results.loc["Attr4", "prevalence"]) and results.loc["Attr4", "n"] == 0


def test_the_intervals_are_drawn_from_every_known_image_with_the_seed_and_confidence(rng: np.random.Generator):
    """By default 1000 resamples of the known images, drawn with seed 0 per attribute in turn, and the 95 %
    percentile interval; `confidence` sets the interval."""
    truth = rng.random((30, 2)) < 0.5
    scores = np.clip(truth * 0.2 + rng.random((30, 2)), 0, 1)
    table = label_table(truth)
    for confidence, results in ((0.95, evaluate(table, scores)), (0.5, evaluate(table, scores, confidence=0.5))):
        draws = np.random.default_rng(0)
        for j, name in enumerate(table.attributes):
            samples = draws.integers(0, 30, size=(1000, 30))
            resampled = resampled_metrics(truth[:, j], scores[:, j], 0.5, bootstrap_weights(samples, 30))
            for metric in ("f1", "roc_auc"):
                low, high = percentile_interval(resampled[metric], confidence)
                assert (results.loc[name, f"{metric}_low"], results.loc[name, f"{metric}_high"]) == (low, high)


def test_five_positives_are_enough_to_judge_and_an_f1_equal_to_all_positive_is_no_better():
    row = {"positives": 5, "negatives": 5, "roc_auc_low": 0.6, "roc_auc_high": 0.9, "f1": 0.5,
           "f1_all_positive": 0.5}
    assert short_verdict(row) == "ranks only"
    assert short_verdict({**row, "f1": 0.51}) == "above chance"
    assert short_verdict({**row, "positives": 4}) == "too few"


def test_confident_mistakes_show_count_per_kind_most_confident_first_ties_in_row_order():
    """Three of each kind by default; at the threshold is decided present; equal probabilities in row order; the
    rows are rows of the label table (unknown labels skipped), with exactly these columns."""
    probabilities = np.array([0.5, 0.9, 0.9, 0.9, 0.9, 0.7, 0.1, 0.3, 0.3, 0.3, 0.3, 0.49, 0.8, 0.2])
    truth = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    known = np.ones(14, bool)
    known[1] = False
    table = label_table(truth, known)
    mistakes = confident_mistakes(table, probabilities[:, None], [0.5])
    assert list(mistakes.columns) == ["attribute", "kind", "row", "image", "probability"]
    assert mistakes[["attribute", "kind", "row"]].values.tolist() == [
        ["Attr1", "false positive", 2], ["Attr1", "false positive", 3], ["Attr1", "false positive", 4],
        ["Attr1", "false negative", 6], ["Attr1", "false negative", 7], ["Attr1", "false negative", 8]]
    assert mistakes["image"].tolist() == [f"image_{i}.jpg" for i in (2, 3, 4, 6, 7, 8)]
    assert len(confident_mistakes(table, probabilities[:, None], [0.5], count=10)) == 5 + 6  # row 0, at 0.5, too
    many = np.round(np.random.default_rng(0).uniform(0.5, 1, 40), 1)  # 40 false positives, 6 values: a
    tied = confident_mistakes(label_table(np.zeros(40)), many[:, None], [0.5], count=40)  # non-stable sort reorders
    assert tied["row"].tolist() == sorted(range(40), key=lambda row: (-many[row], row))
    nothing_wrong = confident_mistakes(label_table(np.array([1, 0])), np.array([[0.9], [0.1]]), [0.5])
    assert nothing_wrong.empty and list(nothing_wrong.columns) == ["attribute", "kind", "row", "image", "probability"]
