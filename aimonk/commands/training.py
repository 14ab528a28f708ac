"""`aimonk train`, `cache` and `demo`: making models, their feature cache, and the demo data."""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path

from aimonk import world
from aimonk.io import CARD_FILE, interrupted, output_lock


def run_train(args: argparse.Namespace) -> int:
    from aimonk.cache import config_stores
    from aimonk.config import config_from_arguments, recipe_description
    from aimonk.train.training import TrainingInterrupted, train

    # torch's million objects live until exit: the collector skips them, in the full collections during training
    # and the interpreter's final one (together about 1 s of a 4 s warm run, measured)
    gc.freeze()
    config = config_from_arguments(args)
    command = "torchrun ... -m aimonk" if "WORLD_SIZE" in os.environ else "aimonk"  # how it was started
    try:
        result = train(config, resume=args.resume, stores=config_stores(config))
    except TrainingInterrupted:
        return interrupted(f"aimonk: interrupted; state saved, continue with: {command} train --resume --out-dir "
                           f"{config.out_dir}", world.is_main())
    except KeyboardInterrupt:
        return interrupted("aimonk: interrupted before the first training step; nothing new was saved",
                           world.is_main())
    if not world.is_main():
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


def run_cache(args: argparse.Namespace) -> int:
    from aimonk.cache.folders import cache_contents, clear_cache, describe_folder
    from aimonk.cache.store import default_cache_dir

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
