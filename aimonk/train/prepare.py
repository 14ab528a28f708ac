"""The data a training run uses: labelled images that exist and decode, cached features, the stratified split;
refused in one line where there is nothing to learn from or a part of the split would be empty."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from aimonk import distributed
from aimonk.config import TrainConfig
from aimonk.data.images import (
    ImageDataset,
    Preprocessing,
    collate_readable,
    drop_missing_images,
    report_unusable_images,
)
from aimonk.data.labels import LabelTable, stratified_split
from aimonk.errors import AimonkError
from aimonk.io import listed
from aimonk.model.classifier import AttributeClassifier
from aimonk.model.features import FeatureCache, default_cache_dir, extract_features


@dataclass
class TrainingData:
    """The usable labelled images, which rows train and which validate, and cached features if any."""

    table: LabelTable
    image_dir: Path
    train_rows: np.ndarray
    val_rows: np.ndarray
    features: torch.Tensor | None  # (images, 2, ...): frozen-stage outputs, as is and flipped (bf16 or float32)
    skipped: list[str]  # missing or unreadable images, left out
    processes: int = 1  # that prepared the data, and train
    from_cache: int | None = None  # images whose features the feature cache held (all processes); None: not used

    def files(self, rows: np.ndarray) -> list[str]:
        return [self.table.filenames[i] for i in rows]

    def paths(self, rows: np.ndarray) -> list[Path]:
        return [self.image_dir / self.table.filenames[i] for i in rows]

    def head_inputs_cached(self, model: AttributeClassifier) -> bool:
        """Whether the features held are what `model`'s head takes (its backbone is frozen): training and scoring
        then run the head alone."""
        return self.features is not None and not model.trainable_stages


def prepare_data(
    config: TrainConfig, table: LabelTable, model: AttributeClassifier, preprocessing: Preprocessing,
    keep_features: bool,
) -> TrainingData:
    """Labelled images that exist -> that decode -> stratified split, of which the training images must have known
    labels (a warning names the attributes that have none there).

    With `keep_features` and frozen stages, each image's frozen-stage output is computed once (or read from the
    on-disk cache, if `config.feature_cache`) and kept in memory. Under torchrun, each process decodes and
    embeds its share of the images (into the shared cache) and every process gets the whole; rank 0 reports.
    """
    image_dir = config.images_path
    if not image_dir.is_dir():
        raise AimonkError(f"{image_dir}: image folder not found")
    require_known_labels(table, "labelled")  # every label NA: said before any image is read
    table, missing = drop_missing_images(table, image_dir)
    report_left_out("missing", missing, config)
    paths = [image_dir / name for name in table.filenames]
    features, cache = None, None
    if keep_features and len(model.frozen_part):
        if config.feature_cache:
            cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
            cache = FeatureCache(cache_root, model.frozen_part, preprocessing, config.precision)
        features, readable, errors = in_shares(paths, lambda share: extract_features(
            model.frozen_part, share, preprocessing, cache, config.precision, num_workers=config.workers,
            progress=config.progress,
        ))
    else:
        _, readable, errors = in_shares(paths, lambda share: (None, *scan_readable(
            share, preprocessing, config.workers)))
    report_left_out("unreadable", errors, config)
    unreadable = sorted(set(table.filenames) - {table.filenames[i] for i in readable})
    table = table.subset(readable)
    if len(table) == 0:
        raise AimonkError(f"{config.labels_path}: no usable images in {image_dir}")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_rows, val_rows = split_rows(table, config.val_fraction, split_seed)
    if config.hide_labels or config.keep_labels:  # training labels only: validation keeps every known label
        table = table.hide(train_rows, config.hide_labels, config.keep_labels, config.seed)
    require_known_labels(table.subset(train_rows), "training")
    warn_unknown_attributes(table.subset(train_rows))
    world = distributed.world()
    from_cache = sum(world.all_gather(cache.hits)) if cache else None
    return TrainingData(table, image_dir, train_rows, val_rows, features, missing + unreadable, world.world_size,
                        from_cache)


def require_known_labels(table: LabelTable, kind: str) -> None:
    """Refuse images (`kind`: labelled, training) without a single known label: the loss would count nothing."""
    if not table.known.any():
        raise AimonkError(f"{table.path}: no known label among the {len(table)} {kind} images: nothing to learn from")


def warn_unknown_attributes(table: LabelTable) -> None:
    """Warn (rank 0) of the attributes with no known label among the training images: their outputs learn nothing
    (the loss counts known labels only), the others train as usual."""
    unknown = [name for name, known in zip(table.attributes, table.known.any(axis=0), strict=True) if not known]
    if unknown and distributed.is_main():
        outputs = "its output learns" if len(unknown) == 1 else f"the outputs of these {len(unknown)} learn"
        warnings.warn(f"{table.path}: no known label of {listed(unknown)} among the {len(table)} training images: "
                      f"{outputs} nothing", stacklevel=2)


def split_rows(table: LabelTable, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`stratified_split`, refused in one line naming --val-fraction and the counts where either part would be
    empty (with a fraction above 0: 0 trains on everything)."""
    images = len(table)
    held_out = math.ceil(val_fraction * images)  # as scikit-learn counts them: it refuses to leave none to train on
    if held_out < images:
        train_rows, val_rows = stratified_split(table, val_fraction, seed)
        held_out = len(val_rows)  # iterative stratification may miss that count, down to an empty part
    if val_fraction and not 0 < held_out < images:
        raise AimonkError(f"--val-fraction {val_fraction} on {images} usable images: {held_out} held out for "
                          f"validation, {images - held_out} left to train on; each part needs an image "
                          f"({'lower' if held_out else 'raise'} it, or 0 to train on all of them)")
    return train_rows, val_rows


def report_left_out(kind: str, names: list[str], config: TrainConfig) -> None:
    """Images left out, reported once, by rank 0; under --strict every process stops (rank 0 says why)."""
    if distributed.is_main():
        report_unusable_images(kind, names, config.strict, Path(config.out_dir))
    elif names and config.strict:
        raise AimonkError(f"{len(names)} {kind} image(s) (--strict)")


Work = Callable[[list[Path]], tuple[torch.Tensor | None, list[int], list[str]]]


def in_shares(paths: list[Path], work: Work) -> tuple[torch.Tensor | None, list[int], list[str]]:
    """`work(paths)`: (outputs of the readable images or None, their indices, one error per unreadable image, in
    order), with each process of a torchrun job doing its share; every process gets the whole, in the order of
    `paths`, as one process doing it all would."""
    world = distributed.world()
    if world.world_size == 1:
        return work(paths)
    share = world.shard(range(len(paths)))
    outputs, readable, errors = work([paths[i] for i in share])
    failed = sorted(set(range(len(share))) - set(readable))
    parts = world.all_gather((outputs, [share[i] for i in readable],
                             list(zip([share[i] for i in failed], errors, strict=True))))
    found = [index for _, indices, _ in parts for index in indices]
    order = torch.as_tensor(np.argsort(found, kind="stable"), dtype=torch.long)
    pieces = [part for part, indices, _ in parts if part is not None and len(indices)]
    if outputs is not None:
        outputs = torch.cat(pieces)[order] if pieces else outputs
    errors = [message for _, message in sorted(error for _, _, failures in parts for error in failures)]
    return outputs, sorted(found), errors


def scan_readable(paths: list[Path], preprocessing: Preprocessing, num_workers: int) -> tuple[list[int], list[str]]:
    """Decode every image once; indices of the readable ones and messages for the rest."""
    loader = DataLoader(ImageDataset.unlabelled(paths, preprocessing), batch_size=32,
                        num_workers=num_workers, collate_fn=collate_readable)
    failed = dict(error for batch in loader for error in batch["errors"])
    return [i for i in range(len(paths)) if i not in failed], list(failed.values())
