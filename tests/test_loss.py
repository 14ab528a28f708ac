"""Masked BCE: unknown (NA) entries change neither the loss nor any gradient, in the loss and in whole training runs."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import train_config

import aimonk.training
from aimonk import masked_bce_with_logits, read_labels
from aimonk.config import TrainConfig
from aimonk.labels import LabelTable
from aimonk.losses import balanced_pos_weight, make_criterion
from aimonk.training import train


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


def test_a_batch_with_one_known_label_is_that_labels_loss():
    logits, targets, _ = _inputs()
    mask = torch.zeros_like(targets, dtype=torch.bool)
    mask[3, 1] = True
    expected = F.binary_cross_entropy_with_logits(logits[3, 1], targets[3, 1])
    assert torch.allclose(masked_bce_with_logits(logits, targets, mask), expected)


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


def test_the_training_criterion_applies_the_positive_weights():
    logits, targets, mask = _inputs()
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    criterion = make_criterion(TrainConfig(pos_weight="balanced"), weight)
    assert torch.equal(criterion(logits, targets, mask), masked_bce_with_logits(logits, targets, mask, weight))
    assert not torch.equal(criterion(logits, targets, mask), masked_bce_with_logits(logits, targets, mask))


def test_balanced_pos_weight_counts_known_labels_only():
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=np.float32)
    known = np.array([[True, True], [True, True], [True, False], [False, True]])
    # Attr1 known: 1, 0, 1 -> 1 negative / 2 positives; Attr2 known: 0, 0, 1 -> 2 negatives / 1 positive.
    assert balanced_pos_weight(targets, known).tolist() == [0.5, 2.0]


def _flipped(table: LabelTable, where: np.ndarray) -> LabelTable:
    return replace(table, targets=np.where(where, 1 - table.targets, table.targets).astype(np.float32))


@pytest.mark.parametrize("overrides", [{"pos_weight": "balanced"}, {"feature_cache": False}],
                         ids=["cached-balanced", "uncached"])
def test_training_never_learns_from_the_value_behind_an_na(small_dataset: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, overrides: dict):
    """End to end through train(): the table's placeholder targets at NA entries (0) are flipped to 1 on their way
    into training; the loss history must not move, whether training reads cached features or decodes images."""
    def run(out: str, flip: str | None = None) -> list[float]:
        def read_flipped(path):  # noqa: ANN001, ANN202
            table = read_labels(path)
            return _flipped(table, ~table.known if flip == "unknown" else table.known & (table.targets == 0))

        with monkeypatch.context() as patch:
            if flip:
                patch.setattr(aimonk.training, "read_labels", read_flipped)
            return train(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / out), image_size=32,
                                      **overrides)).history

    table = read_labels(small_dataset / "labels.txt")
    assert (~table.known).sum() >= 10 and not table.targets[~table.known].any()  # the NAs whose targets get flipped
    honest = run("honest")
    assert run("unknown-flipped", flip="unknown") == honest
    if overrides.get("feature_cache", True):  # the same route does reach the loss: known negatives flipped move it
        assert run("known-flipped", flip="known") != honest
