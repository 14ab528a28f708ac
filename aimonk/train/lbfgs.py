"""The `lbfgs` solver: the linear head fitted full-batch on the frozen features (convex with bce), its L2 strength
chosen per attribute on folds of the training images only, as in the linear-probe protocol of CLIP and DINO."""

from __future__ import annotations

import time

import torch

from aimonk.config import EntryOption, at_least
from aimonk.data.labels import stratified_folds
from aimonk.errors import AimonkError
from aimonk.model.classifier import masked_loss
from aimonk.model.linear_heads import L2_GRID, choose_l2, fit_linear_heads
from aimonk.registry import SAMPLERS, SOLVERS
from aimonk.train.training import Solver, TrainingRun


def fit_lbfgs(run: TrainingRun) -> None:
    config, model, data, started = run.config, run.model, run.data, time.monotonic()
    if not data.head_inputs_cached(model):
        raise AimonkError("the lbfgs solver fits the head on frozen features: use --trainable-stages 0 "
                          "(or --solver adam to fine-tune)")
    table = run.train_table
    features = data.features[torch.as_tensor(data.train_rows)].double()  # (images, 2 orientations, dim)
    if model.input_scaling is not None:
        mean, scale = model.input_scaling
        features = (features - mean.double()) / scale.double()
    rows = features.reshape(-1, features.shape[-1])  # both orientations of an image, next to each other
    counted = run.counted.subset(data.train_rows)
    targets = torch.from_numpy(counted.targets).double().repeat_interleave(2, 0)
    known = torch.from_numpy(counted.known).repeat_interleave(2, 0)
    visits = torch.from_numpy(SAMPLERS[config.sampler](table, config)).double().repeat_interleave(2)
    pos_weight = None if run.pos_weight is None else run.pos_weight.double().cpu()

    folds = stratified_folds(table, config.cv_folds, config.seed)
    if folds is None:
        l2 = torch.full((len(table.attributes),), 1e-2, dtype=torch.float64)
        run.report.append(f"lbfgs: too few training images for {config.cv_folds} folds; L2 1e-2 for every attribute")
    else:
        folds, fell_back = torch.from_numpy(folds).repeat_interleave(2), []
        l2 = choose_l2(run.terms, rows, targets, known, visits, pos_weight, folds, fell_back)
        chosen = ", ".join(f"{name} {value:.0e}" for name, value in zip(table.attributes, l2.tolist(), strict=True))
        run.report.append(f"lbfgs: L2 per attribute, chosen on {config.cv_folds} folds of the training images: "
                          f"{chosen}")
        run.report += l2_notes(table.attributes, l2.tolist(), fell_back)

    def record(weight: torch.Tensor, bias: torch.Tensor) -> None:
        logits = rows @ weight[0].T + bias[0]
        run.history.append(masked_loss(run.terms, logits, targets, known, pos_weight).item())

    weight, bias = fit_linear_heads(rows, targets, known, visits[None], pos_weight, l2[None], run.terms, record)
    if not run.history:  # converged before a first iteration (e.g. features without spread): its loss all the same
        record(weight, bias)
    with torch.no_grad():
        model.head.weight.copy_(weight[0])
        model.head.bias.copy_(bias[0])
    run.end_epoch(run.epoch_row(0, run.history[-1:], time.monotonic() - started))  # its one row: the final loss


def l2_notes(attributes: list[str], l2: list[float], fell_back: list[int]) -> list[str]:
    """A line for each attribute whose L2 the held-out loss could not choose, or that sits on an edge of the grid."""
    edges = {min(L2_GRID): "weakest", max(L2_GRID): "strongest"}
    notes = []
    for j, (name, value) in enumerate(zip(attributes, l2, strict=True)):
        if j in fell_back:
            notes.append(f"lbfgs: {name}'s L2 {value:.0e} is the middle of the strengths that rank its held-out labels "
                         f"best: its held-out loss was still falling at the weakest strength ({min(L2_GRID):.0e}; "
                         "the folds separate its labels)")
        elif value in edges:
            notes.append(f"lbfgs: {name}'s L2 {value:.0e} is the {edges[value]} strength of the grid "
                         f"({min(L2_GRID):.0e} to {max(L2_GRID):.0e}): the best may lie beyond it")
    return notes


SOLVERS.add("lbfgs", Solver(fit_lbfgs, full_batch=True),
            "full-batch L-BFGS of the head on frozen features, L2 per attribute chosen on training folds; seconds",
            options=[EntryOption("cv_folds", 5, "folds of the training images on which lbfgs chooses each "
                                 "attribute's L2 strength", at_least(2))])
