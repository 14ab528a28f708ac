"""`aimonk train | predict | evaluate | export | demo`. Input problems end as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import warnings
from pathlib import Path

from aimonk.errors import AimonkError, ImageReadError

DEFAULT_MODEL = "models/aimonk_model.pth"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return int(done.code or 0)
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except (AimonkError, OSError) as error:
        # Under torchrun every process meets the same problems with the input, and rank 0 reports them; an image
        # that cannot be read is its own reader's to report.
        if _main_process() or not isinstance(error, AimonkError) or isinstance(error, ImageReadError):
            print(f"aimonk: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _main_process():
            print("aimonk: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        from aimonk.distributed import peer_lost

        if not peer_lost(error):
            raise
        print("aimonk: error: another process of this torchrun job stopped (torchrun's report says which)",
              file=sys.stderr)
        return 1


def _main_process() -> bool:
    """Rank 0 of a torchrun job, or the only process."""
    return os.environ.get("RANK", "0") == "0"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"aimonk: warning: {message}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse with the same one-line errors as the rest of aimonk (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"aimonk: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from aimonk.config import add_config_options

    parser = Parser(prog="aimonk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train on DATA_DIR/images + DATA_DIR/labels.txt",
                                description="Train a model. Every option is a field of aimonk.config.TrainConfig; "
                                "options not given take the recipe's value.")
    add_config_options(train)
    train.add_argument("--resume", action="store_true", help="continue the run saved in OUT_DIR, with its settings")
    train.set_defaults(run=run_train)

    predict = commands.add_parser("predict", help="print the attributes present in images")
    predict.add_argument("paths", nargs="+", help="image files, or folders searched recursively")
    predict.add_argument("--model", default=DEFAULT_MODEL)
    predict.add_argument("--json", action="store_true", help="one JSON object per line, with probabilities")
    predict.add_argument("--csv", metavar="FILE", help="also write a table: one row per image, the probability and "
                         "decision (1/0) for each attribute, an error column")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--workers", type=int, default=2, help="processes that decode and, on a CPU, run the model")
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(run=run_predict)

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on the validation images it held out")
    add_labelled_data_arguments(evaluate)
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="resamples for the confidence intervals")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    evaluate.add_argument("--all", action="store_true",
                          help="score every labelled image, training images included (optimistic)")
    evaluate.add_argument("--details", action="store_true", help="the full table: every metric, baseline, the "
                          "verdict in words (wide)")
    evaluate.add_argument("--csv", metavar="FILE", help="also write every column (metrics with _low/_high interval "
                          "bounds, counts, prevalence, threshold, verdict) to FILE")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document with every column instead "
                          "of the table")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--workers", type=int, default=1)
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(run=run_evaluate)

    explain = commands.add_parser("explain", help="write where the model sees each attribute, as image overlays")
    explain.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for one PNG per image and attribute")
    explain.add_argument("--model", default=DEFAULT_MODEL)
    explain.add_argument("--attributes", nargs="+", metavar="NAME", help="only these attributes (default: all)")
    explain.set_defaults(run=run_explain)

    tune = commands.add_parser("tune", help="judge each attribute on the validation images, calibrate, tune thresholds",
                               description="On the validation images the checkpoint held out: record each "
                               "attribute's verdict; for learnable ones a temperature (where it lowers the log loss "
                               "out of fold) and a best-F1 threshold, with its F1 estimated out of fold. Written "
                               "into the checkpoint; aimonk predict uses them.")
    add_labelled_data_arguments(tune)
    tune.add_argument("--bootstrap", type=int, default=1000, help="resamples for the verdicts' intervals")
    tune.add_argument("--folds", type=int, default=5, help="folds of the validation images for cross-fitting")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--no-temperature", action="store_true", help="keep every temperature at 1")
    tune.add_argument("--device", default="cpu")
    tune.set_defaults(run=run_tune)

    cache = commands.add_parser("cache", help="show the feature cache's size, or clear it")
    cache.add_argument("--cache-dir", help="default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features")
    cache.add_argument("--clear", action="store_true", help="delete everything the cache holds")
    cache.set_defaults(run=run_cache)

    from aimonk.export import FORMATS

    export = commands.add_parser("export", help="write the model for deployment (ONNX; needs aimonk[onnx])",
                                 description="Export the whole model (fp32) with its attribute names, thresholds and "
                                 "preprocessing in the file, after checking it against PyTorch on real images.")
    export.add_argument("--model", default=DEFAULT_MODEL)
    export.add_argument("--format", default="onnx", help=f"one of: {', '.join(FORMATS)}")
    export.add_argument("--out", metavar="FILE", help="output file (default: the model's path, suffix .onnx)")
    export.add_argument("--check-images", nargs="+", metavar="PATH", help="image files or folders to check the "
                        "export on (default: the checkpoint's validation images, where it was trained)")
    export.set_defaults(run=run_export)

    demo = commands.add_parser("demo", help="regenerate the embedded demo dataset (images/ + labels.txt)")
    demo.add_argument("--out-dir", default=".", help="folder for images/ and labels.txt")
    demo.add_argument("--n-images", type=int, default=400, help="number of images")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--size", type=int, default=96, help="image side in pixels")
    demo.set_defaults(run=run_demo)
    return parser


def add_labelled_data_arguments(command: argparse.ArgumentParser) -> None:
    """A checkpoint and the labelled data it was trained on (evaluate and tune score its validation images)."""
    command.add_argument("--model", default=DEFAULT_MODEL)
    command.add_argument("--data-dir", default=".", help="folder with images/ and labels.txt")
    command.add_argument("--labels", help="labels file (default: DATA_DIR/labels.txt)")
    command.add_argument("--image-dir", help="image folder (default: DATA_DIR/images)")


def labelled_data_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The labels file and image folder that `add_labelled_data_arguments`' options name."""
    data_dir = Path(args.data_dir)
    return (Path(args.labels) if args.labels else data_dir / "labels.txt",
            Path(args.image_dir) if args.image_dir else data_dir / "images")


def run_train(args: argparse.Namespace) -> int:
    from aimonk.config import config_from_arguments, recipe_description
    from aimonk.resume import TrainingInterrupted
    from aimonk.training import train

    # torch's million objects live until exit: the collector skips them, in the full collections during training
    # and the interpreter's final one (together about 1 s of a 4 s warm run, measured)
    gc.freeze()
    config = config_from_arguments(args)
    command = "torchrun ... -m aimonk" if "WORLD_SIZE" in os.environ else "aimonk"  # how it was started
    try:
        result = train(config, resume=args.resume)
    except TrainingInterrupted:
        if _main_process():
            print(f"aimonk: interrupted; state saved, continue with: {command} train --resume --out-dir "
                  f"{config.out_dir}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if _main_process():
            print("aimonk: interrupted before the first training step; nothing new was saved", file=sys.stderr)
        return 130
    if not _main_process():
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

    from aimonk.distributed import start
    from aimonk.images import image_files
    from aimonk.outputs import atomic_file
    from aimonk.prediction import Predictor

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
        for prediction in predictor.predict_in_shares(paths, dist, args.batch_size, args.workers):
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

    from aimonk.metrics import compact_table, evaluate, format_table
    from aimonk.outputs import atomic_file
    from aimonk.scoring import score_checkpoint

    if args.bootstrap < 0:
        raise AimonkError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    with atomic_file(args.csv if _main_process() else None, "w", newline="", encoding="utf-8") as table:
        scores = score_checkpoint(  # under torchrun, each process scores its share of the images
            args.model, *labelled_data_paths(args),
            include_training=args.all, device=args.device, batch_size=args.batch_size, num_workers=args.workers,
        )
        if not _main_process():
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
    from aimonk.export import TOLERANCE, export_model

    done = export_model(args.model, args.out, args.format, args.check_images)
    print(f"checked on {done.checked} images of {done.checked_on}: probabilities differ from PyTorch fp32 by at most "
          f"{done.difference:.1e} (limit {TOLERANCE:g}), from aimonk predict by at most {done.predict_difference:.1e}")
    print(f"wrote {done.path}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from aimonk.explain import explain, output_name, overlay, upsampled
    from aimonk.images import image_files, open_rgb
    from aimonk.outputs import atomic_file
    from aimonk.prediction import Predictor

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
    from aimonk.scoring import score_checkpoint, tune_checkpoint

    if args.bootstrap < 1 or args.folds < 2:
        raise AimonkError("--bootstrap must be at least 1 and --folds at least 2")
    scores = score_checkpoint(args.model, *labelled_data_paths(args), device=args.device, calibrated=False)
    if not _main_process():  # under torchrun every process scored its share; rank 0 alone tunes and writes
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
    from aimonk.feature_cache import cache_contents, clear_cache, default_cache_dir

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
    from aimonk.demo import make_demo_dataset

    if args.n_images < 1 or args.size < 32:
        raise AimonkError("--n-images must be at least 1 and --size at least 32")
    labels = make_demo_dataset(Path(args.out_dir), n_images=args.n_images, seed=args.seed, size=args.size)
    print(f"wrote {labels} and {labels.parent / 'images'}")
    return 0
