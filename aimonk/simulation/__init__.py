"""The simulation that checks `audit`, `complete` and `next` where the truth is known, end to end: per seed, corrupt
the labels (`corruption`), run the three answers on the corrupted file as `aimonk audit / complete / next` would,
score them against the labels as they were, and draw the labelling curve (`curve`: heads trained on some labels and
scored on held-out images, `heldout`). Then the numbers as sentences.

Used by notebook 05, benchmarks/labels_simulation.py and the tests, never by the library itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aimonk.cache import config_stores
from aimonk.labelling.audit import audit
from aimonk.labelling.complete import NOT_FILLED, Completion, complete
from aimonk.labelling.crossfit import out_of_fold
from aimonk.labelling.next import next_to_label
from aimonk.simulation.corruption import Corrupted, audit_check, completion_check, corrupt
from aimonk.simulation.curve import curve_summary, labelling_curve
from aimonk.simulation.heldout import config_from

OVERALL = "all attributes"


@dataclass
class Simulation:
    """What each seed's run found: one table per answer, with a `seed` column."""

    audit: pd.DataFrame  # corruption.audit_check, per attribute and over all
    completion: pd.DataFrame  # corruption.completion_check, per attribute, with flips (`flipped`) and without
    curve: pd.DataFrame  # curve.labelling_curve: strategy, k, seed, mAP
    level: float
    flip: float
    hide: float

    def curve_summary(self) -> pd.DataFrame:
        return curve_summary(self.curve)


def fills_by_row(completion: Completion, corrupted: Corrupted) -> tuple[np.ndarray, np.ndarray]:
    """(filled, value) over the images of `corrupted.table`, from the completion's fills (its images by name)."""
    filled = np.zeros_like(corrupted.table.known)
    values = np.zeros(corrupted.table.known.shape)
    position = {name: row for row, name in enumerate(corrupted.table.filenames)}
    rows = [position[name] for name in completion.oof.images]
    filled[rows] = completion.fills != NOT_FILLED
    values[rows] = completion.fills
    return filled, values


def simulate(labels_path: Path, image_dir: Path, base: dict[str, Any], seeds: Sequence[int] = (0,),
             flip: float = 0.05, hide: float = 0.2, level: float = 0.95, budgets: Sequence[int] = (0, 50, 100),
             folds: int = 5, n_bootstrap: int = 200) -> Simulation:
    """The three answers checked on `len(seeds)` corruptions of `labels_path` (each seed: its own held-out images,
    flips, hidden labels, folds and random choices); `base` holds TrainConfig settings (backbone, weights...) on
    top of the recommended recipe."""
    config = config_from(base)
    stores = config_stores(config)
    audits, completions, curves = [], [], []
    with tempfile.TemporaryDirectory(prefix="aimonk-simulation-") as work:
        for seed in seeds:
            corrupted = corrupt(labels_path, Path(work) / f"labels_{seed}.txt", flip, hide, seed=seed)
            oof = out_of_fold(corrupted.path, image_dir, config, folds, seed, n_bootstrap, stores)
            audits.append(audit_check(audit(oof), corrupted).assign(seed=seed))
            # complete is checked on the hidden labels alone too: with flips, its precision is estimated against
            # labels that are themselves wrong 5 % of the time, so a level of 0.95 is out of reach
            hidden = corrupt(labels_path, Path(work) / f"hidden_{seed}.txt", 0.0, hide, seed=seed)
            found_hidden = out_of_fold(hidden.path, image_dir, config, folds, seed, n_bootstrap, stores)
            for labels, found in ((corrupted, oof), (hidden, found_hidden)):
                filled, values = fills_by_row(complete(found, level=level), labels)
                completions.append(completion_check(filled, values, labels, level).assign(
                    flipped=flip if labels is corrupted else 0.0, seed=seed))
            ranking = next_to_label(oof, int((~oof.known).sum()))
            curves.append(labelling_curve(corrupted, ranking, image_dir, base, budgets, seed))
    return Simulation(pd.concat(audits), pd.concat(completions), pd.concat(curves, ignore_index=True), level, flip,
                      hide)


def audit_sentence(simulation: Simulation) -> str:
    overall = simulation.audit[simulation.audit.index == OVERALL]
    found, flips = int(overall["flips in top k"].sum()), int(overall["flips"].sum())
    na = int(simulation.audit["NA flagged"].sum())
    recall = found / flips if flips else float("nan")
    verdict = "meets" if recall >= 0.6 else "misses"
    return (f"**audit:** with {simulation.flip:.0%} of the known labels flipped, {found} of the {flips} flips "
            f"({recall:.0%}; target 60 %: it {verdict} it) are among the top 2 x flips suspects, precision "
            f"{overall['precision at k'].mean():.0%} (mean over {len(overall)} seed(s)); "
            f"{'no NA entry was' if not na else f'{na} NA entries were'} ever flagged.")


def completion_sentence(simulation: Simulation) -> str:
    table = simulation.completion[simulation.completion["flipped"] == 0]
    noisy = simulation.completion[simulation.completion["flipped"] > 0]
    filled_noisy = int(noisy["hidden filled"].sum())
    with_flips = (f" With {simulation.flip:.0%} of the labels flipped as well, it fills "
                  + (f"{filled_noisy} hidden labels, right at {noisy['hidden right'].sum() / filled_noisy:.3f}"
                     if filled_noisy else "none of the hidden labels")
                  + ": its precision is estimated against labels that are themselves that often wrong.")
    checked = table[table["hidden filled"] > 0]
    if checked.empty:
        return (f"**complete:** no hidden label was filled at level {simulation.level:g}: nothing to check (an "
                f"attribute that cannot reach the level gets no fills).{with_flips}")
    worst = checked["realised precision"].idxmin(), checked["realised precision"].min()
    failing = sorted(set(checked.index[~checked["meets level - 0.02"]]))
    per_attribute = checked.groupby(level=0).agg({"hidden filled": "sum", "hidden": "sum"})
    filled = ", ".join(f"{name} {row['hidden filled']} of {row['hidden']}" for name, row in per_attribute.iterrows())
    verdict = (f"below {simulation.level - 0.02:.2f} on {', '.join(failing)}" if failing else
               f"every attribute with fills reaches the target {simulation.level - 0.02:.2f}")
    return (f"**complete:** with {simulation.hide:.0%} of the known labels hidden and level {simulation.level:g}, "
            f"the hidden labels filled (summed over seeds: {filled}) are right with realised precision at least "
            f"{worst[1]:.3f} ({worst[0]}); {verdict}.{with_flips}")


def curve_sentence(simulation: Simulation) -> str:
    summary = simulation.curve_summary()
    summary = summary[summary.index > 0]
    if summary.empty:
        return "**next:** no labelling budget above 0 was tried."
    seeds = int(summary["seeds"].iloc[0])
    parts = [f"k = {k}: {row['next']:.3f} vs {row['random']:.3f}, difference {row['next - random']:+.3f}"
             + (f" [{row['next - random low']:+.3f}, {row['next - random high']:+.3f}]" if seeds > 1 else "")
             for k, row in summary.iterrows()]
    behind = [k for k, row in summary.iterrows() if row["next"] < row["random"]]
    verdict = ("at every k, next's mean mAP is at least random's" if not behind else
               f"next is NOT at least as good as random choice at k = {', '.join(map(str, behind))}")
    spread = "t interval of the paired difference" if seeds > 1 else "one seed: no interval, a hint only"
    return (f"**next:** mAP on held-out images after k revealed labels, chosen by next vs at random (mean over "
            f"{seeds} seed(s), {spread}): {'; '.join(parts)}; {verdict}.")


def sentences(simulation: Simulation) -> list[str]:
    return [audit_sentence(simulation), completion_sentence(simulation), curve_sentence(simulation)]
