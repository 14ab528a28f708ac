"""Training on some labels and scoring images held out of them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import label_table

from aimonk.data.labels import read_labels
from aimonk.simulation.heldout import mean_ap, train_and_score, with_unlabelled


def test_held_out_images_are_added_with_every_label_na():
    table = with_unlabelled(label_table([[1, 0], [0, 1]]), ["new.jpg"])
    assert table.filenames[-1] == "new.jpg" and not table.known[-1].any() and table.known[:2].all()


@pytest.mark.slow
def test_held_out_images_are_scored_by_a_head_that_never_saw_their_labels(dataset_32px, tmp_path):
    table = read_labels(dataset_32px / "labels.txt")
    training, held_out = table.subset(range(14)), table.subset(range(14, 20))
    base = {"weights": "none", "image_size": 32, "workers": 0, "cv_folds": 2, "cache_dir": str(tmp_path / "cache")}
    scores = train_and_score(training, held_out, dataset_32px / "images", base)
    flipped = replace(held_out, targets=1 - held_out.targets)
    again = train_and_score(training, flipped, dataset_32px / "images", base)
    assert scores.table.filenames == held_out.filenames and scores.probabilities.shape == (6, 2)
    assert np.array_equal(scores.probabilities, again.probabilities)  # their labels changed nothing
    assert 0 <= mean_ap(scores) <= 1
