"""Experiments: a grid of settings trained with several seeds on one fixed split, each model scored on its validation
images as `aimonk predict` scores them; the runs of a seed compared, and the spread over seeds summarised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import label_table
from sklearn.metrics import average_precision_score, roc_auc_score

from aimonk.evaluate.comparison import OVERALL
from aimonk.evaluate.experiments import Trained, compare, run_experiments, seed_spread
from aimonk.evaluate.prediction import Predictor
from aimonk.metrics import Scores


def _trained(name: str, seed: int, probabilities: np.ndarray, truth: np.ndarray, seconds: float = 1.0) -> Trained:
    """A run as run_experiments returns it, without a training result (what compare and seed_spread never read)."""
    table = label_table(truth)
    return Trained(name, seed, None, Scores(table, probabilities, [0.5] * len(table.attributes)), seconds)


@pytest.fixture
def grid(rng) -> list[Trained]:
    """Experiments b (seeds 0, 1, 2) then a (seeds 0, 1) on 40 validation images of two attributes."""
    truth = rng.random((40, 2)) < 0.5
    return [_trained(name, seed, np.clip(truth * signal + rng.random((40, 2)), 0, 1), truth, seconds=1.0 + seed)
            for name, signal, seeds in (("b", 0.6, (0, 1, 2)), ("a", 0.2, (0, 1))) for seed in seeds]


def _mean_ap(run: Trained) -> float:
    table = run.validation
    return float(np.mean([average_precision_score(table.targets[:, j], run.scores.probabilities[:, j])
                          for j in range(len(table.attributes))]))


def test_seed_spread_is_mean_standard_deviation_and_range_of_each_experiments_seeds(grid):
    spread = seed_spread(grid)
    assert list(spread.index) == ["b", "a"]  # in the order the experiments ran
    assert list(spread.columns) == ["mean", "std", "min", "max", "seeds", "seconds per run"]
    for name in ("a", "b"):
        runs = [run for run in grid if run.name == name]
        values = np.array([_mean_ap(run) for run in runs])
        row = spread.loc[name]
        assert row["mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert row["std"] == pytest.approx(values.std(ddof=1), abs=1e-12)  # the sample standard deviation
        assert (row["min"], row["max"]) == pytest.approx((values.min(), values.max()), abs=1e-12)
        assert row["seeds"] == len(runs)
        assert row["seconds per run"] == pytest.approx(np.mean([run.seconds for run in runs]))


def test_seed_spread_of_another_metric(grid):
    spread = seed_spread(grid[:3], metric="roc_auc")  # experiment b alone
    values = [np.mean([roc_auc_score(run.validation.targets[:, j], run.scores.probabilities[:, j]) for j in range(2)])
              for run in grid[:3]]
    assert spread.loc["b", "mean"] == pytest.approx(np.mean(values), abs=1e-12)


def test_compare_pairs_the_runs_of_one_seed_on_resamples_drawn_with_that_seed(grid):
    comparison = compare(grid, seed=1, n_bootstrap=50)
    assert list(comparison.values) == ["b", "a"]
    again = compare([run for run in grid if run.seed == 1], seed=1, n_bootstrap=50)
    assert np.array_equal(comparison.weights, again.weights)
    assert not np.array_equal(comparison.weights, compare(grid, seed=0, n_bootstrap=50).weights)
    [a1] = [run for run in grid if run.name == "a" and run.seed == 1]
    assert comparison.estimate("a", OVERALL, "ap")[0] == pytest.approx(_mean_ap(a1), abs=1e-12)


def _base(small_dataset: Path, tmp_path: Path) -> dict:
    return dict(data_dir=str(small_dataset), weights="none", image_size=32, workers=0, epochs=1, precision="fp32",
                cache_dir=str(tmp_path / "cache"))


@pytest.mark.slow
def test_every_experiment_and_seed_is_trained_on_one_split_and_scored_as_predict_scores(small_dataset, tmp_path):
    experiments = {"plain": {}, "fitted": {"recipe": "recommended", "cv_folds": 2}}
    trained = run_experiments(_base(small_dataset, tmp_path), experiments, [0, 1], tmp_path / "runs")
    assert experiments == {"plain": {}, "fitted": {"recipe": "recommended", "cv_folds": 2}}  # left as given
    assert [(run.name, run.seed) for run in trained] == [("plain", 0), ("plain", 1), ("fitted", 0), ("fitted", 1)]
    assert len({tuple(run.validation.filenames) for run in trained}) == 1  # the split's seed is fixed
    for run in trained:
        assert run.result.config.seed == run.seed and run.seconds > 0
        assert run.result.config.recipe == ("recommended" if run.name == "fitted" else "reference")
        assert run.result.model_path == tmp_path / "runs" / run.name / str(run.seed) / "aimonk_model.pth"
        images = [small_dataset / "images" / name for name in run.validation.filenames]
        expected = [prediction.probabilities for prediction in Predictor(run.result.model_path).predict(images)]
        np.testing.assert_allclose(run.scores.probabilities, expected, rtol=1e-5, atol=1e-6)
    assert trained[0].result.history != trained[1].result.history  # the seed does change the run
    assert list(compare(trained, seed=1, n_bootstrap=10).values) == ["plain", "fitted"]


def test_experiments_validated_on_different_images_are_refused(small_dataset, tmp_path):
    refused = "^the experiments were validated on different images; they cannot be compared$"
    with pytest.raises(ValueError, match=refused):
        run_experiments(_base(small_dataset, tmp_path), {"a": {}, "b": {"split_seed": 3}}, [0], tmp_path / "runs")
