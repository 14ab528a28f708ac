"""The training recipe, read top to bottom: labels, model, data (with cached features), loss, solver, outputs.

Every choice is a TrainConfig field whose valid values come from a registry; the defaults are the reference recipe:
ResNet18 with a frozen backbone, Adam, lr 1e-5, batch 16, 5 epochs, resize 224 + random horizontal flip +
ImageNet normalisation, BCE over known labels.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from aimonk.backbones import BACKBONES
from aimonk.checkpoint import save_model_checkpoint
from aimonk.config import TrainConfig
from aimonk.data import TrainingData, prepare_data
from aimonk.distributed import start
from aimonk.errors import AimonkError
from aimonk.images import Preprocessing
from aimonk.labels import read_labels
from aimonk.lock import output_lock
from aimonk.losses import LOSSES, NA_MODES, POS_WEIGHTS
from aimonk.model import AttributeClassifier, TrainedPart, build_model
from aimonk.outputs import MODEL_FILE, STATE_FILE, remove_stale_temporaries, write_history
from aimonk.resume import TrainingInterrupted, load_train_state, restore_rng, restore_trainable, seed_everything
from aimonk.solvers import SOLVERS, TrainingRun, feature_batches


@dataclass
class TrainResult:
    model_path: Path
    history: list[float]
    data: TrainingData
    config: TrainConfig  # the settings that ran (those of the interrupted run, after --resume)
    report: list[str]  # what the solver chose, for the user
    model: AttributeClassifier  # as saved (standardisation folded into the head)


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train and write the checkpoint, loss history and loss curve into `config.out_dir`.

    With `resume`, continue the run whose state was saved in `out_dir`, with that run's settings.
    Ctrl-C once training has begun saves the state (resume later) and raises TrainingInterrupted.
    Under torchrun every process runs this recipe on its share of the work, and rank 0 alone writes.
    The output folder is locked for the run: another run into it fails at once (AimonkError).
    """
    config.check()  # before anything is written (a resumed run's own settings are checked once read)
    writer = start(config.device).is_main
    with output_lock(config.out_dir) if writer else nullcontext():
        return _train(config, resume)


def _train(config: TrainConfig, resume: bool) -> TrainResult:
    out_dir = Path(config.out_dir)
    state = load_train_state(out_dir) if resume else None
    if state is not None:
        config = resumed_config(state["config"], out_dir, config.progress)
        config.check()
    dist = start(config.device)  # under torchrun: this process's rank and device (every process runs this recipe)
    if dist.is_main:  # rank 0 alone reports and writes into out_dir
        remove_stale_temporaries(out_dir)
    else:
        config = replace(config, progress=False)
    seed_everything(config.seed)
    device = dist.device

    labelled = read_labels(config.labels_path)
    model, weights_origin = build_model(len(labelled.attributes), config.backbone, config.weights,
                                        config.trainable_stages)
    model.to(device=device, memory_format=torch.channels_last)
    spec = BACKBONES[config.backbone]
    preprocessing = Preprocessing(config.image_size, spec.mean, spec.std)
    keep_features = config.feature_cache or SOLVERS[config.solver].full_batch
    data = prepare_data(config, labelled, model, preprocessing, keep_features, dist)

    train_table = data.table.subset(data.train_rows)
    targets, known = NA_MODES[config.na_mode](train_table.targets, train_table.known)
    pos_weight = POS_WEIGHTS[config.pos_weight](targets, known)
    run = TrainingRun(config, model, data, LOSSES[config.loss](config),
                      None if pos_weight is None else pos_weight.to(device), preprocessing, out_dir, dist=dist)
    if config.standardise_features:  # from the weights the run starts with, so a resumed run gets the same
        model.standardise_head_input(head_inputs(run))
    if state is not None:
        if state["train_files"] != train_table.filenames:
            raise AimonkError(f"{out_dir / STATE_FILE}: the training images differ from the interrupted run's")
        restore_trainable(model, state, out_dir / STATE_FILE)
        run.history, run.resumed = list(state["history"]), state
        restore_rng(state["rng"])

    SOLVERS[config.solver].fit(run)
    model.fold_input_scaling()
    if not dist.is_main:
        return TrainResult(out_dir / MODEL_FILE, run.history, data, config, run.report, model)

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
    return TrainResult(model_path, run.history, data, config, run.report, model)


@torch.no_grad()
def head_inputs(run: TrainingRun) -> torch.Tensor:
    """What the head sees for every training image in both orientations (rows x dims), with eval-mode stages."""
    data, rows = run.data, range(len(run.data.train_rows))
    if data.features is not None and not run.model.trainable_stages:
        return data.features[torch.as_tensor(data.train_rows)].flatten(0, 1).float()
    plan = [[(row, flip) for row in rows[start : start + 16] for flip in (False, True)]
            for start in range(0, len(rows), 16)]
    run.model.eval()
    trained = TrainedPart(run.model, run.config.precision)
    return torch.cat([trained.features(frozen) for frozen, _, _ in feature_batches(run, plan)])


def resumed_config(saved: dict, out_dir: Path, progress: bool) -> TrainConfig:
    """The interrupted run's settings, in the folder it is resumed from."""
    if not saved.keys() <= {spec.name for spec in fields(TrainConfig)}:
        raise AimonkError(f"{out_dir / STATE_FILE}: the training state's settings are not those of this version "
                          "of aimonk")
    return TrainConfig(**{**saved, "out_dir": str(out_dir), "progress": progress})
