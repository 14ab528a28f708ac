"""Per-attribute evaluation: known labels only, seeded bootstrap intervals, baselines, plain-language verdicts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import label_table
from sklearn.metrics import f1_score, roc_auc_score

from aimonk.metrics import (
    MIN_PER_CLASS,
    VERDICTS,
    baselines,
    bootstrap_weights,
    compact_table,
    confident_mistakes,
    evaluate,
    format_table,
    percentile_interval,
    point_metrics,
    resampled_metrics,
    short_verdict,
    verdict_sentences,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


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


def test_format_table_shows_intervals_and_verdicts(rng: np.random.Generator):
    truth = rng.random(60) < 0.5
    results = evaluate(label_table(truth), truth[:, None] * 0.5 + 0.25, [0.6], n_bootstrap=20)
    shown = format_table(results)
    assert list(shown.columns) == ["n", "positives", "negatives", "prevalence", "threshold", "precision", "recall",
                                   "f1", "ap", "roc_auc", "F1 all-positive", "verdict"]
    row = shown.loc["Attr1"]
    assert row["roc_auc"] == "1.00 [1.00, 1.00]"
    assert (row["prevalence"], row["threshold"]) == (f"{truth.mean():.2f}", "0.60")
    assert row["F1 all-positive"] == f"{2 * truth.mean() / (1 + truth.mean()):.2f}"
    assert row["verdict"] == "better than chance"
    assert format_table(results, digits=3).loc["Attr1", "threshold"] == "0.600"


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


def test_verdict_sentences_give_each_attributes_verdict_auc_interval_ap_and_counts(rng: np.random.Generator):
    truth = np.stack([rng.random(60) < 0.5, rng.random(60) < 0.5], 1)
    scores = np.stack([truth[:, 0] * 0.5 + 0.25, rng.random(60)], 1)
    results = evaluate(label_table(truth), scores, n_bootstrap=20)
    first, second = verdict_sentences(results)
    row = results.loc["Attr1"]
    assert first == (f"Attr1: better than chance. ROC AUC 1.00 [1.00, 1.00]; AP 1.00 against {row.prevalence:.2f} by "
                     f"chance; {row.positives} positives and {row.negatives} negatives known.")
    assert second.startswith("Attr2: ") and results.loc["Attr2", "verdict"] in second
    assert verdict_sentences(evaluate(label_table(truth[:, :1]), scores[:, :1], n_bootstrap=0))[0].startswith(
        "Attr1: not judged: no confidence interval (bootstrap off). ROC AUC n/a; AP 1.00")
    *_, warning = verdict_sentences(results, weights_origin="random")
    assert warning == ("The backbone was randomly initialised (no pretrained weights): expect far better results with "
                       "pretrained weights.")
    assert len(verdict_sentences(results, weights_origin="imagenet:ResNet18_Weights.IMAGENET1K_V1")) == 2


def test_the_compact_table_fits_100_columns_with_long_names_and_many_images(rng: np.random.Generator):
    n = 120_000
    truth = rng.random((n, 3)) < [0.5, 0.1, 0.0]
    truth[:3, 2] = True  # 3 positives: too few to judge
    names = ["Wearing_Eyeglasses_Or_Sunglasses_In_The_Picture", "Attr2", "Tiny"]
    table = replace(label_table(truth), attributes=names)
    results = evaluate(table, np.clip(truth * 0.3 + rng.random((n, 3)), 0, 1), n_bootstrap=3)
    lines = compact_table(results)
    assert len(lines) == 4 and all(len(line) < 100 for line in lines), lines
    assert lines[1].startswith("Wearing_E") and "120000" in lines[1] and lines[1].count("[") == 3
    assert lines[3].endswith("too few")


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
