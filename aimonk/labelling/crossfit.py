"""Out-of-fold probabilities for every entry of a labels file (`out_of_fold`), or of the training images of a run
(`cross_fitted`, for na_mode self_train): the images in stratified folds, and each fold's entries scored by the
head fitted (as `aimonk train` fits it) on the other folds' known labels, so that no label judges itself. The
frozen features are extracted (or read from the cache) once, for every fold.

Each head is one per attribute, fitted on that attribute's known labels only, so an NA entry is as unseen by the
model of its image's fold as a known label of that fold: both are scored by the same kind of model, and what the
known labels show of those scores (calibration, precision of fills) holds for the NA entries too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aimonk import world
from aimonk.checkpoint import sigmoid
from aimonk.config import TrainConfig
from aimonk.data.labels import LabelFormat, LabelTable, read_labels, shortage, stratified_folds
from aimonk.errors import AimonkError
from aimonk.evaluate.calibration import temperature_if_it_helps
from aimonk.metrics import LEARNABLE, evaluate, short_verdict
from aimonk.model.backbones import preprocessing_for, sized_for_backbone
from aimonk.model.classifier import build_model, standardising
from aimonk.model.features import Stores
from aimonk.model.linear_heads import choose_l2, fit_linear_heads
from aimonk.registry import LOSSES, NA_MODES, POS_WEIGHTS, SAMPLERS
from aimonk.train.training import TrainingData, prepare_data


@dataclass
class OutOfFold:
    """Every entry of the usable labelled images with its calibrated out-of-fold probability of "present"."""

    images: list[str]
    attributes: list[str]
    targets: np.ndarray  # float (images, attributes): the given labels, 0 where unknown
    known: np.ndarray  # bool (images, attributes)
    probabilities: np.ndarray  # float (images, attributes), calibrated; NA entries included
    better_than_chance: np.ndarray  # bool per attribute: its known labels' out-of-fold scores rank above chance
    metrics: pd.DataFrame  # `evaluate` of the known labels' out-of-fold scores: intervals, verdicts (by attribute)
    temperatures: np.ndarray  # per attribute, fitted out of fold (1 where it does not help)
    folds: np.ndarray  # each image's fold
    labels_path: Path
    image_dir: Path
    skipped: list[str]  # missing or unreadable images, left out

    def shortages(self) -> list[str | None]:
        """Per attribute, why it cannot be judged at all (no known positive or negative label: `shortage`), or
        None; such an attribute's probabilities are NaN."""
        return [shortage(int(known.sum()), int((known & (targets > 0.5)).sum()))
                for known, targets in zip(self.known.T, self.targets.T, strict=True)]

    def why_not(self, attribute: int) -> str:
        """Why an attribute that is not better than chance is left alone: that it cannot be judged at all and why,
        or its verdict with the AUC interval."""
        if why := self.shortages()[attribute]:
            return f"cannot be judged: {why}"
        row = self.metrics.iloc[attribute]
        interval = "" if np.isnan(row["roc_auc_low"]) else \
            f"; out-of-fold ROC AUC {row['roc_auc']:.2f} [{row['roc_auc_low']:.2f}, {row['roc_auc_high']:.2f}]"
        return f"{row['verdict']}{interval}"


FOLDS = 5  # cross-fitting folds: each head is fitted on four fifths of the images


class TooFewImages(AimonkError):
    """Too few images for the folds of a cross-fit."""


def out_of_fold(labels_path: str | Path, image_dir: str | Path, config: TrainConfig | None = None,
                folds: int = FOLDS, seed: int = 0, n_bootstrap: int = 1000, stores: Stores | None = None) -> OutOfFold:
    """Cross-fitted, calibrated probabilities of every entry of the usable images of `labels_path`.

    `config` (default: the `recommended` recipe) sets the backbone, features and loss; its solver must be lbfgs on
    frozen features, and its split settings do not apply (every image is in a fold). The frozen features come from
    `stores` where given. See `cross_fitted`.
    """
    config = (config or TrainConfig.from_recipe("recommended", progress=False)).replace(
        labels=str(labels_path), image_dir=str(image_dir), val_fraction=0.0, hide_labels=0.0, keep_labels=0)
    config = sized_for_backbone(config)
    config.check()
    if config.solver != "lbfgs" or config.trainable_stages:
        raise AimonkError("cross-fitting fits the head by lbfgs on frozen features, once per fold: use --solver "
                          "lbfgs and --trainable-stages 0 (as --recipe recommended does)")
    table = read_labels(config.labels_path, LabelFormat.of(config))
    model, _ = build_model(len(table.attributes), config.backbone, config.weights, config.trainable_stages)
    model.to(device=world.start(config.device).device)  # where the features are extracted
    preprocessing = preprocessing_for(config.backbone, config.image_size, config.resize)
    data = prepare_data(config, table, model, preprocessing, keep_features=True, stores=stores)
    return cross_fitted(config, data, np.arange(len(data.table)), folds, seed, n_bootstrap)


def cross_fitted(config: TrainConfig, data: TrainingData, rows: np.ndarray, folds: int = FOLDS, seed: int = 0,
                 n_bootstrap: int = 1000) -> OutOfFold:
    """Cross-fitted, calibrated probabilities of every entry of the images `rows` of `data` (prepared with their
    frozen features in memory), from heads fitted on the known labels of those images alone; raises TooFewImages
    where there are fewer than 2 images a fold.

    `config` sets the heads' loss, NA mode, sampler, positive weights and standardisation (`fold_logits`). Per
    attribute, a temperature is fitted to the known labels' out-of-fold scores and kept where it lowers their log
    loss out of fold; the verdicts are those of `aimonk evaluate` on the calibrated scores, and `better_than_chance`
    is true where they rank better than chance (AUC interval above 0.5: "above chance" or "ranks only", the
    attributes predict reports).
    """
    table = data.table.subset(rows)
    fold = stratified_folds(table, folds, seed)
    if fold is None:
        raise TooFewImages(f"{table.path}: {len(table)} images to cross-fit, too few for {folds} folds (at least 2 "
                           "a fold)")
    logits = fold_logits(config, table, data.features[torch.as_tensor(rows)], fold)
    temperatures = np.ones(len(table.attributes))
    for j in range(len(table.attributes)):
        known, truth = table.known_labels(j)
        temperatures[j] = temperature_if_it_helps(truth, logits[known, j], folds, seed)[0]
    probabilities = sigmoid(logits / temperatures)
    metrics = evaluate(table, probabilities, n_bootstrap=n_bootstrap, seed=seed)
    # Confident learning needs scores that rank above chance, not decisions better than calling every image
    # present: counting only "above chance" cost the learnable set's subtle attributes their audit (33 % of 5 %
    # planted flips found in the top 2 x flips, against 67 % with ranking attributes: docs/evidence.md)
    better = np.array([short_verdict(row) in LEARNABLE for row in metrics.reset_index().to_dict("records")])
    # an attribute without a known positive (or negative) label learned nothing: no probability, not a made-up one
    probabilities[:, [why is not None for why in table.shortages()]] = np.nan
    return OutOfFold(list(table.filenames), list(table.attributes), table.targets.astype(np.float64),
                     table.known.copy(), probabilities, better, metrics, temperatures, fold, Path(table.path),
                     Path(data.image_dir), data.skipped)


def fold_logits(config: TrainConfig, table: LabelTable, features: torch.Tensor, fold: np.ndarray) -> np.ndarray:
    """(images, attributes) logits of `table`'s images, each from the head fitted on the other folds' labels;
    `features` (images, 2 orientations, dim) are theirs.

    As the lbfgs solver fits it (both orientations of each image, the config's loss, NA mode, sampler and positive
    weights), with the folds solved as independent problems of one L-BFGS run. Two shortcuts, neither of which lets
    a label score itself: the standardisation is that of every image's features (no label enters it), and each
    attribute's L2 strength is chosen once, on these same folds, rather than again inside each fold.
    """
    targets, known = NA_MODES[config.na_mode].counted(table.targets, table.known)
    counted = replace(table, targets=targets, known=known)  # the labels as the loss counts them
    terms = LOSSES[config.loss](config)
    features = features.double()
    if config.standardise_features:
        mean, scale = standardising(features.flatten(0, 1).float())
        features = (features - mean.double()) / scale.double()
    rows = features.flatten(0, 1)
    targets = torch.from_numpy(targets).double().repeat_interleave(2, 0)
    known = torch.from_numpy(known).repeat_interleave(2, 0)
    visits = torch.from_numpy(SAMPLERS[config.sampler](counted, config)).double().repeat_interleave(2)
    pos_weight = POS_WEIGHTS[config.pos_weight](counted.targets, counted.known)
    pos_weight = None if pos_weight is None else pos_weight.double().cpu()
    row_fold = torch.from_numpy(fold).repeat_interleave(2)
    l2 = choose_l2(terms, rows, targets, known, visits, pos_weight, row_fold)
    folds = int(fold.max()) + 1
    fitted = visits[None, :] * (row_fold[None, :] != torch.arange(folds)[:, None])  # (folds, rows)
    weight, bias = fit_linear_heads(rows, targets, known, fitted, pos_weight, l2.expand(folds, -1).clone(), terms)
    own = torch.from_numpy(fold)
    logits = torch.einsum("nd,nad->na", features[:, 0], weight[own]) + bias[own]
    return logits.numpy()
