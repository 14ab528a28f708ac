"""The training-loss figure, identical in the CLI's PNG and the notebook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Aimonk_multilabel_problem"


def loss_curve_figure(losses: Sequence[float]) -> Figure:
    """Per-iteration training loss; iterations are numbered from 1."""
    from matplotlib.figure import Figure  # here, not at the top: `aimonk predict` does not need matplotlib

    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    axes.plot(range(1, len(losses) + 1), losses, linewidth=1)
    axes.set_xlabel("iteration_number")
    axes.set_ylabel("training_loss")
    axes.set_title(TITLE)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
