"""Every numeric option of every command is checked in one place (aimonk.cli): a bad value is one line naming
the option, exit code 2, before any work; never a traceback."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimonk.cli import build_parser, main

# What each command is run on: inputs that do not exist, so that a value the option accepts fails at once too.
MISSING = {"train": ["--data-dir", "{tmp}/nowhere", "--out-dir", "{tmp}/out"],
           "predict": ["{tmp}/none.jpg", "--model", "{tmp}/missing.pth"],
           "evaluate": ["--model", "{tmp}/missing.pth"], "tune": ["--model", "{tmp}/missing.pth"],
           "explain": ["{tmp}/none.jpg", "--out", "{tmp}/maps", "--model", "{tmp}/missing.pth"],
           "export": ["--model", "{tmp}/missing.pth"], "cache": ["--cache-dir", "{tmp}/cache"],
           "demo": ["--out-dir", "{tmp}/taken"],  # holds a labels.txt: refused
           "runs": ["--out-dir", "{tmp}/nowhere"],
           "merge": ["--label-studio", "{tmp}/none.json", "--labels", "{tmp}/none.txt"],
           **dict.fromkeys(("audit", "complete", "next"), ["--data-dir", "{tmp}/nowhere"])}
BAD = ["-1", "0", "-0.5", "inf", "-inf", "nan", "1e30", "99999999999999999999", "-99999999999999999999"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _numeric_options() -> list[tuple[str, str]]:
    """(command, --option) for every option that takes a number, whatever the command."""
    return [(command, action.option_strings[0]) for command, parser in _subcommands().items()
            for action in parser._actions if getattr(action.type, "__name__", None) in ("int", "float")]


NUMERIC = _numeric_options()


def test_every_command_is_run_in_these_tests_and_every_numeric_option_is_checked():
    assert set(_subcommands()) == set(MISSING)
    assert {command for command, _ in NUMERIC} >= {"train", "predict", "evaluate", "tune", "demo"}
    unchecked = [(command, option) for command, parser in _subcommands().items() for action in parser._actions
                 for option in action.option_strings[:1]
                 if getattr(action.type, "__name__", None) in ("int", "float") and not hasattr(action.type, "check")]
    assert unchecked == []  # a numeric option added without its check would be caught here


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(NUMERIC), value=st.sampled_from(BAD))
def test_any_value_of_any_numeric_option_is_one_error_line_and_exit_2_never_a_traceback(tmp_path, option, value):
    (tmp_path / "taken").mkdir(exist_ok=True)
    (tmp_path / "taken" / "labels.txt").write_text("image_0.jpg 1\n")
    command, flag = option
    code, err = _run([command, *(part.format(tmp=tmp_path) for part in MISSING[command]), flag, value])
    assert code == 2 and err.count("\n") == 1 and err.startswith("aimonk: error: "), (command, flag, value, err)
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--seed", "-1"], "seed must be between 0 and 4294967295, got -1"),
    (["train", "--split-seed", "-1"], "split_seed must be between 0 and 4294967295, got -1"),
    (["train", "--lr", "inf"], "lr must be a finite number, got inf"),
    (["train", "--weight-decay", "inf"], "weight_decay must be a finite number, got inf"),
    (["train", "--focal-gamma", "nan"], "focal_gamma must be a finite number, got nan"),
    (["train", "--workers", "100000"], "workers must be between 0 and 256"),
    (["predict", "x.jpg", "--batch-size", "0"], "batch_size must be between 1 and 65536, got 0"),
    (["predict", "x.jpg", "--workers", "-1"], "workers must be between 0 and 256, got -1"),
    (["evaluate", "--batch-size", "0"], "argument --batch-size"),
    (["evaluate", "--workers", "-1"], "argument --workers"),
    (["evaluate", "--seed", "-1"], "seed must be between 0 and 4294967295, got -1"),
    (["tune", "--seed", "-1"], "seed must be between 0 and 4294967295, got -1"),
    (["tune", "--bootstrap", "0"], "bootstrap must be between 1 and 100000, got 0"),
    (["tune", "--folds", "1"], "folds must be between 2 and 100, got 1"),
    (["demo", "--n-images", "0"], "n_images must be between 1 and 1000000, got 0"),
    (["demo", "--size", "31"], "size must be between 32 and 4096, got 31"),
    (["complete", "--level", "0.4"], "level must be in [0.5, 1), got 0.4"),
    (["next", "--folds", "1"], "folds must be between 2 and 100, got 1"),
])
def test_the_reported_values_are_refused_naming_the_option(argv, message):
    code, err = _run(argv)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_value_the_option_accepts_gets_past_the_check(tmp_path: Path):
    code, err = _run(["predict", str(tmp_path / "x.jpg"), "--model", str(tmp_path / "m.pth"), "--batch-size", "1"])
    assert code == 2 and "checkpoint not found" in err  # the next problem, not the option
