"""`aimonk train`, `cache` and `demo`: making models, their feature cache, and the demo data."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from aimonk import distributed
from aimonk.io import CARD_FILE, output_lock

if TYPE_CHECKING:
    from aimonk.config import TrainConfig


def run_train(args: argparse.Namespace) -> int:
    from aimonk.config import recipe_description
    from aimonk.options import config_from_arguments
    from aimonk.train.resume import TrainingInterrupted
    from aimonk.train.training import train

    # torch's million objects live until exit: the collector skips them, in the full collections during training
    # and the interpreter's final one (together about 1 s of a 4 s warm run, measured)
    gc.freeze()
    config = config_from_arguments(args)
    command = "torchrun ... -m aimonk" if "WORLD_SIZE" in os.environ else "aimonk"  # how it was started
    try:
        result = train(config, resume=args.resume)
    except TrainingInterrupted:
        if distributed.is_main():
            print(f"aimonk: interrupted; state saved, continue with: {command} train --resume --out-dir "
                  f"{config.out_dir}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if distributed.is_main():
            print("aimonk: interrupted before the first training step; nothing new was saved", file=sys.stderr)
        return 130
    if len(result.data.val_rows):
        score_validation(result.model_path, result.config)
    if not distributed.is_main():
        return 0
    data = result.data
    cached = "" if data.from_cache is None else f", {data.from_cache} of {len(data.table)} images' features from " \
                                                "the cache"
    print(f"trained on {len(data.train_rows)} images by {data.processes} process{'es' if data.processes > 1 else ''}, "
          f"{len(data.val_rows)} held out for validation, {len(data.skipped)} skipped{cached}; final loss "
          f"{result.history[-1]:.4f}")
    for line in result.report:
        print(line)
    print(f"recipe: {recipe_description(result.config)}")
    print(f"wrote {result.model_path}, loss_history.csv, loss_curve.png and {CARD_FILE} in {result.model_path.parent}")
    return 0


def score_validation(model_path: Path, config: TrainConfig) -> None:
    """The new checkpoint's metrics on its validation images at the default thresholds, saved into it and onto its
    model card (every process scores its share under torchrun; rank 0 writes)."""
    from aimonk.evaluate.tuning import save_thresholds, score_checkpoint

    distributed.world().all_gather(None)  # under torchrun: rank 0 has written the checkpoint before any reads it
    with output_lock(model_path.parent) if distributed.is_main() else nullcontext():
        scores = score_checkpoint(model_path, config.labels_path, config.images_path, device=config.device,
                                  num_workers=config.workers)
        if distributed.is_main():
            save_thresholds(model_path, scores, seed=config.seed)


def run_cache(args: argparse.Namespace) -> int:
    from aimonk.model.cache_folders import cache_contents, clear_cache, describe_folder
    from aimonk.model.features import default_cache_dir

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.clear:
        print(f"cleared {root}: {clear_cache(root) / 2**20:.1f} MiB freed")
        return 0
    entries = cache_contents(root)
    for entry in entries:
        print(describe_folder(entry))
    total = sum(entry["bytes"] for entry in entries)
    print(f"{root}: {len(entries)} cache folder(s), {total / 2**20:.1f} MiB")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from aimonk.data.demo import make_demo_dataset

    with output_lock(args.out_dir):
        labels = make_demo_dataset(Path(args.out_dir), n_images=args.n_images, seed=args.seed, size=args.size,
                                   overwrite=args.overwrite)
    print(f"wrote {labels} and {labels.parent / 'images'}")
    return 0
