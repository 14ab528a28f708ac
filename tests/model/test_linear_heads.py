"""Linear heads fitted full-batch: the fit solves the same problem as scikit-learn's logistic regression, and the
L2 strength chosen per attribute is the one with the lowest held-out loss."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from aimonk.model.classifier import bce_terms
from aimonk.model.linear_heads import L2_GRID, choose_l2, fit_linear_heads, plateau_middle


def test_lbfgs_matches_scikit_learn_logistic_regression_with_weights_and_missing_labels():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(120, 6))
    truth = rows @ rng.normal(size=(6, 2)) + rng.normal(size=(120, 2)) > 0.3
    known = rng.random((120, 2)) > 0.2
    weights = rng.choice([1.0, 2.0], size=120)
    l2 = np.array([0.05, 0.01])
    weight, bias = fit_linear_heads(torch.tensor(rows), torch.tensor(truth, dtype=torch.float64), torch.tensor(known),
                               torch.tensor(weights)[None], None, torch.tensor(l2)[None], bce_terms)
    for j in range(2):
        # ours: weighted mean loss + l2/2 |w|^2  <=>  scikit-learn: C * weighted sum + 1/2 |w|^2, C = 1 / (l2 * sum w)
        reference = LogisticRegression(C=1 / (l2[j] * weights[known[:, j]].sum()), tol=1e-10, max_iter=10_000)
        reference.fit(rows[known[:, j]], truth[known[:, j], j], sample_weight=weights[known[:, j]])
        np.testing.assert_allclose(weight[0, j].numpy(), reference.coef_[0], atol=2e-4)
        assert bias[0, j].item() == pytest.approx(reference.intercept_[0], abs=2e-4)


def test_lbfgs_with_positive_weights_matches_scikit_learn_with_heavier_positive_samples():
    """A positive weight w_j is a sample weight of w_j on the positives of j; the mean still divides by the rows'
    weights."""
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(100, 4))
    truth = rows @ rng.normal(size=(4, 2)) + rng.normal(size=(100, 2)) > 0.8
    weights, pos_weight, l2 = rng.choice([1.0, 2.0], size=100), np.array([3.0, 0.5]), 0.02
    weight, bias = fit_linear_heads(torch.tensor(rows), torch.tensor(truth, dtype=torch.float64),
                                    torch.ones(100, 2, dtype=torch.bool), torch.tensor(weights)[None],
                                    torch.tensor(pos_weight), torch.full((1, 2), l2, dtype=torch.float64), bce_terms)
    for j in range(2):
        reference = LogisticRegression(C=1 / (l2 * weights.sum()), tol=1e-10, max_iter=10_000)
        reference.fit(rows, truth[:, j], sample_weight=weights * np.where(truth[:, j], pos_weight[j], 1.0))
        np.testing.assert_allclose(weight[0, j].numpy(), reference.coef_[0], atol=2e-4)
        assert bias[0, j].item() == pytest.approx(reference.intercept_[0], abs=2e-4)


def _separable_problem() -> tuple[torch.Tensor, ...]:
    """40 rows: attribute 0 separable by the first dimension, 1 present in every row, 2 in none."""
    rng = np.random.default_rng(2)
    rows = torch.tensor(rng.normal(size=(40, 3)))
    targets = torch.stack([rows[:, 0] > 0, torch.ones(40, dtype=torch.bool), torch.zeros(40, dtype=torch.bool)], 1)
    return rows, targets.double(), torch.ones(40, 3, dtype=torch.bool), torch.tensor(rng.choice([1.0, 2.0], size=40))


def _strength(l2: float) -> torch.Tensor:
    return torch.full((1, 3), l2, dtype=torch.float64)  # one problem, three attributes


def test_the_head_depends_on_the_rows_relative_weights_only():
    """A weighted mean: weights of 1 and 2 or of 0.001 and 0.002 fit the same head."""
    rows, targets, known, visits = _separable_problem()
    heavy = fit_linear_heads(rows, targets, known, visits[None], None, _strength(0.1), bce_terms)
    light = fit_linear_heads(rows, targets, known, visits[None] / 1000, None, _strength(0.1), bce_terms)
    for a, b in zip(heavy, light, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_an_attribute_present_or_absent_in_every_image_gets_a_finite_confident_head():
    """As a rare attribute can be in a fold's training images: prevalence 1 or 0 must not start the bias at +-inf."""
    rows, targets, known, visits = _separable_problem()
    weight, bias = fit_linear_heads(rows, targets, known, visits[None], None, _strength(0.1), bce_terms)
    assert torch.isfinite(weight).all() and torch.isfinite(bias).all()
    assert bias[0, 1] > 4 and bias[0, 2] < -4  # probabilities above 0.98 and below 0.02 for every image


def test_the_fit_reports_each_iterate_stops_at_max_iterations_and_warns_nothing():
    """`on_iteration` sees every iterate, the last one being the returned head (lbfgs records the loss history
    from it); max_iterations caps the run; the solver options are all understood."""
    rows, targets, known, visits = _separable_problem()
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weight, bias = fit_linear_heads(rows, targets, known, visits[None], None, _strength(1e-4), bce_terms,
                                        lambda w, b: seen.append((w.clone(), b.clone())), max_iterations=3)
    assert len(seen) == 3
    assert torch.equal(seen[-1][0], weight) and torch.equal(seen[-1][1], bias)


def test_the_fit_runs_on_one_thread_and_gives_the_callers_threads_back():
    """Problems this small ran 7x slower with torch and BLAS threads side by side."""
    from threadpoolctl import threadpool_info, threadpool_limits

    rows, targets, known, visits = _separable_problem()
    inside = []

    def threads(weight: torch.Tensor, bias: torch.Tensor) -> None:
        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        inside.append((torch.get_num_threads(), max(blas, default=1)))

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a caller with two threads of each, whatever OMP_NUM_THREADS the tests run with
    try:
        with threadpool_limits(limits=2, user_api="blas"):
            fit_linear_heads(rows, targets, known, visits[None], None, _strength(0.1), bce_terms, threads,
                             max_iterations=2)
            blas_after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert torch.get_num_threads() == 2 and set(blas_after) == {2}
    finally:
        torch.set_num_threads(before)
    assert inside and set(inside) == {(1, 1)}


def test_lbfgs_chooses_strong_l2_for_noise_and_weak_l2_for_a_clean_signal():
    rng = np.random.default_rng(0)
    rows = torch.tensor(rng.normal(size=(300, 60)))  # many dimensions: weak L2 overfits noise visibly
    clean = rows[:, 0] + 0.3 * rows[:, 1] > 0  # attribute 0: a clean linear signal
    noise = torch.tensor(rng.random(300) > 0.5)  # attribute 1: unrelated to the rows
    targets = torch.stack([clean, noise], 1).double()
    l2 = choose_l2(bce_terms, rows, targets, torch.ones(300, 2, dtype=torch.bool), torch.ones(300, dtype=torch.float64),
                    None, torch.arange(300) % 4)
    assert l2[0] <= 1e-2 and l2[1] == max(L2_GRID)  # (seeds 0-5 tried: clean 1e-3..1e-2, noise the maximum 5 times)


def _l2_problem() -> tuple[torch.Tensor, ...]:
    """Four attributes of prevalence 24-48 % with 20 % NAs, visits of 1 and 2, positives weighted as `balanced`,
    and four folds of 16, 32, 48 and 64 rows."""
    rng = np.random.default_rng(9)
    rows = torch.tensor(rng.normal(size=(160, 8)))
    scores = rows @ torch.tensor(rng.normal(size=(8, 4)) * [1.0, 0.6, 0.4, 0.25]) - torch.tensor([1.5, 1.0, 0.8, 0.3])
    noisy = scores + torch.tensor(rng.normal(size=(160, 4)))
    known = torch.tensor(rng.random((160, 4)) > 0.2)
    targets = (noisy > 0).double() * known
    visits = torch.tensor(rng.choice([1.0, 2.0], size=160))
    pos_weight = ((1 - targets) * known).sum(0) / (targets * known).sum(0)
    fold = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 3, 3]).repeat(16)
    return rows, targets, known, visits, pos_weight, fold


def test_lbfgs_chooses_per_attribute_the_strength_with_the_lowest_held_out_loss_summed_over_folds():
    """choose_l2 (float32, capped iterations, warm starts) against the definition computed directly: per strength,
    each fold's visit-weighted mean positively weighted loss over its known labels, from a head fitted in float64 on
    the other folds; those means summed."""
    rows, targets, known, visits, pos_weight, fold = _l2_problem()
    chosen = choose_l2(bce_terms, rows, targets, known, visits, pos_weight, fold)
    strengths = sorted(L2_GRID, reverse=True)
    assert set(chosen.tolist()) <= set(strengths)
    held_out = fold[None, :] == torch.arange(4)[:, None]  # (folds, rows)
    losses = []
    for strength in strengths:
        weight, bias = fit_linear_heads(rows, targets, known, visits * ~held_out, pos_weight,
                                        torch.full((4, 4), strength, dtype=torch.float64), bce_terms)
        logits = torch.einsum("nd,pad->pna", rows, weight) + bias[:, None, :]  # (folds, rows, attributes)
        entries = bce_terms(logits, targets.expand_as(logits), pos_weight)
        scored = (visits * held_out)[:, :, None] * known  # (folds, rows, attributes)
        losses.append(((entries * scored).sum(1) / scored.sum(1)).sum(0))
    losses = torch.stack(losses)  # (strengths, attributes)
    for attribute, strength in enumerate(chosen.tolist()):
        assert losses[strengths.index(strength), attribute] <= losses[:, attribute].min() * (1 + 1e-3)
    # The positive weights matter here: without them the choice differs.
    assert not torch.equal(choose_l2(bce_terms, rows, targets, known, visits, None, fold), chosen)


def test_where_the_held_out_loss_runs_to_the_weakest_strength_the_middle_of_the_best_ranking_ones_is_chosen():
    """Attribute 0 is separated by the rows on every fold: its held-out loss keeps falling as L2 weakens, so alone it
    would choose the weakest strength (heads whose probabilities run to 0 and 1); every strength ranks its held-out
    labels perfectly, so the middle of the grid is chosen, and said. Attribute 1 (a noisy signal) keeps its
    held-out-loss choice."""
    rng = np.random.default_rng(0)
    rows = torch.tensor(rng.normal(size=(200, 4)))
    separated = rows[:, 0] > 0
    rows[:, 0] += torch.where(separated, 1.0, -1.0)  # a margin: every fold's held-out labels are separated
    noisy = rows[:, 1] + 2 * torch.tensor(rng.normal(size=200)) > 0
    targets = torch.stack([separated, noisy], 1).double()
    arguments = (bce_terms, rows, targets, torch.ones(200, 2, dtype=torch.bool), torch.ones(200, dtype=torch.float64),
                 None, torch.arange(200) % 4)
    fell_back: list[int] = []
    chosen = choose_l2(*arguments, fell_back)
    strengths = sorted(L2_GRID, reverse=True)
    assert fell_back == [0] and chosen[0] == strengths[(len(strengths) - 1) // 2]
    with pytest.MonkeyPatch.context() as patch:  # the held-out loss's own choice: the weakest strength
        patch.setattr("aimonk.model.linear_heads.plateau_middle", lambda values, tolerance=0.0: len(values) - 1)
        alone = choose_l2(*arguments)
    assert alone[0] == min(L2_GRID) and alone[1] == chosen[1] and chosen[1] > min(L2_GRID)


def test_the_plateau_middle_is_that_of_the_run_of_best_values_holding_the_first_best():
    assert plateau_middle(np.array([0.5, 1.0, 1.0, 1.0, 0.9, 1.0])) == 2  # strengths 1-3 tie; 5 is another run
    assert plateau_middle(np.array([1.0, 1.0, 0.7, 0.7])) == 0  # a half index goes to the stronger
    assert plateau_middle(np.array([np.nan, 0.8, np.nan])) == 1  # undefined values never win
