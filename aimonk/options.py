"""The command line's options, and the one place where every numeric one is checked.

Training has one option per TrainConfig setting (the registry entries' own included), generated from the config, so
a new setting needs nothing here. Every numeric option of every command, generated or declared with `add_number`,
is parsed by `checked`: a value that is not a finite number, or that fails the setting's check (the same checks
`TrainConfig.check` applies), is one line naming the option, exit code 2, before any work.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from aimonk.config import Check, TrainConfig, choices_of, setting_names, value_problem
from aimonk.registry import Registry

_TYPES = {"str": str, "str | None": str, "int": int, "int | None": int, "float": float}


def checked(kind: type, name: str, check: Check | None) -> Callable[[str], Any]:
    """An argparse `type`: the text as `kind` (argparse reports one that is not), then refused unless finite and
    passing `check`."""

    def convert(text: str) -> Any:
        value = kind(text)
        problem = value_problem(value, check)
        if problem:
            raise argparse.ArgumentTypeError(f"{name} {problem}, got {value}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in "invalid int value: 'x'"
    convert.check = check  # type: ignore[attr-defined]  # marks a checked option (the tests find them all)
    return convert


def add_number(parser: argparse.ArgumentParser, flag: str, kind: type, check: Check, default: int | float,
               help: str | None = None) -> None:
    """A numeric option of a command other than train, checked like the training settings."""
    name = flag.lstrip("-").replace("-", "_")
    parser.add_argument(flag, type=checked(kind, name, check), default=default, metavar=name.upper(),
                        help=f"{help + ' ' if help else ''}[default: {default}]")


def add_config_options(parser: argparse.ArgumentParser, recipe: str = "reference") -> None:
    """One option per setting, its help showing `recipe`'s value (the command's default recipe). Options not given
    stay absent, so the recipe's values apply."""
    defaults = TrainConfig.from_recipe(recipe)
    for spec in fields(TrainConfig):
        help_text, registry = spec.metadata["help"], spec.metadata.get("choices")
        if isinstance(registry, Registry):
            help_text += f" ({registry.describe()})"
        _add_option(parser, spec.name, spec.type, help_text, getattr(defaults, spec.name), spec.metadata.get("check"),
                    choices_of(spec.name))
        for entry_option in registry.options() if isinstance(registry, Registry) else ():
            _add_option(parser, entry_option.name, type(entry_option.default).__name__, entry_option.help,
                        entry_option.default, entry_option.check)


def _add_option(parser: argparse.ArgumentParser, name: str, kind: str, help_text: str, default: Any,
                check: Check | None, choices: list[str] | None = None) -> None:
    flag = "--" + name.replace("_", "-")
    if default is not None:
        help_text += f" [default: {default}]"
    if kind == "bool":
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
    else:  # choices are checked by TrainConfig.check, whose one-line error lists them
        metavar = "{" + ",".join(choices) + "}" if choices else name.upper()
        kind_type = _TYPES[kind]
        parse = kind_type if kind_type is str else checked(kind_type, name, check)
        parser.add_argument(flag, type=parse, default=argparse.SUPPRESS, help=help_text, metavar=metavar)


def config_from_arguments(arguments: argparse.Namespace, default_recipe: str = "reference") -> TrainConfig:
    """The recipe named on the command line (or `default_recipe`), with the options given on top."""
    given = {name: getattr(arguments, name) for name in setting_names() if hasattr(arguments, name)}
    named_recipe = "recipe" in given
    return TrainConfig.from_recipe(given.pop("recipe", default_recipe), named_recipe, **given)
