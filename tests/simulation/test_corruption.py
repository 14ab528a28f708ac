"""How the simulation corrupts a labels file, and how it scores audit and complete against the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aimonk.data.labels import read_labels
from aimonk.simulation.corruption import audit_check, completion_check


def test_corrupt_flips_and_hides_the_shares_asked_of_each_attributes_known_labels_keeping_the_original(corrupted_demo):
    original, corrupted = corrupted_demo(flip=0.05, hide=0.2, test_fraction=0.2)
    before = original.read_bytes()
    truth = corrupted.truth
    assert len(corrupted.test) + len(truth) == 200 and not set(corrupted.test.filenames) & set(truth.filenames)
    for j in range(3):
        known = truth.known[:, j].sum()
        assert corrupted.flipped[:, j].sum() == round(0.05 * known)
        assert corrupted.hidden[:, j].sum() == round(0.2 * known)
    assert not (corrupted.flipped & corrupted.hidden).any() and not (corrupted.flipped & ~truth.known).any()
    written = read_labels(corrupted.path)
    assert (written.known == truth.known & ~corrupted.hidden).all()
    assert (written.targets[corrupted.flipped] != truth.targets[corrupted.flipped]).all()
    unchanged = written.known & ~corrupted.flipped
    assert (written.targets[unchanged] == truth.targets[unchanged]).all()
    assert original.read_bytes() == before


def test_audit_check_counts_flips_in_the_top_k_and_any_na_flagged(corrupted_demo):
    _, corrupted = corrupted_demo(test_fraction=0.0)
    rows, columns = np.nonzero(corrupted.flipped)
    na_row, na_column = np.argwhere(~corrupted.table.known)[0]
    names, attributes = corrupted.table.filenames, corrupted.table.attributes
    suspects = pd.DataFrame({"image": [names[r] for r in rows[:3]] + [names[na_row]],
                             "attribute": [attributes[c] for c in columns[:3]] + [attributes[na_column]],
                             "rank": [1, 2, 3, 4], "score": [0.1, 0.2, 0.3, 0.4]})
    overall = audit_check(suspects, corrupted).loc["all attributes"]
    assert overall["flips in top k"] == 3 and overall["NA flagged"] == 1
    assert overall["recall at k"] == 3 / corrupted.flipped.sum() and overall["precision at k"] == 3 / 4


def test_completion_check_scores_fills_of_hidden_labels_against_the_truth(corrupted_demo):
    _, corrupted = corrupted_demo()
    filled = corrupted.hidden.copy()
    values = corrupted.truth.targets.copy()
    wrong = np.argwhere(filled[:, 0])[:2]
    values[wrong[:, 0], 0] = 1 - values[wrong[:, 0], 0]
    checked = completion_check(filled, values, corrupted, level=0.95)
    hidden = corrupted.hidden[:, 0].sum()
    assert checked.loc["Attr1", "realised precision"] == (hidden - 2) / hidden
    assert checked.loc["Attr2", "realised precision"] == 1.0 and checked.loc["Attr2", "meets level - 0.02"]
