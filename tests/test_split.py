"""The train/validation split: seeded, a partition of the rows, and stratified per attribute over positives and NAs.

Stratification is what keeps validation metrics and tuned thresholds honest: validation must hold its share of every
attribute's positives (a rare attribute's few included) and of its unknown labels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import label_table

from aimonk.data.labels import LabelTable, read_labels, stratified_split

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(4)


def rare_attribute_table(rows: int = 600) -> LabelTable:
    """Eight attributes from common (50 %) to rare (6 to 13 positives in 600), with 0 to 30 % NA each."""
    rng = np.random.default_rng(0)
    prevalence = np.array([0.5, 0.3, 0.1, 0.04, 0.03, 0.02, 0.02, 0.015])
    na_rate = np.array([0.1, 0.3, 0.05, 0.2, 0.02, 0.1, 0.0, 0.15])
    targets = rng.random((rows, prevalence.size)) < prevalence
    known = rng.random((rows, prevalence.size)) >= na_rate
    return label_table(targets, known)


def assert_stratified(table: LabelTable, val: np.ndarray, fraction: float) -> None:
    """Validation holds `fraction` of each attribute's positives and of its NAs, to within one image.

    A plain random split of the demo labels misses by 3 to 7 images on some attribute (for every seed tried); one
    stratified on positives alone misses the NAs by 2 to 9. Iterative stratification stays within 0.8.
    """
    positives, unknown = table.positives(), ~table.known
    for name, entries in (("positives", positives), ("NAs", unknown)):
        expected = fraction * entries.sum(axis=0)
        found = entries[val].sum(axis=0)
        assert np.all(np.abs(found - expected) <= 1), f"{name} in validation {found}, expected about {expected}"
    # What that means for the rates the metrics see: within a few points of the whole set.
    rate = positives.sum(axis=0) / table.known.sum(axis=0)
    val_rate = positives[val].sum(axis=0) / table.known[val].sum(axis=0)
    np.testing.assert_allclose(val_rate, rate, atol=0.04, err_msg="positive rate among known labels")
    np.testing.assert_allclose(unknown[val].mean(axis=0), unknown.mean(axis=0), atol=0.02, err_msg="NA rate")


@pytest.mark.parametrize("seed", SEEDS)
def test_demo_labels_are_split_with_each_attributes_positives_and_nas_in_proportion(seed: int):
    table = read_labels(ROOT / "labels.txt")
    train, val = stratified_split(table, 0.2, seed)
    assert_stratified(table, val, 0.2)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(table)))  # a partition
    assert 0.18 < len(val) / len(table) < 0.22


@pytest.mark.parametrize("fraction", [0.2, 0.3])
@pytest.mark.parametrize("seed", SEEDS)
def test_rare_attributes_keep_their_share_of_positives_in_validation(seed: int, fraction: float):
    table = rare_attribute_table()
    train, val = stratified_split(table, fraction, seed)
    assert_stratified(table, val, fraction)
    assert not set(train) & set(val) and len(train) + len(val) == len(table)


def test_the_split_is_a_function_of_the_seed():
    table = rare_attribute_table()
    first, again, other = (stratified_split(table, 0.2, seed)[1] for seed in (0, 0, 1))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_two_images_split_one_and_one_and_a_single_image_trains():
    train, val = stratified_split(label_table([[1], [0]]), 0.5, 0)
    assert sorted([*train, *val]) == [0, 1] and len(train) == len(val) == 1
    train, val = stratified_split(label_table([[1]]), 0.5, 0)
    assert train.tolist() == [0] and val.size == 0


def test_no_validation_split_trains_on_everything():
    table = rare_attribute_table(20)
    train, val = stratified_split(table, 0.0, 0)
    assert np.array_equal(train, np.arange(20)) and val.size == 0
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(table, 1.0, 0)


def test_labels_with_unknowns_are_split_without_numpy_warnings():
    """Strata come from the known positives without dividing by the known mask (0/0 warns at every NA)."""
    rng = np.random.default_rng(0)
    table = label_table(rng.random((40, 2)) < 0.5, rng.random((40, 2)) < 0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val = stratified_split(table, 0.25, 0)
    assert len(val) == 10 and len(train) == 30
