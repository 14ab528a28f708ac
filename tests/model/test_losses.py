"""Losses: each equals its formula, and unknown (NA) entries change neither the loss nor any gradient, in the loss
and in whole training runs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import train_cached, train_config

import aimonk.train.training
from aimonk import read_labels
from aimonk.config import TrainConfig
from aimonk.data.labels import LabelTable
from aimonk.errors import AimonkError
from aimonk.model.classifier import (
    balanced_pos_weight,
    bce_terms,
    masked_bce_with_logits,
    masked_loss,
    na_mode_loss,
)
from aimonk.model.losses import asymmetric_terms, focal_terms, large_loss_share
from aimonk.registry import LOSSES, NA_MODES, POS_WEIGHTS
from aimonk.train.training import TrainingRun


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
    run = TrainingRun(TrainConfig(pos_weight="balanced"), None, None, None, bce_terms, weight, None, Path("."))
    assert torch.equal(run.loss(logits, targets, mask), masked_bce_with_logits(logits, targets, mask, weight))
    assert not torch.equal(run.loss(logits, targets, mask), masked_bce_with_logits(logits, targets, mask))


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
        def read_flipped(path, label_format=None):  # noqa: ANN001, ANN202
            table = read_labels(path, label_format)
            return _flipped(table, ~table.known if flip == "unknown" else table.known & (table.targets == 0))

        with monkeypatch.context() as patch:
            if flip:
                patch.setattr(aimonk.train.training, "read_labels", read_flipped)
            return train_cached(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / out),
                                             image_size=32, **overrides)).history

    table = read_labels(small_dataset / "labels.txt")
    assert (~table.known).sum() >= 10 and not table.targets[~table.known].any()  # the NAs whose targets get flipped
    honest = run("honest")
    assert run("unknown-flipped", flip="unknown") == honest
    if overrides.get("feature_cache", True):  # the same route does reach the loss: known negatives flipped move it
        assert run("known-flipped", flip="known") != honest


# --- every loss: a hand computation, masked entries ignored, finite on an all-NA batch ---

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, 4.0]])
TARGETS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
WEIGHT = torch.tensor([2.0, 1.0, 3.0])


def _hand(loss: str, x: float, t: float, w: float) -> float:
    """The paper's formula for one entry, written out with math."""
    p = 1 / (1 + math.exp(-x))
    if loss == "bce":
        return -(w * t * math.log(p) + (1 - t) * math.log(1 - p))
    if loss == "focal":  # gamma 2
        return -(w * t * (1 - p) ** 2 * math.log(p) + (1 - t) * p**2 * math.log(1 - p))
    shifted = max(p - 0.05, 0.0)  # asymmetric: gamma+ 0, gamma- 4, clip 0.05
    return -(w * t * math.log(p) + (1 - t) * shifted**4 * math.log(1 - shifted))


@pytest.mark.parametrize("loss", ["bce", "focal", "asymmetric"])
def test_each_loss_equals_the_hand_computation_with_positive_weights(loss: str):
    terms = LOSSES[loss](TrainConfig())
    expected = [[_hand(loss, LOGITS[i, j].item(), TARGETS[i, j].item(), WEIGHT[j].item()) for j in range(3)]
                for i in range(2)]
    assert torch.allclose(terms(LOGITS, TARGETS, WEIGHT), torch.tensor(expected), atol=1e-6)
    known = torch.tensor([[True, False, True], [True, True, False]])
    mean = sum(expected[i][j] for i in range(2) for j in range(3) if known[i, j]) / 4
    assert masked_loss(terms, LOGITS, TARGETS, known, WEIGHT).item() == pytest.approx(mean, rel=1e-6)


@pytest.mark.parametrize("loss", ["bce", "focal", "asymmetric"])
def test_each_loss_ignores_masked_entries_and_is_finite_on_an_all_na_batch(loss: str):
    terms = LOSSES[loss](TrainConfig())
    logits, targets, known = _inputs()
    flipped = torch.where(known, targets, 1 - targets)
    for changed_targets in (targets, flipped):
        loss_value = masked_loss(terms, logits, changed_targets, known)
        (gradient,) = torch.autograd.grad(loss_value, logits)
        assert torch.all(gradient[~known] == 0)
    assert masked_loss(terms, logits, targets, known) == masked_loss(terms, logits, flipped, known)
    extreme = torch.full((2, 4), 30.0, requires_grad=True)  # saturated probabilities
    nothing = masked_loss(terms, extreme, torch.full((2, 4), float("nan")), torch.zeros(2, 4, dtype=torch.bool))
    nothing.backward()
    assert nothing.item() == 0.0 and torch.all(extreme.grad == 0)


def test_focal_and_asymmetric_without_focusing_are_bce():
    logits, targets, _ = _inputs()
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = bce_terms(logits, targets, weight)
    assert torch.allclose(focal_terms(logits, targets, weight, gamma=0.0), expected, atol=1e-6)
    assert torch.allclose(asymmetric_terms(logits, targets, weight, 0.0, 0.0, 0.0), expected, atol=1e-6)


def test_focal_and_asymmetric_defaults_are_the_papers():
    """Called without settings: focal gamma 2 (Lin et al. 2017); asymmetric gamma+ 0, gamma- 4, clip 0.05 (Ridnik
    et al. 2021), as the config's defaults."""
    for loss, terms in (("focal", focal_terms), ("asymmetric", asymmetric_terms)):
        expected = [[_hand(loss, LOGITS[i, j].item(), TARGETS[i, j].item(), WEIGHT[j].item()) for j in range(3)]
                    for i in range(2)]
        assert torch.allclose(terms(LOGITS, TARGETS, WEIGHT), torch.tensor(expected), atol=1e-6)


def test_asymmetric_loss_focuses_positives_and_unclipped_negatives_by_their_own_exponents():
    """gamma+ 1, gamma- 3, no clip: -(w t (1 - p) log p + (1 - t) p^3 log(1 - p)) entry by entry."""
    expected = []
    for i in range(2):
        row = []
        for j in range(3):
            p, t, w = torch.sigmoid(LOGITS[i, j]).item(), TARGETS[i, j].item(), WEIGHT[j].item()
            row.append(-(w * t * (1 - p) * math.log(p) + (1 - t) * p**3 * math.log(1 - p)))
        expected.append(row)
    terms = asymmetric_terms(LOGITS, TARGETS, WEIGHT, gamma_pos=1.0, gamma_neg=3.0, clip=0.0)
    assert torch.allclose(terms, torch.tensor(expected), atol=1e-6)


def test_asymmetric_loss_without_clip_stays_finite_on_confident_mistakes():
    """A negative predicted at logit 20 (p rounds to 1 in float32) costs its BCE, 20, not log(0)."""
    logits = torch.tensor([[20.0]], requires_grad=True)
    terms = asymmetric_terms(logits, torch.zeros(1, 1), None, 0.0, 4.0, clip=0.0)
    (gradient,) = torch.autograd.grad(terms.sum(), logits)
    assert terms.item() == pytest.approx(20.0) and torch.isfinite(gradient).all()


def test_asymmetric_loss_discards_easy_negatives_below_the_margin():
    logits = torch.tensor([[-4.0, -2.0]])  # probabilities 0.018 and 0.119
    terms = asymmetric_terms(logits, torch.zeros(1, 2), None, 0.0, 4.0, clip=0.05)
    assert terms[0, 0].item() == 0.0 and terms[0, 1].item() > 0


def test_na_as_negative_trains_every_entry_with_unknown_as_absent():
    logits, targets, known = _inputs()
    na_targets, na_known = NA_MODES["negative"].counted(targets, known)
    assert na_known.all() and torch.equal(na_targets, targets * known)
    ignore_targets, ignore_known = NA_MODES["ignore"].counted(targets, known)
    assert torch.equal(ignore_targets, targets) and torch.equal(ignore_known, known)


# --- large-loss rejection and correction (Kim et al., CVPR 2022) ---

def _large_loss_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8 NA entries whose NA-as-negative losses are all different, and known entries with larger losses still."""
    logits = torch.tensor([[3.0, -2.0, 1.0, 0.5], [-1.0, 2.0, 8.0, -0.5], [0.0, 1.5, -3.0, 7.0]], requires_grad=True)
    known = torch.tensor([[False, False, True, False], [False, False, True, False], [False, False, True, True]])
    targets = torch.zeros(3, 4)  # the known entries are negatives predicted at logits 8 and 7: large losses
    return logits, targets, known


def _na_loss_terms(mode: str, epoch: int, delta_rel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-entry losses a mode counts at `epoch` (sum of the masked mean x entries) and their gradients."""
    logits, targets, known = _large_loss_batch()
    run = TrainingRun(TrainConfig(na_mode=mode, ll_delta_rel=delta_rel), None, None, None, bce_terms, None, None,
                      Path("."))
    entries = []

    def per_entry(x, t, w):  # noqa: ANN001, ANN202
        entries.append(bce_terms(x, t, w))
        return entries[-1]

    run.terms = per_entry
    loss = run.loss(logits, targets, known, epoch)
    (gradient,) = torch.autograd.grad(loss, logits)
    return loss.detach() * logits.numel(), gradient


def test_large_loss_share_grows_by_delta_rel_each_epoch_from_none_in_the_first():
    assert [large_loss_share(epoch, 0.25) for epoch in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_large_loss_rejects_the_largest_na_losses_at_the_scheduled_rate_and_never_a_known_one():
    logits, targets, known = _large_loss_batch()
    negative = bce_terms(logits, targets).detach()  # what every entry costs as a negative
    na_losses = negative[~known]
    epoch, delta_rel = 3, 0.1  # share 0.3 of the 8 NA entries: ceil(2.4) = 3 rejected
    expected = negative.clone()
    rejected = (negative >= na_losses.sort(descending=True).values[2]) & ~known
    assert rejected.sum() == 3
    expected[rejected] = 0
    loss, gradient = _na_loss_terms("large_loss", epoch, delta_rel)
    assert torch.allclose(loss, expected.sum())
    assert torch.all(gradient[rejected] == 0) and torch.all(gradient[~rejected] != 0)
    assert (negative[known] > na_losses.max()).any()  # the largest losses were known ones, and they still count


def test_large_loss_in_the_first_epoch_is_na_as_negative():
    for mode in ("large_loss", "large_loss_correct"):
        assert torch.equal(_na_loss_terms(mode, 0, 0.5)[0], _na_loss_terms("negative", 0, 0.5)[0])
        assert not torch.equal(_na_loss_terms(mode, 1, 0.5)[0], _na_loss_terms("negative", 1, 0.5)[0])


def test_large_loss_correct_counts_the_largest_na_losses_as_positives():
    logits, targets, known = _large_loss_batch()
    negative, positive = bce_terms(logits, targets).detach(), bce_terms(logits, torch.ones_like(targets)).detach()
    corrected = (negative >= negative[~known].sort(descending=True).values[3]) & ~known  # share 0.5 of 8: 4
    loss, _ = _na_loss_terms("large_loss_correct", 1, 0.5)
    assert torch.allclose(loss, torch.where(corrected, positive, negative).sum())


def test_large_loss_with_every_na_rejected_is_ignore_over_every_entry():
    logits, targets, known = _large_loss_batch()
    loss = na_mode_loss(NA_MODES["large_loss"], bce_terms, logits, targets, known, epoch=1,
                        config=TrainConfig(ll_delta_rel=1.0))
    assert torch.allclose(loss, bce_terms(logits, targets)[known].sum() / logits.numel())


@pytest.mark.parametrize("settings", [{"solver": "lbfgs"}, {"recipe": "recommended"}])
@pytest.mark.parametrize("mode", ["large_loss", "large_loss_correct"])
def test_large_loss_with_a_full_batch_solver_is_a_config_error_naming_both(settings: dict, mode: str):
    with pytest.raises(AimonkError, match=f"na_mode {mode} .* lbfgs solver .* use solver adam"):
        TrainConfig.from_recipe(settings.get("recipe", "reference"), na_mode=mode, solver="lbfgs").check()
    TrainConfig(na_mode=mode, solver="adam").check()


@pytest.mark.slow
def test_large_loss_training_runs_its_first_epoch_as_negative_then_departs(small_dataset: Path, tmp_path: Path):
    """End to end through train(): the epoch reaches the loss. Same seed: the first epoch's steps are NA-as-negative
    exactly; from the second, half the NA entries' losses are rejected, which lowers the loss."""
    def history(mode: str) -> list[float]:
        config = train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / mode), image_size=32,
                              na_mode=mode, ll_delta_rel=0.5, batch_size=6)
        return train_cached(config).history

    negative, large_loss = history("negative"), history("large_loss")
    first = len(negative) // 2  # 2 epochs of the same number of steps
    assert large_loss[:first] == negative[:first]
    assert all(ll < neg for ll, neg in zip(large_loss[first:], negative[first:], strict=True))


def test_sqrt_weights_are_the_square_root_of_balanced():
    targets = np.array([[1, 0], [0, 0], [0, 1], [0, 1]], dtype=np.float32)
    known = np.ones_like(targets, dtype=bool)
    assert torch.allclose(POS_WEIGHTS["sqrt"](targets, known), torch.tensor([3.0, 1.0]).sqrt())


# --- focusing exponents in (0, 1): finite everywhere, the same values as the references where those are finite ---

SATURATED = (17.0, -17.0, 30.0, -30.0, 80.0, -80.0)  # p (or 1 - p) rounds to 1 in float32 from 16.6, in float64 from 37
FOCUSED = {  # a loss whose focusing exponent (or exponents) is gamma
    "focal": lambda gamma: lambda x, t, w: focal_terms(x, t, w, gamma),
    "asymmetric-pos": lambda gamma: lambda x, t, w: asymmetric_terms(x, t, w, gamma, 4.0, 0.05),
    "asymmetric-neg": lambda gamma: lambda x, t, w: asymmetric_terms(x, t, w, 0.0, gamma, 0.05),
    "asymmetric-neg-unclipped": lambda gamma: lambda x, t, w: asymmetric_terms(x, t, w, 0.0, gamma, 0.0),
    "asymmetric-both": lambda gamma: lambda x, t, w: asymmetric_terms(x, t, w, gamma, gamma, 0.05),
}


def test_a_large_logit_on_an_na_entry_leaves_the_focal_gradient_finite():
    """The report: gamma 0.5, logit 20 on an NA entry turned the whole gradient NaN."""
    x = torch.tensor([[20.0, -1.0]], requires_grad=True)
    y, known = torch.tensor([[1.0, 0.0]]), torch.tensor([[False, True]])
    masked_loss(lambda z, t, w: focal_terms(z, t, w, 0.5), x, y, known).backward()
    expected = torch.autograd.grad(-F.logsigmoid(-x[0, 1]) * torch.sigmoid(x[0, 1]) ** 0.5, x)[0]
    assert x.grad[0, 0] == 0 and torch.allclose(x.grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("loss", FOCUSED)
def test_saturated_logits_give_finite_losses_and_gradients_known_or_na(loss: str, gamma: float, dtype: torch.dtype):
    """Each saturated logit as a known positive, a known negative, an NA positive and an NA negative."""
    logits = torch.tensor([SATURATED] * 4, dtype=dtype, requires_grad=True)
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=dtype).expand(4, len(SATURATED))
    known = torch.tensor([[True], [True], [False], [False]]).expand(4, len(SATURATED))
    terms = FOCUSED[loss](gamma)
    value = masked_loss(terms, logits, targets, known, torch.full((len(SATURATED),), 2.0, dtype=dtype))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(terms(logits, targets, None)).all()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[~known] == 0)
    assert torch.all(logits.grad[0][logits[0] < 0] < 0)  # a known positive's confident mistake still trains


def _old_focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """The focal loss as computed before: the factor from probabilities (an infinite derivative once they round)."""
    p = torch.sigmoid(logits)
    return -(targets * F.logsigmoid(logits) * (1 - p) ** gamma + (1 - targets) * F.logsigmoid(-logits) * p**gamma)


TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-7}, torch.float64: {"rtol": 1e-10, "atol": 1e-14}}


def _moderate(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moderate logits as positives and as negatives, in `dtype`, and the same logits in float64 for the references
    (accurate there; in float32 their log(1 - p) is not)."""
    logits = torch.linspace(-9.5, 9.5, 39, dtype=dtype).repeat(2, 1).requires_grad_(True)
    targets = torch.tensor([[1.0], [0.0]], dtype=dtype).expand_as(logits)
    return logits, targets, logits.detach().double().requires_grad_(True)


def _gradient(terms: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(terms.sum(), logits)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 0.9, 1.0, 2.0, 3.5])
def test_focal_equals_torchvision_and_the_old_gradients_on_moderate_logits(gamma: float, dtype: torch.dtype):
    from torchvision.ops import sigmoid_focal_loss

    logits, targets, exact = _moderate(dtype)
    ours = focal_terms(logits, targets, None, gamma)
    expected = sigmoid_focal_loss(exact, targets.double(), alpha=-1, gamma=gamma, reduction="none")
    assert torch.allclose(ours.double(), expected, **TOLERANCE[dtype])
    old_gradient = _gradient(_old_focal(exact, targets.double(), gamma), exact)
    assert torch.isfinite(old_gradient).all()
    assert torch.allclose(_gradient(ours, logits).double(), old_gradient, **TOLERANCE[dtype])


def _asl_authors(x: torch.Tensor, y: torch.Tensor, gamma_pos: float, gamma_neg: float, clip: float) -> torch.Tensor:
    """Alibaba-MIIL/ASL `AsymmetricLoss.forward` (src/loss_functions/losses.py), per entry: the negated loss before
    its final sum."""
    eps = 1e-8
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        loss = loss * torch.pow(1 - pt, one_sided_gamma)
    return -loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gammas_clip", [(0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (0.5, 0.5, 0.05), (0.25, 0.9, 0.2),
                                         (0.5, 2.0, 0.0), (0.0, 0.0, 0.05), (0.0, 0.0, 0.0)])
def test_asymmetric_equals_the_authors_formula_on_moderate_logits(gammas_clip: tuple, dtype: torch.dtype):
    """Values everywhere; gradients wherever the authors' are finite (not where p - clip is clamped to 0 under an
    exponent below 1: there theirs is NaN and ours 0)."""
    gamma_pos, gamma_neg, clip = gammas_clip
    logits, targets, exact = _moderate(dtype)
    ours = asymmetric_terms(logits, targets, None, gamma_pos, gamma_neg, clip)
    theirs = _asl_authors(exact, targets.double(), gamma_pos, gamma_neg, clip)
    assert torch.allclose(ours.double(), theirs, **TOLERANCE[dtype])
    gradient, their_gradient = _gradient(ours, logits).double(), _gradient(theirs, exact)
    finite = torch.isfinite(their_gradient)
    assert torch.isfinite(gradient).all() and finite.sum() >= 58
    assert torch.allclose(gradient[finite], their_gradient[finite], **TOLERANCE[dtype])


@pytest.mark.parametrize("gamma_neg", [0.0, 0.25, 0.5, 0.9, 4.0])
def test_negatives_below_the_clip_margin_have_zero_loss_and_gradient(gamma_neg: float):
    logits = torch.tensor([[-80.0, -17.0, -4.0, math.log(0.05 / 0.95) - 1e-3, 30.0]], requires_grad=True)
    terms = asymmetric_terms(logits, torch.zeros_like(logits), None, 0.5, gamma_neg, 0.05)
    (gradient,) = torch.autograd.grad(terms.sum(), logits)
    assert torch.all(terms[0, :4] == 0) and torch.all(gradient[0, :4] == 0)
    assert terms[0, 4] > 0 and gradient[0, 4] > 0


@pytest.mark.parametrize("clip", [1e-9, 1e-30])
def test_a_tiny_clip_margin_leaves_a_saturated_negative_finite(clip: float):
    """p - clip rounds to 1 there: its cost is -log(1 - p + clip), not log(0)."""
    logits = torch.tensor([[30.0, 80.0]], requires_grad=True)
    terms = asymmetric_terms(logits, torch.zeros_like(logits), None, 0.0, 0.5, clip)
    (gradient,) = torch.autograd.grad(terms.sum(), logits)
    expected = [-math.log(1 / (1 + math.exp(x)) + clip) for x in (30.0, 80.0)]
    assert terms[0].tolist() == pytest.approx(expected, rel=1e-5) and torch.isfinite(gradient).all()
