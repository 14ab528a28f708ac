"""Linear heads fitted full-batch: per attribute, the weighted mean of a per-entry loss over known labels plus an
L2 penalty on the weights, minimised by SciPy's L-BFGS-B (as scikit-learn's lbfgs solver) on the loss and gradient
computed by torch in float64; the L2 strength chosen per attribute on folds of the training images (by held-out loss,
or by held-out average precision where the loss runs to the weakest strength).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from aimonk.model.classifier import EntryLoss

L2_GRID = tuple(10.0 ** (half / 2) for half in range(-10, 3))  # 1e-5 to 10 by half decades (standardised features)


def choose_l2(terms: EntryLoss, rows: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
              visits: torch.Tensor, pos_weight: torch.Tensor | None, fold: torch.Tensor,
              fell_back: list[int] | None = None) -> torch.Tensor:
    """Per attribute, the L2 strength of L2_GRID with the lowest held-out loss summed over the folds; where that is
    the weakest strength of the grid, the middle of the strengths that rank the held-out labels best (mean average
    precision over the folds, each weighted by visits), and the attribute appended to `fell_back` if given.

    The loss still falling at the weakest strength means the folds' held-out labels are separated: a weaker L2 only
    scales the logits up, so the loss says nothing more, and the heads' probabilities run to 0 and 1 (thresholds at
    0.9999996). On a learnable set of 1,000 images the loss's choice never reaches that edge; on the demo set it did
    for every attribute, and the fallback cut the validation probabilities within 1e-6 of 0 or 1 from 186 of 302
    known entries to 4 at the same mAP (docs/evidence.md).

    The folds are independent problems solved in one L-BFGS run; strengths are tried from the strongest down, each
    starting from the last solution, with a capped number of iterations, in float32: enough to rank them (the same
    choices as float64 on the learnable benchmark, a third faster).
    """
    rows, targets, visits = rows.float(), targets.float(), visits.float()
    pos_weight = None if pos_weight is None else pos_weight.float()
    folds = int(fold.max()) + 1
    held_out = fold[None, :] == torch.arange(folds)[:, None]  # (folds, rows)
    scored = (visits * held_out)[:, :, None]
    strengths = sorted(L2_GRID, reverse=True)
    losses, held_out_logits, solution = [], [], None
    for strength in strengths:
        l2 = torch.full((folds, known.shape[1]), strength, dtype=torch.float64)
        solution = fit_linear_heads(rows, targets, known, visits * ~held_out, pos_weight, l2, terms, init=solution,
                                    max_iterations=100)
        logits = torch.einsum("nd,pad->pna", rows, solution[0].to(rows.dtype)) + solution[1][:, None, :].to(rows.dtype)
        entries = terms(logits, targets.expand_as(logits), pos_weight) * known
        losses.append(((entries * scored).sum(1) / (known * scored).sum(1).clamp(min=1e-12)).sum(0))
        held_out_logits.append(logits[fold, torch.arange(len(fold))])  # each row by the heads fitted without it
    chosen = torch.stack(losses).argmin(0)
    for attribute in torch.nonzero(chosen == len(strengths) - 1).flatten().tolist():
        mean_ap = np.array([held_out_precision(scores[:, attribute], targets[:, attribute], known[:, attribute],
                                               visits, fold) for scores in held_out_logits])
        if np.isfinite(mean_ap).any():  # no fold holds a positive: nothing ranks, the loss's choice stays
            chosen[attribute] = plateau_middle(mean_ap)
            if fell_back is not None:
                fell_back.append(attribute)
    return torch.tensor(strengths, dtype=torch.float64)[chosen]


def held_out_precision(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, visits: torch.Tensor,
                       fold: torch.Tensor) -> float:
    """One attribute's average precision of the known labels by their held-out logits (visits as weights), averaged
    over the folds where it is defined (NaN where it is in none)."""
    from aimonk.metrics import resampled_metrics  # scikit-learn and pandas come with it: only when a choice needs it

    truth, logits, visits = targets.numpy() > 0.5, logits.double().numpy(), visits.numpy().astype(np.float64)
    per_fold = []
    for part in range(int(fold.max()) + 1):
        counted = (fold == part).numpy() & known.numpy()
        per_fold.append(resampled_metrics(truth[counted], logits[counted], 0.0, visits[counted][None])["ap"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no positive held out in any fold: NaN
        return float(np.nanmean(per_fold))


def plateau_middle(values: np.ndarray, tolerance: float = 1e-9) -> int:
    """The middle index of the run of values within `tolerance` of the best that holds the first best one (indices:
    strengths from the strongest); a half index goes to the first (stronger)."""
    finite = np.where(np.isfinite(values), values, -np.inf)
    best = int(np.argmax(finite))
    tied = finite >= finite[best] - tolerance
    low = high = best
    while low > 0 and tied[low - 1]:
        low -= 1
    while high < len(tied) - 1 and tied[high + 1]:
        high += 1
    return (low + high) // 2


def fit_linear_heads(
    rows: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, weights: torch.Tensor,
    pos_weight: torch.Tensor | None, l2: torch.Tensor, terms: EntryLoss,
    on_iteration: Callable[[torch.Tensor, torch.Tensor], None] | None = None, max_iterations: int = 1000,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent linear heads minimising, per problem p and attribute j, the weighted mean loss over known entries
    plus l2[p, j] / 2 * |w_pj|^2 (the bias is not penalised); (weight (P, A, D), bias (P, A)).

    `weights` (P, rows) weighs the rows of each problem (0 leaves a row out). SciPy's L-BFGS-B (as scikit-learn's
    lbfgs solver) on the loss and gradient computed by torch in the dtype of `rows` (the parameters are float64);
    `on_iteration` sees each iterate. Without `init`, the weights start at zero and each bias at the log-odds of its
    attribute's prevalence.
    """
    from scipy.optimize import minimize  # only a full-batch fit needs SciPy (and threadpoolctl, with scikit-learn)
    from threadpoolctl import threadpool_limits

    problems, attributes = l2.shape
    shape = (problems, attributes, rows.shape[1])
    counts = (weights[:, :, None] * known).sum(1).clamp(min=1e-12)  # (P, A)
    if init is None:
        prior = ((weights[:, :, None] * known * targets).sum(1) / counts).clamp(1e-3, 1 - 1e-3)
        init = torch.zeros(shape, dtype=torch.float64), torch.logit(prior.double())

    def unpack(flat: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        parameters = torch.from_numpy(flat)
        return parameters[: math.prod(shape)].view(shape), parameters[math.prod(shape) :].view(problems, attributes)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        parameters = torch.from_numpy(flat).requires_grad_(True)
        weight = parameters[: math.prod(shape)].view(shape).to(rows.dtype)
        bias = parameters[math.prod(shape) :].view(problems, attributes).to(rows.dtype)
        logits = torch.einsum("nd,pad->pna", rows, weight) + bias[:, None, :]
        entry = terms(logits, targets.expand_as(logits), pos_weight) * known * weights[:, :, None]
        value = (entry.sum(1) / counts).sum() + (l2.to(rows.dtype) / 2 * (weight**2).sum(-1)).sum()
        value.backward()
        return value.item(), parameters.grad.numpy()

    start = torch.cat([init[0].reshape(-1), init[1].reshape(-1)]).numpy()
    callback = (lambda flat: on_iteration(*unpack(flat))) if on_iteration else None
    threads = torch.get_num_threads()
    # Problems this small run fastest on one thread; BLAS and torch threads spinning side by side ran 7x slower.
    with threadpool_limits(1):
        torch.set_num_threads(1)
        try:
            result = minimize(objective, start, jac=True, method="L-BFGS-B", callback=callback,
                              options={"maxiter": max_iterations, "gtol": 1e-6, "ftol": 1e-7})
        finally:
            torch.set_num_threads(threads)
    return unpack(result.x)
