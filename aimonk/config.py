"""TrainConfig: every setting of a training run, one field each, with its help text and valid values beside it.

`aimonk train` has one option per setting (`--batch-size` sets `batch_size`), generated from this class. Choices
that name a method come from its registry (LOSSES, SOLVERS, RESIZES, ...); a method's own settings (`focal_gamma`
of the focal loss) are declared by its registry entry (`EntryOption`) and are settings like the others. RECIPES are
named sets of settings; any option given explicitly overrides the recipe. This module imports only the registry: it
checks a setting against the entries registered, by whoever imported the modules that register them (`aimonk.train`
registers every method a run can use).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from aimonk.errors import AimonkError
from aimonk.registry import (
    BACKBONES,
    LOSSES,
    LR_SCHEDULES,
    NA_MODES,
    POS_WEIGHTS,
    RECIPES,
    RESIZES,
    SAMPLERS,
    SOLVERS,
    Registry,
)

PRECISIONS = ("bf16", "fp32")
Check = Callable[[Any], "str | None"]


def option(default: Any, help: str, *, choices: Registry | tuple[str, ...] | None = None,
           check: Check | None = None) -> Any:
    """A config field with its command-line help, its valid choices (a registry or a tuple) and a value check."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check})


@dataclass(frozen=True)
class EntryOption:
    """A setting that belongs to one registry entry (`focal_gamma` of the focal loss), declared beside it."""

    name: str
    default: float | int | str
    help: str
    check: Check | None = None


def between(low: int, high: int) -> Check:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


SEED = between(0, 2**32 - 1)  # what numpy and torch accept as a seed
WORKERS = between(0, 256)  # data-loading processes: more would be a fork bomb, not a speed-up


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be at least {low}"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def values_problem(text: str) -> str | None:
    """Why `--values PRESENT,ABSENT,UNKNOWN` cannot say how a label table writes its values, or None."""
    parts = text.split(",")
    if len(parts) != 3 or len(set(parts)) != 3 or not parts[0] or not parts[1]:
        return (f"takes PRESENT,ABSENT,UNKNOWN, three different words (1,0,NA; 1,-1, for CelebA; true,false,), got "
                f"{text!r}")
    return None


def precision_level(value: float) -> str | None:
    """A precision that fills of NA labels must reach (`complete --level`, `--self-train-level`)."""
    return None if 0.5 <= value < 1 else "must be in [0.5, 1)"


@dataclass(init=False, eq=False)
class TrainConfig:
    """Everything that defines a run; stored in the checkpoint and in the resumable state (as `to_dict()`)."""

    data_dir: str = option(".", "folder with images/ and labels.txt")
    labels: str | None = option(None, "labels file (default: DATA_DIR/labels.txt)")
    image_dir: str | None = option(None, "image folder (default: DATA_DIR/images)")
    filename_column: str | None = option(None, "a CSV's column of image file names (default: the first)")
    attributes: str | None = option(None, "a CSV's attribute columns, comma-separated names (default: all others)")
    values: str | None = option(None, "how the labels write PRESENT,ABSENT,UNKNOWN: 1,0,NA (labels.txt), 1,-1, "
                                "(CelebA), true,false, (default: labels.txt 1,0,NA; a CSV's detected where "
                                "unambiguous)", check=values_problem)
    delimiter: str | None = option(None, "a CSV's delimiter: , ; tab (default: .csv sniffed, .tsv tab)")
    out_dir: str = option("models", "where the model, loss history and curve are written")
    recipe: str = option("reference", "named set of settings that the other options override", choices=RECIPES)
    backbone: str = option("resnet18", "feature network", choices=BACKBONES)
    weights: str = option("auto", "backbone weights: auto (ImageNet if obtainable, else random with a warning), "
                          "imagenet (required), none (random), or PATH to a state-dict file")
    trainable_stages: int = option(0, "fine-tune the backbone's last N stages (torchvision's trainable_backbone_layers;"
                                   " ResNet has 5); 0 keeps it frozen", check=at_least(0))
    backbone_lr_factor: float = option(0.1, "learning rate of fine-tuned stages, relative to the head's",
                                       check=positive)
    standardise_features: bool = option(False, "standardise the head's input with training-split statistics "
                                        "(folded into the saved head)")
    solver: str = option("adam", "how the weights are fitted", choices=SOLVERS)
    epochs: int = option(5, "passes over the training images (adam)", check=at_least(1))
    batch_size: int = option(16, "images per optimizer step (adam)", check=at_least(1))
    lr: float = option(1e-5, "learning rate (adam)", check=positive)
    weight_decay: float = option(0.0, "decoupled weight decay of weights, not biases or norms (adam)",
                                 check=at_least(0))
    lr_schedule: str = option("constant", "learning rate over the iterations (adam)", choices=LR_SCHEDULES)
    warmup_steps: int = option(0, "iterations of linear learning-rate warm-up (adam)", check=at_least(0))
    loss: str = option("bce", "loss per label", choices=LOSSES)
    na_mode: str = option("ignore", "what an NA label means to the loss", choices=NA_MODES)
    pos_weight: str = option("none", "weight of positive labels per attribute", choices=POS_WEIGHTS)
    sampler: str = option("uniform", "how often each training image is visited", choices=SAMPLERS)
    seed: int = option(0, "the split, initialisation, order and flips; the same seed repeats a run", check=SEED)
    split_seed: int | None = option(None, "seed of the train/validation split alone (default: --seed), so that "
                                    "runs with several seeds share one split", check=SEED)
    val_fraction: float = option(0.2, "held out for evaluation, stratified per attribute (0 trains on everything)",
                                 check=fraction)
    hide_labels: float = option(0.0, "hide this share of the known training labels (as NA) at random, to measure "
                                "how a method copes with missing labels", check=fraction)
    keep_labels: int = option(0, "keep only this many known training labels per attribute, hiding the rest "
                              "(0 keeps all)", check=at_least(0))
    precision: str = option("bf16", "backbone arithmetic: bf16 autocast (CPU and GPU) or fp32", choices=PRECISIONS)
    image_size: int = option(224, "images are resized to this square", check=between(1, 4096))
    resize: str = option("squash", "how a picture of any shape becomes that square", choices=RESIZES)
    feature_cache: bool = option(True, "keep what the frozen stages output for each image on disk, for every epoch "
                                 "and later runs")
    cache_dir: str | None = option(None, "feature cache (default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features)")
    workers: int = option(2, "data-loading processes", check=WORKERS)
    checkpoint_every: int = option(0, "also save the resumable state every N iterations (0: after each epoch)",
                                   check=at_least(0))
    patience: int = option(0, "stop when the validation mAP has not improved for N epochs and keep the best epoch's "
                           "weights (adam; 0: train every epoch, keep the last)", check=at_least(0))
    init_from: str | None = option(None, "start from the weights of this saved checkpoint (same backbone and "
                                   "attributes), e.g. to train a model for more epochs")
    strict: bool = option(False, "a missing or unreadable image is an error instead of a warning")
    progress: bool = option(True, "show progress bars on a terminal (elsewhere, and without them, one line per "
                            "epoch)")
    quiet: bool = option(False, "print only warnings and the summary at the end")
    tensorboard: bool = option(False, "write TensorBoard event files into OUT_DIR/tensorboard (needs "
                               "aimonk[tensorboard])")
    log_dir: str | None = option(None, "write TensorBoard event files into this folder instead (implies "
                                 "--tensorboard)")
    device: str = option("cpu", "cpu, cuda, cuda:1, ...")

    def __init__(self, **settings: Any) -> None:
        """Settings by name (`TrainConfig(lr=1e-3, focal_gamma=1.0)`); the others keep their defaults."""
        self.given = frozenset(settings)  # the settings asked for explicitly (a resumed run refuses other values)
        for spec in fields(self):
            setattr(self, spec.name, settings.pop(spec.name) if spec.name in settings else spec.default)
        self.options = settings  # the registry entries' own settings given (checked by `check`)

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields: the entries' options
        if not name.startswith("_") and name not in ("options", "given"):
            declared = entry_options()
            if name in declared:
                return self.options.get(name, declared[name].default)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrainConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"TrainConfig({', '.join(f'{name}={value!r}' for name, value in self.to_dict().items())})"

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, the entries' options included (what checkpoints store)."""
        return {name: getattr(self, name) for name in setting_names()}

    def replace(self, **changes: Any) -> TrainConfig:
        replaced = TrainConfig(**{**self.to_dict(), **changes})
        replaced.given = self.given | set(changes)
        return replaced

    @property
    def labels_path(self) -> Path:
        return data_paths(self.data_dir, self.labels, self.image_dir)[0]

    @property
    def images_path(self) -> Path:
        return data_paths(self.data_dir, self.labels, self.image_dir)[1]

    def check(self) -> None:
        """Refuse unknown settings and values outside each one's choices or checks, with the option's name."""
        declared = entry_options()
        if unknown := sorted(set(self.options) - set(declared)):
            raise AimonkError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(setting_names())}")
        for spec in fields(self):
            value = getattr(self, spec.name)
            choices = spec.metadata.get("choices")
            if isinstance(choices, Registry):
                choices[value]  # an unknown name is refused in one line, with the choices
            elif choices is not None and value not in choices:
                raise AimonkError(f"unknown {spec.name} {value!r}; choose one of {', '.join(choices)}")
            _check(spec.name, value, spec.metadata.get("check"))
        for name, value in self.options.items():
            _check(name, value, declared[name].check)
        if problem := NA_MODES[self.na_mode].problem(self):
            raise AimonkError(problem)
        if self.patience and not self.val_fraction:
            raise AimonkError("--patience stops on the validation mAP, but --val-fraction 0 holds no image out")
        if self.patience and SOLVERS[self.solver].full_batch:
            raise AimonkError(f"--patience counts epochs of --solver adam; {self.solver} fits once, to convergence")

    @classmethod
    def from_recipe(cls, recipe: str = "reference", given_recipe: bool = False, **overrides: Any) -> TrainConfig:
        """The recipe's settings with `overrides` on top; `given` holds the overrides (and the recipe if
        `given_recipe`: named by the user rather than by default)."""
        config = cls(**{**RECIPES[recipe], "recipe": recipe, **overrides})
        config.given = frozenset(overrides) | ({"recipe"} if given_recipe else set())
        return config


def data_paths(data_dir: str | Path, labels: str | Path | None, image_dir: str | Path | None) -> tuple[Path, Path]:
    """The labels file and the image folder: as given, else DATA_DIR/labels.txt and DATA_DIR/images."""
    return (Path(labels) if labels else Path(data_dir) / "labels.txt",
            Path(image_dir) if image_dir else Path(data_dir) / "images")


def value_problem(value: Any, check: Check | None) -> str | None:
    """Why a setting's value is refused, or None: numbers must be finite, and pass the setting's check."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return check(value) if check else None


def _check(name: str, value: Any, check: Check | None) -> None:
    problem = value_problem(value, check)
    if problem:
        raise AimonkError(f"{name} {problem}, got {value}")


def method_fields() -> Iterator[tuple[Field, Registry]]:
    """The fields whose value names a registry entry, with that registry."""
    for spec in fields(TrainConfig):
        if isinstance(spec.metadata.get("choices"), Registry):
            yield spec, spec.metadata["choices"]


def declared_options(registry: Registry) -> list[EntryOption]:
    """The settings every entry of `registry` declares, in registration order."""
    return [entry_option for declared in registry.entry_options.values() for entry_option in declared]


def entry_options() -> dict[str, EntryOption]:
    """The options declared by the entries of every registry a setting chooses from, by name."""
    declared: dict[str, EntryOption] = {}
    for _, registry in method_fields():
        for entry_option in declared_options(registry):
            if declared.setdefault(entry_option.name, entry_option) != entry_option:
                raise ValueError(f"option {entry_option.name!r} is declared twice, differently")
    return declared


def setting_names() -> list[str]:
    """Every setting, in the order of the fields, each entry's options after the field that chooses it."""
    names = []
    for spec in fields(TrainConfig):
        names.append(spec.name)
        choices = spec.metadata.get("choices")
        if isinstance(choices, Registry):
            names += [entry_option.name for entry_option in declared_options(choices)]
    return names


RECIPES.add("reference", {}, "the reference system: frozen ResNet18, Adam lr 1e-5, batch 16, 5 epochs, masked BCE")
RECIPES.add("recommended", {"solver": "lbfgs", "standardise_features": True},
            "what notebooks/04_experiments.ipynb found best: the head fitted to convergence by lbfgs on standardised "
            "features, L2 chosen per attribute on training folds")


LABELLING_RECIPE = "recommended"  # audit, complete, next: the cross-fitted heads' recipe unless --recipe says otherwise


def config_from_arguments(arguments: Any, default_recipe: str = "reference") -> TrainConfig:
    """The recipe named on the command line (or `default_recipe`), with the options given on top (the parsed
    arguments: only those given are present)."""
    given = {name: getattr(arguments, name) for name in setting_names() if hasattr(arguments, name)}
    named_recipe = "recipe" in given
    return TrainConfig.from_recipe(given.pop("recipe", default_recipe), named_recipe, **given)


def choices_of(name: str) -> list[str] | None:
    """The valid values of a setting, or None if any value of its type goes."""
    spec = {spec.name: spec for spec in fields(TrainConfig)}.get(name)
    choices = None if spec is None else spec.metadata.get("choices")
    if isinstance(choices, Registry):  # a family of entries (`timm:NAME`) shown by its pattern
        return [*choices, *choices.family_names]
    return None if choices is None else list(choices)


def recipe_description(config: TrainConfig) -> str:
    """`recommended`, or `reference with lr=0.001, epochs=20`: the recipe and the settings that differ from it."""
    base = TrainConfig.from_recipe(config.recipe).to_dict()
    changed = [f"{name}={value}" for name, value in config.to_dict().items() if base[name] != value
               and name not in PLACES]
    return config.recipe + (f" with {', '.join(changed)}" if changed else "")


# Where data and outputs live, and how the run is shown: not part of what is trained.
PLACES = {"data_dir", "labels", "image_dir", "filename_column", "attributes", "values", "delimiter", "out_dir",
          "cache_dir", "workers", "progress", "quiet", "tensorboard", "log_dir", "device"}


def resumed_config(saved: dict, path: Path, given: TrainConfig) -> TrainConfig:
    """The interrupted run's settings (saved in the state at `path`), where `given` says things live and how the run
    is shown (PLACES); refused in one line if another setting given explicitly differs from the saved one."""
    if not saved.keys() <= set(setting_names()):
        raise AimonkError(f"{path}: the training state's settings are not those of this version of aimonk")
    run = TrainConfig(**saved)
    differ = [f"{name}={getattr(given, name)} (saved: {getattr(run, name)})" for name in setting_names()
              if name in given.given and name not in PLACES and getattr(given, name) != getattr(run, name)]
    if differ:
        raise AimonkError(f"{path}: --resume continues the saved run as it was, but these settings given differ from "
                          f"it: {', '.join(differ)}; drop them to resume, or train anew into another --out-dir")
    places = {name: getattr(given, name) for name in PLACES & given.given}
    return TrainConfig(**{**saved, **places, "out_dir": given.out_dir, "progress": given.progress,
                          "quiet": given.quiet})
