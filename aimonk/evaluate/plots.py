"""Figures of the notebooks: ROC and precision-recall, precision/recall/F1 over the threshold, prediction grid,
reliability diagrams, grids of images (explanations, galleries), forest plots of compared runs.

matplotlib is imported inside each function: `aimonk predict` never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from aimonk.data.labels import LabelTable

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL.Image import Image

    from aimonk.evaluate.comparison import Comparison
    from aimonk.evaluate.prediction import Prediction
    from aimonk.metrics import Scores

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


def threshold_figure(scores: Scores, where: str = "the validation split") -> Figure:
    """Per attribute, precision, recall and F1 (known labels) over the decision threshold, the saved threshold
    marked: the static view of the threshold explorer, for a notebook run headless."""
    from matplotlib.figure import Figure

    from aimonk.metrics import point_metrics

    table, grid = scores.table, np.linspace(0, 1, 101)
    figure = Figure(figsize=(3.2 * len(table.attributes), 3.4))
    for j, ax in enumerate(np.atleast_1d(figure.subplots(1, len(table.attributes)))):
        known, truth = table.known_labels(j)
        curves = [point_metrics(truth, scores.probabilities[known, j], threshold) for threshold in grid]
        for metric in ("precision", "recall", "f1"):
            ax.plot(grid, [curve[metric] for curve in curves], label=metric)
        ax.axvline(scores.thresholds[j], color="k", linestyle=":", linewidth=1)
        ax.set(title=f"{table.attributes[j]} (threshold {scores.thresholds[j]:.2f})", xlabel="threshold",
               xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7)
    figure.suptitle(f"Precision, recall and F1 over the threshold, on {where}", fontsize=10)
    figure.tight_layout()
    return figure


def prediction_grid(
    predictions: Sequence[Prediction], present: Sequence[Sequence[str]], attributes: Sequence[str],
    labels: Sequence[Sequence[str]], columns: int = 3,
) -> Figure:
    """Each image with the attributes predicted present above it, then every probability next to its label."""
    from matplotlib.figure import Figure

    from aimonk.data.images import open_rgb

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


def reliability_figure(table: LabelTable, curves: dict[str, np.ndarray], bins: int = 10) -> Figure:
    """Per attribute, observed frequency against mean predicted probability in each bin, for each set of
    probabilities in `curves` (e.g. before and after temperature scaling); the diagonal is perfect calibration."""
    from matplotlib.figure import Figure

    from aimonk.evaluate.calibration import expected_calibration_error, reliability

    figure = Figure(figsize=(3.2 * len(table.attributes), 3.4))
    for j, ax in enumerate(np.atleast_1d(figure.subplots(1, len(table.attributes)))):
        known, truth = table.known_labels(j)
        for label, probabilities in curves.items():
            bins_table = reliability(truth, probabilities[known, j], bins).dropna()
            ece = expected_calibration_error(truth, probabilities[known, j], bins)
            ax.plot(bins_table["mean_probability"], bins_table["frequency"], "o-", label=f"{label} (ECE {ece:.3f})")
        ax.plot([0, 1], [0, 1], "k:", linewidth=1)
        ax.set(title=table.attributes[j], xlabel="mean probability", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    figure.axes[0].set_ylabel("frequency present")
    figure.tight_layout()
    return figure


def image_grid(images: Sequence[Image], titles: Sequence[str], columns: int = 4, size: float = 3.0) -> Figure:
    """Pictures side by side with a title each (overlays, galleries)."""
    from matplotlib.figure import Figure

    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(size * columns, (size + 0.4) * rows))
    for ax in np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).flat:
        ax.axis("off")
    for ax, image, title in zip(figure.axes, images, titles, strict=False):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    figure.tight_layout()
    return figure


def forest_figure(comparison: Comparison, reference: str, metric: str = "ap") -> Figure:
    """Each run's metric over all attributes with its interval (left) and its paired difference from `reference`
    (right), best first: which choices matter, and how sure we are."""
    from matplotlib.figure import Figure

    from aimonk.evaluate.comparison import OVERALL, OVERALL_NAMES

    runs = sorted(comparison.values, key=lambda run: comparison.estimate(run, OVERALL, metric)[0])
    figure = Figure(figsize=(11, 0.45 * len(runs) + 1.2))
    left, right = figure.subplots(1, 2, sharey=True)
    for y, run in enumerate(runs):
        value, low, high = comparison.estimate(run, OVERALL, metric)
        left.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color="tab:blue", capsize=3)
        difference, d_low, d_high, _ = comparison.difference(run, reference, OVERALL, metric)
        colour = "tab:green" if d_low > 0 else "tab:red" if d_high < 0 else "tab:gray"
        right.errorbar(difference, y, xerr=[[difference - d_low], [d_high - difference]], fmt="o", color=colour,
                       capsize=3)
    right.axvline(0, color="k", linewidth=0.8)
    left.set_yticks(range(len(runs)), runs)
    left.set_xlabel(f"{OVERALL_NAMES[metric]} [95% interval]")
    right.set_xlabel(f"paired difference from {reference} (green: better, red: worse)")
    left.grid(axis="x", alpha=0.3)
    right.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure
