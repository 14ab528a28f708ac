"""Training speed, side by side in one process: a plain loop of the reference recipe, then `aimonk.train.training.train`
with an empty feature cache (cold), then reruns with other learning rates on the warm cache. Then whole processes,
alternated: `python -c "import torch, torchvision"` and `aimonk train` on the warm cache, whose ratio is held to a
target (a warm frozen-backbone run within 1.5x of the bare import).

    python benchmarks/train_speed.py --data-dir ../shared/aimonk-dataset

All runs use a randomly initialised ResNet18 (no ImageNet weights offline); the work, and so the time, is the same
as with ImageNet weights. Run it alone: on a small machine anything else running skews the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from common import ROOT, Stopwatch, machine
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

from aimonk.cache import config_stores
from aimonk.config import TrainConfig
from aimonk.train.training import train

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PROCESS_TARGET = 1.5  # a warm frozen-backbone `aimonk train`, as a whole process, against the bare import


class PlainDataset(Dataset):
    """The reference's dataset: labels.txt rows whose image exists, PIL `.convert('RGB')`, torchvision transforms."""

    def __init__(self, data_dir: Path, transform: transforms.Compose):
        self.image_dir = data_dir / "images"
        self.rows = []
        for line in (data_dir / "labels.txt").read_text().splitlines():
            name, *values = line.split()
            if (self.image_dir / name).is_file():
                self.rows.append((name, [float("nan") if value == "NA" else float(value) for value in values]))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        name, values = self.rows[index]
        image = Image.open(self.image_dir / name).convert("RGB")
        return self.transform(image), torch.tensor(values)


def plain_loop(data_dir: Path, epochs: int, batch_size: int, lr: float, workers: int, seed: int) -> list[float]:
    """Resize 224 + random flip, frozen fp32 ResNet18 with a new fc layer, Adam, BCE over known labels."""
    torch.manual_seed(seed)
    transform = transforms.Compose([
        transforms.Resize((224, 224)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    dataset = PlainDataset(data_dir, transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    model = models.resnet18(weights=None)
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, len(dataset.rows[0][1]))
    model.eval()  # BatchNorm statistics stay those of the weights, as in aimonk
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=lr)
    criterion = nn.BCEWithLogitsLoss(reduction="none")
    history = []
    for _ in range(epochs):
        for images, targets in loader:
            known = ~torch.isnan(targets)
            losses = criterion(model(images), torch.nan_to_num(targets))
            loss = (losses * known).sum() / known.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    return history


def whole_processes(train_command: list[str], runs: int) -> None:
    """Wall time of `python -c "import torch, torchvision"` and of the warm `aimonk train`, alternated, and the ratio
    of their medians against PROCESS_TARGET."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    commands = {"python -c \"import torch, torchvision\"": ["-c", "import torch, torchvision"],
                "aimonk train, warm cache, whole process": train_command}
    seconds: dict[str, list[float]] = {label: [] for label in commands}
    disturbed = False
    for _ in range(runs):
        for label, command in commands.items():
            with Stopwatch() as watch:
                subprocess.run([sys.executable, *command], check=True, capture_output=True, env=environment, cwd=ROOT)
            seconds[label].append(watch.seconds)
            disturbed = disturbed or bool(watch.note())
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    print(f"whole processes, median of {runs}, alternated:")
    for label, values in seconds.items():
        print(f"  {label:43s} {medians[label]:7.2f} s   (range {min(values):.2f} to {max(values):.2f} s)")
    imports, warm = medians.values()
    verdict = "met" if warm <= PROCESS_TARGET * imports else "NOT met"
    print(f"  warm aimonk train / bare import: {warm / imports:.2f}x (target {PROCESS_TARGET}x: {verdict})"
          f"{'  [disturbed: other processes ran meanwhile; rerun on a quiet machine]' if disturbed else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT, help="folder with images/ and labels.txt")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=TrainConfig.precision)
    parser.add_argument("--warm-runs", type=int, default=3, help="reruns on the warm cache, each with another lr")
    parser.add_argument("--skip-plain", action="store_true", help="leave out the (slow) plain loop")
    parser.add_argument("--process-runs", type=int, default=5, help="whole processes of each kind, alternated")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # the real dataset lists 3 missing images; both sides skip them
    n_images = sum(1 for _ in (args.data_dir / "images").iterdir())
    print(f"{machine()}\n{args.data_dir}: {n_images} images; {args.epochs} epochs, batch {args.batch_size}, "
          f"{args.workers} workers; aimonk at precision {args.precision}, --val-fraction 0", flush=True)

    plain = None
    if not args.skip_plain:
        with Stopwatch() as watch:
            history = plain_loop(args.data_dir, args.epochs, args.batch_size, args.lr, args.workers, seed=0)
        plain = watch.seconds
        print(f"plain loop (torchvision transforms, fp32):  {plain:7.1f} s   final loss {history[-1]:.4f}"
              f"{watch.note()}", flush=True)

    def report(label: str, watch: Stopwatch, history: list[float]) -> None:
        ratio = f"{plain / watch.seconds:6.1f}x faster" if plain else ""
        print(f"{label:43s} {watch.seconds:7.2f} s {ratio}   final loss {history[-1]:.4f}{watch.note()}", flush=True)

    with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as out_dir:
        def ours(lr: float) -> tuple[Stopwatch, list[float]]:
            config = TrainConfig(
                data_dir=str(args.data_dir), out_dir=out_dir, weights="none", epochs=args.epochs,
                batch_size=args.batch_size, lr=lr, val_fraction=0.0, precision=args.precision,
                cache_dir=cache_dir, workers=args.workers, progress=False,
            )
            with Stopwatch() as watch:
                history = train(config, stores=config_stores(config)).history
            return watch, history

        cold = ours(args.lr)
        report("aimonk, cold (empty feature cache):", *cold)
        warm = []
        for run in range(1, args.warm_runs + 1):
            lr = args.lr * 10**run
            warm.append(ours(lr))
            report(f"aimonk, warm (cached features), lr {lr:g}:", *warm[-1])
        if args.process_runs:
            train_command = ["-m", "aimonk", "train", "--data-dir", str(args.data_dir), "--out-dir", out_dir,
                             "--weights", "none", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                             "--lr", str(args.lr), "--val-fraction", "0", "--precision", args.precision,
                             "--cache-dir", cache_dir, "--workers", str(args.workers), "--no-progress"]
            whole_processes(train_command, args.process_runs)
    if plain and warm:
        median = statistics.median(watch.seconds for watch, _ in warm)
        print(f"summary: plain {plain:.1f} s | cold {cold[0].seconds:.1f} s ({plain / cold[0].seconds:.1f}x) | "
              f"warm {median:.2f} s, median of {len(warm)} ({plain / median:.0f}x)")


if __name__ == "__main__":
    main()
