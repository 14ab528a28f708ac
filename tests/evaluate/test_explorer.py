"""The threshold explorer's callbacks: the numbers a slider shows are the library's, and Save writes the thresholds
into the checkpoint through the same call as `aimonk tune`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_checkpoint

from aimonk.checkpoint import load_checkpoint
from aimonk.evaluate.explorer import ThresholdExplorer
from aimonk.evaluate.scoring import score_checkpoint
from aimonk.evaluate.thresholds import tune_out_of_fold
from aimonk.metrics import METRICS, Scores, evaluate

pytest.importorskip("ipywidgets")
pytestmark = pytest.mark.slow  # trains a small model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of two attributes, 12 of 48 images held out (random backbone)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("model"),
                           ["1", "0", "NA", "1", "0", "1"], 48)


@pytest.fixture
def scores(model: Path) -> Scores:
    data = Path(load_checkpoint(model)["train_config"]["data_dir"])
    return score_checkpoint(model, data / "labels.txt", data / "images").scores()


@pytest.fixture
def copy(model: Path, tmp_path: Path) -> Path:
    (tmp_path / model.name).write_bytes(model.read_bytes())
    return tmp_path / model.name


def test_a_slider_moved_shows_evaluates_metrics_intervals_and_counts_at_that_threshold(copy: Path, scores: Scores):
    explorer = ThresholdExplorer(copy, scores, n_bootstrap=200, seed=3)
    explorer.widget()
    for j, threshold in ((0, 0.35), (1, 0.62)):
        explorer.sliders[j].value = threshold  # what dragging the slider does
        thresholds = list(scores.thresholds)
        thresholds[j] = threshold
        expected = evaluate(scores.table, scores.probabilities, thresholds, n_bootstrap=200, seed=3).iloc[j]
        values = explorer.values(j, threshold)
        for metric in METRICS:
            np.testing.assert_equal(values[metric], tuple(expected[[metric, f"{metric}_low", f"{metric}_high"]]))
        known, truth = scores.table.known_labels(j)
        decided = scores.probabilities[known, j] >= threshold
        assert (values["tp"], values["fp"], values["fn"], values["tn"]) == (
            (truth & decided).sum(), (~truth & decided).sum(), (truth & ~decided).sum(), (~truth & ~decided).sum())
        shown = explorer.readouts[j].value
        assert f"TP {values['tp']}, FP {values['fp']}, FN {values['fn']}, TN {values['tn']} of {known.sum()}" in shown
        point, low, high = values["f1"]
        assert (f"f1 {point:.3f} [{low:.3f}, {high:.3f}]" if low == low else f"f1 {point:.3f}") in shown
        assert explorer.thresholds[j] == threshold


def test_the_honest_figure_shown_is_the_out_of_fold_f1_of_the_best_threshold(copy: Path, scores: Scores):
    explorer = ThresholdExplorer(copy, scores, n_bootstrap=50, folds=3)
    best = tune_out_of_fold(scores.table, scores.probabilities, [True, True], folds=3)
    for j in range(2):
        text = explorer.describe(j, 0.5)
        assert f"best-F1 threshold {best['threshold'].iloc[j]:.3f}" in text
        assert f"out of fold {best['f1_out_of_fold'].iloc[j]:.3f}" in text


def test_the_images_shown_are_the_nearest_on_each_side_of_the_threshold(copy: Path, scores: Scores):
    explorer = ThresholdExplorer(copy, scores, n_bootstrap=0, flips_shown=4)
    known, _ = scores.table.known_labels(0)
    probabilities = scores.probabilities[known, 0]
    threshold = float(np.median(probabilities))
    flips = explorer.flips(0, threshold)
    below = np.sort(probabilities[probabilities < threshold])[::-1][:2]
    above = np.sort(probabilities[probabilities >= threshold])[:2]
    assert list(flips["probability"]) == [*below, *above]
    assert list(flips["decided"]) == [False] * len(below) + [True] * len(above)


def test_save_writes_the_sliders_thresholds_into_the_checkpoint_and_its_card(copy: Path, scores: Scores):
    explorer = ThresholdExplorer(copy, scores, n_bootstrap=100)
    explorer.widget()
    explorer.sliders[0].value, explorer.sliders[1].value = 0.3, 0.715
    explorer.save_button.click()
    checkpoint = load_checkpoint(copy)
    assert checkpoint["thresholds"] == [0.3, 0.715]
    assert [checkpoint["validation"]["metrics"][name]["threshold"] for name in ("Attr1", "Attr2")] == [0.3, 0.715]
    assert "| 0.300 |" in (copy.parent / "MODEL_CARD.md").read_text() and "saved thresholds" in explorer.status.value
