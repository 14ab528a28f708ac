"""Named choices (losses, samplers, solvers, backbones, recipes): registering an entry makes its name a valid
option of the training config, the command line and the docs at once.

The tables are declared here, empty; the module that implements a kind of method fills its table:

    @LOSSES.register("toy", options=[EntryOption("toy_strength", 1.0, "how strong the toy loss is")])
    def toy(config): ...  # config.toy_strength is its setting, --toy-strength its option

Each table names the modules that fill it and imports them the first time its entries are asked for. So the config
(which validates `--loss focal` against LOSSES) imports only this module, never torch or the training code, and no
module needs to import one of a higher layer to see the entries: the layers stay one-way (see pyproject.toml).
An entry may declare settings of its own (`EntryOption` of `aimonk.config`): they become config keys and
command-line flags like any other setting, checked the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from aimonk.errors import AimonkError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping from names to entries of one kind, with a one-line description and options per entry."""

    def __init__(self, kind: str, filled_by: Sequence[str] = ()) -> None:
        self.kind = kind
        self._filled_by = tuple(filled_by)
        self._loaded = not self._filled_by
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._options: dict[str, tuple[Any, ...]] = {}

    def register(self, name: str, description: str | None = None, options: Sequence[Any] = ()) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` adds the decorated function or class under `name`."""

        def add(entry: T) -> T:
            self.add(name, entry, description, options)
            return entry

        return add

    def add(self, name: str, entry: T, description: str | None = None, options: Sequence[Any] = ()) -> T:
        """Add `entry` under `name`; the description defaults to the first line of its docstring."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        doc = description if description is not None else (getattr(entry, "__doc__", None) or "")
        self._descriptions[name] = doc.strip().splitlines()[0] if doc.strip() else ""
        self._options[name] = tuple(options)
        return entry

    def remove(self, name: str) -> None:
        """Take an entry out again (a notebook or test that registered a temporary one)."""
        for table in (self._entries, self._descriptions, self._options):
            del table[name]

    def _entries_loaded(self) -> dict[str, T]:
        if not self._loaded:
            self._loaded = True  # first: a filling module that reads its own table does not import itself again
            for module in self._filled_by:
                importlib.import_module(module)
        return self._entries

    def __getitem__(self, name: str) -> T:
        entries = self._entries_loaded()
        if name not in entries:
            raise AimonkError(f"unknown {self.kind} {name!r}; choose one of {', '.join(entries)}")
        return entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries_loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries_loaded()))

    def __len__(self) -> int:
        return len(self._entries_loaded())

    def options(self) -> Iterator[Any]:
        """The options every entry declares, in registration order."""
        self._entries_loaded()
        for declared in self._options.values():
            yield from declared

    def describe(self) -> str:
        """`name: description` for every entry, for help texts and docs."""
        self._entries_loaded()
        return "; ".join(f"{name}: {text}" if text else name for name, text in self._descriptions.items())


BACKBONES: Registry = Registry("backbone", ["aimonk.model.backbones"])
LOSSES: Registry = Registry("loss", ["aimonk.model.losses"])
NA_MODES: Registry = Registry("NA mode", ["aimonk.model.losses", "aimonk.labelling.selftrain"])
POS_WEIGHTS: Registry = Registry("positive weighting", ["aimonk.model.losses"])
SAMPLERS: Registry = Registry("sampler", ["aimonk.data.sampling"])
SOLVERS: Registry = Registry("solver", ["aimonk.train.training", "aimonk.train.lbfgs"])
LR_SCHEDULES: Registry = Registry("learning-rate schedule", ["aimonk.train.optim"])
RECIPES: Registry = Registry("recipe", ["aimonk.config"])
RESIZES: Registry = Registry("resize", ["aimonk.data.resizing"])
