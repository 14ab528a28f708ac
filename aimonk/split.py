"""Seeded train/validation split, stratified for multi-label data with missing labels."""

from __future__ import annotations

import numpy as np

from aimonk.labels import LabelTable


def stratified_split(table: LabelTable, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation); `val_fraction=0` trains on everything.

    Iterative stratification balances, per attribute, both the positives and the NA entries, so every
    attribute keeps its prevalence and its share of unknowns in both parts.
    """
    rows = np.arange(len(table))
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0 or len(table) < 2:
        return rows, rows[:0]
    # Imported here: it pulls in scikit-learn (about 1 s), which `aimonk predict` never needs.
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    strata = np.concatenate([(table.targets * table.known) > 0, ~table.known], axis=1).astype(int)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train, val = next(splitter.split(rows.reshape(-1, 1), strata))
    return np.sort(train), np.sort(val)
