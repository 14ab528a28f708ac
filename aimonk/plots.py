"""Figures shared by the notebooks and the command line: loss curve, ROC and precision-recall, prediction grid.

matplotlib is imported inside each function: `aimonk predict` never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from aimonk.labels import LabelTable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from aimonk.prediction import Prediction

TITLE = "Aimonk_multilabel_problem"


def loss_curve_figure(losses: Sequence[float]) -> Figure:
    """Per-iteration training loss; iterations are numbered from 1."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    axes.plot(range(1, len(losses) + 1), losses, linewidth=1)
    axes.set_xlabel("iteration_number")
    axes.set_ylabel("training_loss")
    axes.set_title(TITLE)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def roc_pr_figure(table: LabelTable, probabilities: np.ndarray, where: str = "the validation split") -> Figure:
    """ROC and precision-recall curves of every attribute with both classes among its known labels."""
    from matplotlib.figure import Figure
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figure = Figure(figsize=(11, 4.5))
    roc, pr = figure.subplots(1, 2)
    for j, name in enumerate(table.attributes):
        known, truth = table.known_labels(j)
        if 0 < truth.sum() < truth.size:
            RocCurveDisplay.from_predictions(truth, probabilities[known, j], name=name, ax=roc)
            PrecisionRecallDisplay.from_predictions(truth, probabilities[known, j], name=name, ax=pr)
    roc.plot([0, 1], [0, 1], "k:", linewidth=1)
    roc.set_title(f"ROC on {where}")
    pr.set_title(f"Precision-recall on {where}")
    figure.tight_layout()
    return figure


def prediction_grid(
    predictions: Sequence[Prediction], present: Sequence[Sequence[str]], attributes: Sequence[str],
    labels: Sequence[Sequence[str]], columns: int = 3,
) -> Figure:
    """Each image with the attributes predicted present above it, then every probability next to its label."""
    from matplotlib.figure import Figure

    from aimonk.images import open_rgb

    rows = -(-len(predictions) // columns)
    figure = Figure(figsize=(4 * columns, 5 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, prediction, shown, image_labels in zip(axes.flat, predictions, present, labels, strict=False):
        details = [f"{name} p={p:.2f} (label {label})"
                   for name, p, label in zip(attributes, prediction.probabilities, image_labels, strict=True)]
        pairs = ["   ".join(details[i : i + 2]) for i in range(0, len(details), 2)]
        ax.imshow(open_rgb(prediction.path))
        ax.set_title("\n".join([f"{prediction.path.name}: {', '.join(shown) or 'none'}", *pairs]), fontsize=8.5)
    figure.tight_layout()
    return figure
