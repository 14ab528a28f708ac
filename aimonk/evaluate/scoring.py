"""A checkpoint's scores on labelled images (its validation images, or any): what `aimonk evaluate` and `aimonk tune`
judge, and what the threshold explorer shows. The features come from `features_of` (from the feature store where
present); the logits and probabilities are those `aimonk predict` computes (`Predictor`), at the checkpoint's
decision rule or another.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aimonk import world
from aimonk.checkpoint import DecisionRule, check_attributes, load_checkpoint, recorded_data
from aimonk.data.images import drop_missing_images, report_unusable_images
from aimonk.data.labels import LabelFormat, LabelTable, read_labels
from aimonk.errors import AimonkError
from aimonk.evaluate.prediction import Predictor
from aimonk.io import file_digest, listed
from aimonk.metrics import Scores
from aimonk.model.features import Stores, features_of

CHUNK = 1024  # images whose features are held at once


class NothingHeldOut(AimonkError):
    """A checkpoint trained on every image: it has no validation images to be scored on."""


@dataclass
class Scored:
    """A checkpoint's logits for labelled images (known labels in `table`), and its decision rule."""

    table: LabelTable
    logits: np.ndarray  # float64 (images, attributes)
    rule: DecisionRule
    image_dir: Path

    def scores(self, rule: DecisionRule | None = None) -> Scores:
        """The probabilities and thresholds of `rule` (default: the checkpoint's)."""
        rule = rule or self.rule
        return Scores(self.table, rule.probabilities(self.logits), list(rule.thresholds), self.image_dir)


def score_checkpoint(
    model_path: str | Path,
    labels_path: str | Path,
    image_dir: str | Path,
    include_training: bool = False,
    device: str = "cpu",
    batch_size: int = 8,
    num_workers: int = 1,
    stores: Stores | None = None,
    checkpoint: dict | None = None,
    label_format: LabelFormat | None = None,
) -> Scored:
    """The checkpoint's logits for the validation images it recorded at training time (every labelled image with
    `include_training`: a test set, or all the training labels; a warning counts those that were training images,
    which flatter the model), their features from `stores` where present (`checkpoint`: the one at `model_path`, if
    already loaded). Unreadable or missing images are left out with a warning. Under torchrun each process extracts
    its share; every process gets the whole."""
    job = world.start(device)
    labelled = read_labels(labels_path, label_format)
    checkpoint = check_attributes(model_path, checkpoint or load_checkpoint(model_path), labelled.attributes)
    if include_training:
        trained_on = training_images(checkpoint, model_path, labelled.filenames, Path(image_dir))
        if trained_on and job.is_main:
            warnings.warn(f"{len(trained_on)} of the {len(labelled)} labelled images were training images of "
                          f"{model_path} (same name and content: {listed(trained_on)}), so metrics are optimistic",
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
    table, missing = drop_missing_images(labelled.subset([rows[name] for name in files]), image_dir)
    predictor = Predictor(model_path, job.device, checkpoint)
    frozen = predictor.model.frozen_part
    store = stores(frozen, predictor.preprocessing, predictor.precision) if stores and len(frozen) else None

    def logits_of(paths: list[Path]) -> tuple[torch.Tensor | None, list[int], list[str]]:
        """The logits of the readable images of `paths`, a chunk of them at a time: memory holds one chunk's
        features (feature maps, for a fine-tuned model), and torchrun gathers logits alone."""
        logits, readable, errors = [], [], []
        for start in range(0, len(paths), CHUNK):
            features, found, failed = features_of(frozen, paths[start : start + CHUNK], predictor.preprocessing, store,
                                                  predictor.precision, batch_size, num_workers, progress=False)
            logits += [torch.from_numpy(predictor.logits(features[:, 0]))] if found else []
            readable, errors = readable + [start + i for i in found], errors + failed
        return (torch.cat(logits) if logits else None), readable, errors

    logits, readable, errors = job.in_shares([image_dir / name for name in table.filenames], logits_of)
    if job.is_main:
        report_unusable_images("unreadable or missing", [f"{image_dir / name}: image file not found"
                                                         for name in missing] + errors, strict=False)
    if not readable:
        raise AimonkError(f"{image_dir}: none of the {len(files)} images to score could be read")
    return Scored(table.subset(readable), logits.numpy(), predictor.rule, image_dir)


def training_images(checkpoint: dict, model_path: str | Path, names: list[str], image_dir: Path) -> list[str]:
    """Those of `names` (in `image_dir`) that the checkpoint trained on: a training image of that name whose bytes
    are the same (compared where the run read its images; by name alone where that image is gone)."""
    trained = set(checkpoint.get("train_files") or [])
    folder = recorded_data(checkpoint, model_path)[1]
    if folder is None:  # a checkpoint from before the data were recorded: the folder its settings name
        folder = Path((checkpoint.get("train_config") or {}).get("image_dir") or Path(
            (checkpoint.get("train_config") or {}).get("data_dir") or ".") / "images")
    return [name for name in names if name in trained and same_content(image_dir / name, folder / name)]


def same_content(path: Path, trained: Path) -> bool:
    """Whether the image at `path` is the training image at `trained` (True where that one cannot be read)."""
    try:
        if not trained.is_file() or path.resolve() == trained.resolve():
            return True
        return path.is_file() and file_digest(path) == file_digest(trained)
    except OSError:
        return True
