"""LOSSES and POS_WEIGHTS: per-entry losses reduced over known labels only, so NA entries contribute neither loss
nor gradient; per-attribute positive weights for rare attributes.

A loss entry takes the training config (for its own settings) and returns a function
`(logits, targets, pos_weight) -> per-entry losses`; masking and averaging are shared by all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from aimonk.registry import Registry

if TYPE_CHECKING:
    from aimonk.config import TrainConfig

EntryLoss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: Registry[Callable[[TrainConfig], EntryLoss]] = Registry("loss")
POS_WEIGHTS: Registry[Callable[[np.ndarray, np.ndarray], torch.Tensor | None]] = Registry("positive weighting")


def bce_terms(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits of every entry (positives weighted by `pos_weight`)."""
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")


@LOSSES.register("bce")
def bce(config: TrainConfig) -> EntryLoss:
    """binary cross-entropy with logits (the reference)"""
    return bce_terms


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


def make_criterion(config: TrainConfig, pos_weight: torch.Tensor | None) -> Criterion:
    """`(logits, targets, known) -> loss` for the config's loss and positive weights."""
    terms = LOSSES[config.loss](config)
    return lambda logits, targets, known: masked_loss(terms, logits, targets, known, pos_weight)


@POS_WEIGHTS.register("none")
def no_pos_weight(targets: np.ndarray, known: np.ndarray) -> None:
    """every known label weighs the same"""
    return None


@POS_WEIGHTS.register("balanced")
def balanced_pos_weight(targets: np.ndarray, known: np.ndarray) -> torch.Tensor:
    """positives weighted by negatives/positives of their attribute, so rare positives weigh as much as negatives"""
    positives = (targets * known).sum(axis=0)
    negatives = ((1 - targets) * known).sum(axis=0)
    return torch.tensor(negatives / np.maximum(positives, 1.0), dtype=torch.float32)
