"""More losses (LOSSES: `focal`, `asymmetric`) and NA modes (NA_MODES: the large-loss modes) than the reference's,
registered when imported (`aimonk.train` imports it).

A loss entry takes the training config (for its own settings) and returns a function
`(logits, targets, pos_weight) -> per-entry losses`; masking and averaging are shared by all of them
(`aimonk.model.classifier.masked_loss`), so every loss ignores the entries its NA mode leaves out.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F

from aimonk.config import EntryOption, TrainConfig, at_least, fraction
from aimonk.model.classifier import EntryLoss, NAMode, na_as_negative
from aimonk.registry import LOSSES, NA_MODES


def _focus(log_base: torch.Tensor, gamma: float) -> torch.Tensor | float:
    """base ** gamma from log(base). Taken in log space because, once a probability rounds to 0 or 1, base ** gamma
    has an infinite derivative for gamma in (0, 1), and inf x 0 is a NaN gradient even on an NA entry; exp(gamma *
    log_base) and its derivative are finite wherever log_base is. gamma 0 is 1 (0 ** 0), with no gradient."""
    return torch.exp(gamma * log_base) if gamma else 1.0


def _focused(log_p: torch.Tensor, log_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """-log(p) * (1 - p) ** gamma from log p and log q = log(1 - p): the focused loss of a positive (swap the
    arguments for a negative's)."""
    return -log_p * _focus(log_q, gamma)


def _clipped_negative(log_p: torch.Tensor, log_q: torch.Tensor, gamma: float, clip: float) -> torch.Tensor:
    """-log(1 - p_m) * p_m ** gamma with p_m = max(p - clip, 0), from log p and log(1 - p); exactly 0, and so is its
    gradient, where p_m is 0.

    1 - p_m = (1 - p) + clip is taken in log space, so a saturated logit costs a finite amount whatever the clip;
    entries with p_m = 0 are masked out of every branch that is differentiated (no 0 * inf there)."""
    shifted = log_p.exp() - clip
    above = shifted > 0
    log_rest = torch.logaddexp(log_q, torch.full_like(log_q, math.log(clip)))
    log_shifted = torch.log(torch.where(above, shifted, torch.ones_like(shifted)))
    terms = _focused(log_rest, log_shifted, gamma)
    return torch.where(above, terms, torch.zeros_like(terms))


def _combined(positive: torch.Tensor, negative: torch.Tensor, targets: torch.Tensor,
              pos_weight: torch.Tensor | None) -> torch.Tensor:
    """Each entry's loss: its positive term (weighted by `pos_weight`) where present, its negative term where not."""
    if pos_weight is not None:
        positive = positive * pos_weight
    return targets * positive + (1 - targets) * negative


def focal_terms(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): each entry's cross-entropy scaled by (1 - p_t)^gamma; gamma 0 is BCE."""
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    return _combined(_focused(log_p, log_q, gamma), _focused(log_q, log_p, gamma), targets, pos_weight)


def asymmetric_terms(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None, gamma_pos: float = 0.0,
    gamma_neg: float = 4.0, clip: float = 0.05,
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021): positives focused by (1 - p)^gamma_pos; negatives use the
    probability shifted down by `clip` (easy negatives below it count nothing) focused by p_m^gamma_neg.

    The gradient flows through the focusing factors. The authors' `disable_torch_grad_focal_loss` (detaching them)
    is not offered: their `AsymmetricLoss` has it commented out and `AsymmetricLossOptimized` defaults it off, the
    paper's gradient analysis differentiates through the factor, and a detached factor makes the gradient no
    longer that of the loss, which the lbfgs solver's line search relies on.
    """
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    positive = _focused(log_p, log_q, gamma_pos)
    negative = _clipped_negative(log_p, log_q, gamma_neg, clip) if clip > 0 else _focused(log_q, log_p, gamma_neg)
    return _combined(positive, negative, targets, pos_weight)


@LOSSES.register("focal", options=[EntryOption("focal_gamma", 2.0, "focusing exponent of the focal loss",
                                                 at_least(0))])
def focal(config: TrainConfig) -> EntryLoss:
    """focal loss, Lin et al. 2017 (--focal-gamma)"""
    return lambda logits, targets, pos_weight: focal_terms(logits, targets, pos_weight, config.focal_gamma)


@LOSSES.register("asymmetric", options=[
    EntryOption("asl_gamma_pos", 0.0, "focusing exponent of positives in the asymmetric loss", at_least(0)),
    EntryOption("asl_gamma_neg", 4.0, "focusing exponent of negatives in the asymmetric loss", at_least(0)),
    EntryOption("asl_clip", 0.05, "probability margin below which negatives count nothing (asymmetric loss)",
                fraction),
])
def asymmetric(config: TrainConfig) -> EntryLoss:
    """asymmetric loss, Ridnik et al. 2021 (--asl-gamma-pos, --asl-gamma-neg, --asl-clip)"""
    return lambda logits, targets, pos_weight: asymmetric_terms(
        logits, targets, pos_weight, config.asl_gamma_pos, config.asl_gamma_neg, config.asl_clip)


def largest_na_losses(terms: torch.Tensor, na: torch.Tensor, share: float) -> torch.Tensor:
    """Where the ceil(share x NA entries) NA entries with the largest losses are (exactly that many; a tie goes to
    the earlier entry). Known entries are never chosen."""
    count = min(int(na.sum()), math.ceil(round(share * int(na.sum()), 9)))  # round: 0.3 x 10 is 3, not 4
    chosen = torch.zeros(terms.numel(), dtype=torch.bool, device=terms.device)
    if count:
        ranked = torch.where(na, terms.detach(), torch.full_like(terms, -math.inf)).flatten()
        chosen[ranked.topk(count).indices] = True
    return chosen.view_as(na)


def large_loss_share(epoch: int, delta_rel: float) -> float:
    """The share of a batch's NA entries whose losses count as large at `epoch` (0-based): none in the first
    epoch, `delta_rel` more in each later one, at most all (the reference's `clean_rate`, 1 - share)."""
    return min(1.0, epoch * delta_rel)


def large_losses_at(terms: EntryLoss, na: torch.Tensor, epoch: int, config: TrainConfig,
                    large_losses: Literal["reject", "correct"]) -> EntryLoss:
    """The `revise` of a large-loss NA mode: `with_large_losses` at the share of `epoch` (--ll-delta-rel)."""
    return with_large_losses(terms, na, large_loss_share(epoch, config.ll_delta_rel), large_losses)


def with_large_losses(terms: EntryLoss, na: torch.Tensor, share: float,
                      large_losses: Literal["reject", "correct"]) -> EntryLoss:
    """`terms` with NA entries counted as negatives, after Kim et al., CVPR 2022, "Large Loss Matters in Weakly
    Supervised Multi-Label Classification": the `share` of the NA entries (`na`) with the largest losses is
    rejected (LL-R: loss 0, and so its gradient) or corrected (LL-Ct: counted as a positive, for this step only).

    Rejected entries stay in the mean's count, as in the reference's `final_loss_matrix.mean()`. The reference's
    rate is a share of all of a batch's entries, nearly all NA in its single-positive setting; here the NA share
    varies by data set, so the rate is a share of the NA entries. Under torchrun each process ranks those of its
    share of the batch."""

    def revised(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
        losses = terms(logits, targets, pos_weight)
        chosen = largest_na_losses(losses, na, share)
        replaced = terms(logits, torch.ones_like(targets), pos_weight) if large_losses == "correct" else 0.0
        return torch.where(chosen, replaced, losses)

    return revised


LARGE_LOSS_DELTA = EntryOption("ll_delta_rel", 0.002, "share of the NA entries counted as negatives whose large "
                               "losses are rejected or corrected, added each epoch (large_loss modes; the paper's "
                               "0.001 to 0.005)", fraction)
NA_MODES.add("large_loss", NAMode(na_as_negative, partial(large_losses_at, large_losses="reject")),
             "NA counts as absent, but the NA entries with the largest losses are left out, a share growing each "
             "epoch (LL-R, Kim et al. 2022; --ll-delta-rel; adam solver)", [LARGE_LOSS_DELTA])
# --ll-delta-rel is declared once, by large_loss above
NA_MODES.add("large_loss_correct", NAMode(na_as_negative, partial(large_losses_at, large_losses="correct")),
             "as large_loss, but those entries count as positives for the step (LL-Ct, Kim et al. 2022; adam solver)")


