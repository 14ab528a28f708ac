"""What each command of `aimonk` does, one `run_*` function per command, given its parsed arguments. Every library
import is inside its command, so a command loads only what it uses (predict: no matplotlib, no training code).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

from aimonk import distributed
from aimonk.config import data_paths
from aimonk.errors import AimonkError, ImageReadError
from aimonk.io import atomic_file, output_lock


@contextmanager
def output_file(path: str | Path | None, suffix: str, option: str, reads: Sequence[str | Path],
                mode: str = "w", **options: Any) -> Iterator[IO | None]:
    """The file a command was asked to write (`--csv FILE`), written atomically while holding its folder's lock;
    None where not asked for, or on a process other than rank 0 (see `output_path`)."""
    target = output_path(path, suffix, option, reads)
    if target is None:
        yield None
        return
    with output_lock(target.parent), atomic_file(target, mode, **options) as file:
        yield file


def output_path(path: str | Path | None, suffix: str, option: str, reads: Sequence[str | Path]) -> Path | None:
    """`path` as a file to write, checked before any work: refused if it is a file the command reads, if it is not a
    `suffix` file (`--csv images/a.jpg b.jpg` forgot the CSV's name: the image is kept), or if part of it is a file.
    None where not asked for, or on a process other than rank 0 (which alone writes)."""
    if path is None or not distributed.is_main():
        return None
    target = Path(path)
    if target.is_dir():
        raise AimonkError(f"{target}: is a folder, not a file to write")
    if any(folder.exists() and not folder.is_dir() for folder in target.parents):
        raise AimonkError(f"{target}: cannot write there (part of the path is a file, not a folder)")
    if target.suffix.lower() != suffix:
        raise AimonkError(f"{target}: not a {suffix} file name, so not written ({option} takes the name of the file "
                          f"to write, e.g. {option} results{suffix})")
    if any(target.resolve() == Path(read).resolve() for read in reads):
        raise AimonkError(f"{target}: is a file this command reads, so not written over ({option}): write the "
                          "output elsewhere")
    return target


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

    dist = start(args.device)  # under torchrun each process predicts its share; rank 0 prints them all, in order
    predictor = Predictor(args.model, device=dist.device)
    paths = image_files(args.paths)
    if not paths:
        raise AimonkError(f"no image files in {', '.join(args.paths)}")
    if predictor.cannot_judge and not args.json:
        print(f"aimonk: note: this model cannot judge {', '.join(predictor.cannot_judge)} (no better than chance on "
              "its validation images): never reported present", file=sys.stderr)
    failures = 0
    with output_file(args.csv, ".csv", "--csv", [args.model, *paths], newline="", encoding="utf-8") as table:
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
    from aimonk.evaluate.tuning import NothingHeldOut, score_checkpoint

    reads = [args.model, *labelled_data_paths(args)]
    with output_file(args.csv, ".csv", "--csv", reads, newline="", encoding="utf-8") as table:
        try:
            scores = score_checkpoint(  # under torchrun, each process scores its share of the images
                args.model, *labelled_data_paths(args),
                include_training=args.all, device=args.device, batch_size=args.batch_size, num_workers=args.workers,
            )
        except NothingHeldOut as error:
            raise AimonkError(f"{error}, or score every labelled image with --all (training images included: "
                              "optimistic)") from None
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
    from aimonk.evaluate.export import TOLERANCE, check_format, export_model

    check_format(args.format)
    out = output_path(args.out or Path(args.model).with_suffix(f".{args.format}"), f".{args.format}", "--out",
                      [args.model, *(args.check_images or [])])
    with output_lock(out.parent):
        done = export_model(args.model, out, args.format, args.check_images)
    print(f"checked on {done.checked} images of {done.checked_on}: probabilities differ from PyTorch fp32 by at most "
          f"{done.difference:.1e} (limit {TOLERANCE:g}), from aimonk predict by at most {done.predict_difference:.1e}")
    print(f"wrote {done.path}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from aimonk.data.images import image_files
    from aimonk.evaluate.explain import output_name, write_maps
    from aimonk.evaluate.prediction import Predictor

    predictor = Predictor(args.model)
    chosen = args.attributes or predictor.attributes
    unknown = [name for name in chosen if name not in predictor.attributes]
    if unknown:
        raise AimonkError(f"{args.model}: no attribute {', '.join(unknown)}; it has {', '.join(predictor.attributes)}")
    paths = image_files(args.paths)
    if not paths:
        raise AimonkError(f"no image files in {', '.join(args.paths)}")
    failures = 0
    reads = {path.resolve() for path in [Path(args.model), *paths]}
    with output_lock(args.out):
        for path in paths:
            try:
                exact = write_maps(predictor, path, chosen, Path(args.out), reads)
            except ImageReadError as error:
                failures += 1
                print(f"aimonk: error: {error}", file=sys.stderr)
                continue
            kind = "class-activation maps" if exact else "Grad-CAM maps"
            print(f"{path}: {len(chosen)} {kind} in {Path(args.out) / output_name(path, '*').parent}")
    return 1 if failures else 0


def run_tune(args: argparse.Namespace) -> int:
    from aimonk.evaluate.report import tuning_table
    from aimonk.evaluate.tuning import score_checkpoint, tune_checkpoint

    # The checkpoint is rewritten: not while a run writes into its folder (its model could change under the tuning)
    with output_lock(Path(args.model).parent) if distributed.is_main() else nullcontext():
        scores = score_checkpoint(args.model, *labelled_data_paths(args), device=args.device, calibrated=False)
        if not distributed.is_main():  # under torchrun every process scored its share; rank 0 alone tunes, writes
            return 0
        tuned = tune_checkpoint(args.model, scores, args.bootstrap, args.folds, args.seed, not args.no_temperature)
    print(f"{args.model}: tuned on {len(scores.table)} validation images (F1 out of fold: thresholds tuned on the "
          f"other {args.folds - 1} folds; in sample: optimistic)")
    print("\n".join(tuning_table(tuned)))
    if not tuned["learnable"].all():
        print(f"not learnable, never reported present by aimonk predict: "
              f"{', '.join(tuned.index[~tuned['learnable']])}")
    return 0


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
