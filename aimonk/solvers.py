"""SOLVERS: how the trainable weights are fitted once data, model and loss are ready.

A solver entry takes a `TrainingRun` and appends one training loss per iteration to `run.history`; it saves the
resumable state as it goes if it supports `--resume`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from aimonk.data import TrainingData
from aimonk.errors import AimonkError
from aimonk.images import ImageDataset, Preprocessing, collate_readable
from aimonk.labels import LabelTable
from aimonk.losses import Criterion
from aimonk.model import AttributeClassifier
from aimonk.registry import Registry
from aimonk.resume import TrainingInterrupted, held_interrupts, save_train_state
from aimonk.runtime import backbone_autocast
from aimonk.sampling import SAMPLERS, Plan

if TYPE_CHECKING:
    from aimonk.config import TrainConfig


@dataclass
class TrainingRun:
    """What a solver works with: settings, model, data, loss, where to save, and the state to continue from."""

    config: TrainConfig
    model: AttributeClassifier
    data: TrainingData
    criterion: Criterion
    preprocessing: Preprocessing
    out_dir: Path
    resumed: dict | None = None  # the saved state of an interrupted run
    history: list[float] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    @property
    def train_table(self) -> LabelTable:
        return self.data.table.subset(self.data.train_rows)


SOLVERS: Registry[Callable[[TrainingRun], None]] = Registry("solver")


@SOLVERS.register("adam")
def adam(run: TrainingRun) -> None:
    """minibatch Adam over the sampler's epoch plans (the reference); resumable"""
    config, model = run.config, run.model
    train_table = run.train_table
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    epoch, step = 0, 0
    if run.resumed is not None:
        optimizer.load_state_dict(run.resumed["optimizer"])
        epoch, step = run.resumed["epoch"], run.resumed["step"]

    def save_state() -> None:
        save_train_state(
            run.out_dir, config=asdict(config), model={k: v.contiguous() for k, v in model.state_dict().items()},
            optimizer=optimizer.state_dict(), history=run.history, epoch=epoch, step=step,
            train_files=train_table.filenames,
        )

    plans = [SAMPLERS[config.sampler](train_table, config, e) for e in range(config.epochs)]
    bar = tqdm(total=sum(map(len, plans)), initial=len(run.history), desc="training", unit="it",
               disable=not config.progress)
    model.train()
    try:
        while epoch < config.epochs:
            for logits, targets, known in forward_batches(run, plans[epoch][step:]):
                loss = run.criterion(logits, targets.to(run.device), known.to(run.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                with held_interrupts():  # so a saved state never has the weights and the step count disagree
                    optimizer.step()
                    run.history.append(loss.item())
                    step += 1
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{run.history[-1]:.4f}")
                if config.checkpoint_every and len(run.history) % config.checkpoint_every == 0:
                    save_state()
            with held_interrupts():
                epoch, step = epoch + 1, 0
            save_state()
    except KeyboardInterrupt:
        save_state()
        raise TrainingInterrupted(str(run.out_dir)) from None
    finally:
        bar.close()


def forward_batches(run: TrainingRun, plan: Plan) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(logits, targets, known) per planned batch of training rows, from cached features or from images."""
    device, data, model = run.device, run.data, run.model
    table = data.table
    if data.features is not None:
        for batch in plan:
            rows = data.train_rows[[row for row, _ in batch]]
            flips = torch.tensor([int(flip) for _, flip in batch])
            features = data.features[torch.as_tensor(rows), flips].to(device)
            yield model.head(features), torch.from_numpy(table.targets[rows]), torch.from_numpy(table.known[rows])
        return
    rows = data.train_rows
    dataset = ImageDataset(data.paths(rows), table.targets[rows], table.known[rows], run.preprocessing)
    loader = DataLoader(dataset, batch_sampler=plan, num_workers=run.config.workers, collate_fn=collate_readable)
    for batch in loader:
        if batch["errors"]:
            raise AimonkError("; ".join(message for _, message in batch["errors"]))
        images = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        with backbone_autocast(run.config.precision, device):
            features = model.backbone(images)
        # The head runs in fp32 on both paths, so cached and uncached training compute the same thing.
        yield model.head(features.float()), batch["targets"], batch["known"]
