"""`aimonk tune`: a checkpoint's decision rule set from its scores on the validation images it held out. Per
attribute its verdict (learnable: better than chance at ranking), a temperature where it lowers the log loss out of
fold, and a best-F1 threshold with its F1 estimated out of fold; saved with the validation metrics at the new rule
and the model card rewritten (`save_rule`, also the threshold explorer's Save)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from aimonk.card import write_model_card
from aimonk.checkpoint import DecisionRule, save_tuning
from aimonk.data.labels import LabelTable
from aimonk.evaluate.calibration import expected_calibration_error, temperature_if_it_helps
from aimonk.evaluate.scoring import Scored
from aimonk.evaluate.thresholds import tune_out_of_fold
from aimonk.metrics import BOOTSTRAP, LEARNABLE, Scores, evaluate, short_verdict, validation_record


def tune_checkpoint(model_path: str | Path, scored: Scored, n_bootstrap: int = BOOTSTRAP, folds: int = 5,
                    seed: int = 0, temperature: bool = True) -> pd.DataFrame:
    """Set the checkpoint's decision rule from `scored`, its logits on its validation images, and save it. Returns one
    row per attribute with the numbers behind each choice."""
    table, logits = scored.table, scored.logits
    untuned = DecisionRule.untuned(table.attributes)
    before = untuned.probabilities(logits)
    verdicts = evaluate(table, before, n_bootstrap=n_bootstrap, seed=seed)
    short = [short_verdict(row) for _, row in verdicts.iterrows()]
    learnable = [verdict in LEARNABLE for verdict in short]
    temperatures = []
    for j in range(len(table.attributes)):
        known, truth = table.known_labels(j)
        temperatures.append(temperature_if_it_helps(truth, logits[known, j], folds, seed)[0]
                            if learnable[j] and temperature else 1.0)
    calibrated = replace(untuned, temperatures=tuple(temperatures), learnable=tuple(learnable))
    probabilities = calibrated.probabilities(logits)
    thresholds = tune_out_of_fold(table, probabilities, learnable, folds, seed)
    rule = replace(calibrated, thresholds=tuple(thresholds["threshold"]), verdicts=tuple(verdicts["verdict"]))
    save_rule(model_path, scored.scores(rule), rule, n_bootstrap, seed)
    frame = thresholds.copy()
    frame.insert(0, "verdict", short)
    frame.insert(1, "roc_auc", verdicts["roc_auc"])
    frame.insert(3, "temperature", temperatures)
    frame["ece_before"] = [expected_calibration_error(*_known(table, before, j)) for j in range(len(short))]
    frame["ece_after"] = [expected_calibration_error(*_known(table, probabilities, j)) for j in range(len(short))]
    return frame


def save_rule(model_path: str | Path, scores: Scores, rule: DecisionRule, n_bootstrap: int = BOOTSTRAP,
              seed: int = 0) -> pd.DataFrame:
    """Save `rule` into the checkpoint with the validation metrics at it (`scores`: the validation images'
    probabilities and thresholds under that rule) in one atomic write, then rewrite the model card from what was
    saved. Returns the metrics saved (`evaluate`'s table): those `aimonk evaluate` prints for the same images."""
    metrics, record = validation_record(scores, n_bootstrap, seed)
    write_model_card(model_path, save_tuning(model_path, record, **rule.entries()))
    return metrics


def _known(table: LabelTable, probabilities: np.ndarray, attribute: int) -> tuple[np.ndarray, np.ndarray]:
    """(truth, probabilities) of one attribute's known labels."""
    known, truth = table.known_labels(attribute)
    return truth, probabilities[known, attribute]
