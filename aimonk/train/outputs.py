"""What a training run writes besides the checkpoint: the loss history as a table and as a curve."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aimonk.io import CURVE_FILE, HISTORY_FILE, atomic_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Aimonk_multilabel_problem"


def write_history(out_dir: Path, history: list[float]) -> None:
    """`loss_history.csv` (iteration_number,training_loss) and `loss_curve.png`, each written atomically."""
    with atomic_file(out_dir / HISTORY_FILE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["iteration_number", "training_loss"])
        writer.writerows((i, f"{loss:.8g}") for i, loss in enumerate(history, start=1))
    with atomic_file(out_dir / CURVE_FILE) as file:
        loss_curve_figure(history).savefig(file, format="png", dpi=100)


def loss_curve_figure(losses: Sequence[float]) -> Figure:
    """Per-iteration training loss; iterations are numbered from 1."""
    from matplotlib.figure import Figure  # only when a run ends: `aimonk predict` never needs matplotlib

    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    axes.plot(range(1, len(losses) + 1), losses, linewidth=1)
    axes.set_xlabel("iteration_number")
    axes.set_ylabel("training_loss")
    axes.set_title(TITLE)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
