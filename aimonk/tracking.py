"""Extra (aimonk[tensorboard]): a training run followed in TensorBoard, as PyTorch users follow theirs.

`aimonk train --tensorboard` (or `--log-dir DIR`) hands the run a `TensorBoard` watcher (the `Watcher` seam of
`aimonk.train.training`): event files with the training loss per iteration, the validation loss, mAP and each
attribute's AP per epoch, the settings with the final validation mAP (`add_hparams`) and the loss curve. Each run
writes into a folder of its own, named after the UTC time it started, so that one `tensorboard --logdir` compares runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from aimonk.card import loss_curve_figure
from aimonk.config import TrainConfig
from aimonk.errors import AimonkError

if TYPE_CHECKING:
    from aimonk.train.training import TrainingRun

FOLDER = "tensorboard"  # inside the output folder, unless --log-dir says where


class TensorBoard:
    """A `Watcher` writing TensorBoard event files into `folder`."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AimonkError('--tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"') from None
        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))
        self.written = 0  # iterations whose loss is in the event file

    @classmethod
    def for_run(cls, config: TrainConfig) -> TensorBoard:
        """The writer of this run: a new folder under --log-dir, or under OUT_DIR/tensorboard."""
        root = Path(config.log_dir) if config.log_dir else Path(config.out_dir) / FOLDER
        return cls(root / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))

    def start(self, run: TrainingRun) -> None:
        """A resumed run's iterations and epochs so far (`--resume`), so that its curves are whole here too."""
        self._losses(run.history)
        for row in run.epochs:
            self.epoch(row, run.data.table.attributes)

    def iteration(self, number: int, loss: float) -> None:
        self.writer.add_scalar("train/loss", loss, number)
        self.written = number

    def epoch(self, row: dict, attributes: list[str]) -> None:
        step = row["epoch"]
        self.writer.add_scalar("train/epoch_loss", row["training_loss"], step)
        if row["validation_mAP"] is not None:
            self.writer.add_scalar("validation/loss", row["validation_loss"], step)
            self.writer.add_scalar("validation/mAP", row["validation_mAP"], step)
            for name, ap in zip(attributes, row["ap"], strict=True):
                self.writer.add_scalar(f"validation/AP/{name}", ap, step)
        self.writer.flush()

    def end(self, run: TrainingRun) -> None:
        """The iterations not yet written (a full-batch solver records them as it fits), the loss curve, and the
        settings with the kept epoch's validation mAP."""
        self._losses(run.history)
        self.writer.add_figure("loss_curve", loss_curve_figure(run.history), len(run.history))
        settings = {name: value if isinstance(value, (int, float, str, bool)) else str(value)
                    for name, value in run.config.to_dict().items()}
        kept = next((row for row in run.epochs if row["epoch"] == (run.best or {}).get("epoch")),
                    run.epochs[-1] if run.epochs else None)
        final = {"hparam/training_loss": run.history[-1]}
        if kept is not None and kept["validation_mAP"] is not None:
            final["hparam/validation_mAP"] = kept["validation_mAP"]
        self.writer.add_hparams(settings, final, run_name=".")  # into this run's folder, not a new one
        self.writer.close()

    def _losses(self, history: list[float]) -> None:
        for number in range(self.written + 1, len(history) + 1):
            self.iteration(number, history[number - 1])
