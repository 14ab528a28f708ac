"""SOLVERS and LR_SCHEDULES: how the trainable weights are fitted once data, model and loss are ready.

A solver takes a `TrainingRun` and appends one training loss per iteration to `run.history`.
- adam: minibatches over the sampler's epoch plans; saves the resumable state as it goes.
- lbfgs: the linear head fitted full-batch on the frozen features (convex with bce), its L2 strength chosen per
  attribute on folds of the training images only, as in the linear-probe protocol of CLIP and DINO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from aimonk.data import TrainingData
from aimonk.distributed import Distributed, peer_lost
from aimonk.errors import AimonkError, ImageReadError
from aimonk.images import ImageDataset, Preprocessing, collate_readable
from aimonk.labels import LabelTable
from aimonk.linear_heads import choose_l2, fit_linear_heads, fold_of_images
from aimonk.losses import NA_MODES, EntryLoss, masked_loss
from aimonk.model import AttributeClassifier, TrainedPart
from aimonk.registry import Registry
from aimonk.resume import TrainingInterrupted, frozen_fingerprint, held_interrupts, save_train_state
from aimonk.runtime import BackboneRunner, inference_backbone
from aimonk.sampling import SAMPLERS, Plan, epoch_plan

if TYPE_CHECKING:
    from aimonk.config import TrainConfig


@dataclass
class TrainingRun:
    """What a solver works with: settings, model, data, loss, where to save, and the state to continue from."""

    config: TrainConfig
    model: AttributeClassifier
    data: TrainingData
    terms: EntryLoss  # per-entry loss of LOSSES[config.loss]
    pos_weight: torch.Tensor | None
    preprocessing: Preprocessing
    out_dir: Path
    resumed: dict | None = None  # the saved state of an interrupted run
    history: list[float] = field(default_factory=list)
    report: list[str] = field(default_factory=list)  # lines the run ends with (e.g. the L2 strengths chosen)
    dist: Distributed = field(default_factory=Distributed)  # this process's place in a torchrun job

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def train_table(self) -> LabelTable:
        return self.data.table.subset(self.data.train_rows)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch: the config's NA mode, then its loss averaged over the entries that count."""
        targets, known = NA_MODES[self.config.na_mode](targets, known.bool())
        return masked_loss(self.terms, logits, targets, known, self.pos_weight)


@dataclass(frozen=True)
class Solver:
    fit: Callable[[TrainingRun], None]
    full_batch: bool  # fits on every training image's frozen features at once (held in memory; no epochs)


SOLVERS: Registry[Solver] = Registry("solver")
LR_SCHEDULES: Registry[Callable[[int, int, int], float]] = Registry("learning-rate schedule")


@LR_SCHEDULES.register("constant")
def constant(step: int, total: int, warmup: int) -> float:
    """the same learning rate throughout (after any warm-up; the reference)"""
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


@LR_SCHEDULES.register("cosine")
def cosine(step: int, total: int, warmup: int) -> float:
    """linear warm-up, then cosine decay to zero at the last iteration"""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def parameter_groups(model: AttributeClassifier, config: TrainConfig) -> list[dict]:
    """Head and trainable backbone stages (at lr x backbone_lr_factor); no weight decay on biases and norms."""
    groups = []
    for module, lr in ((model.head, config.lr), (model.trainable_part, config.lr * config.backbone_lr_factor)):
        parameters = list(module.parameters())
        for decay in (True, False):
            chosen = [p for p in parameters if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "base_lr": lr,
                               "weight_decay": config.weight_decay if decay else 0.0})
    return groups


def fit_adam(run: TrainingRun) -> None:
    config, model, dist = run.config, run.model, run.dist
    train_table = run.train_table
    optimizer = torch.optim.Adam(parameter_groups(model, config), lr=config.lr, decoupled_weight_decay=True)
    epoch, step = 0, 0
    if run.resumed is not None:
        optimizer.load_state_dict(run.resumed["optimizer"])
        epoch, step = run.resumed["epoch"], run.resumed["step"]

    frozen_sha256 = frozen_fingerprint(model)

    def save_state() -> None:
        if not dist.is_main:
            return
        save_train_state(
            run.out_dir, config=asdict(config), model=model, frozen_sha256=frozen_sha256,
            optimizer=optimizer.state_dict(), history=run.history, epoch=epoch, step=step,
            train_files=train_table.filenames,
        )

    visits = SAMPLERS[config.sampler](train_table, config)
    plans = [epoch_plan(visits, config.batch_size, config.seed, e) for e in range(config.epochs)]
    total = sum(map(len, plans))
    schedule = LR_SCHEDULES[config.lr_schedule]
    counted = NA_MODES[config.na_mode](train_table.targets, train_table.known)[1]  # entries the loss averages over
    trained = dist.wrap(TrainedPart(model, config.precision))  # DistributedDataParallel under torchrun
    bar = tqdm(total=total, initial=len(run.history), desc="training", unit="it", disable=not config.progress)
    model.train()
    threads = torch.get_num_threads()
    if run.data.features is not None and not model.trainable_stages:
        torch.set_num_threads(1)  # steps of the head alone are tiny: 25x slower when threads wait on a busy CPU
    try:
        while epoch < config.epochs:
            # Every process follows the same plan and takes its share of each batch.
            batches = plans[epoch][step:]
            shares = [dist.shard(batch) for batch in batches]
            for batch, share, (frozen, targets, known) in zip(batches, shares, feature_batches(run, shares),
                                                             strict=True):
                factor = schedule(len(run.history), total, config.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                # The mean over this share's known entries, weighed by its part of the whole batch's: summed over
                # the processes, the batch's mean (times the world size, as DistributedDataParallel averages).
                part = dist.world_size * _entries(counted, share) / max(_entries(counted, batch), 1)
                loss = run.loss(trained(frozen), targets.to(run.device), known.to(run.device)) * part
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                value = (dist.sum(loss.detach()) / dist.world_size).item()
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
        if not isinstance(stop, KeyboardInterrupt) and not peer_lost(stop):
            raise
        # Ctrl-C, or under torchrun a SIGTERM or another process gone: the weights are those of the last whole step.
        with suppress(KeyboardInterrupt), held_interrupts():  # a second signal does not cut the save short
            save_state()
        raise TrainingInterrupted(str(run.out_dir)) from None
    finally:
        bar.close()
        torch.set_num_threads(threads)


def _entries(counted: np.ndarray, batch: list[tuple[int, bool]]) -> int:
    """How many entries of the batch's rows the loss averages over."""
    return int(counted[[row for row, _ in batch]].sum())


def feature_batches(run: TrainingRun, plan: Plan) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(output of the frozen stages on the run's device, targets, known) per planned batch of training rows.

    The frozen stages' outputs come from the cache, or from images run through the same BatchNorm-folded frozen
    stages, so both paths compute the same thing (`TrainedPart` then runs the trainable stages and the head). A
    planned batch may be empty: a process's share of a batch smaller than the job.
    """
    device, data, model = run.device, run.data, run.model
    table = data.table
    if data.features is not None:
        for batch in plan:
            rows = data.train_rows[[row for row, _ in batch]]
            flips = torch.tensor([int(flip) for _, flip in batch], dtype=torch.long)
            frozen = data.features[torch.as_tensor(rows, dtype=torch.long), flips].to(device)
            yield frozen, torch.from_numpy(table.targets[rows]), torch.from_numpy(table.known[rows])
        return
    rows = data.train_rows
    dataset = ImageDataset(data.paths(rows), table.targets[rows], table.known[rows], run.preprocessing)
    loader = DataLoader(dataset, batch_sampler=plan, num_workers=run.config.workers, collate_fn=collate_readable)
    frozen_runner = BackboneRunner(inference_backbone(model.frozen_part), run.config.precision) \
        if len(model.frozen_part) else None
    size, attributes = run.preprocessing.image_size, len(table.attributes)
    for batch in loader:
        if batch["errors"]:
            raise ImageReadError("; ".join(message for _, message in batch["errors"]))
        if batch["image"] is None:  # an empty share
            batch = {"image": torch.zeros(0, 3, size, size), "targets": torch.zeros(0, attributes),
                     "known": torch.zeros(0, attributes, dtype=torch.bool)}
        images = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        frozen = frozen_runner.features(images) if frozen_runner else images
        yield frozen, batch["targets"], batch["known"]


def fit_lbfgs(run: TrainingRun) -> None:
    config, model, data = run.config, run.model, run.data
    if model.trainable_stages or data.features is None:
        raise AimonkError("the lbfgs solver fits the head on frozen features: use --trainable-stages 0 "
                          "(or --solver adam to fine-tune)")
    table = run.train_table
    features = data.features[torch.as_tensor(data.train_rows)].double()  # (images, 2 orientations, dim)
    if model.input_scaling is not None:
        mean, scale = model.input_scaling
        features = (features - mean.double()) / scale.double()
    rows = features.reshape(-1, features.shape[-1])  # both orientations of an image, next to each other
    targets, known = NA_MODES[config.na_mode](torch.from_numpy(table.targets).double(), torch.from_numpy(table.known))
    targets, known = targets.repeat_interleave(2, 0), known.repeat_interleave(2, 0)
    visits = torch.from_numpy(SAMPLERS[config.sampler](table, config)).double().repeat_interleave(2)
    pos_weight = None if run.pos_weight is None else run.pos_weight.double().cpu()

    folds = fold_of_images(table, config.cv_folds, config.seed)
    if folds is None:
        l2 = torch.full((len(table.attributes),), 1e-2, dtype=torch.float64)
        run.report.append(f"lbfgs: too few training images for {config.cv_folds} folds; L2 1e-2 for every attribute")
    else:
        l2 = choose_l2(run.terms, rows, targets, known, visits, pos_weight, folds.repeat_interleave(2))
        chosen = ", ".join(f"{name} {value:.0e}" for name, value in zip(table.attributes, l2.tolist(), strict=True))
        run.report.append(f"lbfgs: L2 per attribute, chosen on {config.cv_folds} folds of the training images: "
                          f"{chosen}")

    def record(weight: torch.Tensor, bias: torch.Tensor) -> None:
        logits = rows @ weight[0].T + bias[0]
        run.history.append(masked_loss(run.terms, logits, targets, known, pos_weight).item())

    weight, bias = fit_linear_heads(rows, targets, known, visits[None], pos_weight, l2[None], run.terms, record)
    with torch.no_grad():
        model.head.weight.copy_(weight[0])
        model.head.bias.copy_(bias[0])


SOLVERS.add("adam", Solver(fit_adam, full_batch=False),
            "minibatch Adam over the sampler's epoch plans (the reference); resumable; fine-tunes stages too")
SOLVERS.add("lbfgs", Solver(fit_lbfgs, full_batch=True),
            "full-batch L-BFGS of the head on frozen features, L2 per attribute chosen on training folds; seconds")
