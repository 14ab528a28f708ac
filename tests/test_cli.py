"""The command line's parser: every TrainConfig field and registry entry is an option with its choices, and a bad
value is one error line naming the option."""

from __future__ import annotations

import pytest

from aimonk.cli import main
from aimonk.config import TrainConfig, choices_of, setting_names


def test_help_lists_every_config_field_with_its_choices(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in setting_names():  # the fields and the registry entries' own options
        assert "--" + name.replace("_", "-") in text, name
        for choice in choices_of(name) or []:
            assert choice in text, (name, choice)
    assert {"focal_gamma", "asl_clip", "repeat_threshold", "cv_folds"} <= set(setting_names())



@pytest.mark.parametrize(("command", "recipe"), [("train", "reference"), ("audit", "recommended"),
                                                 ("next", "recommended")])
def test_help_shows_the_defaults_of_the_recipe_the_command_runs_without_one(command, recipe, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    solver = TrainConfig.from_recipe(recipe).solver
    assert f"[default: {recipe}]" in text
    assert f"seconds) [default: {solver}]" in text  # the end of --solver's help

@pytest.mark.parametrize(("option", "value", "message"), [
    ("--loss", "hinge", "unknown loss 'hinge'; choose one of bce"),
    ("--sampler", "nope", "unknown sampler 'nope'; choose one of uniform"),
    ("--precision", "fp8", "unknown precision 'fp8'; choose one of bf16, fp32"),
    ("--epochs", "0", "epochs must be at least 1, got 0"),
    ("--lr", "-1", "lr must be positive, got -1.0"),
    ("--val-fraction", "1", "val_fraction must be in [0, 1), got 1.0"),
    ("--epochs", "many", "argument --epochs: invalid int value: 'many'"),
])
def test_bad_values_are_one_line_errors_naming_the_option(option, value, message, tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aimonk: error: ") and err.count("\n") == 1 and message in err, err
