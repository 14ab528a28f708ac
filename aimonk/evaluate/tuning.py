"""A checkpoint's probabilities for labelled images (by default the validation images it held out at training),
and what is tuned from them: each attribute's verdict, temperature and decision threshold (`aimonk tune`), saved
with the validation metrics at those thresholds and the model card (`save_thresholds`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from aimonk.card import write_model_card
from aimonk.checkpoint import load_checkpoint, save_tuning
from aimonk.data.images import report_unusable_images
from aimonk.data.labels import read_labels
from aimonk.distributed import start
from aimonk.errors import AimonkError
from aimonk.evaluate.calibration import calibrated, expected_calibration_error, temperature_if_it_helps
from aimonk.evaluate.metrics import LEARNABLE, Scores, evaluate, short_verdict
from aimonk.evaluate.prediction import Predictor
from aimonk.evaluate.thresholds import tune_out_of_fold
from aimonk.io import listed


class NothingHeldOut(AimonkError):
    """A checkpoint trained on every image: it has no validation images to be scored on."""


def score_checkpoint(
    model_path: str | Path,
    labels_path: str | Path,
    image_dir: str | Path,
    include_training: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 1,
    calibrated: bool = True,
) -> Scores:
    """Probabilities for the validation images the checkpoint recorded at training time.

    With `include_training`, every labelled image is scored instead (with a warning: training images flatter
    the model). Unreadable or missing images are left out with a warning. `calibrated=False` leaves out the
    checkpoint's temperatures.
    """
    dist = start(device)  # under torchrun each process scores its share; every one gets all, each image once
    labelled = read_labels(labels_path)
    checkpoint = load_checkpoint(model_path, attributes=labelled.attributes)
    if include_training:
        if dist.is_main:
            warnings.warn("scoring every labelled image: training images are included, so metrics are optimistic",
                          stacklevel=2)
        files = labelled.filenames
    else:
        files = list(checkpoint.get("val_files") or [])
        if not files:
            raise NothingHeldOut(f"{model_path}: the checkpoint records no validation images (trained with "
                                 "val_fraction 0): nothing was held out to score; retrain with --val-fraction above 0")
    rows = {name: row for row, name in enumerate(labelled.filenames)}
    unlabelled = [name for name in files if name not in rows]
    if unlabelled:
        raise AimonkError(f"{labels_path}: no label line for {len(unlabelled)} of the checkpoint's validation "
                          f"images ({listed(unlabelled)}); is this the labels file it was trained on?")
    image_dir = Path(image_dir)
    predictor = Predictor(model_path, device=dist.device, calibrated=calibrated)
    predictions = list(predictor.predict_in_shares([image_dir / name for name in files], batch_size, num_workers,
                                                   everywhere=True))
    if dist.is_main:
        report_unusable_images("unreadable or missing", [p.error for p in predictions if p.error], strict=False)
    kept = [(rows[name], p.probabilities) for name, p in zip(files, predictions, strict=True) if not p.error]
    if not kept:
        raise AimonkError(f"{image_dir}: none of the {len(files)} images to score could be read")
    table = labelled.subset([row for row, _ in kept])
    probabilities = np.array([values for _, values in kept], dtype=np.float64)
    return Scores(table, probabilities, list(predictor.thresholds), image_dir)


def tune_checkpoint(
    model_path: str | Path, scores: Scores, n_bootstrap: int = 1000, folds: int = 5, seed: int = 0,
    temperature: bool = True,
) -> pd.DataFrame:
    """Record in the checkpoint, per attribute: its verdict on the validation images, whether it is learnable (better
    than chance at ranking), a temperature where it lowers the out-of-fold log loss, and a threshold tuned for F1
    (learnable attributes only). `scores` are the checkpoint's uncalibrated probabilities on its validation images.
    Returns one row per attribute with the numbers behind each choice.
    """
    table = scores.table
    verdicts = evaluate(table, scores.probabilities, n_bootstrap=n_bootstrap, seed=seed)
    short = [short_verdict(row) for _, row in verdicts.iterrows()]
    learnable = [verdict in LEARNABLE for verdict in short]
    temperatures, before, after = [], [], []
    for j in range(len(table.attributes)):
        known, truth = table.known_labels(j)
        fitted = temperature_if_it_helps(truth, scores.probabilities[known, j], folds, seed) \
            if learnable[j] and temperature else (1.0, np.nan, np.nan)
        temperatures.append(fitted[0])
        before.append(expected_calibration_error(truth, scores.probabilities[known, j]))
        after.append(expected_calibration_error(truth, calibrated(scores.probabilities[known, j], fitted[0])))
    probabilities = calibrated(scores.probabilities, np.array(temperatures))
    thresholds = tune_out_of_fold(table, probabilities, learnable, folds, seed)
    save_thresholds(model_path, Scores(table, probabilities, thresholds["threshold"].tolist(), scores.image_dir),
                    n_bootstrap, seed, verdicts=verdicts["verdict"].tolist(), learnable=learnable,
                    temperatures=temperatures)
    frame = thresholds.copy()
    frame.insert(0, "verdict", short)
    frame.insert(1, "roc_auc", verdicts["roc_auc"])
    frame.insert(3, "temperature", temperatures)
    frame["ece_before"], frame["ece_after"] = before, after
    return frame


def save_thresholds(model_path: str | Path, scores: Scores, n_bootstrap: int = 1000, seed: int = 0,
                    **tuning: list) -> pd.DataFrame:
    """Save `scores.thresholds` into the checkpoint with the validation metrics at them (and any other per-attribute
    `tuning`: verdicts, learnable, temperatures) in one atomic write, then rewrite the model card. `scores` are the
    probabilities the thresholds apply to: calibrated by the temperatures saved, as `aimonk predict` computes them.

    The one call of `aimonk train` (the default thresholds), `aimonk tune` and the threshold explorer's Save.
    Returns the metrics saved (`evaluate`'s table).
    """
    metrics = evaluate(scores.table, scores.probabilities, scores.thresholds, n_bootstrap, seed)
    rows = {name: {key: _plain(value) for key, value in row.items()} for name, row in metrics.iterrows()}
    validation = {"images": len(scores.table), "bootstrap": n_bootstrap, "seed": seed, "confidence": 0.95,
                  "metrics": rows}
    save_tuning(model_path, validation, thresholds=list(scores.thresholds), **tuning)
    write_model_card(model_path)
    return metrics


def _plain(value: object) -> object:
    """A Python int, float or str for a numpy scalar: a checkpoint holds plain data only (weights_only)."""
    return value.item() if isinstance(value, np.generic) else value
