"""TrainConfig: every setting of a training run, one field each, with its help text and valid values beside it.

`aimonk train` has one option per field (`--batch-size` sets `batch_size`), generated from this class, so a new
setting is one field here. Choices that name a method come from its registry (LOSSES, SAMPLERS, SOLVERS, ...).
RECIPES are named sets of settings; any option given explicitly overrides the recipe.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aimonk.backbones import BACKBONES
from aimonk.errors import AimonkError
from aimonk.losses import LOSSES, NA_MODES, POS_WEIGHTS
from aimonk.registry import Registry
from aimonk.runtime import resolve_device
from aimonk.sampling import SAMPLERS
from aimonk.solvers import LR_SCHEDULES, SOLVERS

PRECISIONS = ("bf16", "fp32")
RECIPES: Registry[dict[str, Any]] = Registry("recipe")  # entries below the class
Check = Callable[[Any], "str | None"]


def option(default: Any, help: str, *, choices: Registry | tuple[str, ...] | None = None,
           check: Check | None = None) -> Any:
    """A config field with its command-line help, its valid choices (a registry or a tuple) and a value check."""
    return field(default=default, metadata={"help": help, "choices": choices, "check": check})


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be at least {low}"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in the checkpoint and in the resumable state."""

    data_dir: str = option(".", "folder with images/ and labels.txt")
    labels: str | None = option(None, "labels file (default: DATA_DIR/labels.txt)")
    image_dir: str | None = option(None, "image folder (default: DATA_DIR/images)")
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
    cv_folds: int = option(5, "folds of the training images on which lbfgs chooses each attribute's L2 strength",
                           check=at_least(2))
    loss: str = option("bce", "loss per label", choices=LOSSES)
    focal_gamma: float = option(2.0, "focusing exponent of the focal loss", check=at_least(0))
    asl_gamma_pos: float = option(0.0, "focusing exponent of positives in the asymmetric loss", check=at_least(0))
    asl_gamma_neg: float = option(4.0, "focusing exponent of negatives in the asymmetric loss", check=at_least(0))
    asl_clip: float = option(0.05, "probability margin below which negatives count nothing (asymmetric loss)",
                             check=fraction)
    na_mode: str = option("ignore", "what an NA label means to the loss", choices=NA_MODES)
    pos_weight: str = option("none", "weight of positive labels per attribute", choices=POS_WEIGHTS)
    sampler: str = option("uniform", "how often each training image is visited", choices=SAMPLERS)
    repeat_threshold: float = option(0.3, "repeat_factor: attributes positive in fewer than this share of their "
                                     "known labels get their images repeated", check=positive)
    seed: int = option(0, "the split, initialisation, order and flips; the same seed repeats a run")
    split_seed: int | None = option(None, "seed of the train/validation split alone (default: --seed), so that "
                                    "runs with several seeds share one split")
    val_fraction: float = option(0.2, "held out for evaluation, stratified per attribute (0 trains on everything)",
                                 check=fraction)
    hide_labels: float = option(0.0, "hide this share of the known training labels (as NA) at random, to measure "
                                "how a method copes with missing labels", check=fraction)
    keep_labels: int = option(0, "keep only this many known training labels per attribute, hiding the rest "
                              "(0 keeps all)", check=at_least(0))
    precision: str = option("bf16", "backbone arithmetic: bf16 autocast (CPU and GPU) or fp32", choices=PRECISIONS)
    image_size: int = option(224, "images are resized to this square", check=at_least(1))
    feature_cache: bool = option(True, "keep what the frozen stages output for each image on disk, for every epoch "
                                 "and later runs")
    cache_dir: str | None = option(None, "feature cache (default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features)")
    workers: int = option(2, "data-loading processes", check=at_least(0))
    checkpoint_every: int = option(0, "also save the resumable state every N iterations (0: after each epoch)",
                                   check=at_least(0))
    strict: bool = option(False, "a missing or unreadable image is an error instead of a warning")
    progress: bool = option(True, "show progress bars")
    device: str = option("cpu", "cpu, cuda, cuda:1, ...")

    @property
    def labels_path(self) -> Path:
        return Path(self.labels) if self.labels else Path(self.data_dir) / "labels.txt"

    @property
    def images_path(self) -> Path:
        return Path(self.image_dir) if self.image_dir else Path(self.data_dir) / "images"

    def check(self) -> None:
        """Refuse values outside each field's choices or checks, with the option's name, and an unusable device."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            choices = spec.metadata.get("choices")
            if choices is not None and value not in choices:
                kind = choices.kind if isinstance(choices, Registry) else spec.name
                raise AimonkError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")
            problem = spec.metadata["check"](value) if spec.metadata.get("check") else None
            if problem:
                raise AimonkError(f"{spec.name} {problem}, got {value}")
        resolve_device(self.device)

    @classmethod
    def from_recipe(cls, recipe: str = "reference", **overrides: Any) -> TrainConfig:
        """The recipe's settings with `overrides` on top."""
        return cls(**{**RECIPES[recipe], "recipe": recipe, **overrides})


RECIPES.add("reference", {}, "the reference system: frozen ResNet18, Adam lr 1e-5, batch 16, 5 epochs, masked BCE")
RECIPES.add("recommended", {"solver": "lbfgs", "standardise_features": True},
            "what notebooks/04_experiments.ipynb found best: the head fitted to convergence by lbfgs on standardised "
            "features, L2 chosen per attribute on training folds")


def choices_of(name: str) -> list[str] | None:
    """The valid values of a field, or None if any value of its type goes."""
    choices = {spec.name: spec for spec in fields(TrainConfig)}[name].metadata.get("choices")
    return None if choices is None else list(choices)


def recipe_description(config: TrainConfig) -> str:
    """`recommended`, or `reference with lr=0.001, epochs=20`: the recipe and the settings that differ from it."""
    base = asdict(TrainConfig.from_recipe(config.recipe))
    changed = [f"{name}={value}" for name, value in asdict(config).items() if base[name] != value
               and name not in PLACES]
    return config.recipe + (f" with {', '.join(changed)}" if changed else "")


# Where data and outputs live, and how the run is shown: not part of what is trained.
PLACES = {"data_dir", "labels", "image_dir", "out_dir", "cache_dir", "workers", "progress", "device"}

_TYPES = {"str": str, "str | None": str, "int": int, "int | None": int, "float": float}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field. Options not given stay absent, so the recipe's values apply."""
    for spec in fields(TrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default if spec.default is not MISSING else None
        choices = choices_of(spec.name)
        help_text = spec.metadata["help"]
        if isinstance(spec.metadata.get("choices"), Registry):
            help_text += f" ({spec.metadata['choices'].describe()})"
        if default is not None:
            help_text += f" [default: {default}]"
        if spec.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:  # choices are checked by TrainConfig.check, whose one-line error lists them
            metavar = "{" + ",".join(choices) + "}" if choices else spec.name.upper()
            parser.add_argument(flag, type=_TYPES[spec.type], default=argparse.SUPPRESS, help=help_text,
                                metavar=metavar)


def config_from_arguments(arguments: argparse.Namespace) -> TrainConfig:
    """The recipe named on the command line (or `reference`), with the options given on top."""
    given = {spec.name: getattr(arguments, spec.name) for spec in fields(TrainConfig) if hasattr(arguments, spec.name)}
    return TrainConfig.from_recipe(given.pop("recipe", "reference"), **given)
