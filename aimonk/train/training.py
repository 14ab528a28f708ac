"""The training run, read top to bottom: labels, model (or the weights of a saved one, `--init-from`), data (the
frozen stages' features, once), loss, the previous model kept, solver (the validation images scored after each
epoch, the best epoch kept under `--patience`), the validation images scored, outputs.

Every choice is a TrainConfig setting whose valid values come from a registry. Under torchrun every process runs
this same recipe on its share of the work, and rank 0 (`world.WORLD.is_main`) alone reports and writes. The solvers
(`aimonk.train.adam`, the reference, and `aimonk.train.lbfgs`) fit the trainable weights of a `TrainingRun`.
"""

from __future__ import annotations

import math
import random
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from aimonk import world
from aimonk.card import write_history, write_metrics, write_model_card
from aimonk.checkpoint import (
    DecisionRule,
    data_record,
    load_checkpoint,
    load_train_state,
    model_checkpoint,
    save_checkpoint,
)
from aimonk.config import TrainConfig, resumed_config
from aimonk.data.images import (
    ImageDataset,
    Plan,
    Preprocessing,
    cached_batches,
    collate_readable,
    drop_missing_images,
    image_batches,
    report_unusable_images,
)
from aimonk.data.labels import LabelFormat, LabelTable, read_labels, stratified_split
from aimonk.errors import AimonkError
from aimonk.io import (
    MODEL_FILE,
    STATE_FILE,
    file_digest,
    finish_moves,
    keep_previous_run,
    listed,
    output_lock,
    remove_stale_temporaries,
    sigterm_as_interrupt,
)
from aimonk.model.backbones import preprocessing_for, sized_for_backbone
from aimonk.model.classifier import (
    AttributeClassifier,
    EntryLoss,
    TrainedPart,
    build_model,
    masked_loss,
    na_mode_loss,
)
from aimonk.model.features import BackboneRunner, Stores, features_of, inference_backbone
from aimonk.registry import LOSSES, NA_MODES, POS_WEIGHTS, SOLVERS

if TYPE_CHECKING:  # the metrics (scikit-learn, pandas) are imported when a run holds images out, not before
    from aimonk.metrics import Scores


@dataclass
class TrainResult:
    model_path: Path
    history: list[float]
    data: TrainingData
    config: TrainConfig  # the settings that ran (those of the interrupted run, after --resume)
    report: list[str]  # what the solver chose, for the user
    model: AttributeClassifier  # as saved (standardisation folded into the head)
    learned: LabelTable  # the labels it learned from: `data.table`, with the fills of an NA mode that completes
    validation: Scores | None  # the saved model on its validation images, at the untuned decision rule (rank 0)
    record: dict | None  # `evaluate` of them, as the checkpoint's `validation` entry holds it
    training: dict  # the checkpoint's `training` entry: epochs run, the one kept, why it stopped, where it started
    previous: Path | None  # where the model this run replaced was moved (OUT_DIR/runs/...), if there was one


class Watcher(Protocol):
    """What follows a run as it goes, on rank 0 (the TensorBoard writer of `aimonk.tracking`, given by the command
    line): the run at its start (a resumed one with its history), each iteration's loss, each epoch's row of
    metrics.csv, and the run at its end."""

    def start(self, run: TrainingRun) -> None: ...
    def iteration(self, number: int, loss: float) -> None: ...
    def epoch(self, row: dict, attributes: list[str]) -> None: ...
    def end(self, run: TrainingRun) -> None: ...


def train(config: TrainConfig, resume: bool = False, stores: Stores | None = None,
          watchers: list[Watcher] | None = None, labels: Any = None) -> TrainResult:
    """Train and write the checkpoint, loss history, loss curve and model card into `config.out_dir`.

    With `resume`, continue the run whose state was saved in `out_dir`, exactly: with that run's settings (those
    given in `config.given` must be the same, but for PLACES) and its training images and labels, or not at all.
    `stores` keeps the frozen stages' features between runs (`aimonk.cache.config_stores`); without, they are
    computed once for this run. `labels` (a pandas DataFrame, or a LabelTable) replaces the labels file: read as a
    CSV with `config`'s label format would be. Ctrl-C (or SIGTERM) once training has begun saves the state (resume
    later) and raises TrainingInterrupted. The output folder is locked for the run: another run into it fails at once
    (AimonkError). A new run (not `resume`) into a folder holding a model first moves that model and its files into
    OUT_DIR/runs/<UTC time>/, once its input was read and just before training begins. `watchers` follow the run.
    """
    config.check()  # before anything is written (a resumed run's own settings are checked once read)
    writer = world.start(config.device).is_main  # first: under torchrun, SIGTERM as Ctrl-C outlives the block
    with sigterm_as_interrupt(), output_lock(config.out_dir) if writer else nullcontext():
        return _train(config, resume, stores, (watchers or []) if writer else [], labels)


def _train(config: TrainConfig, resume: bool, stores: Stores | None, watchers: list[Watcher],
           labels: Any) -> TrainResult:
    out_dir = Path(config.out_dir)
    state = load_train_state(out_dir) if resume else None
    if state is not None:
        config = resumed_config(state["config"], out_dir / STATE_FILE, config)
        config.check()
    config = sized_for_backbone(config)
    device = world.start(config.device).device  # a resumed run's device comes from its saved settings
    if world.WORLD.is_main:
        for kept in finish_moves(out_dir):  # --init-from OUT_DIR's model follows it where the move took it
            started = kept_start({"path": config.init_from} if config.init_from else None, out_dir, kept)
            config = config if started is None else config.replace(init_from=started["path"])
        remove_stale_temporaries(out_dir)
    else:
        config = config.replace(progress=False)
    seed_everything(config.seed)

    labelled = labels if isinstance(labels, LabelTable) else read_labels(
        config.labels_path if labels is None else labels, LabelFormat.of(config))
    model, weights_origin = build_model(len(labelled.attributes), config.backbone,
                                        "none" if config.init_from else config.weights, config.trainable_stages)
    started_from = None
    if config.init_from:
        started_from, weights_origin = start_from(model, Path(config.init_from), labelled.attributes, config.backbone)
    model.to(device=device, memory_format=torch.channels_last)
    preprocessing = preprocessing_for(config.backbone, config.image_size, config.resize)
    mode = NA_MODES[config.na_mode]
    keep_features = config.feature_cache or SOLVERS[config.solver].full_batch or mode.completes is not None
    data = prepare_data(config, labelled, model, preprocessing, keep_features, stores)

    learned, report = mode.completes(config, data) if mode.completes else (data.table, [])
    targets, known = mode.counted(learned.targets, learned.known)
    counted = replace(learned, targets=targets, known=known)  # the labels as the loss counts them
    pos_weight = POS_WEIGHTS[config.pos_weight](targets[data.train_rows], known[data.train_rows])
    run = TrainingRun(config, model, replace(data, table=learned), counted, LOSSES[config.loss](config),
                      None if pos_weight is None else pos_weight.to(device), preprocessing, out_dir, report=report,
                      watchers=watchers)
    if config.standardise_features:  # from the weights the run starts with, so a resumed run gets the same
        model.standardise_head_input(head_inputs(run), keep_outputs=started_from is not None)
    run.resumed = state  # the solver (adam) continues from it
    previous = None
    if world.WORLD.is_main and state is None:
        previous = keep_previous_run(out_dir)
        if previous is not None:
            run.say(f"{out_dir / MODEL_FILE} was a model of an earlier run: moved with its files to {previous}")
            started_from = kept_start(started_from, out_dir, previous)
            if started_from is not None and started_from["path"] != config.init_from:  # where --resume finds it
                config = run.config = config.replace(init_from=started_from["path"])
    for watcher in run.watchers:
        watcher.start(run)

    SOLVERS[config.solver].fit(run)
    run.keep_best()
    model.fold_input_scaling()
    refuse_diverged(model, run.history, SOLVERS[config.solver].diverged_hint)
    model_path, validation, record = out_dir / MODEL_FILE, None, None
    training = run.training_record(started_from)
    if world.WORLD.is_main:  # rank 0 alone scores and writes
        try:
            validation, record = validation_scores(run) if len(data.val_rows) else (None, None)
            write_outputs(model_path, run, data, weights_origin, record, training, labels is None)
            for watcher in run.watchers:
                watcher.end(run)
        except KeyboardInterrupt:  # the finished run's state is saved: `--resume` writes these files again
            raise TrainingInterrupted(str(out_dir)) from None
    return TrainResult(model_path, run.history, data, config, run.report, model, learned, validation, record,
                       training, previous)


def start_from(model: AttributeClassifier, path: Path, attributes: list[str], backbone: str) -> tuple[dict, str]:
    """Load the weights of the checkpoint at `path` (`--init-from`) into `model`; where they came from (the
    checkpoint's path and SHA-256) and its backbone weights' origin. Refused in one line naming what differs if it
    has another backbone or other attributes."""
    checkpoint = load_checkpoint(path)
    differ = [f"{what} {theirs}, not {ours} as here" for what, theirs, ours in (
        ("backbone", checkpoint["backbone"], backbone), ("attributes", checkpoint["attributes"], list(attributes)))
        if theirs != ours]
    if differ:
        raise AimonkError(f"--init-from {path}: its {'; its '.join(differ)}: a run starts from a model of the same "
                          "backbone and attributes")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise AimonkError(f"--init-from {path}: its weights do not fit a {backbone} model "
                          f"({str(error).splitlines()[-1].strip()})") from None
    return {"path": str(path), "sha256": file_digest(path)}, checkpoint["weights_origin"]


def kept_start(started_from: dict | None, out_dir: Path, kept: Path) -> dict | None:
    """Where the checkpoint a run started from is now, if it was the model in `out_dir`, just moved to `kept`."""
    if started_from is None or Path(started_from["path"]).resolve() != (out_dir / MODEL_FILE).resolve():
        return started_from
    return {**started_from, "path": str(kept / MODEL_FILE)}


@dataclass
class TrainingData:
    """The usable labelled images, which rows train and which validate, and cached features if any."""

    table: LabelTable
    image_dir: Path
    train_rows: np.ndarray
    val_rows: np.ndarray
    features: torch.Tensor | None  # (images, 2, ...): frozen-stage outputs, as is and flipped (bf16 or float32)
    skipped: list[str]  # missing or unreadable images, left out
    processes: int = 1  # that prepared the data, and train
    from_cache: int | None = None  # images whose features the feature store held (all processes); None: none used

    def files(self, rows: np.ndarray) -> list[str]:
        return [self.table.filenames[i] for i in rows]

    def paths(self, rows: np.ndarray) -> list[Path]:
        return [self.image_dir / self.table.filenames[i] for i in rows]

    def head_inputs_cached(self, model: AttributeClassifier) -> bool:
        """Whether the features held are what `model`'s head takes (its backbone is frozen): training and scoring
        then run the head alone."""
        return self.features is not None and not model.trainable_stages


def prepare_data(
    config: TrainConfig, table: LabelTable, model: AttributeClassifier, preprocessing: Preprocessing,
    keep_features: bool, stores: Stores | None = None,
) -> TrainingData:
    """Labelled images that exist -> that decode -> stratified split, of which the training images must have known
    labels (a warning names the attributes that have none there).

    With `keep_features` and frozen stages, each image's frozen-stage output is computed once (or read from its
    store, where `stores` gives one) and kept in memory. Under torchrun, each process decodes and embeds its share
    of the images (into the shared store) and every process gets the whole; rank 0 reports.
    """
    image_dir = config.images_path
    if not image_dir.is_dir():
        raise AimonkError(f"{image_dir}: image folder not found")
    require_known_labels(table, "labelled")  # every label NA: said before any image is read
    table, missing = drop_missing_images(table, image_dir)
    report_left_out("missing", missing, config)
    paths = [image_dir / name for name in table.filenames]
    features, store = None, None
    if keep_features and len(model.frozen_part):
        store = stores(model.frozen_part, preprocessing, config.precision) if stores else None
        features, readable, errors = world.WORLD.in_shares(paths, lambda share: features_of(
            model.frozen_part, share, preprocessing, store, config.precision, num_workers=config.workers,
            progress=progress_bars(config),
        ))
    else:
        _, readable, errors = world.WORLD.in_shares(paths, lambda share: (None, *scan_readable(
            share, preprocessing, config.workers)))
    report_left_out("unreadable", errors, config)
    unreadable = sorted(set(table.filenames) - {table.filenames[i] for i in readable})
    table = table.subset(readable)
    if len(table) == 0:
        raise AimonkError(f"{config.labels_path}: no usable images in {image_dir}")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_rows, val_rows = split_rows(table, config.val_fraction, split_seed)
    if config.hide_labels or config.keep_labels:  # training labels only: validation keeps every known label
        table = table.hide(train_rows, config.hide_labels, config.keep_labels, config.seed)
    require_known_labels(table.subset(train_rows), "training")
    warn_unknown_attributes(table.subset(train_rows))
    job = world.WORLD
    from_cache = sum(job.all_gather(store.hits)) if store else None
    return TrainingData(table, image_dir, train_rows, val_rows, features, missing + unreadable, job.world_size,
                        from_cache)


def require_known_labels(table: LabelTable, kind: str) -> None:
    """Refuse images (`kind`: labelled, training) without a single known label: the loss would count nothing."""
    if not table.known.any():
        raise AimonkError(f"{table.path}: no known label among the {len(table)} {kind} images: nothing to learn from")


def warn_unknown_attributes(table: LabelTable) -> None:
    """Warn (rank 0) of the attributes with no known label among the training images: their outputs learn nothing
    (the loss counts known labels only), the others train as usual."""
    unknown = [name for name, known in zip(table.attributes, table.known.any(axis=0), strict=True) if not known]
    if unknown and world.WORLD.is_main:
        outputs = "its output learns" if len(unknown) == 1 else f"the outputs of these {len(unknown)} learn"
        warnings.warn(f"{table.path}: no known label of {listed(unknown)} among the {len(table)} training images: "
                      f"{outputs} nothing", stacklevel=2)


def split_rows(table: LabelTable, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`stratified_split`, refused in one line naming --val-fraction and the counts where either part would be
    empty (with a fraction above 0: 0 trains on everything)."""
    images = len(table)
    held_out = math.ceil(val_fraction * images)  # as scikit-learn counts them: it refuses to leave none to train on
    if held_out < images:
        train_rows, val_rows = stratified_split(table, val_fraction, seed)
        held_out = len(val_rows)  # iterative stratification may miss that count, down to an empty part
    if val_fraction and not 0 < held_out < images:
        raise AimonkError(f"--val-fraction {val_fraction} on {images} usable images: {held_out} held out for "
                          f"validation, {images - held_out} left to train on; each part needs an image "
                          f"({'lower' if held_out else 'raise'} it, or 0 to train on all of them)")
    return train_rows, val_rows


def report_left_out(kind: str, names: list[str], config: TrainConfig) -> None:
    """Images left out, reported once, by rank 0; under --strict every process stops (rank 0 says why)."""
    if world.WORLD.is_main:
        report_unusable_images(kind, names, config.strict, Path(config.out_dir))
    elif names and config.strict:
        raise AimonkError(f"{len(names)} {kind} image(s) (--strict)")


def scan_readable(paths: list[Path], preprocessing: Preprocessing, num_workers: int) -> tuple[list[int], list[str]]:
    """Decode every image once; indices of the readable ones and messages for the rest."""
    loader = DataLoader(ImageDataset.unlabelled(paths, preprocessing), batch_size=32,
                        num_workers=num_workers, collate_fn=collate_readable)
    failed = dict(error for batch in loader for error in batch["errors"])
    return [i for i in range(len(paths)) if i not in failed], list(failed.values())


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised after the resumable state was saved."""


def progress_bars(config: TrainConfig) -> bool:
    """Whether to draw progress bars: asked for, not --quiet, and on a terminal (a log file gets one line per epoch
    instead, never a bar's carriage returns)."""
    return config.progress and not config.quiet and sys.stderr.isatty()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainingRun:
    """What a solver works with: settings, model, data, loss, where to save, and the state to continue from."""

    config: TrainConfig
    model: AttributeClassifier
    data: TrainingData  # its table: the labels the run learns from (with the fills of an NA mode that completes)
    counted: LabelTable  # the data's labels as the loss counts them (after the NA mode)
    terms: EntryLoss  # per-entry loss of LOSSES[config.loss]
    pos_weight: torch.Tensor | None
    preprocessing: Preprocessing
    out_dir: Path
    resumed: dict | None = None  # the saved state of an interrupted run
    history: list[float] = field(default_factory=list)
    report: list[str] = field(default_factory=list)  # lines the run ends with (e.g. the L2 strengths chosen)
    watchers: list[Watcher] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)  # the rows of metrics.csv: one per epoch (lbfgs: one)
    best: dict | None = None  # under --patience: the epoch of the best validation mAP, that mAP and its weights
    held_out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None  # validation inputs, if kept

    @property
    def train_table(self) -> LabelTable:
        return self.data.table.subset(self.data.train_rows)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """A batch's training loss from its labels as read: the config's loss and NA mode, at `epoch` (0-based)."""
        return na_mode_loss(NA_MODES[self.config.na_mode], self.terms, logits, targets, known, self.pos_weight, epoch,
                            self.config)

    def say(self, line: str) -> None:
        """A line on stderr for the user (rank 0, unless --quiet), above any progress bar."""
        if world.WORLD.is_main and not self.config.quiet:
            tqdm.write(line, file=sys.stderr)
            sys.stderr.flush()

    def continue_from(self, state: dict) -> None:
        """The epochs' rows and the best epoch of the interrupted run whose state this is."""
        self.epochs, self.best = [dict(row) for row in state["epochs"]], state["best"]

    def epoch_row(self, epoch: int, losses: list[float], seconds: float) -> dict:
        """The row of `epoch` (0-based) in metrics.csv: its mean training loss and, with images held out, the
        validation loss (the loss over their known labels: NA ignored) and mAP, each attribute's AP, as the model
        card computes them, with the weights as they are now. Refused (AimonkError) if the run diverged."""
        refuse_diverged(self.model, self.history, SOLVERS[self.config.solver].diverged_hint)
        row = {"epoch": epoch + 1, "training_loss": float(np.mean(losses)) if losses else float("nan"),
               "validation_loss": None, "validation_mAP": None, "ap": None, "seconds": seconds}
        if len(self.data.val_rows):
            from aimonk.metrics import average_precisions, mean_ap

            logits = validation_logits(self)
            table = self.data.table.subset(self.data.val_rows)
            targets, known = torch.from_numpy(table.targets).double(), torch.from_numpy(table.known)
            pos_weight = None if self.pos_weight is None else self.pos_weight.double().cpu()
            loss = masked_loss(self.terms, logits, targets, known, pos_weight).item()
            aps = average_precisions(table, DecisionRule.untuned(table.attributes).probabilities(logits.numpy()))
            row.update(validation_loss=loss, validation_mAP=mean_ap(aps), ap=aps)
        return row

    def end_epoch(self, row: dict) -> bool:
        """Record an epoch's row (see `epoch_row`): shown, written to metrics.csv (validation_curve.png is drawn at
        the end), passed to the watchers; under --patience, its weights kept if its mAP is the best yet. Whether
        --patience says stop."""
        self.epochs.append(row)
        patience, value = self.config.patience, row["validation_mAP"]
        improved = patience and value is not None and (self.best is None or value > self.best["mAP"])
        if improved:
            weights = {name: tensor.detach().clone() for name, tensor in self.model.split_state()[0].items()}
            self.best = {"epoch": row["epoch"], "mAP": value, "model": weights}
        if world.WORLD.is_main:
            total = self.config.epochs if not SOLVERS[self.config.solver].full_batch else 1
            self.say(epoch_line(row, total, bool(improved and row["epoch"] > 1)))
            write_metrics(self.out_dir, self.epochs, self.data.table.attributes, figure=False)  # drawn at the end
            for watcher in self.watchers:
                watcher.epoch(row, self.data.table.attributes)
        return self.stopped_early

    @property
    def stopped_early(self) -> bool:
        """--patience epochs have passed since the best one."""
        patience = self.config.patience
        return bool(patience and self.best is not None and self.epochs
                    and self.epochs[-1]["epoch"] - self.best["epoch"] >= patience)

    def keep_best(self) -> None:
        """Under --patience, the best epoch's weights back into the model (if a later epoch's are in it)."""
        if self.best is not None and self.epochs and self.epochs[-1]["epoch"] != self.best["epoch"]:
            self.model.load_state_dict(self.best["model"], strict=False)

    def training_record(self, started_from: dict | None) -> dict:
        """The checkpoint's `training` entry: the epochs run, the one whose weights are kept, and why it stopped."""
        run = len(self.epochs)
        if SOLVERS[self.config.solver].full_batch:
            kept, stopped = run, f"{self.config.solver} fits the head once, to convergence"
        elif self.stopped_early:
            best = self.best
            kept, stopped = best["epoch"], (f"stopped early: the validation mAP did not improve for "
                                            f"{self.config.patience} epochs after epoch {best['epoch']} "
                                            f"(--patience {self.config.patience}); kept epoch {best['epoch']}, the "
                                            f"best validation mAP ({best['mAP']:.3f})")
        elif self.best is not None:
            kept, stopped = self.best["epoch"], (f"no early stop (--patience {self.config.patience}); kept epoch "
                                                 f"{self.best['epoch']}, the best validation mAP "
                                                 f"({self.best['mAP']:.3f})")
        else:
            kept, stopped = run, "no early stop; the last epoch's weights kept"
        record = {"epochs_run": run, "kept_epoch": kept, "stopped": stopped}
        return record if started_from is None else {**record, "init_from": started_from}


def epoch_line(row: dict, epochs: int, best: bool = False) -> str:
    """`epoch 3/20  loss 0.6412  val_loss 0.6021  val_mAP 0.734  4.1 s`: one epoch, for a log."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['training_loss']:.4f}"]
    if row["validation_mAP"] is not None:
        parts += [f"val_loss {row['validation_loss']:.4f}", f"val_mAP {row['validation_mAP']:.3f}"]
    seconds = row["seconds"]
    took = f"{seconds:.1f} s" if seconds >= 0.1 else f"{1000 * seconds:.0f} ms"
    return "  ".join([*parts, took]) + ("  best" if best else "")


@dataclass(frozen=True)
class Solver:
    fit: Callable[[TrainingRun], None]
    full_batch: bool  # fits on every training image's frozen features at once (held in memory; no epochs)
    diverged_hint: str = "try --solver adam, or other --weights"  # what to do when its weights end up not finite


@torch.no_grad()
def validation_scores(run: TrainingRun) -> tuple[Scores, dict]:
    """The trained model's probabilities on its validation images at the untuned decision rule (the head, and any
    fine-tuned stages, on their frozen features, as `aimonk evaluate` and `aimonk predict` compute them), and
    `evaluate` of them as the checkpoint's `validation` entry."""
    from aimonk.metrics import Scores, validation_record

    table = run.data.table.subset(run.data.val_rows)
    rule = DecisionRule.untuned(table.attributes)
    scores = Scores(table, rule.probabilities(validation_logits(run).numpy()), rule.thresholds, run.data.image_dir)
    run.model.eval()
    return scores, validation_record(scores)[1]


@torch.no_grad()
def validation_logits(run: TrainingRun) -> torch.Tensor:
    """The model's logits (float64, on the CPU) for the run's validation images, unflipped, in eval mode (the mode
    it is in is restored). The frozen stages' outputs come from the features held, or are computed once and kept
    when the head alone trains (a frozen backbone without the feature cache); fine-tuned stages run every time."""
    rows, model = run.data.val_rows, run.model
    plan = [[(i, False) for i in range(start, min(start + 64, len(rows)))] for start in range(0, len(rows), 64)]
    inputs = run.held_out or step_inputs(run, plan, rows)
    if run.data.features is None and not model.trainable_stages and run.held_out is None:
        inputs = run.held_out = list(inputs)
    training = model.training
    model.eval()
    trained = TrainedPart(model, run.config.precision)
    logits = torch.cat([trained(frozen) for frozen, _, _ in inputs])
    model.train(training)
    return logits.double().cpu()


def write_outputs(model_path: Path, run: TrainingRun, data: TrainingData, weights_origin: str,
                  validation: dict | None, training: dict, from_file: bool = True) -> None:
    """`aimonk_model.pth` (with the metrics on the validation images), the loss history and curve, and
    `MODEL_CARD.md`, written from what the run holds: nothing is read back. `data` is the run's data as read: its
    label counts are the labels given, not an NA mode's fills."""
    config = run.config
    checkpoint = model_checkpoint(
        run.model, attributes=data.table.attributes, backbone=config.backbone, weights_origin=weights_origin,
        preprocessing=run.preprocessing.as_dict(), precision=config.precision, train_config=config.to_dict(),
        train_files=data.files(data.train_rows), val_files=data.files(data.val_rows), skipped_files=data.skipped,
        label_counts=label_counts(data), validation=validation, training=training,
        data=data_record(config.labels_path if from_file else None, data.image_dir, model_path),
    )
    save_checkpoint(checkpoint, model_path)
    write_history(model_path.parent, run.history)
    write_metrics(model_path.parent, run.epochs, data.table.attributes, kept=training["kept_epoch"])
    write_model_card(model_path, checkpoint)


def label_counts(data: TrainingData) -> dict:
    """The images a run used, and per attribute its known and positive labels among them (for the model card)."""
    return {"images": len(data.table), "train": len(data.train_rows), "validation": len(data.val_rows),
            "skipped": len(data.skipped), "known": data.table.known.sum(0).tolist(),
            "positive": data.table.positives().sum(0).tolist()}


def step_inputs(run: TrainingRun, plan: Plan, rows: np.ndarray | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(output of the frozen stages on the run's device, targets, known as read) per planned batch of `rows` of the
    run's data (default: its training images).

    From the features held, or from images run through the same BatchNorm-folded frozen stages: both compute the
    same thing (`TrainedPart` then runs the trainable stages and the head)."""
    data, labels, device = run.data, run.data.table, world.WORLD.device
    rows = data.train_rows if rows is None else rows
    if data.features is not None:
        yield from cached_batches(data.features, rows, labels.targets, labels.known, plan, device)
        return
    dataset = ImageDataset(data.paths(rows), labels.targets[rows], labels.known[rows], run.preprocessing)
    frozen_part = run.model.frozen_part
    runner = BackboneRunner(inference_backbone(frozen_part), run.config.precision) if len(frozen_part) else None
    for images, targets, known in image_batches(dataset, plan, run.config.workers):
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        yield (runner.features(images) if runner else images), targets, known


@torch.no_grad()
def head_inputs(run: TrainingRun) -> torch.Tensor:
    """What the head sees for every training image in both orientations (rows x dims), with eval-mode stages."""
    data, rows = run.data, range(len(run.data.train_rows))
    if data.head_inputs_cached(run.model):
        return data.features[torch.as_tensor(data.train_rows)].flatten(0, 1).float()
    plan = [[(row, flip) for row in rows[start : start + 16] for flip in (False, True)]
            for start in range(0, len(rows), 16)]
    run.model.eval()
    trained = TrainedPart(run.model, run.config.precision)
    return torch.cat([trained.features(frozen) for frozen, _, _ in step_inputs(run, plan)])


def refuse_diverged(model: AttributeClassifier, history: list[float], hint: str) -> None:
    """A diverged run fails saying so, never saved: raise AimonkError naming the trained part (head, fine-tuned
    stages) that holds a value that is not finite, or the loss if the last one recorded is not finite (weights so
    large that a logit is infinite)."""
    parts = {"the head's" if name.startswith("head.") else "the fine-tuned stages'"
             for name, tensor in model.split_state()[0].items()
             if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())}
    if parts:
        named = " and ".join(sorted(parts, reverse=True)) + " weights are"  # the head first
    elif history and not math.isfinite(history[-1]):
        named = "the loss is"
    else:
        return
    raise AimonkError(f"training diverged: {named} not finite after {len(history)} iterations; {hint}")

