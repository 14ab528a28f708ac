"""Train a head on some labels and score images it never saw: the measurement behind the labelling curve. The
held-out images are written into the training labels file as all-NA rows, so their features come from the same run
(and the on-disk feature cache of `base`'s settings) while no label of theirs reaches the loss."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aimonk.cache import config_stores
from aimonk.checkpoint import DecisionRule
from aimonk.config import TrainConfig
from aimonk.data.labels import LabelTable
from aimonk.evaluate.comparison import OVERALL, Comparison
from aimonk.io import atomic_file
from aimonk.metrics import Scores
from aimonk.model.classifier import TrainedPart
from aimonk.train.training import train


def config_from(base: dict[str, Any], **settings: Any) -> TrainConfig:
    """The TrainConfig of `base` (settings by name, `recipe` among them: default `recommended`) and `settings`,
    without progress bars or lines per epoch."""
    given = {"recipe": "recommended", "progress": False, "quiet": True, **base, **settings}
    return TrainConfig.from_recipe(given.pop("recipe"), **given)


def write_labels(table: LabelTable, path: Path) -> Path:
    """`table` as a labels file with a header naming the attributes (atomically)."""
    lines = ["filename " + " ".join(table.attributes)]
    lines += [" ".join([name, *table.values(row)]) for row, name in enumerate(table.filenames)]
    with atomic_file(path, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path


def with_unlabelled(table: LabelTable, images: list[str]) -> LabelTable:
    """`table` followed by `images` with every label NA."""
    shape = (len(images), len(table.attributes))
    return LabelTable(table.path, [*table.filenames, *images], list(table.attributes),
                      np.vstack([table.targets, np.zeros(shape, np.float32)]),
                      np.vstack([table.known, np.zeros(shape, bool)]))


def train_and_score(train_table: LabelTable, held_out: LabelTable, image_dir: Path, base: dict[str, Any],
                    seed: int = 0) -> Scores:
    """Train on every image of `train_table` (`base`: TrainConfig settings, the recommended recipe by default) and
    return the model's probabilities for the images of `held_out`, with their labels, at thresholds 0.5."""
    with tempfile.TemporaryDirectory(prefix="aimonk-heldout-") as work:
        labels = write_labels(with_unlabelled(train_table, held_out.filenames), Path(work) / "labels.txt")
        config = config_from(base, labels=str(labels), image_dir=str(image_dir), val_fraction=0.0, seed=seed,
                             out_dir=str(Path(work) / "model"))
        result = train(config, stores=config_stores(config))
    data, model = result.data, result.model
    if not data.head_inputs_cached(model):
        raise ValueError("scoring held-out images needs a frozen backbone with cached features")
    position = {name: row for row, name in enumerate(data.table.filenames)}
    missing = [name for name in held_out.filenames if name not in position]
    if missing:
        raise ValueError(f"{len(missing)} held-out images could not be read, e.g. {missing[0]}")
    rows = torch.as_tensor([position[name] for name in held_out.filenames])
    with torch.no_grad():
        logits = TrainedPart(model, config.precision)(data.features[rows, 0]).double().numpy()
    rule = DecisionRule.untuned(held_out.attributes)
    return Scores(held_out, rule.probabilities(logits), list(rule.thresholds), Path(image_dir))


def mean_ap(scores: Scores) -> float:
    """mAP over the attributes (those with both classes among the known labels), as `aimonk.evaluate.comparison`."""
    return Comparison(scores.table, {"run": scores}, n_bootstrap=0).estimate("run", OVERALL, "ap")[0]
