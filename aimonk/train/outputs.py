"""What a training run writes: the checkpoint (with the counts of the labels it learned from), the loss history as a
table and as a curve, and the model card."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aimonk.card import write_model_card
from aimonk.checkpoint import save_model_checkpoint
from aimonk.config import TrainConfig
from aimonk.io import CURVE_FILE, HISTORY_FILE, MODEL_FILE, atomic_file
from aimonk.model.classifier import AttributeClassifier
from aimonk.train.prepare import TrainingData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Aimonk_multilabel_problem"


def write_outputs(out_dir: Path, model: AttributeClassifier, data: TrainingData, config: TrainConfig,
                  weights_origin: str, preprocessing: dict, history: list[float]) -> Path:
    """`aimonk_model.pth`, the loss history and curve, and `MODEL_CARD.md` (see `aimonk.card`) in `out_dir`."""
    model_path = save_model_checkpoint(
        out_dir / MODEL_FILE, model, attributes=data.table.attributes, backbone=config.backbone,
        weights_origin=weights_origin, preprocessing=preprocessing, precision=config.precision,
        train_config=config.to_dict(), train_files=data.files(data.train_rows), val_files=data.files(data.val_rows),
        skipped_files=data.skipped, label_counts=label_counts(data),
    )
    write_history(out_dir, history)
    write_model_card(model_path)
    return model_path


def label_counts(data: TrainingData) -> dict:
    """The images a run used, and per attribute its known and positive labels among them (for the model card)."""
    return {"images": len(data.table), "train": len(data.train_rows), "validation": len(data.val_rows),
            "skipped": len(data.skipped), "known": data.table.known.sum(0).tolist(),
            "positive": data.table.positives().sum(0).tolist()}


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
