"""Paired comparisons of models on the same validation images: every metric on the same bootstrap resamples of
the images, so a difference between two models comes with an interval and a share of resamples where one wins.

Per attribute: AP, ROC AUC and F1 at each model's thresholds, over that attribute's known labels. Over all
attributes: their means (mAP, mean ROC AUC, macro-F1).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from aimonk.data.labels import LabelTable
from aimonk.evaluate.report import with_interval
from aimonk.metrics import Scores, bootstrap_draws, percentile_interval, resampled_metrics

METRICS = ("ap", "roc_auc", "f1")
OVERALL = "all attributes"
OVERALL_NAMES = {"ap": "mAP", "roc_auc": "mean ROC AUC", "f1": "macro-F1"}


class Comparison:
    """Metrics of several models on the validation images and on the same bootstrap resamples of them."""

    def __init__(self, table: LabelTable, runs: dict[str, Scores], n_bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95):
        self.table, self.confidence = table, confidence
        self.attributes = [*table.attributes, OVERALL]
        # Row 0: the validation images themselves (weight 1 each); then one row per resample.
        draws = bootstrap_draws(len(table), n_bootstrap, np.random.default_rng(seed))
        self.weights = np.vstack([np.ones(len(table)), draws])
        # values[run]: (1 + n_bootstrap, attributes + 1, metrics)
        self.values = {name: self._metrics(run) for name, run in runs.items()}

    def _metrics(self, run: Scores) -> np.ndarray:
        per_attribute = []
        for j in range(len(self.table.attributes)):
            known, truth = self.table.known_labels(j)
            scores = np.asarray(run.probabilities, dtype=np.float64)[known, j]
            values = resampled_metrics(truth, scores, run.thresholds[j], self.weights[:, known])
            per_attribute.append(np.stack([values[metric] for metric in METRICS], axis=1))
        per_attribute = np.stack(per_attribute, axis=1)  # (resamples, attributes, metrics)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric undefined for every attribute: NaN
            overall = np.nanmean(per_attribute, axis=1, keepdims=True)  # an undefined attribute is skipped
        return np.concatenate([per_attribute, overall], axis=1)

    def estimate(self, run: str, attribute: str, metric: str) -> tuple[float, float, float]:
        """(value, low, high): the metric on the validation images and its bootstrap interval."""
        values = self.values[run][:, self.attributes.index(attribute), METRICS.index(metric)]
        return (float(values[0]), *percentile_interval(values[1:], self.confidence))

    def difference(self, run: str, other: str, attribute: str, metric: str) -> tuple[float, float, float, float]:
        """(difference, low, high, share of resamples where `run` is better) of run minus other."""
        a = self.values[run][:, self.attributes.index(attribute), METRICS.index(metric)]
        b = self.values[other][:, self.attributes.index(attribute), METRICS.index(metric)]
        paired = a[1:] - b[1:]
        finite = paired[np.isfinite(paired)]
        share = float((finite > 0).mean()) if finite.size else float("nan")
        return (float(a[0] - b[0]), *percentile_interval(paired, self.confidence), share)

    def table_against(self, reference: str) -> pd.DataFrame:
        """One row per (run, attribute): each metric with its interval, and its paired difference from `reference`."""
        rows = []
        for run in self.values:
            for attribute in self.attributes:
                row: dict[str, object] = {"run": run, "attribute": attribute}
                for metric in METRICS:
                    value, low, high = self.estimate(run, attribute, metric)
                    difference, d_low, d_high, share = self.difference(run, reference, attribute, metric)
                    row.update({metric: value, f"{metric}_low": low, f"{metric}_high": high,
                                f"{metric}_diff": difference, f"{metric}_diff_low": d_low,
                                f"{metric}_diff_high": d_high, f"{metric}_p_better": share})
                rows.append(row)
        return pd.DataFrame(rows).set_index(["run", "attribute"])

    def sentence(self, run: str, other: str, metric: str = "ap", attribute: str = OVERALL) -> str:
        """What the paired difference of `run` against `other` shows, in words, with its numbers."""
        difference, low, high, share = self.difference(run, other, attribute, metric)
        name = OVERALL_NAMES[metric] if attribute == OVERALL else f"{metric.upper()} of {attribute}"
        a, b = self.estimate(run, attribute, metric)[0], self.estimate(other, attribute, metric)[0]
        verdict = ("better" if low > 0 else "worse" if high < 0 else
                   "no clear difference (the interval contains 0)")
        return (f"{run} vs {other}: {name} {a:.3f} vs {b:.3f}, difference {difference:+.3f} "
                f"[{low:+.3f}, {high:+.3f}], better in {share:.0%} of resamples: {verdict}")

    def readable(self, reference: str, attribute: str = OVERALL, digits: int = 3) -> pd.DataFrame:
        """For one attribute (or all), a row per run: each metric `value [low, high]`, the paired difference of AP
        from `reference` with its interval, and the share of resamples where the run beats it; best AP first."""
        table = self.table_against(reference).xs(attribute, level="attribute")
        names = OVERALL_NAMES if attribute == OVERALL else {"ap": "AP", "roc_auc": "ROC AUC", "f1": "F1"}
        shown = pd.DataFrame({names[metric]: table.apply(with_interval, axis=1, metric=metric, digits=digits)
                              for metric in METRICS})
        shown[f"{names['ap']} - {reference}"] = table.apply(
            lambda row: f"{row.ap_diff:+.{digits}f} [{row.ap_diff_low:+.{digits}f}, {row.ap_diff_high:+.{digits}f}]",
            axis=1)
        shown[f"better than {reference}"] = table["ap_p_better"].map("{:.0%}".format)
        return shown.loc[table["ap"].sort_values(ascending=False).index]
