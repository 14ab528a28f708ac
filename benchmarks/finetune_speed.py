"""Fine-tuning the last backbone stage: time per epoch with the cache of the last frozen stage against running the
whole backbone on decoded images every epoch (`--no-feature-cache`), same settings, side by side.

    python benchmarks/finetune_speed.py --data-dir ../shared/aimonk-dataset
    python benchmarks/finetune_speed.py --data-dir ../shared/aimonk-dataset --backbone efficientnet_lite0

Per-epoch time is the difference between runs of more and fewer epochs, so start-up, feature extraction and the
final save cancel out. Random backbone weights (`--weights none`): the work is the same as pretrained.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from common import ROOT, Stopwatch, machine

from aimonk.cache import config_stores
from aimonk.config import TrainConfig
from aimonk.data.images import epoch_plan
from aimonk.model.classifier import TrainedPart, build_model
from aimonk.train.training import train


def timed(settings: dict, epochs: int) -> tuple[float, str, int]:
    """Seconds of a whole train() call, the stopwatch's note on other load, and the number of training images."""
    with Stopwatch() as watch:
        config = TrainConfig(epochs=epochs, **settings)
        result = train(config, stores=config_stores(config))
    return watch.seconds, watch.note(), len(result.data.train_rows)


def trainable_part_alone(backbone: str, stages: int, precision: str, images: int, image_size: int = 224) -> float:
    """Seconds per epoch of the trainable stages' forward and backward alone, on a random input of the frozen
    stages' output shape, batch 16: what a stage cache cannot remove, so the most it can gain is (an uncached epoch)
    / (this)."""
    model, _ = build_model(4, backbone, "none", stages)
    with torch.no_grad():
        frozen = model.frozen_part(torch.zeros(16, 3, image_size, image_size))
    trained = TrainedPart(model.train(), precision)
    batch = torch.randn_like(frozen)
    steps = len(epoch_plan(np.ones(images), 16, 0, 0))
    trained(batch).sum().backward()  # warm-up: the first step picks its kernels
    with Stopwatch() as watch:
        for _ in range(steps):
            trained(batch).sum().backward()
    return watch.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--trainable-stages", type=int, default=1)
    parser.add_argument("--precision", default="bf16")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # the real dataset lists 3 missing images
    print(machine())
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        settings = dict(data_dir=str(args.data_dir), out_dir=out, cache_dir=cache, backbone=args.backbone,
                        weights="none", lr=1e-3, trainable_stages=args.trainable_stages, val_fraction=0.0,
                        precision=args.precision, progress=False)
        cold, _, images = timed(settings, 1)
        print(f"cached, first run (extracts the frozen stages' output, 1 epoch): {cold:.1f} s", flush=True)
        one, note_one, _ = timed(settings, 1)
        three, note_three, _ = timed(settings, 3)
        cached = (three - one) / 2
        print(f"cached: 1 epoch {one:.1f} s, 3 epochs {three:.1f} s -> {cached:.2f} s per epoch{note_one}{note_three}",
              flush=True)
        uncached_settings = {**settings, "feature_cache": False}
        one, note_one, _ = timed(uncached_settings, 1)
        two, note_two, _ = timed(uncached_settings, 2)
        uncached = two - one
        print(f"whole backbone every epoch: 1 epoch {one:.1f} s, 2 epochs {two:.1f} s -> {uncached:.2f} s per epoch"
              f"{note_one}{note_two}")
    alone = trainable_part_alone(args.backbone, args.trainable_stages, args.precision, images)
    print(f"the trainable stages' forward and backward alone, random input, no data: {alone:.2f} s per epoch "
          f"(what no cache removes: at most {uncached / alone:.1f}x faster than without the cache)")
    print(f"summary: {args.backbone}, last {args.trainable_stages} stage(s) fine-tuned, {cached:.2f} s per epoch "
          f"with the stage cache, {uncached:.2f} s without: {uncached / cached:.1f}x faster (target: at least 3x)")


if __name__ == "__main__":
    main()
