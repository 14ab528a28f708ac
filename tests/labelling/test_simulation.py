"""The simulation that checks audit, complete and next: the corruption it plants, and how it scores the answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import label_table

from aimonk.data.labels import read_labels
from aimonk.labelling.corruption import audit_check, completion_check, corrupt
from aimonk.labelling.curve import chosen_at_random, chosen_by_next, curve_summary, revealed
from aimonk.labelling.heldout import with_unlabelled, write_labels


def corrupted_demo(tmp_path, **options):
    rng = np.random.default_rng(0)
    table = label_table(rng.random((200, 3)) < 0.4, rng.random((200, 3)) > 0.1)
    original = write_labels(table, tmp_path / "labels.txt")
    return original, corrupt(original, tmp_path / "out" / "labels.txt", **options)


def test_corrupt_flips_and_hides_the_shares_asked_of_each_attributes_known_labels_and_keeps_the_original(tmp_path):
    original, corrupted = corrupted_demo(tmp_path, flip=0.05, hide=0.2, test_fraction=0.2)
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


def test_audit_check_counts_flips_in_the_top_k_and_any_na_flagged(tmp_path):
    _, corrupted = corrupted_demo(tmp_path, test_fraction=0.0)
    rows, columns = np.nonzero(corrupted.flipped)
    na_row, na_column = np.argwhere(~corrupted.table.known)[0]
    names, attributes = corrupted.table.filenames, corrupted.table.attributes
    suspects = pd.DataFrame({"image": [names[r] for r in rows[:3]] + [names[na_row]],
                             "attribute": [attributes[c] for c in columns[:3]] + [attributes[na_column]],
                             "rank": [1, 2, 3, 4], "score": [0.1, 0.2, 0.3, 0.4]})
    overall = audit_check(suspects, corrupted).loc["all attributes"]
    assert overall["flips in top k"] == 3 and overall["NA flagged"] == 1
    assert overall["recall at k"] == 3 / corrupted.flipped.sum() and overall["precision at k"] == 3 / 4


def test_completion_check_scores_fills_of_hidden_labels_against_the_truth(tmp_path):
    _, corrupted = corrupted_demo(tmp_path)
    filled = corrupted.hidden.copy()
    values = corrupted.truth.targets.copy()
    wrong = np.argwhere(filled[:, 0])[:2]
    values[wrong[:, 0], 0] = 1 - values[wrong[:, 0], 0]
    checked = completion_check(filled, values, corrupted, level=0.95)
    hidden = corrupted.hidden[:, 0].sum()
    assert checked.loc["Attr1", "realised precision"] == (hidden - 2) / hidden
    assert checked.loc["Attr2", "realised precision"] == 1.0 and checked.loc["Attr2", "meets level - 0.02"]


def test_the_curve_reveals_only_hidden_entries_at_their_true_value(tmp_path):
    _, corrupted = corrupted_demo(tmp_path)
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


def test_held_out_images_are_added_with_every_label_na():
    table = with_unlabelled(label_table([[1, 0], [0, 1]]), ["new.jpg"])
    assert table.filenames[-1] == "new.jpg" and not table.known[-1].any() and table.known[:2].all()
