"""Experiments: a grid of settings trained on one fixed split with several seeds, each model scored on the
validation images as `aimonk predict` would score them, ready for `aimonk.evaluate.comparison`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aimonk.config import TrainConfig
from aimonk.data.labels import LabelTable
from aimonk.evaluate.comparison import OVERALL, Comparison
from aimonk.evaluate.metrics import Scores
from aimonk.evaluate.prediction import Predictor
from aimonk.train.training import TrainResult, train


@dataclass
class Trained:
    """One trained setting: its validation labels and scores, and how long training took."""

    name: str
    seed: int
    result: TrainResult
    scores: Scores  # on its validation images
    seconds: float

    @property
    def validation(self) -> LabelTable:
        return self.scores.table


def validation_scores(result: TrainResult) -> Scores:
    """The model's probabilities on its validation images: from the cached features of a frozen backbone (what
    `aimonk predict` computes for the same image), else by running the saved model on the images."""
    data, model = result.data, result.model
    if data.head_inputs_cached(model):
        with torch.no_grad():
            features = data.features[torch.as_tensor(data.val_rows), 0].float()
            probabilities = torch.sigmoid(model.head(features)).numpy()
    else:
        predictions = list(Predictor(result.model_path).predict(data.paths(data.val_rows), num_workers=0))
        probabilities = np.array([prediction.probabilities for prediction in predictions])
    validation = data.table.subset(data.val_rows)
    return Scores(validation, probabilities.astype(np.float64), [0.5] * len(validation.attributes))


def run_experiments(
    base: dict[str, Any], experiments: dict[str, dict[str, Any]], seeds: Sequence[int], work_dir: Path,
) -> list[Trained]:
    """Train every experiment (a recipe and settings on top of `base`) with every seed; the split's seed is fixed
    (`base["split_seed"]`, default 0) so that all models are judged on the same validation images."""
    trained = []
    for name, settings in experiments.items():
        settings = {**settings}
        recipe = settings.pop("recipe", "reference")
        for seed in seeds:
            config = TrainConfig.from_recipe(recipe, **{"split_seed": 0, "progress": False, **base, **settings,
                                                        "seed": seed, "out_dir": str(work_dir / name / str(seed))})
            start = time.perf_counter()
            result = train(config)
            seconds = time.perf_counter() - start
            trained.append(Trained(name, seed, result, validation_scores(result), seconds))
    files = {tuple(t.validation.filenames) for t in trained}
    if len(files) > 1:
        raise ValueError("the experiments were validated on different images; they cannot be compared")
    return trained


def compare(trained: Sequence[Trained], seed: int, n_bootstrap: int = 1000) -> Comparison:
    """The runs of one seed on their (shared) validation images, paired on the same resamples."""
    runs = [t for t in trained if t.seed == seed]
    table = runs[0].validation
    return Comparison(table, {t.name: t.scores for t in runs}, n_bootstrap=n_bootstrap, seed=seed)


def seed_spread(trained: Sequence[Trained], metric: str = "ap") -> pd.DataFrame:
    """Per experiment, the metric over all attributes for each seed, with mean, standard deviation and range."""
    rows = []
    for t in trained:
        value = Comparison(t.validation, {t.name: t.scores}, n_bootstrap=0).estimate(t.name, OVERALL, metric)[0]
        rows.append({"experiment": t.name, "seed": t.seed, metric: value, "seconds": t.seconds})
    frame = pd.DataFrame(rows)
    spread = frame.groupby("experiment", sort=False)[metric].agg(["mean", "std", "min", "max"])
    spread["seeds"] = frame.groupby("experiment", sort=False)["seed"].count()
    spread["seconds per run"] = frame.groupby("experiment", sort=False)["seconds"].mean()
    return spread
