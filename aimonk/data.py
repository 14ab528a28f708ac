"""The data a training run uses: labelled images that exist and decode, cached features, the stratified split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from aimonk.errors import AimonkError
from aimonk.feature_cache import FeatureCache, default_cache_dir, extract_features
from aimonk.images import ImageDataset, Preprocessing, collate_readable, drop_missing_images, report_unusable_images
from aimonk.labels import LabelTable
from aimonk.model import AttributeClassifier
from aimonk.split import stratified_split

if TYPE_CHECKING:
    from aimonk.config import TrainConfig


@dataclass
class TrainingData:
    """The usable labelled images, which rows train and which validate, and cached features if any."""

    table: LabelTable
    image_dir: Path
    train_rows: np.ndarray
    val_rows: np.ndarray
    features: torch.Tensor | None  # (images, 2, ...): frozen-stage outputs, as is and flipped (bf16 or float32)
    skipped: list[str]  # missing or unreadable images, left out

    def files(self, rows: np.ndarray) -> list[str]:
        return [self.table.filenames[i] for i in rows]

    def paths(self, rows: np.ndarray) -> list[Path]:
        return [self.image_dir / self.table.filenames[i] for i in rows]


def prepare_data(
    config: TrainConfig, table: LabelTable, model: AttributeClassifier, preprocessing: Preprocessing,
    keep_features: bool,
) -> TrainingData:
    """Labelled images that exist -> that decode -> stratified split.

    With `keep_features` and frozen stages, each image's frozen-stage output is computed once (or read from the
    on-disk cache, if `config.feature_cache`) and kept in memory.
    """
    image_dir = config.images_path
    if not image_dir.is_dir():
        raise AimonkError(f"{image_dir}: image folder not found")
    table, missing = drop_missing_images(table, image_dir)
    report_unusable_images("missing", missing, config.strict, Path(config.out_dir))
    paths = [image_dir / name for name in table.filenames]
    features = None
    if keep_features and len(model.frozen_part):
        cache = None
        if config.feature_cache:
            cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            cache = FeatureCache(cache_root, model.frozen_part, preprocessing, config.precision)
        features, readable, errors = extract_features(
            model.frozen_part, paths, preprocessing, cache, config.precision, num_workers=config.workers,
            progress=config.progress,
        )
    else:
        readable, errors = scan_readable(paths, preprocessing, config.workers)
    report_unusable_images("unreadable", errors, config.strict, Path(config.out_dir))
    unreadable = sorted(set(table.filenames) - {table.filenames[i] for i in readable})
    table = table.subset(readable)
    if len(table) == 0:
        raise AimonkError(f"{config.labels_path}: no usable images in {image_dir}")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_rows, val_rows = stratified_split(table, config.val_fraction, split_seed)
    if config.hide_labels or config.keep_labels:  # training labels only: validation keeps every known label
        table = table.hide(train_rows, config.hide_labels, config.keep_labels, config.seed)
    return TrainingData(table, image_dir, train_rows, val_rows, features, missing + unreadable)


def scan_readable(paths: list[Path], preprocessing: Preprocessing, num_workers: int) -> tuple[list[int], list[str]]:
    """Decode every image once; indices of the readable ones and messages for the rest."""
    loader = DataLoader(ImageDataset.unlabelled(paths, preprocessing), batch_size=32,
                        num_workers=num_workers, collate_fn=collate_readable)
    failed = dict(error for batch in loader for error in batch["errors"])
    return [i for i in range(len(paths)) if i not in failed], list(failed.values())
