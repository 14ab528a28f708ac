"""The training recipe, read top to bottom: labels, model, data (with cached features), loss, solver, outputs.

Every choice is a TrainConfig field whose valid values come from a registry; the defaults are the reference recipe:
ResNet18 with a frozen backbone, Adam, lr 1e-5, batch 16, 5 epochs, resize 224 + random horizontal flip +
ImageNet normalisation, BCE over known labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from aimonk.backbones import BACKBONES
from aimonk.checkpoint import save_model_checkpoint
from aimonk.config import TrainConfig
from aimonk.data import TrainingData, prepare_data
from aimonk.errors import AimonkError
from aimonk.images import Preprocessing
from aimonk.labels import read_labels
from aimonk.losses import POS_WEIGHTS, make_criterion
from aimonk.model import build_model
from aimonk.outputs import MODEL_FILE, STATE_FILE, remove_stale_temporaries, write_history
from aimonk.resume import TrainingInterrupted, load_train_state, restore_rng, seed_everything
from aimonk.solvers import SOLVERS, TrainingRun


@dataclass
class TrainResult:
    model_path: Path
    history: list[float]
    data: TrainingData
    config: TrainConfig  # the settings that ran (those of the interrupted run, after --resume)


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train and write the checkpoint, loss history and loss curve into `config.out_dir`.

    With `resume`, continue the run whose state was saved in `out_dir`, with that run's settings.
    Ctrl-C once training has begun saves the state (resume later) and raises TrainingInterrupted.
    """
    out_dir = Path(config.out_dir)
    remove_stale_temporaries(out_dir)
    state = load_train_state(out_dir) if resume else None
    if state is not None:
        config = resumed_config(state["config"], out_dir, config.progress)
    config.check()
    seed_everything(config.seed)
    device = torch.device(config.device)

    labelled = read_labels(config.labels_path)
    model, weights_origin = build_model(len(labelled.attributes), config.backbone, config.weights,
                                        config.train_backbone)
    model.to(device=device, memory_format=torch.channels_last)
    spec = BACKBONES[config.backbone]
    preprocessing = Preprocessing(config.image_size, spec.mean, spec.std)
    data = prepare_data(config, labelled, model, preprocessing)

    train_table = data.table.subset(data.train_rows)
    pos_weight = POS_WEIGHTS[config.pos_weight](train_table.targets, train_table.known)
    criterion = make_criterion(config, None if pos_weight is None else pos_weight.to(device))
    run = TrainingRun(config, model, data, criterion, preprocessing, out_dir)
    if state is not None:
        if state["train_files"] != train_table.filenames:
            raise AimonkError(f"{out_dir / STATE_FILE}: the training images differ from the interrupted run's")
        model.load_state_dict(state["model"])
        run.history, run.resumed = list(state["history"]), state
        restore_rng(state["rng"])

    SOLVERS[config.solver](run)

    try:
        model_path = save_model_checkpoint(
            out_dir / MODEL_FILE, model, attributes=data.table.attributes, backbone=config.backbone,
            weights_origin=weights_origin, preprocessing=preprocessing.as_dict(), precision=config.precision,
            train_config=asdict(config), train_files=data.files(data.train_rows), val_files=data.files(data.val_rows),
            skipped_files=data.skipped,
        )
        write_history(out_dir, run.history)
    except KeyboardInterrupt:  # the finished run's state is saved: `--resume` writes these files again
        raise TrainingInterrupted(str(out_dir)) from None
    return TrainResult(model_path, run.history, data, config)


def resumed_config(saved: dict, out_dir: Path, progress: bool) -> TrainConfig:
    """The interrupted run's settings, in the folder it is resumed from."""
    if not saved.keys() <= {spec.name for spec in fields(TrainConfig)}:
        raise AimonkError(f"{out_dir / STATE_FILE}: the training state's settings are not those of this version "
                          "of aimonk")
    return TrainConfig(**{**saved, "out_dir": str(out_dir), "progress": progress})
