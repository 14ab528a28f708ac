"""One source of truth for settings: TrainConfig fields become CLI options; registries supply the choices."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from helpers import train_cached

from aimonk.cli import build_parser, main
from aimonk.config import (
    EntryOption,
    TrainConfig,
    at_least,
    choices_of,
    config_from_arguments,
    entry_options,
    recipe_description,
)
from aimonk.errors import AimonkError
from aimonk.model.classifier import bce_terms
from aimonk.registry import LOSSES, RECIPES


def test_options_not_given_keep_the_recipe_values_and_given_ones_override_them():
    args = build_parser().parse_args(["train", "--lr", "0.01", "--no-feature-cache", "--pos-weight", "balanced"])
    config = config_from_arguments(args)
    assert config == TrainConfig(lr=0.01, feature_cache=False, pos_weight="balanced")
    assert recipe_description(config) == "reference with lr=0.01, pos_weight=balanced, feature_cache=False"
    assert recipe_description(TrainConfig(out_dir="elsewhere", workers=0)) == "reference"


def test_a_recipe_is_a_set_of_settings_that_options_override():
    RECIPES.add("quick", {"epochs": 1, "lr": 1e-3}, "a test recipe")
    try:
        args = build_parser().parse_args(["train", "--recipe", "quick", "--lr", "0.5"])
        config = config_from_arguments(args)
        assert (config.recipe, config.epochs, config.lr) == ("quick", 1, 0.5)
        assert recipe_description(config) == "quick with lr=0.5"
    finally:
        RECIPES.remove("quick")


def test_a_new_loss_is_one_registry_entry_valid_in_config_cli_and_training(small_dataset: Path, tmp_path: Path):
    calls = []

    @LOSSES.register("doubled")
    def doubled(config):
        """twice the BCE (a test entry)"""

        def terms(logits, targets, pos_weight):
            calls.append(logits.shape)
            return 2 * bce_terms(logits, targets, pos_weight)

        return terms

    try:
        assert "doubled" in choices_of("loss")
        args = build_parser().parse_args(["train", "--loss", "doubled"])
        assert config_from_arguments(args).loss == "doubled"
        settings = dict(data_dir=str(small_dataset), weights="none", epochs=1, batch_size=8, lr=1e-3, image_size=32,
                        workers=0, progress=False, precision="fp32", val_fraction=0)
        plain = train_cached(TrainConfig(out_dir=str(tmp_path / "bce"), **settings)).history
        twice = train_cached(TrainConfig(out_dir=str(tmp_path / "doubled"), loss="doubled", **settings)).history
        assert calls and twice[0] == pytest.approx(2 * plain[0], rel=1e-5)
    finally:
        LOSSES.remove("doubled")
    assert "doubled" not in choices_of("loss")


def test_a_loss_with_a_setting_of_its_own_is_one_entry_its_option_valid_in_config_and_cli(tmp_path, capsys):
    @LOSSES.register("scaled", options=[EntryOption("scaled_factor", 2.0, "how much the BCE is scaled", at_least(0))])
    def scaled(config):
        """the BCE times --scaled-factor (a test entry)"""
        return lambda logits, targets, pos_weight: config.scaled_factor * bce_terms(logits, targets, pos_weight)

    try:
        assert TrainConfig().scaled_factor == 2.0  # its default, nothing in config.py
        config = config_from_arguments(build_parser().parse_args(["train", "--loss", "scaled", "--scaled-factor", "3"]))
        assert (config.loss, config.scaled_factor) == ("scaled", 3.0)
        assert config.to_dict()["scaled_factor"] == 3.0
        assert recipe_description(config) == "reference with loss=scaled, scaled_factor=3.0"
        assert main(["train", "--data-dir", str(tmp_path), "--scaled-factor", "-1"]) == 2
        assert "scaled_factor must be at least 0, got -1.0" in capsys.readouterr().err
    finally:
        LOSSES.remove("scaled")
    with pytest.raises(AimonkError, match="unknown setting 'scaled_factor'"):
        TrainConfig(scaled_factor=3.0).check()


def test_importing_the_config_imports_no_method_and_no_torch():
    code = "import sys, aimonk.config; print(sorted(m for m in sys.modules if m.startswith(('aimonk', 'torch'))))"
    loaded = set(ast.literal_eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                 check=True).stdout))
    assert {"aimonk.config", "aimonk.registry"} <= loaded
    # the package, its errors, the labels reader and the file names they check: nothing of torch, no method
    assert loaded <= {"aimonk", "aimonk.config", "aimonk.data", "aimonk.data.labels", "aimonk.errors", "aimonk.io",
                      "aimonk.registry"}


def test_the_same_config_field_names_are_the_checkpoints_train_config(small_dataset: Path, tmp_path: Path):
    config = TrainConfig(data_dir=str(small_dataset), out_dir=str(tmp_path), weights="none", epochs=1,
                         image_size=32, workers=0, progress=False)
    saved = torch.load(train_cached(config).model_path, weights_only=True)["train_config"]
    assert saved.keys() == {spec.name for spec in fields(TrainConfig)} | set(entry_options())
    assert TrainConfig(**saved) == config
