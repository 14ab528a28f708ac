"""Experiments: a grid of settings trained on one fixed split with several seeds, each model scored on the
validation images as its training run scored them (what `aimonk evaluate` prints for it), ready for
`aimonk.evaluate.comparison`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aimonk.config import TrainConfig
from aimonk.data.labels import LabelTable
from aimonk.evaluate.comparison import OVERALL, Comparison
from aimonk.metrics import Scores
from aimonk.model.features import Stores
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


def run_experiments(
    base: dict[str, Any], experiments: dict[str, dict[str, Any]], seeds: Sequence[int], work_dir: Path,
    stores: Stores | None = None,
) -> list[Trained]:
    """Train every experiment (a recipe and settings on top of `base`) with every seed, the frozen features from
    `stores` where given; the split's seed is fixed (`base["split_seed"]`, default 0) so that all models are judged
    on the same validation images."""
    trained = []
    for name, settings in experiments.items():
        settings = {**settings}
        recipe = settings.pop("recipe", "reference")
        for seed in seeds:
            config = TrainConfig.from_recipe(recipe, **{"split_seed": 0, "progress": False, "quiet": True, **base,
                                                        **settings, "seed": seed,
                                                        "out_dir": str(work_dir / name / str(seed))})
            start = time.perf_counter()
            result = train(config, stores=stores if config.feature_cache else None)
            seconds = time.perf_counter() - start
            if result.validation is None:
                raise ValueError(f"experiment {name!r} held no images out (val_fraction 0): nothing to compare on")
            trained.append(Trained(name, seed, result, result.validation, seconds))
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
