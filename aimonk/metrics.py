"""Per-attribute metrics over known labels only, with bootstrap intervals, trivial baselines and a verdict.

Pure functions of labels and probabilities, used alike by the end of a training run (the checkpoint's and model
card's numbers), `aimonk evaluate`, `aimonk tune`, the threshold explorer and the comparisons of runs. The
probabilities of a checkpoint on labelled images come from `aimonk.evaluate.scoring.score_checkpoint`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from aimonk.data.labels import LabelTable


@dataclass
class Scores:
    """A model's probabilities for labelled images, `probabilities[i, j]` for `table.filenames[i]` and attribute j,
    with its decision thresholds (and where the images are, when they came from files)."""

    table: LabelTable
    probabilities: np.ndarray  # float (images, attributes)
    thresholds: Sequence[float]
    image_dir: Path | None = None


METRICS = ("precision", "recall", "f1", "ap", "roc_auc")
BOOTSTRAP = 1000  # resamples of the intervals a checkpoint records (and `aimonk evaluate` prints by default)
MIN_PER_CLASS = 5  # fewer known positives (or negatives) than this and an attribute is not judged


def evaluate(
    table: LabelTable,
    probabilities: np.ndarray,
    thresholds: Sequence[float] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per attribute: counts, each metric with its bootstrap interval, baselines and a verdict.

    Only known labels count. Precision, recall and F1 use `thresholds` (default 0.5); AP and ROC AUC do not.
    Intervals are percentile bootstrap intervals over the attribute's known images, seeded; `n_bootstrap=0`
    gives point estimates only. A metric that is undefined (one class only) is NaN, never an error.
    """
    thresholds = [0.5] * len(table.attributes) if thresholds is None else list(thresholds)
    rng = np.random.default_rng(seed)
    rows = []
    for j, name in enumerate(table.attributes):
        known, truth = table.known_labels(j)
        scores = np.asarray(probabilities, dtype=np.float64)[known, j]
        row: dict[str, object] = {"attribute": name, "n": int(known.sum()), "positives": int(truth.sum()),
                                  "negatives": int((~truth).sum())}
        row["prevalence"] = truth.mean() if truth.size else np.nan
        row["threshold"] = float(thresholds[j])
        estimates = metrics_with_intervals(truth, scores, thresholds[j], bootstrap_draws(truth.size, n_bootstrap, rng),
                                           confidence)
        for metric, (point, low, high) in estimates.items():
            row.update({metric: point, f"{metric}_low": low, f"{metric}_high": high})
        row["f1_all_positive"] = baselines_for(truth)["all positive"]["f1"]
        row["verdict"] = verdict(row)
        rows.append(row)
    return pd.DataFrame(rows).set_index("attribute")


def mean_average_precision(table: LabelTable, probabilities: np.ndarray, n_bootstrap: int = BOOTSTRAP,
                           seed: int = 0, confidence: float = 0.95) -> dict:
    """mAP: the mean over attributes (those with a known positive) of their AP on known labels, with its percentile
    bootstrap interval: each resample draws images, and every attribute's AP is computed on the known labels drawn
    (`resampled_metrics`, as the per-attribute intervals). {"map", "map_low", "map_high", "attributes"}; NaN where
    no attribute has a known positive (or, for the interval, `n_bootstrap` is 0)."""
    weights = bootstrap_draws(len(table), n_bootstrap, np.random.default_rng(seed))
    points, resampled, used = [], [], []
    for j, name in enumerate(table.attributes):
        known, truth = table.known_labels(j)
        if not truth.any():
            continue
        scores = np.asarray(probabilities, dtype=np.float64)[known, j]
        points.append(average_precision(truth, scores))
        resampled.append(resampled_metrics(truth, scores, 0.5, weights[:, known])["ap"])
        used.append(name)
    if not used:
        return {"map": float("nan"), "map_low": float("nan"), "map_high": float("nan"), "attributes": []}
    with warnings.catch_warnings():  # a resample that draws no positive of any attribute has no mAP
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(np.stack(resampled), axis=0) if n_bootstrap else np.zeros(0)
    low, high = percentile_interval(means, confidence)
    return {"map": mean_ap(points), "map_low": low, "map_high": high, "attributes": used}


def map_line(record: dict) -> str:
    """`mAP 0.830 [0.780, 0.880] over 4 attributes with a known positive`: how every command shows it."""
    value = "n/a" if math.isnan(record["map"]) else f"{record['map']:.3f}"
    interval = "" if math.isnan(record["map_low"]) else f" [{record['map_low']:.3f}, {record['map_high']:.3f}]"
    return f"mAP {value}{interval} over {len(record['attributes'])} attributes with a known positive"


def validation_record(scores: Scores, n_bootstrap: int = BOOTSTRAP, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """`evaluate` of a model's scores on its validation images, and the same as a checkpoint's `validation` entry
    (plain data: the metrics by attribute, the mAP, the images, resamples, seed and confidence)."""
    metrics = evaluate(scores.table, scores.probabilities, scores.thresholds, n_bootstrap, seed)
    rows = {name: {key: _plain(value) for key, value in row.items()} for name, row in metrics.iterrows()}
    return metrics, {"images": len(scores.table), "bootstrap": n_bootstrap, "seed": seed, "confidence": 0.95,
                     "metrics": rows, "map": mean_average_precision(scores.table, scores.probabilities, n_bootstrap,
                                                                    seed)}


def _plain(value: object) -> object:
    """A Python int, float or str for a numpy scalar: a checkpoint holds plain data only (weights_only)."""
    return value.item() if isinstance(value, np.generic) else value


def point_metrics(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 at `threshold`, average precision and ROC AUC; NaN where undefined."""
    nan = float("nan")
    if truth.size == 0:
        return dict.fromkeys(METRICS, nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, scores >= threshold, average="binary", pos_label=True, zero_division=np.nan
        )
        ap = average_precision(truth, scores)
    auc = roc_auc_score(truth, scores) if 0 < truth.sum() < truth.size else nan
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "ap": float(ap),
            "roc_auc": float(auc)}


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of scores for known labels `truth` (scikit-learn's); NaN without a positive."""
    return float(average_precision_score(truth, scores)) if truth.any() else float("nan")


def average_precisions(table: LabelTable, probabilities: np.ndarray) -> list[float]:
    """Each attribute's average precision over its known labels, as `evaluate` computes its `ap`."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return [average_precision(truth, probabilities[known, j])
            for j, (known, truth) in enumerate(map(table.known_labels, range(len(table.attributes))))]


def mean_ap(aps: Sequence[float]) -> float:
    """mAP: the mean of the attributes' average precisions where defined, i.e. over the attributes with a known
    positive (NaN if none has one). The one point estimate of mAP: per epoch of training, in
    `mean_average_precision` (the card, `aimonk evaluate`, the train summary) and `aimonk runs`."""
    defined = [float(ap) for ap in aps if ap is not None and not np.isnan(ap)]
    return float(np.mean(defined)) if defined else float("nan")


def bootstrap_draws(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """The weights of `n_bootstrap` resamples of `n` items (see `bootstrap_weights`), drawn from `rng`."""
    samples = rng.integers(0, n, size=(n_bootstrap, n)) if n else np.zeros((0, 0))
    return bootstrap_weights(samples, n)


def metrics_with_intervals(truth: np.ndarray, scores: np.ndarray, threshold: float, weights: np.ndarray,
                           confidence: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Each metric of METRICS as (point, low, high): the interval over the resamples that `weights` describe."""
    point, resampled = point_metrics(truth, scores, threshold), resampled_metrics(truth, scores, threshold, weights)
    return {metric: (point[metric], *percentile_interval(resampled[metric], confidence)) for metric in METRICS}


def percentile_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The central `confidence` interval of the finite values (resamples where a metric is defined)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 50 * (1 - confidence)
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def baselines_for(truth: np.ndarray) -> dict[str, dict[str, float]]:
    """What trivial predictors score on these labels: always positive, always negative, or guessing.

    "prevalence" guesses positive at random with the attribute's prevalence p; its expected precision, recall
    and F1 are all p. Constant scores rank nothing, so AP equals p and ROC AUC 0.5 for all three.
    """
    p = float(truth.mean()) if truth.size else float("nan")
    ranking = {"ap": p, "roc_auc": 0.5}
    return {
        "all positive": {**point_metrics(truth, np.ones(truth.shape), 0.5), **ranking},
        "all negative": {**point_metrics(truth, np.zeros(truth.shape), 0.5), **ranking},
        "prevalence": {"precision": p, "recall": p, "f1": p, **ranking},
    }


def baselines(table: LabelTable) -> pd.DataFrame:
    """The trivial baselines per attribute: rows (attribute, baseline), columns the metrics."""
    rows = [
        {"attribute": name, "baseline": baseline, **values}
        for j, name in enumerate(table.attributes)
        for baseline, values in baselines_for(table.known_labels(j)[1]).items()
    ]
    return pd.DataFrame(rows).set_index(["attribute", "baseline"])


VERDICTS = {  # short form (the compact table) -> the plain-language verdict
    "too few": "not judged: too few known positives/negatives ({positives}/{negatives}, fewer than {minimum})",
    "no interval": "not judged: no confidence interval (bootstrap off)",
    "chance": "no better than chance (AUC interval contains 0.5)",
    "below chance": "worse than chance (AUC interval below 0.5)",
    "ranks only": "better than chance at ranking, but F1 no better than predicting all positive",
    "above chance": "better than chance",
}


LEARNABLE = ("ranks only", "above chance")  # verdicts of attributes the model can tell apart: decisions are made


def short_verdict(row: dict) -> str:
    """The judgement of one attribute from its counts, AUC interval and F1, as a key of VERDICTS."""
    if min(row["positives"], row["negatives"]) < MIN_PER_CLASS:
        return "too few"
    low, high = row["roc_auc_low"], row["roc_auc_high"]
    if np.isnan(low):
        return "no interval"
    if low <= 0.5 <= high:
        return "chance"
    if high < 0.5:
        return "below chance"
    if row["f1"] <= row["f1_all_positive"]:
        return "ranks only"
    return "above chance"


def verdict(row: dict) -> str:
    """The same judgement in plain language."""
    return VERDICTS[short_verdict(row)].format(positives=row["positives"], negatives=row["negatives"],
                                               minimum=MIN_PER_CLASS)


def confident_mistakes(table: LabelTable, probabilities: np.ndarray, thresholds: Sequence[float],
                       count: int = 3) -> pd.DataFrame:
    """Per attribute, the `count` most confident false positives (highest probability among known absent images
    decided present) and false negatives (lowest among known present decided absent): where to look first."""
    rows = []
    for j, name in enumerate(table.attributes):
        known, truth = table.known_labels(j)
        indices, scores = np.flatnonzero(known), probabilities[known, j]
        decided = scores >= thresholds[j]
        for kind, mistaken, most_confident_first in (("false positive", ~truth & decided, -scores),
                                                     ("false negative", truth & ~decided, scores)):
            chosen = np.flatnonzero(mistaken)
            for position in chosen[np.argsort(most_confident_first[chosen], kind="stable")][:count]:
                rows.append({"attribute": name, "kind": kind, "row": int(indices[position]),
                             "image": table.filenames[indices[position]], "probability": float(scores[position])})
    return pd.DataFrame(rows, columns=["attribute", "kind", "row", "image", "probability"])


def bootstrap_weights(samples: np.ndarray, n: int) -> np.ndarray:
    """How often each of `n` items is drawn in each resample (rows of `samples`, drawn indices): (resamples, n)."""
    weights = np.zeros((len(samples), n))
    np.add.at(weights, (np.arange(len(samples))[:, None], np.asarray(samples, dtype=np.int64)), 1.0)
    return weights


def resampled_metrics(truth: np.ndarray, scores: np.ndarray, threshold: float,
                      weights: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1, AP and ROC AUC on many bootstrap resamples at once, one per row of `weights`.

    A resample that draws image i k times is the data with weight k on image i, so each metric is computed from
    weighted cumulative sums over the images sorted by score, equal to scikit-learn's on the resampled data (the
    tests check it) and about a thousand times faster than calling it per resample. NaN where undefined.
    """
    truth = np.asarray(truth, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if truth.size == 0:
        return dict.fromkeys(METRICS, np.full(len(weights), np.nan))
    positive, negative = weights * truth, weights * ~truth
    all_positive, all_negative = positive.sum(1), negative.sum(1)
    decided = np.asarray(scores) >= threshold
    tp, fp = (positive * decided).sum(1), (negative * decided).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / all_positive
        f1 = 2 * tp / (2 * tp + fp + (all_positive - tp))
        # Images grouped by distinct score, from the highest: AP sums recall steps times precision at each group.
        order = np.argsort(-np.asarray(scores), kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(np.asarray(scores)[order]) != 0])
        group_positive = np.add.reduceat(positive[:, order], starts, axis=1)
        group_negative = np.add.reduceat(negative[:, order], starts, axis=1)
        cumulative_tp, cumulative_fp = group_positive.cumsum(1), group_negative.cumsum(1)
        step_precision = np.where(group_positive > 0, cumulative_tp / (cumulative_tp + cumulative_fp), 0.0)
        ap = (group_positive * step_precision).sum(1) / all_positive
        # ROC AUC: each positive beats the negatives of lower score, and ties with those of its own score.
        negatives_above = cumulative_fp - group_negative
        beaten = all_negative[:, None] - negatives_above - group_negative
        auc = (group_positive * (beaten + 0.5 * group_negative)).sum(1) / (all_positive * all_negative)
    undefined = (all_positive == 0) | (all_negative == 0)
    return {"precision": precision, "recall": recall, "f1": f1,
            "ap": np.where(all_positive > 0, ap, np.nan), "roc_auc": np.where(undefined, np.nan, auc)}
