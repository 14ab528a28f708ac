"""The output folder of a training run: its file names and the loss history files."""

from __future__ import annotations

import csv
from pathlib import Path

from aimonk.plots import loss_curve_figure

MODEL_FILE = "aimonk_model.pth"
STATE_FILE = "train_state.pth"
HISTORY_FILE = "loss_history.csv"
CURVE_FILE = "loss_curve.png"


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporary files left by a run killed while saving (they never replaced a good file)."""
    for name in (STATE_FILE, MODEL_FILE):
        for stale in Path(out_dir).glob(f".{name}.*.tmp"):
            stale.unlink()


def write_history(out_dir: Path, history: list[float]) -> None:
    """`loss_history.csv` (iteration_number,training_loss) and `loss_curve.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / HISTORY_FILE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["iteration_number", "training_loss"])
        writer.writerows((i, f"{loss:.8g}") for i, loss in enumerate(history, start=1))
    loss_curve_figure(history).savefig(out_dir / CURVE_FILE, dpi=100)
