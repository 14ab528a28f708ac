"""The command line's options of training: one per TrainConfig setting (the registry entries' own included),
generated from the config, so that a new setting needs nothing here; and the config built from what was given.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from aimonk.config import TrainConfig, choices_of, setting_names
from aimonk.registry import Registry

_TYPES = {"str": str, "str | None": str, "int": int, "int | None": int, "float": float}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per setting. Options not given stay absent, so the recipe's values apply."""
    for spec in fields(TrainConfig):
        help_text, registry = spec.metadata["help"], spec.metadata.get("choices")
        if isinstance(registry, Registry):
            help_text += f" ({registry.describe()})"
        _add_option(parser, spec.name, spec.type, help_text, spec.default, choices_of(spec.name))
        for entry_option in registry.options() if isinstance(registry, Registry) else ():
            _add_option(parser, entry_option.name, type(entry_option.default).__name__, entry_option.help,
                        entry_option.default)


def _add_option(parser: argparse.ArgumentParser, name: str, kind: str, help_text: str, default: Any,
                choices: list[str] | None = None) -> None:
    flag = "--" + name.replace("_", "-")
    if default is not None:
        help_text += f" [default: {default}]"
    if kind == "bool":
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
    else:  # choices are checked by TrainConfig.check, whose one-line error lists them
        metavar = "{" + ",".join(choices) + "}" if choices else name.upper()
        parser.add_argument(flag, type=_TYPES[kind], default=argparse.SUPPRESS, help=help_text, metavar=metavar)


def config_from_arguments(arguments: argparse.Namespace) -> TrainConfig:
    """The recipe named on the command line (or `reference`), with the options given on top."""
    given = {name: getattr(arguments, name) for name in setting_names() if hasattr(arguments, name)}
    named_recipe = "recipe" in given
    return TrainConfig.from_recipe(given.pop("recipe", "reference"), named_recipe, **given)
