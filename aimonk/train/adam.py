"""The `adam` solver, the reference: minibatch Adam over the sampler's epoch plans, read top to bottom; the learning
rate over the iterations (LR_SCHEDULES) and the optimizer's parameter groups; and its resumable state.

After each epoch the run scores its validation images and records the epoch's row (`TrainingRun.epoch_row` and
`end_epoch`: the log line, metrics.csv, --patience's best epoch, which stops the loop when it says so).

The state (saved after every epoch, or every `--checkpoint-every` iterations) holds what changes as the run goes (the
trainable weights, optimizer, counters, random-number states, loss history, the epochs' rows and the best epoch) and
only a fingerprint of the frozen weights: `--resume` rebuilds them from the run's settings and checks the fingerprint.
For a frozen backbone that is a few kilobytes instead of the whole network. Resume is exact or refused: other settings,
other training images or other training labels are refused in one line. Ctrl-C (and SIGTERM) is held around each update,
so a saved state never has the weights and the step count disagree.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aimonk import world
from aimonk.checkpoint import save_train_state
from aimonk.config import TrainConfig
from aimonk.data.images import epoch_plan
from aimonk.data.labels import LabelTable
from aimonk.errors import AimonkError
from aimonk.io import STATE_FILE, held_interrupts, interrupt_received
from aimonk.model.classifier import AttributeClassifier, TrainedPart
from aimonk.model.features import state_fingerprint
from aimonk.registry import LR_SCHEDULES, SAMPLERS, SOLVERS
from aimonk.train.training import (
    Solver,
    TrainingInterrupted,
    TrainingRun,
    progress_bars,
    refuse_diverged,
    step_inputs,
)


def fit_adam(run: TrainingRun) -> None:
    config, model, job = run.config, run.model, world.WORLD
    if run.resumed is not None:
        restore_run(model, run.resumed, run.train_table, run.out_dir / STATE_FILE)
        run.history = list(run.resumed["history"])
        run.continue_from(run.resumed)
    optimizer = torch.optim.Adam(parameter_groups(model, config), lr=config.lr, decoupled_weight_decay=True)
    epoch, step = resume_optimizer(optimizer, run.resumed)
    hint = SOLVERS[config.solver].diverged_hint
    # What identifies the run does not change as it goes: found once, not at every save (every step, at worst)
    identity = {"config": config.to_dict(), "frozen_sha256": frozen_fingerprint(model),
                "train_files": run.train_table.filenames, "labels_sha256": labels_digest(run.train_table)}

    def save_state() -> None:  # never a diverged state: a resumed run would go on from weights that are not finite
        refuse_diverged(model, run.history, hint)
        if job.is_main:
            trainable = {name: tensor.detach().contiguous() for name, tensor in model.split_state()[0].items()}
            save_train_state(run.out_dir, model=trainable, optimizer=optimizer.state_dict(), history=list(run.history),
                             epoch=epoch, step=step, rng=capture_rng(), epochs=list(run.epochs), best=run.best,
                             **identity)

    visits = SAMPLERS[config.sampler](run.train_table, config)
    plans = [epoch_plan(visits, config.batch_size, config.seed, e) for e in range(config.epochs)]
    total = sum(map(len, plans))
    schedule = LR_SCHEDULES[config.lr_schedule]
    counted = run.counted.known[run.data.train_rows]  # entries the loss averages over, per training image
    trained = job.wrap(TrainedPart(model, config.precision))  # DistributedDataParallel under torchrun
    bar = tqdm(total=total, initial=len(run.history), desc="training", unit="it", disable=not progress_bars(config))
    model.train()
    threads = torch.get_num_threads()
    if run.data.head_inputs_cached(model):
        torch.set_num_threads(1)  # steps of the head alone are tiny: 25x slower when threads wait on a busy CPU
    try:
        while epoch < config.epochs and not run.stopped_early:
            started = time.monotonic()
            # Every process follows the same plan and takes its share of each batch.
            batches = plans[epoch][step:]
            shares = [job.shard(batch) for batch in batches]
            for batch, share, (frozen, targets, known) in zip(batches, shares, step_inputs(run, shares), strict=True):
                factor = schedule(len(run.history), total, config.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                # The mean over this share's known entries, weighed by its part of the whole batch's: summed over
                # the processes, the batch's mean (times the world size, as DistributedDataParallel averages).
                part = job.world_size * _entries(counted, share) / max(_entries(counted, batch), 1)
                loss = run.loss(trained(frozen), targets.to(frozen.device), known.to(frozen.device), epoch) * part
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                value = (job.sum(loss.detach()) / job.world_size).item()
                with held_interrupts():  # so a saved state never has the weights and the step count disagree
                    optimizer.step()
                    run.history.append(value)
                    step += 1
                for watcher in run.watchers:
                    watcher.iteration(len(run.history), value)
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{run.history[-1]:.4f}")
                if config.checkpoint_every and len(run.history) % config.checkpoint_every == 0:
                    save_state()
            first = sum(map(len, plans[:epoch]))  # the epoch's first iteration
            row = run.epoch_row(epoch, run.history[first:], time.monotonic() - started)
            with held_interrupts():  # the row recorded and the epoch counted together, or neither
                run.end_epoch(row)
                epoch, step = epoch + 1, 0
            save_state()
    except (KeyboardInterrupt, RuntimeError) as stop:
        refuse_overflow(stop, len(run.history), hint)
        if not isinstance(stop, KeyboardInterrupt) and not job.peer_lost(stop) and not interrupt_received():
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


def _entries(counted: np.ndarray, batch: list[tuple[int, bool]]) -> int:
    """How many entries of the batch's rows the loss averages over."""
    return int(counted[[row for row, _ in batch]].sum())


def refuse_overflow(error: BaseException, iterations: int, hint: str) -> None:
    """Raise AimonkError if `error` is torch refusing an update step too large for a float (Adam's learning rate over
    its bias correction, early on): the run diverged at once."""
    if isinstance(error, RuntimeError) and "without overflow" in str(error):
        raise AimonkError(f"training diverged: an update of the weights overflows a float after {iterations} "
                          f"iterations; {hint}") from None


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


# The resumable state.

def capture_rng() -> dict:
    """The torch, numpy and Python random states, as tensors and ints (loadable with weights_only)."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_position": int(np.random.get_state()[2]),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_position"], 0, 0.0))
    random.setstate((3, tuple(rng["python"].tolist()), None))


def frozen_fingerprint(model: AttributeClassifier) -> str:
    """What identifies the weights that do not train (computed once per run: they never change)."""
    return state_fingerprint(model.split_state()[1])


def labels_digest(table: LabelTable) -> str:
    """SHA-256 of a table's attribute names, file names and labels (1, 0 or unknown): what the run learns from."""
    digest = hashlib.sha256(json.dumps([table.attributes, table.filenames]).encode())
    digest.update(np.ascontiguousarray(np.where(table.known, table.targets, 0), dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(table.known, dtype=bool).tobytes())
    return digest.hexdigest()


def restore_run(model: AttributeClassifier, state: dict, train_table: LabelTable, path: Path) -> None:
    """Continue from a saved state: its trainable weights into `model` and its random-number states, refused with
    one line if the training images or their labels are not the interrupted run's."""
    if state["train_files"] != train_table.filenames:
        raise AimonkError(f"{path}: the training images differ from the interrupted run's")
    digest = labels_digest(train_table)
    if state["labels_sha256"] != digest:
        raise AimonkError(f"{path}: the labels of the training images in {train_table.path} differ from the "
                          f"interrupted run's (labels digest {digest[:12]}, saved {str(state['labels_sha256'])[:12]}); "
                          "resume with the same labels, or train anew into another --out-dir")
    restore_trainable(model, state, path)
    restore_rng(state["rng"])


def restore_trainable(model: AttributeClassifier, state: dict, path: Path) -> None:
    """Load a saved state's trainable weights into `model`, built from the same settings; refused with one line if
    its frozen weights are not those of the interrupted run (e.g. another --weights file)."""
    trainable, frozen = model.split_state()
    if state_fingerprint(frozen) != state["frozen_sha256"]:
        raise AimonkError(f"{path}: the frozen backbone weights differ from the interrupted run's (another --weights "
                          "file, or ImageNet weights that cannot be had here?); resume where they are the same")
    saved = state["model"]
    if not isinstance(saved, dict) or saved.keys() != trainable.keys():
        raise AimonkError(f"{path}: the saved weights are not those of this model's trainable part")
    try:
        model.load_state_dict(saved, strict=False)
    except RuntimeError as error:
        raise AimonkError(f"{path}: the saved weights do not fit the model ({str(error).splitlines()[-1].strip()})") \
            from None


def resume_optimizer(optimizer: torch.optim.Optimizer, state: dict | None) -> tuple[int, int]:
    """(epoch, step) to continue from, with the saved optimizer state loaded; (0, 0) without a state."""
    if state is None:
        return 0, 0
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["step"]
