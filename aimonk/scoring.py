"""A checkpoint's probabilities for labelled images: by default the validation images it held out at training."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimonk.checkpoint import load_checkpoint
from aimonk.errors import AimonkError
from aimonk.images import report_unusable_images
from aimonk.labels import LabelTable, read_labels
from aimonk.outputs import listed
from aimonk.prediction import Predictor
from aimonk.runtime import resolve_device


@dataclass
class Scores:
    """Model probabilities for labelled images: `probabilities[i, j]` for `table.filenames[i]`, attribute j."""

    table: LabelTable
    probabilities: np.ndarray  # float (images, attributes)
    image_dir: Path
    thresholds: list[float]  # the checkpoint's


def score_checkpoint(
    model_path: str | Path,
    labels_path: str | Path,
    image_dir: str | Path,
    include_training: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 1,
) -> Scores:
    """Probabilities for the validation images the checkpoint recorded at training time.

    With `include_training`, every labelled image is scored instead (with a warning: training images flatter
    the model). Unreadable or missing images are left out with a warning.
    """
    resolve_device(device)  # before any work
    labelled = read_labels(labels_path)
    checkpoint = load_checkpoint(model_path, attributes=labelled.attributes)
    if include_training:
        warnings.warn("scoring every labelled image: training images are included, so metrics are optimistic",
                      stacklevel=2)
        files = labelled.filenames
    else:
        files = list(checkpoint.get("val_files") or [])
        if not files:
            raise AimonkError(f"{model_path}: the checkpoint records no validation images (trained with "
                              "val_fraction 0); retrain with a validation split, or score every labelled image "
                              "(--all), training images included")
    rows = {name: row for row, name in enumerate(labelled.filenames)}
    unlabelled = [name for name in files if name not in rows]
    if unlabelled:
        raise AimonkError(f"{labels_path}: no label line for {len(unlabelled)} of the checkpoint's validation "
                          f"images ({listed(unlabelled)}); is this the labels file it was trained on?")
    image_dir = Path(image_dir)
    predictor = Predictor(model_path, device=device)
    predictions = list(predictor.predict([image_dir / name for name in files], batch_size, num_workers))
    report_unusable_images("unreadable or missing", [p.error for p in predictions if p.error], strict=False)
    kept = [(rows[name], p.probabilities) for name, p in zip(files, predictions, strict=True) if not p.error]
    if not kept:
        raise AimonkError(f"{image_dir}: none of the {len(files)} images to score could be read")
    table = labelled.subset([row for row, _ in kept])
    probabilities = np.array([values for _, values in kept], dtype=np.float64)
    return Scores(table, probabilities, image_dir, list(predictor.thresholds))
