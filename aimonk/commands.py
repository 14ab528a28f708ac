"""What each command of `aimonk` does, one `run_*` function per command, given its parsed arguments.

Every library import is inside its command, so a command loads only what it uses (`aimonk predict` never imports
matplotlib or the training code).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

from aimonk import distributed
from aimonk.config import data_paths
from aimonk.errors import AimonkError, ImageReadError


def labelled_data_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The labels file and image folder that the `--data-dir`, `--labels` and `--image-dir` options name."""
    return data_paths(args.data_dir, args.labels, args.image_dir)


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
    if not distributed.is_main():
        return 0
    data = result.data
    print(f"trained on {len(data.train_rows)} images, {len(data.val_rows)} held out for validation, "
          f"{len(data.skipped)} skipped; final loss {result.history[-1]:.4f}")
    for line in result.report:
        print(line)
    print(f"recipe: {recipe_description(result.config)}")
    print(f"wrote {result.model_path}, loss_history.csv and loss_curve.png in {result.model_path.parent}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import csv

    from aimonk.data.images import image_files
    from aimonk.distributed import start
    from aimonk.evaluate.prediction import Predictor
    from aimonk.io import atomic_file

    dist = start(args.device)  # under torchrun each process predicts its share; rank 0 prints them all, in order
    predictor = Predictor(args.model, device=dist.device)
    paths = image_files(args.paths)
    if not paths:
        raise AimonkError(f"no image files in {', '.join(args.paths)}")
    if predictor.cannot_judge and not args.json:
        print(f"aimonk: note: this model cannot judge {', '.join(predictor.cannot_judge)} (no better than chance on "
              "its validation images): never reported present", file=sys.stderr)
    failures = 0
    with atomic_file(args.csv if dist.is_main else None, "w", newline="", encoding="utf-8") as table:
        rows = csv.writer(table) if table else None
        if rows:
            rows.writerow(predictor.csv_header())
        for prediction in predictor.predict_in_shares(paths, args.batch_size, args.workers):
            if rows:
                rows.writerow(predictor.csv_row(prediction))
            if prediction.error:
                failures += 1
                print(f"aimonk: error: {prediction.error}", file=sys.stderr)
                continue
            present = predictor.present_attributes(prediction.probabilities)
            if args.json:
                rounded = (round(p, 4) for p in prediction.probabilities)
                probabilities = dict(zip(predictor.attributes, rounded, strict=True))
                print(json.dumps({"image": str(prediction.path), "attributes": present,
                                  "probabilities": probabilities, "cannot_judge": predictor.cannot_judge}))
            else:
                print(f"{prediction.path}: {', '.join(present) or 'none'}")
            sys.stdout.flush()
    # Spares the interpreter's final garbage collection over torch's million objects (0.8 s at exit, measured);
    # everything predict opened is closed by now.
    gc.freeze()
    return 1 if failures else 0


def run_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from aimonk.evaluate.metrics import evaluate
    from aimonk.evaluate.report import compact_table, format_table
    from aimonk.evaluate.tuning import score_checkpoint
    from aimonk.io import atomic_file

    if args.bootstrap < 0:
        raise AimonkError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    with atomic_file(args.csv if distributed.is_main() else None, "w", newline="", encoding="utf-8") as table:
        scores = score_checkpoint(  # under torchrun, each process scores its share of the images
            args.model, *labelled_data_paths(args),
            include_training=args.all, device=args.device, batch_size=args.batch_size, num_workers=args.workers,
        )
        if not distributed.is_main():
            return 0
        results = evaluate(scores.table, scores.probabilities, scores.thresholds, args.bootstrap, args.seed)
        if table:
            results.to_csv(table)
    which = "all labelled images (training included)" if args.all else "the validation images held out at training"
    if args.json:
        print(json.dumps({"model": str(args.model), "images": len(scores.table), "scope": "all" if args.all else
                          "validation", "bootstrap": args.bootstrap, "seed": args.seed, "confidence": 0.95,
                          "attributes": json.loads(results.reset_index().to_json(orient="records"))}))
        return 0
    print(f"{args.model} on {len(scores.table)} of {which}")
    print(f"metrics over known labels, [{args.bootstrap}-resample bootstrap 95% interval]")
    if args.details:
        with pd.option_context("display.width", 1000, "display.max_columns", None, "display.max_colwidth", None):
            print(format_table(results).to_string())
    else:
        print("\n".join(compact_table(results)))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from aimonk.evaluate.export import TOLERANCE, export_model

    done = export_model(args.model, args.out, args.format, args.check_images)
    print(f"checked on {done.checked} images of {done.checked_on}: probabilities differ from PyTorch fp32 by at most "
          f"{done.difference:.1e} (limit {TOLERANCE:g}), from aimonk predict by at most {done.predict_difference:.1e}")
    print(f"wrote {done.path}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from aimonk.data.images import image_files, open_rgb
    from aimonk.evaluate.explain import explain, output_name, overlay, upsampled
    from aimonk.evaluate.prediction import Predictor
    from aimonk.io import atomic_file

    predictor = Predictor(args.model)
    chosen = args.attributes or predictor.attributes
    unknown = [name for name in chosen if name not in predictor.attributes]
    if unknown:
        raise AimonkError(f"{args.model}: no attribute {', '.join(unknown)}; it has {', '.join(predictor.attributes)}")
    paths = image_files(args.paths)
    if not paths:
        raise AimonkError(f"no image files in {', '.join(args.paths)}")
    failures = 0
    for path in paths:
        try:
            explanation = next(explain(predictor, [path]))
            image = open_rgb(path)
        except ImageReadError as error:
            failures += 1
            print(f"aimonk: error: {error}", file=sys.stderr)
            continue
        for name in chosen:
            j = predictor.attributes.index(name)
            target = Path(args.out) / output_name(path, name)
            with atomic_file(target) as file:
                overlay(image, upsampled(explanation.maps[j], image.size)).save(file, format="PNG")
        kind = "class-activation maps" if explanation.exact else "Grad-CAM maps"
        print(f"{path}: {len(chosen)} {kind} in {Path(args.out) / output_name(path, '*').parent}")
    return 1 if failures else 0


def run_tune(args: argparse.Namespace) -> int:
    from aimonk.evaluate.tuning import score_checkpoint, tune_checkpoint

    if args.bootstrap < 1 or args.folds < 2:
        raise AimonkError("--bootstrap must be at least 1 and --folds at least 2")
    scores = score_checkpoint(args.model, *labelled_data_paths(args), device=args.device, calibrated=False)
    if not distributed.is_main():  # under torchrun every process scored its share; rank 0 alone tunes and writes
        return 0
    tuned = tune_checkpoint(args.model, scores, args.bootstrap, args.folds, args.seed, not args.no_temperature)
    print(f"{args.model}: tuned on {len(scores.table)} validation images (F1 out of fold: thresholds tuned on the "
          f"other {args.folds - 1} folds; in sample: optimistic)")
    print(f"{'attribute':14s} {'verdict':13s} {'AUC':>5s} {'T':>5s} {'threshold':>9s} {'F1 oof':>7s} "
          f"{'F1 in':>6s} {'F1@0.5':>7s} {'ECE':>11s}")
    for name, row in tuned.iterrows():
        threshold = f"{row.threshold:9.3f}" if row.learnable else "        -"
        print(f"{name[:14]:14s} {row.verdict:13s} {row.roc_auc:5.2f} {row.temperature:5.2f} {threshold} "
              f"{row.f1_out_of_fold:7.3f} {row.f1_in_sample:6.3f} {row.f1_at_default:7.3f} "
              f"{row.ece_before:5.3f}>{row.ece_after:5.3f}")
    if not tuned["learnable"].all():
        print(f"not learnable, never reported present by aimonk predict: "
              f"{', '.join(tuned.index[~tuned['learnable']])}")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from aimonk.model.features import cache_contents, clear_cache, default_cache_dir

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.clear:
        print(f"cleared {root}: {clear_cache(root) / 2**20:.1f} MiB freed")
        return 0
    entries = cache_contents(root)
    for entry in entries:
        key = entry["key"]
        what = f"{key.get('frozen_stages', '?')} frozen stage(s), {key.get('precision', '?')}, " \
               f"{key.get('preprocessing', {}).get('image_size', '?')} px"
        print(f"{entry['folder'].name}  {entry['files']:7d} images  {entry['bytes'] / 2**20:9.1f} MiB  {what}")
    total = sum(entry["bytes"] for entry in entries)
    print(f"{root}: {len(entries)} cache folder(s), {total / 2**20:.1f} MiB")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from aimonk.data.demo import make_demo_dataset

    if args.n_images < 1 or args.size < 32:
        raise AimonkError("--n-images must be at least 1 and --size at least 32")
    labels = make_demo_dataset(Path(args.out_dir), n_images=args.n_images, seed=args.seed, size=args.size)
    print(f"wrote {labels} and {labels.parent / 'images'}")
    return 0
