"""Checking `audit`, `complete` and `next` where the truth is known: on a learnable set, hold some images out, flip a
share of the others' known labels and hide another share, write those labels as a new file (never over the
original), run the three answers on it, and score them against the labels as they were.

- audit: precision and recall of the flips among its top k = 2 x (number of flips) suspects, and whether it ever
  flagged an NA entry;
- complete: per attribute, the realised precision of its fills of hidden entries against the level asked;
- next (`aimonk.simulation.curve`): mAP on the held-out images after k hidden labels are revealed, chosen by `next`
  or at random.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aimonk.data.labels import LabelTable, read_labels, stratified_split
from aimonk.simulation.heldout import write_labels


@dataclass(frozen=True)
class Corrupted:
    """The images the answers see, their labels before (`truth`) and after (`table`, written at `path`)."""

    path: Path
    truth: LabelTable
    table: LabelTable
    flipped: np.ndarray  # bool (images, attributes): known labels turned to the other value
    hidden: np.ndarray  # bool (images, attributes): known labels made NA
    test: LabelTable  # held-out images with their labels, never in `table`: the labelling curve's judge


def corrupt(labels_path: Path, out_path: Path, flip: float = 0.05, hide: float = 0.2, test_fraction: float = 0.2,
            seed: int = 0) -> Corrupted:
    """Hold out `test_fraction` of the images (stratified); of each attribute's known labels of the others, flip
    a `flip` share and hide a `hide` share (distinct entries, at random); write the result to `out_path`."""
    given = read_labels(labels_path)
    pool, test = stratified_split(given, test_fraction, seed) if test_fraction else (np.arange(len(given)), [])
    truth = given.subset(pool)
    rng = np.random.default_rng(seed)
    flipped, hidden = np.zeros_like(truth.known), np.zeros_like(truth.known)
    for j in range(len(truth.attributes)):
        order = rng.permutation(np.flatnonzero(truth.known[:, j]))
        flips, hides = round(flip * order.size), round(hide * order.size)
        flipped[order[:flips], j] = True
        hidden[order[flips : flips + hides], j] = True
    known = truth.known & ~hidden
    targets = np.where(flipped, 1.0 - truth.targets, truth.targets).astype(np.float32) * known
    table = LabelTable(Path(out_path), list(truth.filenames), list(truth.attributes), targets, known)
    write_labels(table, Path(out_path))
    return Corrupted(Path(out_path), truth, table, flipped, hidden, given.subset(test))


def _entries(frame: pd.DataFrame, table: LabelTable) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices into `table` of the (image, attribute) entries of `frame`."""
    rows = frame["image"].map({name: i for i, name in enumerate(table.filenames)}).to_numpy(int)
    columns = frame["attribute"].map({name: j for j, name in enumerate(table.attributes)}).to_numpy(int)
    return rows, columns


def audit_check(suspects: pd.DataFrame, corrupted: Corrupted) -> pd.DataFrame:
    """Per attribute and over all: flips, the k = 2 x flips suspects looked at, how many of them are flips
    (precision at k, recall at k), and how many flagged entries are NA in the labels audited (must be 0).

    `suspects` is `aimonk.labelling.audit.audit`'s table, most suspect first within each attribute (`rank`);
    over all attributes the top k are the k of lowest label-quality `score`. Precision counts the suspects looked
    at (fewer than k when audit flags fewer)."""
    rows, columns = _entries(suspects, corrupted.table)
    flip = corrupted.flipped[rows, columns]
    na = ~corrupted.table.known[rows, columns]
    found = suspects.assign(flip=flip, na=na)
    result = []
    for j, name in enumerate([*corrupted.table.attributes, "all attributes"]):
        if j < len(corrupted.table.attributes):
            flips = int(corrupted.flipped[:, j].sum())
            ranked = found[found["attribute"] == name].sort_values("rank")
        else:
            flips = int(corrupted.flipped.sum())
            ranked = found.sort_values("score", kind="stable")
        top = ranked.head(2 * flips)
        hits = int(top["flip"].sum())
        result.append({"attribute": name, "flips": flips, "flagged": len(ranked), "k": 2 * flips,
                       "flips in top k": hits, "precision at k": hits / len(top) if len(top) else np.nan,
                       "recall at k": hits / flips if flips else np.nan, "NA flagged": int(ranked["na"].sum())})
    return pd.DataFrame(result).set_index("attribute")


def completion_check(filled: np.ndarray, values: np.ndarray, corrupted: Corrupted, level: float) -> pd.DataFrame:
    """Per attribute: fills of hidden entries (whose truth is known) and of entries NA from the start, the realised
    precision of the former and whether it reaches `level` - 0.02 (the target; an attribute without fills passes).

    `filled` (bool) and `values` (0/1) are (images, attributes) over the images of `corrupted.table`."""
    result = []
    for j, name in enumerate(corrupted.table.attributes):
        checked = filled[:, j] & corrupted.hidden[:, j]
        right = int((values[checked, j] == corrupted.truth.targets[checked, j]).sum())
        n = int(checked.sum())
        precision = right / n if n else np.nan
        result.append({"attribute": name, "hidden": int(corrupted.hidden[:, j].sum()), "hidden filled": n,
                       "hidden right": right,
                       "other NA filled": int((filled[:, j] & ~corrupted.hidden[:, j]).sum()),
                       "realised precision": precision, "level": level,
                       "meets level - 0.02": bool(not n or precision >= level - 0.02)})
    return pd.DataFrame(result).set_index("attribute")
