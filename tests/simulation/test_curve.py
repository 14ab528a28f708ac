"""The labelling curve: which entries it reveals, and how it sums up the seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aimonk.simulation.curve import chosen_at_random, chosen_by_next, curve_summary, revealed


def test_the_curve_reveals_only_hidden_entries_at_their_true_value(corrupted_demo):
    _, corrupted = corrupted_demo()
    names, attributes = corrupted.table.filenames, corrupted.table.attributes
    ranking = pd.DataFrame({"image": [names[i] for i, j in np.argwhere(~corrupted.table.known)],
                            "attribute": [attributes[j] for i, j in np.argwhere(~corrupted.table.known)]})
    for order in (chosen_by_next(ranking, corrupted), chosen_at_random(corrupted, seed=1)):
        assert corrupted.hidden[order[0], order[1]].all() and order.shape[1] == corrupted.hidden.sum()
        more = revealed(corrupted, order[:, :10]).table
        assert more.known.sum() == corrupted.table.known.sum() + 10
        rows, columns = order[:, :10]
        assert (more.targets[rows, columns] == corrupted.truth.targets[rows, columns]).all()


def test_curve_summary_pairs_the_strategies_by_seed():
    curves = pd.DataFrame({"strategy": ["next", "random"] * 3, "k": [10] * 6, "seed": [0, 0, 1, 1, 2, 2],
                           "mAP": [0.8, 0.7, 0.9, 0.8, 0.7, 0.6]})
    summary = curve_summary(curves).loc[10]
    assert np.isclose(summary["next - random"], 0.1) and np.isclose(summary["next - random low"], 0.1)
    assert summary["seeds"] == 3 and summary["next low"] < 0.8 < summary["next high"]
