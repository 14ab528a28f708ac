"""`aimonk predict`, `evaluate`, `tune`, `explain` and `export`: what a trained checkpoint does and how good it is."""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
from contextlib import nullcontext
from pathlib import Path

from aimonk import world
from aimonk.commands.files import labelled_data, output_file, output_path
from aimonk.config import data_paths
from aimonk.errors import AimonkError, ImageReadError
from aimonk.io import output_lock


def run_predict(args: argparse.Namespace) -> int:
    import csv

    from aimonk.data.images import image_files
    from aimonk.evaluate.prediction import Predictor

    job = world.start(args.device)  # under torchrun each process predicts its share; rank 0 prints them all, in order
    if Path(args.model).suffix == ".onnx":  # an export (fp32 or int8), run by onnxruntime on the CPU
        from aimonk.evaluate.onnx_inference import OnnxPredictor

        predictor = OnnxPredictor(args.model)
    else:
        predictor = Predictor(args.model, device=job.device)
    paths = image_files(args.paths)
    if not paths:
        raise AimonkError(f"no image files in {', '.join(args.paths)}")
    if not args.json:
        for name, why in predictor.rule.why_not_judged().items():
            print(f"aimonk: note: this model cannot judge {name} ({why}): never reported present", file=sys.stderr)
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
                rounded = (None if math.isnan(p) else round(p, 4) for p in prediction.probabilities)
                probabilities = dict(zip(predictor.attributes, rounded, strict=True))
                print(json.dumps({"image": str(prediction.path), "attributes": present,
                                  "probabilities": probabilities, "cannot_judge": predictor.cannot_judge,
                                  "why_not_judged": predictor.rule.why_not_judged()}))
            else:
                print(f"{prediction.path}: {', '.join(present) or 'none'}")
            sys.stdout.flush()
    # Spares the interpreter's final garbage collection over torch's million objects (0.8 s at exit, measured);
    # everything predict opened is closed by now.
    gc.freeze()
    return 1 if failures else 0


def run_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from aimonk.checkpoint import load_checkpoint
    from aimonk.evaluate.report import compact_table, format_table
    from aimonk.evaluate.scoring import NothingHeldOut
    from aimonk.metrics import evaluate, map_line, mean_average_precision

    world.start(args.device)  # an unusable device is said first
    given = data_paths(args.data_dir or ".", args.labels, args.image_dir)
    output_path(args.csv, ".csv", "--csv", [args.model, *given])  # an output over an input: refused before all
    checkpoint = load_checkpoint(args.model)
    data = labelled_data(args, checkpoint)
    every = args.all or not data.training  # a test set: every image it labels
    with output_file(args.csv, ".csv", "--csv", [args.model, data.labels, data.images], newline="",
                     encoding="utf-8") as table:
        try:
            scored = scored_checkpoint(args, checkpoint, data, include_training=every, batch_size=args.batch_size,
                                       num_workers=args.workers)
        except NothingHeldOut as error:
            raise AimonkError(f"{error}, or score a test set (--labels TEST --image-dir DIR), or every labelled image "
                              "with --all (training images included: optimistic)") from None
        if not world.is_main():
            return 0
        scores = scored.scores()
        results = evaluate(scores.table, scores.probabilities, scores.thresholds, args.bootstrap, args.seed)
        overall = mean_average_precision(scores.table, scores.probabilities, args.bootstrap, args.seed)
        if table:
            results.to_csv(table)
    scope = "test" if not data.training else "all" if args.all else "validation"
    which = {"test": f"the labelled images of {data.labels}", "all": "all labelled images (training included)",
             "validation": "the validation images held out at training"}[scope]
    if args.json:
        print(json.dumps({"model": str(args.model), "labels": str(data.labels), "images": len(scores.table),
                          "scope": scope, "bootstrap": args.bootstrap, "seed": args.seed, "confidence": 0.95,
                          **{key: None if isinstance(value, float) and value != value else value
                             for key, value in overall.items() if key != "attributes"},
                          "map_attributes": overall["attributes"],
                          "attributes": json.loads(results.reset_index().to_json(orient="records"))}))
        return 0
    print(f"{args.model} on {len(scores.table)} of {which}")
    print(f"metrics over known labels, [{args.bootstrap}-resample bootstrap 95% interval]")
    if args.details:
        with pd.option_context("display.width", 1000, "display.max_columns", None, "display.max_colwidth", None):
            print(format_table(results).to_string())
    else:
        print("\n".join(compact_table(results)))
    print(map_line(overall))
    return 0


def scored_checkpoint(args: argparse.Namespace, checkpoint: dict | None = None, data=None,  # noqa: ANN001
                      **options):  # noqa: ANN003, ANN201  (a Scored)
    """`score_checkpoint` of `--model` on the labelled data the arguments name (`labelled_data`), its features from
    the feature cache its training run used."""
    from aimonk.cache import model_stores
    from aimonk.checkpoint import load_checkpoint
    from aimonk.evaluate.scoring import score_checkpoint

    world.start(args.device)  # an unusable device is said first
    checkpoint = checkpoint or load_checkpoint(args.model)
    data = data or labelled_data(args, checkpoint)
    return score_checkpoint(args.model, data.labels, data.images, device=args.device, stores=model_stores(checkpoint),
                            checkpoint=checkpoint, label_format=data.label_format, **options)


def run_export(args: argparse.Namespace) -> int:
    from aimonk.evaluate.export import TOLERANCE, check_format, export_model

    check_format(args.format)
    suffix = f".{args.quantize}.{args.format}" if args.quantize else f".{args.format}"
    out = output_path(args.out or Path(args.model).with_suffix(suffix), f".{args.format}", "--out",
                      [args.model, *(args.check_images or []), *(args.calibration_images or [])])
    with output_lock(out.parent):
        done = export_model(args.model, out, args.format, args.check_images, args.quantize, args.calibration_images)
    print(f"checked on {done.checked} images of {done.checked_on}: probabilities differ from PyTorch fp32 by at most "
          f"{done.difference:.1e} (limit {TOLERANCE:g}), from aimonk predict by at most {done.predict_difference:.1e}")
    if done.quantized:
        q = done.quantized
        print(f"{q['type']} ({q['format']}, per-channel {q['per_channel']}), calibrated on {q['calibration_images']} "
              f"images of {q['calibrated_on']}: on the {done.checked} check images its probabilities differ from "
              f"fp32 by at most {q['difference']:.2g}, its decisions agree on {q['agreement']:.1%}")
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
    from aimonk.evaluate.tuning import tune_checkpoint

    # The checkpoint is rewritten: not while a run writes into its folder (its model could change under the tuning)
    with output_lock(Path(args.model).parent) if world.is_main() else nullcontext():
        scored = scored_checkpoint(args)
        if not world.is_main():  # under torchrun every process scored its share; rank 0 alone tunes, writes
            return 0
        tuned = tune_checkpoint(args.model, scored, args.bootstrap, args.folds, args.seed, not args.no_temperature)
    print(f"{args.model}: tuned on {len(scored.table)} validation images (F1 out of fold: thresholds tuned on the "
          f"other {args.folds - 1} folds; in sample: optimistic)")
    print("\n".join(tuning_table(tuned)))
    if not tuned["learnable"].all():
        print(f"not learnable, never reported present by aimonk predict: "
              f"{', '.join(tuned.index[~tuned['learnable']])}")
    return 0
