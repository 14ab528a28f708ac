"""The model: a backbone from BACKBONES, as a sequence of stages, followed by a linear head with one logit per
attribute; and the loss it trains with. The last `trainable_stages` stages train; the others stay frozen, in eval mode
(their BatchNorm statistics stay those of the weights), and can be run once and cached.

The loss takes a per-entry loss (LOSSES: `bce`, the reference, here; `focal` and `asymmetric` in
`aimonk.model.losses`) and averages it over the known labels alone, or over the entries the NA mode counts (NA_MODES:
`ignore` and `negative` here; the large-loss modes in `aimonk.model.losses`), with positives weighted per attribute
(POS_WEIGHTS). Masking and averaging are shared, so every loss ignores the entries its NA mode leaves out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aimonk.config import TrainConfig
from aimonk.errors import AimonkError, CheckpointError, state_dict_mismatch
from aimonk.model.backbones import build_backbone
from aimonk.registry import BACKBONES, LOSSES, NA_MODES, POS_WEIGHTS, SOLVERS


def backbone_autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast when asked for (CPU and GPU), otherwise a disabled context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def standardising(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, scale) that standardise `features` (rows x dims): the population deviation, and 1 for a dimension
    without spread, as scikit-learn's StandardScaler."""
    mean = features.mean(0)
    scale = features.std(0, correction=0)
    return mean, torch.where(scale > 1e-6 * scale.max().clamp(min=1e-12), scale, torch.ones_like(scale))


class AttributeClassifier(nn.Module):
    """Backbone stages -> (optionally standardised) features -> linear head."""

    def __init__(self, backbone: nn.Module, stages: list[nn.Module], feature_dim: int, num_attributes: int,
                 trainable_stages: int = 0):
        super().__init__()
        if not 0 <= trainable_stages <= len(stages):
            raise AimonkError(f"trainable_stages must be between 0 and {len(stages)} (the backbone's stages), "
                              f"got {trainable_stages}")
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_attributes)
        self.stages = tuple(stages)  # views into `backbone`: a tuple is not registered, so state-dict keys stay
        self.trainable_stages = trainable_stages
        self.input_scaling: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, scale) of the head's input
        self.backbone.requires_grad_(False)
        self.trainable_part.requires_grad_(True)

    @property
    def frozen_part(self) -> nn.Sequential:
        return nn.Sequential(*self.stages[: len(self.stages) - self.trainable_stages])

    @property
    def trainable_part(self) -> nn.Sequential:
        return nn.Sequential(*self.stages[len(self.stages) - self.trainable_stages :])

    def split_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The state dict in two: what trains (the head and the trainable stages) and what stays frozen.

        The tensors are the model's own (parameters included): detach them to keep them."""
        trains = {id(tensor) for part in (self.head, self.trainable_part)
                  for tensor in (*part.parameters(), *part.buffers())}
        trainable: dict[str, torch.Tensor] = {}
        frozen: dict[str, torch.Tensor] = {}
        for name, tensor in self.state_dict(keep_vars=True).items():
            (trainable if id(tensor) in trains else frozen)[name] = tensor
        return trainable, frozen

    def train(self, mode: bool = True) -> AttributeClassifier:
        super().train(mode)
        (self.frozen_part if self.trainable_stages else self.backbone).eval()
        return self

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.input_scaling is not None:
            mean, scale = self.input_scaling
            features = (features - mean) / scale
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.trainable_part(self.frozen_part(images)))

    def standardise_head_input(self, features: torch.Tensor, keep_outputs: bool = False) -> None:
        """Feed the head features standardised with the mean and deviation of `features` (rows x dims), as
        `standardising` finds them; with `keep_outputs`, the head rescaled so that its outputs stay the same (a
        trained head, `--init-from`)."""
        mean, scale = standardising(features)
        self.input_scaling = (mean.to(self.head.weight), scale.to(self.head.weight))
        if keep_outputs:  # w.(x - mean)/scale + b' = w'.x + b  for  w = w' * scale, b = b' + w'.mean
            with torch.no_grad():
                self.head.bias.add_(self.head.weight @ self.input_scaling[0])
                self.head.weight.mul_(self.input_scaling[1])

    def fold_input_scaling(self) -> None:
        """Fold the standardisation into the head, so the saved model is a plain linear head on raw features."""
        if self.input_scaling is None:
            return
        mean, scale = self.input_scaling
        with torch.no_grad():
            self.head.weight.div_(scale)
            self.head.bias.sub_(self.head.weight @ mean)
        self.input_scaling = None


class TrainedPart(nn.Module):
    """The trainable stages and the head of a model, as one module: the frozen stages' output -> logits.

    What training runs on cached (or freshly computed) frozen outputs, and what DistributedDataParallel wraps: the
    frozen stages are never part of it. It holds the model's own modules, so training it trains the model.
    """

    def __init__(self, model: AttributeClassifier, precision: str):
        super().__init__()
        self.stages = model.trainable_part
        self.head = model.head
        self.head_logits = model.head_logits  # the head with the model's input scaling (a method, not a module)
        self.precision = precision

    def features(self, frozen: torch.Tensor) -> torch.Tensor:
        """What the head sees: the trainable stages' output (under the backbone's autocast), in float32."""
        if not len(self.stages):
            return frozen.float()
        with backbone_autocast(self.precision, frozen.device):
            return self.stages(frozen.contiguous(memory_format=torch.channels_last)).float()

    def forward(self, frozen: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(frozen))


def build_model(
    num_attributes: int, backbone: str = "resnet18", weights: str = "auto", trainable_stages: int = 0
) -> tuple[AttributeClassifier, str]:
    """The model and where its backbone weights came from (`imagenet:...`, `file:...` or `random`)."""
    network, width, origin = build_backbone(backbone, weights)
    stages = BACKBONES[backbone].stages(network)
    return AttributeClassifier(network, stages, width, num_attributes, trainable_stages), origin


def model_from_checkpoint(checkpoint: dict, path: str | Path) -> AttributeClassifier:
    """The trained model of a loaded checkpoint, in eval mode, every tensor taken from the checkpoint; its frozen
    part is the one it was trained with (so its features are the ones training computed and stored)."""
    trained = (checkpoint.get("train_config") or {}).get("trainable_stages", 0)
    try:
        with torch.device("meta"):  # no random initialisation: it would be overwritten anyway
            model, _ = build_model(len(checkpoint["attributes"]), checkpoint["backbone"], weights="none",
                                   trainable_stages=trained if isinstance(trained, int) else 0)
    except AimonkError as error:  # an unknown backbone: say which file names it
        raise CheckpointError(f"{path}: {error}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"], assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit a {checkpoint['backbone']} model "
                              f"({state_dict_mismatch(error)})") from None
    return model.eval()


# The masked loss: per-entry losses (LOSSES) averaged over the entries the NA mode (NA_MODES) counts, positives
# weighted per attribute (POS_WEIGHTS). More losses and NA modes: aimonk.model.losses.

EntryLoss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Labels = TypeVar("Labels", np.ndarray, torch.Tensor)


def bce_terms(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits of every entry (positives weighted by `pos_weight`)."""
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")


@LOSSES.register("bce")
def bce(config: TrainConfig) -> EntryLoss:
    """binary cross-entropy with logits (the reference)"""
    return bce_terms


@dataclass(frozen=True)
class NAMode:
    """What an NA label means to the loss: `counted(targets, known)` gives the labels as the loss counts them (numpy
    tables or torch batches alike); a mode that `revise`s also changes each minibatch's losses, by epoch
    (`revise(terms, na, epoch, config)`: the per-entry loss, where the NA entries are, the 0-based epoch and the
    run's settings), so it needs a solver with epochs. A mode that `completes` fills NA entries of the training images
    before the fit: `completes(config, data)` gives the labels the run learns from (a LabelTable of `data`'s images)
    and lines for the run's report; it cross-fits heads on the frozen features, so it needs a frozen backbone."""

    counted: Callable[[Labels, Labels], tuple[Labels, Labels]]
    revise: Callable[[EntryLoss, torch.Tensor, int, TrainConfig], EntryLoss] | None = None
    completes: Callable[..., tuple[Any, list[str]]] | None = None  # (TrainConfig, TrainingData)

    @property
    def per_epoch(self) -> bool:
        return self.revise is not None

    def problem(self, config: TrainConfig) -> str | None:
        """Why `config` cannot train with this mode (its `na_mode`), or None."""
        if self.per_epoch and SOLVERS[config.solver].full_batch:
            return (f"na_mode {config.na_mode} changes the loss epoch by epoch, and the {config.solver} solver fits "
                    "full-batch without epochs: use solver adam with it")
        if self.completes and config.trainable_stages:
            return (f"na_mode {config.na_mode} completes the NA entries with lbfgs heads cross-fitted on the frozen "
                    f"backbone's features, and --trainable-stages {config.trainable_stages} fine-tunes it: use "
                    "--trainable-stages 0 with it (any solver)")
        return None


def ignore_na(targets: Labels, known: Labels) -> tuple[Labels, Labels]:
    """NA entries are left out of the loss."""
    return targets, known


def na_as_negative(targets: Labels, known: Labels) -> tuple[Labels, Labels]:
    """An NA label counts as absent: every entry trains."""
    return targets * known, known | ~known


NA_MODES.add("ignore", NAMode(ignore_na), "NA entries are left out of the loss (the reference)")
NA_MODES.add("negative", NAMode(na_as_negative), "an NA label counts as absent: every entry trains")


def na_mode_loss(
    mode: NAMode, terms: EntryLoss, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
    pos_weight: torch.Tensor | None = None, epoch: int = 0, config: TrainConfig | None = None,
) -> torch.Tensor:
    """The loss of a batch of labels as read (`known` False at NA entries) under NA `mode`: `terms` averaged over
    the entries the mode counts, as a mode that revises them revises them at `epoch` (0-based) of a run of
    `config`."""
    counted_targets, counted = mode.counted(targets, known)
    if mode.revise:
        terms = mode.revise(terms, ~known, epoch, config)
    return masked_loss(terms, logits, counted_targets, counted, pos_weight)


def masked_mean(terms: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean of `terms` over entries where `known` is True; 0 (with zero gradients) if none are."""
    weights = known.to(terms.dtype)
    return (terms * weights).sum() / weights.sum().clamp(min=1.0)


def masked_loss(
    terms: EntryLoss, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """`terms` averaged over known entries only."""
    known = known.bool()
    # Zero the unknown targets first so a NaN placeholder can never leak into the loss or its gradient.
    targets = torch.where(known, targets, torch.zeros_like(targets))
    return masked_mean(terms(logits, targets, pos_weight), known)


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE-with-logits over entries where `known` is True; 0 (with zero gradients) if none are."""
    return masked_loss(bce_terms, logits, targets, known, pos_weight)


@POS_WEIGHTS.register("none")
def no_pos_weight(targets: np.ndarray, known: np.ndarray) -> None:
    """every known label weighs the same (the reference)"""
    return None


@POS_WEIGHTS.register("balanced")
def balanced_pos_weight(targets: np.ndarray, known: np.ndarray) -> torch.Tensor:
    """positives weighted by negatives/positives of their attribute, so rare positives weigh as much as negatives"""
    positives = (targets * known).sum(axis=0)
    negatives = ((1 - targets) * known).sum(axis=0)
    return torch.tensor(negatives / np.maximum(positives, 1.0), dtype=torch.float32)


@POS_WEIGHTS.register("sqrt")
def sqrt_pos_weight(targets: np.ndarray, known: np.ndarray) -> torch.Tensor:
    """the square root of the balanced weights: a milder boost for rare positives"""
    return balanced_pos_weight(targets, known).sqrt()
