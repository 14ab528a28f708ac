"""na_mode self_train: the NA entries of the training images completed as `aimonk complete` does, before the fit.
On the demo images (random backbone, 32 px) with an attribute of coin flips added, and on random images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, train_arguments, train_cached, train_config

import aimonk.labelling.selftrain  # noqa: F401  (the NA mode under test, an extra: registered when imported)
from aimonk.checkpoint import load_checkpoint
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.data.labels import LabelTable, read_labels
from aimonk.errors import AimonkError
from aimonk.io import MODEL_FILE
from aimonk.simulation.heldout import write_labels
from aimonk.train.training import TrainResult

NOISE = 4  # the column of coin flips


def demo_config(folder: Path, out: str, recipe: str = "recommended", **settings) -> TrainConfig:  # noqa: ANN003
    return TrainConfig.from_recipe(recipe, labels=str(folder / "labels.txt"), image_dir=str(ROOT / "images"),
                                   out_dir=str(folder / out), weights="none", image_size=32, workers=0,
                                   precision="fp32", progress=False, cache_dir=str(folder / "cache"),
                                   self_train_level=0.9, **settings)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo labels (NA included) and a fifth attribute, Noise: coin flips, a quarter NA."""
    folder = tmp_path_factory.mktemp("selftrain")
    table = read_labels(ROOT / "labels.txt")
    rng = np.random.default_rng(0)
    noise, known = rng.random((len(table), 1)) < 0.5, rng.random((len(table), 1)) > 0.25
    write_labels(LabelTable(table.path, table.filenames, [*table.attributes, "Noise"],
                            np.hstack([table.targets, noise * known]).astype(np.float32),
                            np.hstack([table.known, known])), folder / "labels.txt")
    return folder


@pytest.fixture(scope="module")
def runs(demo: Path) -> dict[str, TrainResult]:
    return {mode: train_cached(demo_config(demo, mode, na_mode=mode)) for mode in ("ignore", "self_train")}


@pytest.mark.slow
def test_only_na_entries_of_training_images_are_filled(runs):
    result = runs["self_train"]
    given, learned, validation = result.data.table, result.learned, result.data.val_rows
    filled = learned.known & ~given.known
    assert filled[:, :3].sum() > 20  # the attributes a random backbone sees
    assert not (given.known & ~learned.known).any()
    assert np.array_equal(learned.targets[given.known], given.targets[given.known])
    assert (~given.known[validation]).sum() > 10 and not filled[validation].any()
    assert np.array_equal(learned.targets[validation], given.targets[validation])


@pytest.mark.slow
def test_an_attribute_without_signal_gets_no_fills_and_the_report_says_why(runs):
    result = runs["self_train"]
    assert not (result.learned.known & ~result.data.table.known)[:, NOISE].any()
    lines = [line.strip() for line in result.report]
    assert lines[0].startswith(f"self_train: NA entries of the {len(result.data.train_rows)} training images")
    assert lines[0].endswith("level 0.9:")
    for value in ("present (1)", "absent (0)"):
        assert any(line.startswith(f"Noise as {value}: nothing filled: ") for line in lines)
    filled = int((result.learned.known & ~result.data.table.known).sum())
    assert any(line.startswith(f"{filled} NA entries filled") for line in lines)
    assert any(line.startswith("Attr1 as present (1): ") and " NA filled where p >= " in line for line in lines)


@pytest.mark.slow
def test_the_fills_count_in_the_fit(runs):
    result, ignored = runs["self_train"], runs["ignore"]
    filled = (result.learned.known & ~result.data.table.known).any(axis=0)
    assert filled[:3].all()
    for j in np.flatnonzero(filled):
        assert not torch.allclose(result.model.head.weight[j], ignored.model.head.weight[j], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_with_nothing_to_fill_self_train_is_ignore_exactly(small_dataset: Path, tmp_path: Path, solver: str):
    """Random images: no attribute reaches the level, and the run is that of na_mode ignore, step for step."""
    def run(mode: str) -> TrainResult:
        return train_cached(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / mode),
                                         image_size=32, na_mode=mode, solver=solver))

    ignored, self_trained = run("ignore"), run("self_train")
    fills = [line.strip() for line in self_trained.report if "NA entries filled" in line]
    assert fills[-1].startswith("0 NA entries filled")
    assert self_trained.history == ignored.history
    assert torch.equal(self_trained.model.head.weight, ignored.model.head.weight)


@pytest.mark.slow
def test_too_few_training_images_for_the_folds_fill_nothing_and_say_so(dataset_32px: Path, tmp_path: Path):
    result = train_cached(train_config(dataset_32px, tmp_path / "cache", out_dir=str(tmp_path / "out"),
                                       image_size=32, na_mode="self_train", val_fraction=0.6))
    assert len(result.data.train_rows) < 10
    assert result.report[0].endswith(f"nothing filled: {dataset_32px / 'labels.txt'}: {len(result.data.train_rows)} "
                                     "images to cross-fit, too few for 5 folds (at least 2 a fold)")
    assert np.array_equal(result.learned.known, result.data.table.known)


@pytest.mark.slow
def test_a_resumed_adam_run_finds_the_same_fills_and_ends_as_the_uninterrupted_one(demo: Path, monkeypatch):
    settings = {"recipe": "reference", "na_mode": "self_train", "epochs": 2, "lr": 1e-3}
    reference = train_cached(demo_config(demo, "adam", **settings))
    original = torch.optim.Adam.step
    steps = [0]

    def step_or_interrupt(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        steps[0] += 1
        if steps[0] == 25:  # in the second epoch
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", step_or_interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_cached(demo_config(demo, "interrupted", **settings))
    resumed = train_cached(demo_config(demo, "interrupted", **settings), resume=True)
    assert (resumed.learned.known & ~resumed.data.table.known).sum() > 20
    assert np.array_equal(resumed.learned.known, reference.learned.known)
    assert np.array_equal(resumed.learned.targets, reference.learned.targets)
    assert resumed.history == reference.history
    ignored = train_cached(demo_config(demo, "adam_ignore", **{**settings, "na_mode": "ignore"}))
    assert ignored.history != reference.history  # the fills reach the minibatches


@pytest.mark.parametrize("level", [0.4, 1.0])
def test_a_level_outside_half_to_one_is_refused(level: float):
    with pytest.raises(AimonkError, match=rf"self_train_level must be in \[0.5, 1\), got {level}"):
        TrainConfig(na_mode="self_train", self_train_level=level).check()


def test_a_fine_tuned_backbone_is_refused_and_any_solver_on_a_frozen_one_accepted():
    with pytest.raises(AimonkError, match="na_mode self_train .* --trainable-stages 1 .* use --trainable-stages 0"):
        TrainConfig(na_mode="self_train", trainable_stages=1).check()
    TrainConfig(na_mode="self_train", solver="adam").check()
    TrainConfig.from_recipe("recommended", na_mode="self_train").check()


@pytest.mark.slow
def test_the_command_line_takes_the_mode_and_its_level(dataset_32px: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(train_arguments(dataset_32px, out, "--na-mode", "self_train", "--self-train-level", "0.9")) == 0
    assert "training images completed by 5-fold cross-fitted lbfgs heads (as aimonk complete), level 0.9" in \
        capsys.readouterr().out
    saved = load_checkpoint(out / MODEL_FILE)["train_config"]
    assert (saved["na_mode"], saved["self_train_level"]) == ("self_train", 0.9)
    assert main(train_arguments(dataset_32px, tmp_path / "bad", "--na-mode", "self_train",
                                "--self-train-level", "1.5")) == 2
    assert "self_train_level must be in [0.5, 1), got 1.5" in capsys.readouterr().err
