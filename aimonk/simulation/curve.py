"""The labelling curve: how much k new labels help, chosen by `next` or at random. Of the entries hidden by
`aimonk.simulation.corruption.corrupt`, k are revealed (their true label written back), the recommended head is
trained again on the images the answers saw, and scored (mAP) on the held-out images, which it never trains on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from aimonk.simulation.corruption import Corrupted
from aimonk.simulation.heldout import mean_ap, train_and_score


def revealed(corrupted: Corrupted, entries: np.ndarray) -> Corrupted:
    """`corrupted` with the hidden entries `entries` (rows, columns) known again, at their true value."""
    known = corrupted.table.known.copy()
    targets = corrupted.table.targets.copy()
    rows, columns = entries
    known[rows, columns] = True
    targets[rows, columns] = corrupted.truth.targets[rows, columns]
    return replace(corrupted, table=replace(corrupted.table, targets=targets, known=known))


def chosen_by_next(ranking: pd.DataFrame, corrupted: Corrupted) -> np.ndarray:
    """The hidden entries in the order `next` proposes them (`ranking`: its table, highest priority first); the
    entries NA from the start cannot be revealed here and are passed over."""
    index = {name: i for i, name in enumerate(corrupted.table.filenames)}
    columns = {name: j for j, name in enumerate(corrupted.table.attributes)}
    rows = ranking["image"].map(index).to_numpy(int)
    cols = ranking["attribute"].map(columns).to_numpy(int)
    keep = corrupted.hidden[rows, cols]
    return np.stack([rows[keep], cols[keep]])


def chosen_at_random(corrupted: Corrupted, seed: int) -> np.ndarray:
    """Every hidden entry, in a random order."""
    rows, columns = np.nonzero(corrupted.hidden)
    order = np.random.default_rng(seed).permutation(rows.size)
    return np.stack([rows[order], columns[order]])


def labelling_curve(corrupted: Corrupted, ranking: pd.DataFrame, image_dir: Path, base: dict[str, Any],
                    budgets: Sequence[int], seed: int = 0) -> pd.DataFrame:
    """One row per (strategy, k): mAP on the held-out images after revealing the first k entries chosen by `next`
    (its `ranking`) or at random (seeded); k = 0 is the head trained on the corrupted labels alone."""
    orders = {"next": chosen_by_next(ranking, corrupted), "random": chosen_at_random(corrupted, seed)}
    baseline = mean_ap(train_and_score(corrupted.table, corrupted.test, image_dir, base, seed))
    rows = []
    for k in budgets:
        for strategy, order in orders.items():
            if k == 0:
                value = baseline
            else:
                value = mean_ap(train_and_score(revealed(corrupted, order[:, :k]).table, corrupted.test, image_dir,
                                                base, seed))
            rows.append({"strategy": strategy, "k": int(k), "seed": seed, "mAP": value,
                         "revealed": int(min(k, order.shape[1]))})
    return pd.DataFrame(rows)


def curve_summary(curves: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per k: the mean mAP over seeds of each strategy with a t interval, and the mean paired difference next -
    random with its interval (seeds are the pairs)."""
    wide = curves.pivot_table(index=["k", "seed"], columns="strategy", values="mAP")
    wide["next - random"] = wide["next"] - wide["random"]
    rows = []
    for k, group in wide.groupby(level="k"):
        row: dict[str, object] = {"k": k, "seeds": len(group)}
        for column in ("next", "random", "next - random"):
            mean, low, high = mean_interval(group[column].to_numpy(), confidence)
            row |= {column: mean, f"{column} low": low, f"{column} high": high}
        rows.append(row)
    return pd.DataFrame(rows).set_index("k")


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean (the mean twice for a single value)."""
    mean = float(np.mean(values))
    if values.size < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, values.size - 1) * stats.sem(values)
    return mean, mean - float(half), mean + float(half)
