"""One round of self-training on the confident fills of `complete`, measured: does training on the completed labels
beat training on the labels as given?

For a user it is two steps (docs/cli.md): `aimonk complete` writes the completed labels file beside the original,
then `aimonk train --labels` that file. Measured here without letting a validation label help: the images are split
first (stratified), `complete` sees the training images alone, and both heads are scored on the same validation
images with their given labels, paired on the same bootstrap resamples (`aimonk.evaluate.comparison`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from aimonk.data.labels import LabelTable, read_labels, stratified_split
from aimonk.evaluate.comparison import Comparison
from aimonk.labelling.complete import complete, write_completed
from aimonk.labelling.crossfit import out_of_fold
from aimonk.labelling.heldout import config_from, train_and_score, write_labels

ORIGINAL, SELF_TRAINED = "labels as given", "self-trained on the fills"


def completed_labels(table: LabelTable, image_dir: Path, base: dict[str, Any], level: float = 0.95,
                     seed: int = 0) -> LabelTable:
    """`table` with its NA entries filled where `complete` reaches `level` (the rest stay NA)."""
    config = config_from(base)
    with tempfile.TemporaryDirectory(prefix="aimonk-selftrain-") as work:
        given = write_labels(table, Path(work) / "labels.txt")
        completion = complete(out_of_fold(given, image_dir, config, seed=seed), level=level)
        filled = Path(work) / "labels.completed.txt"
        write_completed(completion, given, filled)
        return read_labels(filled)


def self_training(labels_path: Path, image_dir: Path, base: dict[str, Any], level: float = 0.95,
                  val_fraction: float = 0.2, seed: int = 0, n_bootstrap: int = 1000) -> Comparison:
    """Heads trained on the training images' labels as given and as completed, compared on the validation images
    (`base`: TrainConfig settings on top of the recommended recipe)."""
    table = read_labels(labels_path)
    train_rows, val_rows = stratified_split(table, val_fraction, seed)
    training, validation = table.subset(train_rows), table.subset(val_rows)
    filled = completed_labels(training, image_dir, base, level, seed)
    runs = {ORIGINAL: train_and_score(training, validation, image_dir, base, seed),
            SELF_TRAINED: train_and_score(filled, validation, image_dir, base, seed)}
    return Comparison(validation, runs, n_bootstrap=n_bootstrap, seed=seed)

