"""Binary cross-entropy over known labels only: NA entries contribute neither loss nor gradient."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE-with-logits over entries where `mask` is True; 0 (with zero gradients) if none are."""
    mask = mask.bool()
    # Zero the unknown targets first so a NaN placeholder can never leak into the loss or its gradient.
    targets = torch.where(mask, targets, torch.zeros_like(targets))
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    weights = mask.to(per_entry.dtype)
    return (per_entry * weights).sum() / weights.sum().clamp(min=1.0)


def balanced_pos_weight(targets: np.ndarray, known: np.ndarray) -> torch.Tensor:
    """Per-attribute negatives/positives over known labels, so rare positives weigh as much as negatives."""
    positives = (targets * known).sum(axis=0)
    negatives = ((1 - targets) * known).sum(axis=0)
    return torch.tensor(negatives / np.maximum(positives, 1.0), dtype=torch.float32)
