"""The `self_train` NA mode: one round of self-training on the confident fills of `complete`, as a training option.

Before the fit, the NA entries of the training images (never the validation images) are completed as `aimonk
complete` completes a labels file: out-of-fold probabilities cross-fitted over the training images alone
(`crossfit.cross_fitted`, lbfgs heads on the frozen features, with the run's settings but NA ignored), then filled
where the precision of the fill, estimated on the known labels, reaches `--self-train-level`. The filled entries
then count as known labels; the others stay NA, left out of the loss (as `ignore`). The cross-fit is lbfgs whatever
the run's solver, so an adam run gets the same fills as an lbfgs one; both are deterministic from the seed (a
resumed run finds them again).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from aimonk.config import EntryOption, TrainConfig, precision_level
from aimonk.model.classifier import NAMode, ignore_na
from aimonk.registry import NA_MODES

if TYPE_CHECKING:  # imported wherever training options are parsed: what self_train needs is imported when called
    from aimonk.data.labels import LabelTable
    from aimonk.train.training import TrainingData


def completed_training_labels(config: TrainConfig, data: TrainingData) -> tuple[LabelTable, list[str]]:
    """`data`'s labels with the NA entries of its training images filled where `complete` reaches the config's
    `self_train_level`, and the report's lines: per attribute and value, how many were filled at what estimated
    precision, or why none."""
    from aimonk.labelling.complete import NOT_FILLED, complete, completion_summary
    from aimonk.labelling.crossfit import FOLDS, TooFewImages, cross_fitted

    rows = data.train_rows
    heading = (f"self_train: NA entries of the {len(rows)} training images completed by {FOLDS}-fold cross-fitted "
               f"lbfgs heads (as aimonk complete), level {config.self_train_level:g}")
    try:
        oof = cross_fitted(config.replace(na_mode="ignore"), data, rows, FOLDS, config.seed)
    except TooFewImages as error:
        return data.table, [f"{heading}: nothing filled: {error}"]
    completion = complete(oof, level=config.self_train_level)
    filled = completion.fills != NOT_FILLED
    targets, known = data.table.targets.copy(), data.table.known.copy()
    targets[rows] = np.where(filled, completion.fills, targets[rows])
    known[rows] |= filled
    return (replace(data.table, targets=targets, known=known),
            [f"{heading}:", *(f"  {line}" for line in completion_summary(completion))])


NA_MODES.add("self_train", NAMode(ignore_na, completes=completed_training_labels),
             "one round of self-training: NA entries of the training images filled first where their estimated "
             "precision reaches --self-train-level (as aimonk complete), the rest ignored; frozen backbone",
             [EntryOption("self_train_level", 0.95, "precision that the fills of na_mode self_train must reach: the "
                          "lower bound of its 95-percent interval, estimated on the training images' known labels",
                          precision_level)])
