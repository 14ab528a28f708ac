"""Named choices (losses, samplers, solvers, backbones, recipes): registering an entry makes its name a valid
option of the training config, the command line and the docs at once.

Each table is a plain dict, declared here empty and filled by the module that implements its entries, when that
module is imported (an ordinary import, which import-linter sees):

    @LOSSES.register("toy", options=[EntryOption("toy_strength", 1.0, "how strong the toy loss is")])
    def toy(config): ...  # config.toy_strength is its setting, --toy-strength its option

| table | filled by |
| --- | --- |
| BACKBONES | aimonk.model.backbones |
| LOSSES, NA_MODES, POS_WEIGHTS | aimonk.model.classifier (the reference's), aimonk.model.losses (the others) |
| SAMPLERS | aimonk.data.images |
| SOLVERS, LR_SCHEDULES | aimonk.train.adam, aimonk.train.lbfgs |
| RESIZES | aimonk.data.images |
| RECIPES | aimonk.config |

`import aimonk.train` fills every table a training run reads; the command line also imports the labels workflow,
whose NA mode `self_train` (aimonk.labelling.selftrain) is an extra. The config (which validates `--loss focal`
against LOSSES) imports only this module: it checks against the entries present. An entry may declare settings of
its own (`EntryOption` of `aimonk.config`): they become config keys and command-line flags like any other setting,
checked the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aimonk.errors import AimonkError

T = TypeVar("T")


class Registry(dict[str, T]):
    """Names -> entries of one kind, in registration order; beside them, each entry's one-line description
    (`descriptions`) and the settings it declares (`entry_options`)."""

    def __init__(self, kind: str, elsewhere: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.elsewhere = elsewhere  # entries an extra registers when imported, said with an unknown name
        self.descriptions: dict[str, str] = {}
        self.entry_options: dict[str, tuple[Any, ...]] = {}
        self.families: dict[str, Callable[[str], T]] = {}  # prefix -> the entry of any name after it
        self.family_names: list[str] = []  # how each family is shown among the choices: `<prefix>NAME`
        self._made: dict[str, T] = {}

    def register(self, name: str, description: str | None = None, options: Sequence[Any] = ()) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` adds the decorated function or class under `name`."""

        def add(entry: T) -> T:
            self.add(name, entry, description, options)
            return entry

        return add

    def add(self, name: str, entry: T, description: str | None = None, options: Sequence[Any] = ()) -> T:
        """Add `entry` under `name`; the description defaults to the first line of its docstring."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry
        doc = description if description is not None else (getattr(entry, "__doc__", None) or "")
        self.descriptions[name] = doc.strip().splitlines()[0] if doc.strip() else ""
        self.entry_options[name] = tuple(options)
        return entry

    def add_family(self, prefix: str, make: Callable[[str], T], description: str) -> None:
        """Entries named `prefix` + any name that `make` accepts (`timm:resnet10t`), each made when first asked for;
        `make` refuses an unknown name in one line (an AimonkError). Listed as `<prefix>NAME` among the choices."""
        self.families[prefix] = make
        self.family_names.append(f"{prefix}NAME")
        self.descriptions[f"{prefix}NAME"] = description

    def remove(self, name: str) -> None:
        """Take an entry out again (a notebook or test that registered a temporary one)."""
        for table in (self, self.descriptions, self.entry_options):
            del table[name]

    def __missing__(self, name: str) -> T:
        prefix = next((prefix for prefix in self.families if name.startswith(prefix)), None)
        if prefix is None:
            names = ", ".join([*self, *self.family_names])
            raise AimonkError(f"unknown {self.kind} {name!r}; choose one of {names}{self.elsewhere}")
        if name not in self._made:  # not an item of the dict itself: `list(BACKBONES)` stays the fixed entries
            self._made[name] = self.families[prefix](name.removeprefix(prefix))
        return self._made[name]


BACKBONES: Registry = Registry("backbone")
LOSSES: Registry = Registry("loss")
NA_MODES: Registry = Registry("NA mode", " (self_train is the labels workflow's: import aimonk.labelling.selftrain, as "
                                          "the command line does)")
POS_WEIGHTS: Registry = Registry("positive weighting")
SAMPLERS: Registry = Registry("sampler")
SOLVERS: Registry = Registry("solver")
LR_SCHEDULES: Registry = Registry("learning-rate schedule")
RECIPES: Registry = Registry("recipe")
RESIZES: Registry = Registry("resize")
