"""Evaluation results shown: the formatted and compact tables, and the verdicts in sentences."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from helpers import label_table

from aimonk.evaluate.report import compact_table, format_table, verdict_sentences
from aimonk.metrics import evaluate


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


def test_format_table_shows_every_metric_with_the_digits_asked(rng: np.random.Generator):
    truth = rng.random(60) < 0.5
    results = evaluate(label_table(truth), truth[:, None] * 0.5 + 0.25, [0.6], n_bootstrap=20)
    assert format_table(results, digits=3).loc["Attr1", "roc_auc"] == "1.000 [1.000, 1.000]"


def test_the_compact_table_aligns_its_columns_under_their_headings():
    """Counts and the threshold right-aligned, metrics left-aligned, each column as wide as its heading or widest
    cell, two spaces apart; a name that fits exactly is whole, a longer one is cut to the 99 columns."""
    results = pd.DataFrame({
        "n": [100, 8], "positives": [40, 3], "negatives": [60, 5], "threshold": [0.5, 0.25],
        "roc_auc": [0.9, np.nan], "roc_auc_low": [0.8, np.nan], "roc_auc_high": [0.95, np.nan],
        "ap": [0.7, 0.5], "ap_low": [np.nan, np.nan], "ap_high": [np.nan, np.nan],
        "f1": [0.6, 0.4], "f1_low": [0.5, 0.3], "f1_high": [0.7, 0.5], "f1_all_positive": [0.57, 0.5],
    }, index=pd.Index(["Attr1", "Tiny"], name="attribute"))
    assert compact_table(results) == [
        "attribute    n  pos  ROC AUC           AP    F1 at thr          thr  verdict",
        "Attr1      100   40  0.90 [0.80,0.95]  0.70  0.60 [0.50,0.70]  0.50  above chance",
        "Tiny         8    3  n/a               0.50  0.40 [0.30,0.50]  0.25  too few",
    ]
    results.index = pd.Index(["x" * 200, "Tiny"], name="attribute")
    header, long, _ = compact_table(results)
    assert len(header) < len(long) == 99 and long.startswith("x" * 20) and long.split()[0].endswith("x~")
    fits = len(long.split()[0])
    results.index = pd.Index(["y" * fits, "Tiny"], name="attribute")
    assert compact_table(results)[1].split()[0] == "y" * fits
    results[["positives", "roc_auc", "roc_auc_low", "roc_auc_high"]] = [[40, 0.6, 0.4, 0.7]] * 2
    results.index = pd.Index(["x" * 200, "Tiny"], name="attribute")
    header, long, _ = compact_table(results)  # both "chance", shorter than the heading "verdict"
    assert len(header) == 99 and long.endswith("chance") and long.split()[0].endswith("x~")
