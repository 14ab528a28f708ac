"""The training run, read top to bottom: labels, model, data (with cached features), loss, solver, outputs; then
the minibatch loop of the `adam` solver (the reference), with its resumable state and interrupts.

Every choice is a TrainConfig setting whose valid values come from a registry. Under torchrun every process runs
this same recipe on its share of the work, and rank 0 (`distributed.is_main()`) alone reports and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aimonk import distributed
from aimonk.config import TrainConfig
from aimonk.data.images import ImageDataset, Preprocessing, image_batches
from aimonk.data.labels import LabelTable, read_labels
from aimonk.data.sampling import Plan, cached_batches, epoch_plan
from aimonk.io import MODEL_FILE, STATE_FILE, output_lock, remove_stale_temporaries
from aimonk.model.classifier import AttributeClassifier, TrainedPart, build_model
from aimonk.model.losses import EntryLoss, large_loss_share, na_mode_loss
from aimonk.model.runtime import BackboneRunner, inference_backbone
from aimonk.registry import BACKBONES, LOSSES, LR_SCHEDULES, NA_MODES, POS_WEIGHTS, SAMPLERS, SOLVERS
from aimonk.train.divergence import refuse_diverged, refuse_overflow
from aimonk.train.optim import parameter_groups
from aimonk.train.outputs import write_outputs
from aimonk.train.prepare import TrainingData, prepare_data
from aimonk.train.resume import (
    TrainingInterrupted,
    frozen_fingerprint,
    held_interrupts,
    labels_digest,
    load_train_state,
    restore_run,
    resume_optimizer,
    resumed_config,
    save_train_state,
    seed_everything,
)


@dataclass
class TrainResult:
    model_path: Path
    history: list[float]
    data: TrainingData
    config: TrainConfig  # the settings that ran (those of the interrupted run, after --resume)
    report: list[str]  # what the solver chose, for the user
    model: AttributeClassifier  # as saved (standardisation folded into the head)
    learned: LabelTable  # the labels it learned from: `data.table`, with the fills of an NA mode that completes


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train and write the checkpoint, loss history and loss curve into `config.out_dir`.

    With `resume`, continue the run whose state was saved in `out_dir`, exactly: with that run's settings (those
    given in `config.given` must be the same, but for PLACES) and its training images and labels, or not at all.
    Ctrl-C (or SIGTERM) once training has begun saves the state (resume later) and raises TrainingInterrupted.
    The output folder is locked for the run: another run into it fails at once (AimonkError).
    """
    config.check()  # before anything is written (a resumed run's own settings are checked once read)
    writer = distributed.start(config.device).is_main  # first: under torchrun, SIGTERM as Ctrl-C outlives the block
    with distributed.sigterm_as_interrupt(), output_lock(config.out_dir) if writer else nullcontext():
        return _train(config, resume)


def _train(config: TrainConfig, resume: bool) -> TrainResult:
    out_dir = Path(config.out_dir)
    state = load_train_state(out_dir) if resume else None
    if state is not None:
        config = resumed_config(state["config"], out_dir / STATE_FILE, config)
        config.check()
    device = distributed.start(config.device).device  # a resumed run's device comes from its saved settings
    if distributed.is_main():
        remove_stale_temporaries(out_dir)
    else:
        config = config.replace(progress=False)
    seed_everything(config.seed)

    labelled = read_labels(config.labels_path)
    model, weights_origin = build_model(len(labelled.attributes), config.backbone, config.weights,
                                        config.trainable_stages)
    model.to(device=device, memory_format=torch.channels_last)
    spec = BACKBONES[config.backbone]
    preprocessing = Preprocessing(config.image_size, spec.mean, spec.std, config.resize)
    mode = NA_MODES[config.na_mode]
    keep_features = config.feature_cache or SOLVERS[config.solver].full_batch or mode.completes is not None
    data = prepare_data(config, labelled, model, preprocessing, keep_features)

    learned, report = mode.completes(config, data) if mode.completes else (data.table, [])
    targets, known = mode.counted(learned.targets, learned.known)
    counted = replace(learned, targets=targets, known=known)  # the labels as the loss counts them
    pos_weight = POS_WEIGHTS[config.pos_weight](targets[data.train_rows], known[data.train_rows])
    run = TrainingRun(config, model, replace(data, table=learned), counted, LOSSES[config.loss](config),
                      None if pos_weight is None else pos_weight.to(device), preprocessing, out_dir, report=report)
    if config.standardise_features:  # from the weights the run starts with, so a resumed run gets the same
        model.standardise_head_input(head_inputs(run))
    if state is not None:
        restore_run(model, state, run.train_table, out_dir / STATE_FILE)
        run.history, run.resumed = list(state["history"]), state

    SOLVERS[config.solver].fit(run)
    model.fold_input_scaling()
    refuse_diverged(model, run.history, SOLVERS[config.solver].diverged_hint)
    model_path = out_dir / MODEL_FILE
    if distributed.is_main():
        try:
            write_outputs(out_dir, model, data, config, weights_origin, preprocessing.as_dict(), run.history)
        except KeyboardInterrupt:  # the finished run's state is saved: `--resume` writes these files again
            raise TrainingInterrupted(str(out_dir)) from None
    return TrainResult(model_path, run.history, data, config, run.report, model, learned)


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

    @property
    def train_table(self) -> LabelTable:
        return self.data.table.subset(self.data.train_rows)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, epoch: int = 0) -> torch.Tensor:
        """A batch's training loss from its labels as read: the config's loss and NA mode, at `epoch` (0-based)."""
        share = large_loss_share(epoch, self.config.ll_delta_rel)
        return na_mode_loss(NA_MODES[self.config.na_mode], self.terms, logits, targets, known, self.pos_weight, share)


@dataclass(frozen=True)
class Solver:
    fit: Callable[[TrainingRun], None]
    full_batch: bool  # fits on every training image's frozen features at once (held in memory; no epochs)
    diverged_hint: str = "try --solver adam, or other --weights"  # what to do when its weights end up not finite


def fit_adam(run: TrainingRun) -> None:
    config, model, world = run.config, run.model, distributed.world()
    optimizer = torch.optim.Adam(parameter_groups(model, config), lr=config.lr, decoupled_weight_decay=True)
    epoch, step = resume_optimizer(optimizer, run.resumed)
    hint = SOLVERS[config.solver].diverged_hint
    # What identifies the run does not change as it goes: found once, not at every save (every step, at worst)
    identity = {"config": config.to_dict(), "frozen_sha256": frozen_fingerprint(model),
                "train_files": run.train_table.filenames, "labels_sha256": labels_digest(run.train_table)}

    def save_state() -> None:  # never a diverged state: a resumed run would go on from weights that are not finite
        refuse_diverged(model, run.history, hint)
        if distributed.is_main():
            save_train_state(run.out_dir, model=model, optimizer=optimizer.state_dict(), history=run.history,
                             epoch=epoch, step=step, **identity)

    visits = SAMPLERS[config.sampler](run.train_table, config)
    plans = [epoch_plan(visits, config.batch_size, config.seed, e) for e in range(config.epochs)]
    total = sum(map(len, plans))
    schedule = LR_SCHEDULES[config.lr_schedule]
    counted = run.counted.known[run.data.train_rows]  # entries the loss averages over, per training image
    trained = world.wrap(TrainedPart(model, config.precision))  # DistributedDataParallel under torchrun
    bar = tqdm(total=total, initial=len(run.history), desc="training", unit="it", disable=not config.progress)
    model.train()
    threads = torch.get_num_threads()
    if run.data.head_inputs_cached(model):
        torch.set_num_threads(1)  # steps of the head alone are tiny: 25x slower when threads wait on a busy CPU
    try:
        while epoch < config.epochs:
            # Every process follows the same plan and takes its share of each batch.
            batches = plans[epoch][step:]
            shares = [world.shard(batch) for batch in batches]
            for batch, share, (frozen, targets, known) in zip(batches, shares, step_inputs(run, shares), strict=True):
                factor = schedule(len(run.history), total, config.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                # The mean over this share's known entries, weighed by its part of the whole batch's: summed over
                # the processes, the batch's mean (times the world size, as DistributedDataParallel averages).
                part = world.world_size * _entries(counted, share) / max(_entries(counted, batch), 1)
                loss = run.loss(trained(frozen), targets.to(frozen.device), known.to(frozen.device), epoch) * part
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                value = (world.sum(loss.detach()) / world.world_size).item()
                with held_interrupts():  # so a saved state never has the weights and the step count disagree
                    optimizer.step()
                    run.history.append(value)
                    step += 1
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{run.history[-1]:.4f}")
                if config.checkpoint_every and len(run.history) % config.checkpoint_every == 0:
                    save_state()
            with held_interrupts():
                epoch, step = epoch + 1, 0
            save_state()
    except (KeyboardInterrupt, RuntimeError) as stop:
        refuse_overflow(stop, len(run.history), hint)
        if not isinstance(stop, KeyboardInterrupt) and not distributed.peer_lost(stop):
            raise
        # Ctrl-C, or under torchrun a SIGTERM or another process gone: the weights are those of the last whole step.
        with suppress(KeyboardInterrupt), held_interrupts():  # a second signal does not cut the save short
            save_state()
        raise TrainingInterrupted(str(run.out_dir)) from None
    finally:
        bar.close()
        torch.set_num_threads(threads)


SOLVERS.add("adam", Solver(fit_adam, full_batch=False, diverged_hint="lower --lr"),
            "minibatch Adam over the sampler's epoch plans (the reference); resumable; fine-tunes stages too")


def step_inputs(run: TrainingRun, plan: Plan) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(output of the frozen stages on the run's device, targets, known as read) per planned batch of training rows.

    From the cache, or from images run through the same BatchNorm-folded frozen stages: both compute the same
    thing (`TrainedPart` then runs the trainable stages and the head)."""
    data, labels, device = run.data, run.data.table, distributed.world().device
    if data.features is not None:
        yield from cached_batches(data.features, data.train_rows, labels.targets, labels.known, plan, device)
        return
    rows = data.train_rows
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


def _entries(counted: np.ndarray, batch: list[tuple[int, bool]]) -> int:
    """How many entries of the batch's rows the loss averages over."""
    return int(counted[[row for row, _ in batch]].sum())
