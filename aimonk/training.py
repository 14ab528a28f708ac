"""The training recipe, read top to bottom: data, split, model, (cached) features, the loop, outputs.

Defaults are the reference recipe: ResNet18 with a frozen backbone, Adam, lr 1e-5, batch 16, 5 epochs,
resize 224 + random horizontal flip + ImageNet normalisation, masked BCE over known labels.
"""

from __future__ import annotations

import csv
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from aimonk.checkpoint import FORMAT, load_safely, save_atomic
from aimonk.data import ImageDataset, Preprocessing, collate_readable, find_images, report_unusable
from aimonk.errors import AimonkError
from aimonk.features import FeatureCache, backbone_autocast, default_cache_dir, extract_features
from aimonk.labels import LabelTable, read_labels
from aimonk.loss import balanced_pos_weight, masked_bce_with_logits
from aimonk.model import AttributeClassifier, build_model
from aimonk.plots import loss_curve_figure
from aimonk.split import stratified_split

MODEL_FILE = "aimonk_model.pth"
STATE_FILE = "train_state.pth"
HISTORY_FILE = "loss_history.csv"
CURVE_FILE = "loss_curve.png"
STATE_FORMAT = "aimonk-train-state-v1"


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in the checkpoint."""

    data_dir: str = "."
    labels: str | None = None  # default: <data_dir>/labels.txt
    image_dir: str | None = None  # default: <data_dir>/images
    out_dir: str = "models"
    backbone: str = "resnet18"
    weights: str = "auto"  # auto | imagenet | none | path to a state-dict file
    freeze_backbone: bool = True
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-5
    seed: int = 0
    val_fraction: float = 0.2
    pos_weight: str = "none"  # none | balanced (negatives/positives per attribute)
    precision: str = "bf16"  # backbone under bf16 autocast (CPU and GPU), or fp32
    image_size: int = 224
    feature_cache: bool = True  # frozen backbone only: reuse features across runs
    cache_dir: str | None = None  # default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features
    num_workers: int = 2
    checkpoint_every: int = 0  # also save the resumable state every N iterations (0: at epoch ends only)
    strict: bool = False  # missing or unreadable images are an error instead of a warning
    progress: bool = True
    device: str = "cpu"

    @property
    def labels_path(self) -> Path:
        return Path(self.labels) if self.labels else Path(self.data_dir) / "labels.txt"

    @property
    def images_path(self) -> Path:
        return Path(self.image_dir) if self.image_dir else Path(self.data_dir) / "images"

    def check(self) -> None:
        for name in ("epochs", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise AimonkError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.val_fraction < 1:
            raise AimonkError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.lr > 0:
            raise AimonkError(f"lr must be positive, got {self.lr}")
        if self.precision not in ("bf16", "fp32"):
            raise AimonkError(f"precision must be bf16 or fp32, got {self.precision!r}")
        if self.pos_weight not in ("none", "balanced"):
            raise AimonkError(f"pos_weight must be none or balanced, got {self.pos_weight!r}")


@dataclass
class Data:
    """The usable labelled images, which rows train and which validate, and cached features if any."""

    table: LabelTable
    image_dir: Path
    train_rows: np.ndarray
    val_rows: np.ndarray
    features: torch.Tensor | None  # (images, 2, dim): as-is and flipped, for a cached frozen backbone
    skipped: list[str]  # missing or unreadable images, left out

    def files(self, rows: np.ndarray) -> list[str]:
        return [self.table.filenames[i] for i in rows]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised after the resumable state was saved."""


@dataclass
class TrainResult:
    model_path: Path
    history: list[float]
    data: Data


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train and write the checkpoint, loss history and loss curve into `config.out_dir`.

    With `resume`, continue the run whose state was saved in `out_dir`, with that run's settings.
    Ctrl-C once training has begun saves the state (resume later) and raises TrainingInterrupted.
    """
    out_dir = Path(config.out_dir)
    for name in (STATE_FILE, MODEL_FILE):
        for stale in out_dir.glob(f".{name}.*.tmp"):  # left by a run killed while saving
            stale.unlink()
    state = load_train_state(out_dir) if resume else None
    if state is not None:
        config = TrainConfig(**{**state["config"], "out_dir": str(out_dir), "progress": config.progress})
    config.check()
    seed_everything(config.seed)
    device = torch.device(config.device)
    preprocessing = Preprocessing(config.image_size)
    labelled = read_labels(config.labels_path)
    model, weights_origin = build_model(
        len(labelled.attributes), config.backbone, config.weights, config.freeze_backbone
    )
    model.to(device=device, memory_format=torch.channels_last)
    data = prepare_data(config, labelled, model, preprocessing)
    train_table = data.table.subset(data.train_rows)

    pos_weight = None
    if config.pos_weight == "balanced":
        pos_weight = balanced_pos_weight(train_table.targets, train_table.known).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    history: list[float] = []
    epoch, step = 0, 0
    if state is not None:
        if state["train_files"] != train_table.filenames:
            raise AimonkError(f"{out_dir / STATE_FILE}: the training images differ from the interrupted run's")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, epoch, step = list(state["history"]), state["epoch"], state["step"]
        restore_rng(state["rng"])

    def save_state() -> None:
        save_train_state(out_dir, config, model, optimizer, history, epoch, step, train_table.filenames)

    batches_per_epoch = -(-len(train_table) // config.batch_size)
    bar = tqdm(total=config.epochs * batches_per_epoch, initial=len(history), desc="training",
               unit="it", disable=not config.progress)
    model.train()
    try:
        while epoch < config.epochs:
            plan = epoch_plan(len(train_table), config.batch_size, config.seed, epoch)
            for logits, targets, known in forward_batches(model, data, plan[step:], config, preprocessing):
                loss = masked_bce_with_logits(logits, targets.to(device), known.to(device), pos_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                with held_interrupts():  # so a saved state never has the weights and the step count disagree
                    optimizer.step()
                    history.append(loss.item())
                    step += 1
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
                if config.checkpoint_every and len(history) % config.checkpoint_every == 0:
                    save_state()
            with held_interrupts():
                epoch, step = epoch + 1, 0
            save_state()
        model_path = save_model(out_dir / MODEL_FILE, model, config, data, weights_origin)
        write_history(out_dir, history)
    except KeyboardInterrupt:
        save_state()
        raise TrainingInterrupted(str(out_dir / STATE_FILE)) from None
    finally:
        bar.close()
    return TrainResult(model_path, history, data)


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends; a no-op outside the main thread or under a foreign handler."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(
    config: TrainConfig, table: LabelTable, model: AttributeClassifier, preprocessing: Preprocessing
) -> Data:
    """Labelled images that exist -> that decode (with features, if cached) -> stratified split."""
    image_dir = config.images_path
    if not image_dir.is_dir():
        raise AimonkError(f"{image_dir}: image folder not found")
    table, missing = find_images(table, image_dir)
    report_unusable("missing", missing, config.strict)
    paths = [image_dir / name for name in table.filenames]
    features = None
    if config.freeze_backbone and config.feature_cache:
        cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        cache = FeatureCache(cache_root, model.backbone, preprocessing, config.precision)
        features, readable, errors = extract_features(
            model.backbone, paths, preprocessing, cache, config.precision, num_workers=config.num_workers,
            progress=config.progress,
        )
    else:
        readable, errors = scan_readable(paths, preprocessing, config.num_workers)
    report_unusable("unreadable", errors, config.strict)
    unreadable = sorted(set(table.filenames) - {table.filenames[i] for i in readable})
    table = table.subset(readable)
    if len(table) == 0:
        raise AimonkError(f"{config.labels_path}: no usable images in {image_dir}")
    train_rows, val_rows = stratified_split(table, config.val_fraction, config.seed)
    return Data(table, image_dir, train_rows, val_rows, features, missing + unreadable)


def scan_readable(paths: list[Path], preprocessing: Preprocessing, num_workers: int) -> tuple[list[int], list[str]]:
    """Decode every image once; indices of the readable ones and messages for the rest."""
    loader = DataLoader(ImageDataset.unlabelled(paths, preprocessing), batch_size=32,
                        num_workers=num_workers, collate_fn=collate_readable)
    failed = dict(error for batch in loader for error in batch["errors"])
    return [i for i in range(len(paths)) if i not in failed], list(failed.values())


def epoch_plan(n: int, batch_size: int, seed: int, epoch: int) -> list[list[tuple[int, bool]]]:
    """Batches of (row, flip) for one epoch: a shuffled order and one random flip per image.

    Derived from (seed, epoch) alone, so cached and uncached training, and a resumed run, follow it exactly.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    pairs = [(row, flips[row]) for row in order]
    return [pairs[start : start + batch_size] for start in range(0, n, batch_size)]


def forward_batches(
    model: AttributeClassifier, data: Data, plan: list[list[tuple[int, bool]]], config: TrainConfig,
    preprocessing: Preprocessing,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(logits, targets, known) per planned batch of training rows, from cached features or from images."""
    device = torch.device(config.device)
    table = data.table
    if data.features is not None:
        for batch in plan:
            rows = data.train_rows[[row for row, _ in batch]]
            flips = torch.tensor([int(flip) for _, flip in batch])
            features = data.features[torch.as_tensor(rows), flips].to(device)
            yield model.head(features), torch.from_numpy(table.targets[rows]), torch.from_numpy(table.known[rows])
        return
    rows = data.train_rows
    dataset = ImageDataset([data.image_dir / table.filenames[i] for i in rows], table.targets[rows],
                           table.known[rows], preprocessing)
    loader = DataLoader(dataset, batch_sampler=plan, num_workers=config.num_workers, collate_fn=collate_readable)
    for batch in loader:
        if batch["errors"]:
            raise AimonkError("; ".join(message for _, message in batch["errors"]))
        images = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        with backbone_autocast(config.precision, device):
            features = model.backbone(images)
        # The head runs in fp32 on both paths, so cached and uncached training compute the same thing.
        yield model.head(features.float()), batch["targets"], batch["known"]


def save_model(path: Path, model: AttributeClassifier, config: TrainConfig, data: Data, weights_origin: str) -> Path:
    """The inference checkpoint: weights plus everything needed to predict and evaluate."""
    return save_atomic(
        {
            "format": FORMAT,
            "state_dict": {key: value.contiguous() for key, value in model.state_dict().items()},
            "attributes": list(data.table.attributes),
            "backbone": config.backbone,
            "weights_origin": weights_origin,
            "frozen_backbone": config.freeze_backbone,
            "preprocessing": Preprocessing(config.image_size).as_dict(),
            "precision": config.precision,
            "thresholds": [0.5] * len(data.table.attributes),
            "train_config": asdict(config),
            "train_files": data.files(data.train_rows),
            "val_files": data.files(data.val_rows),
            "skipped_files": list(data.skipped),
        },
        path,
    )


def save_train_state(
    out_dir: Path, config: TrainConfig, model: AttributeClassifier, optimizer: torch.optim.Optimizer,
    history: list[float], epoch: int, step: int, train_files: list[str],
) -> None:
    """Everything `--resume` needs, written atomically: a kill leaves the previous or the new state."""
    save_atomic(
        {
            "format": STATE_FORMAT,
            "config": asdict(config),
            "model": {key: value.contiguous() for key, value in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "history": list(history),
            "epoch": epoch,
            "step": step,
            "train_files": list(train_files),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "numpy_position": int(np.random.get_state()[2]),
                "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
            },
        },
        out_dir / STATE_FILE,
    )


def load_train_state(out_dir: Path) -> dict:
    path = out_dir / STATE_FILE
    if not path.is_file():
        raise AimonkError(f"{path}: nothing to resume (no saved training state)")
    state = load_safely(path)
    keys = ("config", "model", "optimizer", "history", "epoch", "step", "train_files", "rng")
    if state.get("format") != STATE_FORMAT or any(key not in state for key in keys):
        raise AimonkError(f"{path}: not an aimonk training state")
    if not isinstance(state["config"], dict) or not state["config"].keys() <= {f.name for f in fields(TrainConfig)}:
        raise AimonkError(f"{path}: the training state's settings are not those of this version of aimonk")
    return state


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_position"], 0, 0.0))
    random.setstate((3, tuple(rng["python"].tolist()), None))


def write_history(out_dir: Path, history: list[float]) -> None:
    """`loss_history.csv` (iteration_number,training_loss) and `loss_curve.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / HISTORY_FILE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["iteration_number", "training_loss"])
        writer.writerows((i, f"{loss:.8g}") for i, loss in enumerate(history, start=1))
    loss_curve_figure(history).savefig(out_dir / CURVE_FILE, dpi=100)
