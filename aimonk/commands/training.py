"""`aimonk train`, `runs`, `cache` and `demo`: making models, the runs kept, their feature cache, and the demo
data."""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path

from aimonk import world
from aimonk.io import CARD_FILE, METRICS_FILE, MODEL_FILE, VALIDATION_CURVE_FILE, interrupted, output_lock


def run_train(args: argparse.Namespace) -> int:
    from aimonk.cache import config_stores
    from aimonk.config import config_from_arguments, recipe_description
    from aimonk.train.training import TrainingInterrupted, train

    # torch's million objects live until exit: the collector skips them, in the full collections during training
    # and the interpreter's final one (together about 1 s of a 4 s warm run, measured)
    gc.freeze()
    config = config_from_arguments(args)
    command = "torchrun ... -m aimonk" if "WORLD_SIZE" in os.environ else "aimonk"  # how it was started
    watchers = []
    if (config.tensorboard or config.log_dir) and world.is_main():
        from aimonk.tracking import TensorBoard  # the extra: aimonk[tensorboard]

        watchers.append(TensorBoard.for_run(config))
    try:
        result = train(config, resume=args.resume, stores=config_stores(config), watchers=watchers)
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
    training = result.training
    last = "final loss" if training["kept_epoch"] == training["epochs_run"] else \
        f"loss of the last step (the weights kept are epoch {training['kept_epoch']}'s)"
    print(f"trained on {len(data.train_rows)} images by {data.processes} process{'es' if data.processes > 1 else ''}, "
          f"{len(data.val_rows)} held out for validation, {len(data.skipped)} skipped{cached}; {last} "
          f"{result.history[-1]:.4f}")
    for line in result.report:
        print(line)
    print(f"recipe: {recipe_description(result.config)}")
    print(f"training: {result.training['epochs_run']} epoch(s) run, {result.training['stopped']}")
    if "init_from" in result.training:
        print(f"started from {result.training['init_from']['path']}")
    for line in validation_summary(result.record):
        print(line)
    for watcher in watchers:
        print(f"TensorBoard event files in {watcher.folder} (view: tensorboard --logdir {watcher.folder.parent})")
    print(f"wrote {result.model_path}, loss_history.csv, loss_curve.png, {METRICS_FILE}, {VALIDATION_CURVE_FILE} and "
          f"{CARD_FILE} in {result.model_path.parent}")
    if result.previous is not None:
        print(f"the model it replaced, with its files, is in {result.previous}")
    return 0


def validation_summary(record: dict | None) -> list[str]:
    """The validation mAP and each attribute's AP and verdict, as the checkpoint and model card hold them."""
    if record is None:
        return ["validation: none (no images held out)"]
    from aimonk.metrics import map_line

    metrics = record["metrics"]
    width = max(map(len, metrics))
    return [f"validation {map_line(record['map'])}, on {record['images']} images; AP per attribute, verdict at the "
            "default thresholds:",
            *(f"  {name:<{width}}  AP {row['ap']:.3f}  {row['verdict']}" for name, row in metrics.items())]


def run_runs(args: argparse.Namespace) -> int:
    from aimonk.card import validation_map
    from aimonk.checkpoint import load_checkpoint
    from aimonk.errors import AimonkError
    from aimonk.io import previous_runs

    out_dir = Path(args.out_dir)
    folders = [out_dir] if (out_dir / MODEL_FILE).is_file() else []
    folders += [folder for folder in previous_runs(out_dir) if (folder / MODEL_FILE).is_file()]
    if not folders:
        raise AimonkError(f"{out_dir}: no model, and no run kept in {out_dir / 'runs'}")
    print("run | recipe | backbone | epochs run/kept | lr | validation mAP | tuned")
    for folder in folders:
        try:
            checkpoint = load_checkpoint(folder / MODEL_FILE)
        except AimonkError as error:
            print(f"{folder} | unreadable: {error}")
            continue
        config, training = checkpoint.get("train_config", {}), checkpoint.get("training")
        epochs = f"{training['epochs_run']}/{training['kept_epoch']}" if training else f"{config.get('epochs')}/?"
        mean_ap = validation_map(checkpoint)
        name = "(current)" if folder == out_dir else str(folder)
        print(f"{name} | {config.get('recipe')} | {checkpoint['backbone']} | {epochs} | {config.get('lr')} | "
              f"{'n/a' if mean_ap is None else f'{mean_ap:.3f}'} | {'yes' if 'verdicts' in checkpoint else 'no'}")
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
