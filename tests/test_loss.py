"""Masked BCE: unknown (NA) entries change neither the loss nor any gradient."""

import numpy as np
import torch
import torch.nn.functional as F

from aimonk import masked_bce_with_logits
from aimonk.losses import balanced_pos_weight


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, 4, generator=generator, requires_grad=True)
    targets = (torch.rand(8, 4, generator=generator) > 0.5).float()
    mask = torch.rand(8, 4, generator=generator) > 0.3
    return logits, targets, mask


def test_equals_bce_over_known_entries_only():
    logits, targets, mask = _inputs()
    expected = F.binary_cross_entropy_with_logits(logits[mask], targets[mask])
    assert torch.allclose(masked_bce_with_logits(logits, targets, mask), expected)


def test_changing_a_masked_target_changes_neither_loss_nor_gradient():
    logits, targets, mask = _inputs()
    loss = masked_bce_with_logits(logits, targets, mask)
    (gradient,) = torch.autograd.grad(loss, logits)

    flipped = targets.clone()
    flipped[~mask] = 1 - flipped[~mask]
    flipped[0, 0] = float("nan") if not mask[0, 0] else flipped[0, 0]
    loss_flipped = masked_bce_with_logits(logits, flipped, mask)
    (gradient_flipped,) = torch.autograd.grad(loss_flipped, logits)

    assert torch.equal(loss, loss_flipped)
    assert torch.equal(gradient, gradient_flipped)
    assert torch.all(gradient[~mask] == 0)


def test_changing_a_known_target_changes_the_loss():
    logits, targets, mask = _inputs()
    row, column = torch.nonzero(mask)[0]
    changed = targets.clone()
    changed[row, column] = 1 - changed[row, column]
    assert masked_bce_with_logits(logits, changed, mask) != masked_bce_with_logits(logits, targets, mask)


def test_all_unknown_batch_gives_zero_loss_and_finite_zero_gradients():
    logits, targets, _ = _inputs()
    mask = torch.zeros_like(targets, dtype=torch.bool)
    loss = masked_bce_with_logits(logits, targets * float("nan"), mask)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(torch.isfinite(logits.grad)) and torch.all(logits.grad == 0)


def test_pos_weight_weighs_positive_entries():
    logits, targets, mask = _inputs()
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")[mask].mean()
    assert torch.allclose(masked_bce_with_logits(logits, targets, mask, weight), expected)


def test_balanced_pos_weight_counts_known_labels_only():
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=np.float32)
    known = np.array([[True, True], [True, True], [True, False], [False, True]])
    # Attr1 known: 1, 0, 1 -> 1 negative / 2 positives; Attr2 known: 0, 0, 1 -> 2 negatives / 1 positive.
    assert balanced_pos_weight(targets, known).tolist() == [0.5, 2.0]
