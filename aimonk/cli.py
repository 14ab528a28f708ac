"""`aimonk train | predict | evaluate | demo`. Input problems end as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from aimonk.errors import AimonkError

DEFAULT_MODEL = "models/aimonk_model.pth"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except (AimonkError, OSError) as error:
        print(f"aimonk: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aimonk: interrupted", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"aimonk: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from aimonk.training import TrainConfig

    defaults = {field.name: field.default for field in fields(TrainConfig)}
    parser = argparse.ArgumentParser(prog="aimonk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on DATA_DIR/images + DATA_DIR/labels.txt")
    train.add_argument("--data-dir", default=defaults["data_dir"], help="folder with images/ and labels.txt")
    train.add_argument("--labels", help="labels file (default: DATA_DIR/labels.txt)")
    train.add_argument("--image-dir", help="image folder (default: DATA_DIR/images)")
    train.add_argument("--out-dir", default=defaults["out_dir"], help="where the model and curves go")
    train.add_argument("--epochs", type=int, default=defaults["epochs"])
    train.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    train.add_argument("--lr", type=float, default=defaults["lr"])
    train.add_argument("--weights", default=defaults["weights"], help="auto | imagenet | none | PATH to a state dict")
    train.add_argument("--backbone", default=defaults["backbone"])
    train.add_argument("--train-backbone", action="store_true", help="fine-tune the backbone too (slow)")
    train.add_argument("--seed", type=int, default=defaults["seed"])
    train.add_argument("--val-fraction", type=float, default=defaults["val_fraction"],
                       help="held out for evaluation, stratified (0 trains on everything)")
    train.add_argument("--pos-weight", choices=["none", "balanced"], default=defaults["pos_weight"],
                       help="balanced weighs each attribute's positives by negatives/positives")
    train.add_argument("--precision", choices=["bf16", "fp32"], default=defaults["precision"])
    train.add_argument("--image-size", type=int, default=defaults["image_size"])
    train.add_argument("--no-feature-cache", action="store_true", help="recompute backbone features every epoch")
    train.add_argument("--cache-dir", help="feature cache (default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features)")
    train.add_argument("--workers", type=int, default=defaults["num_workers"], help="data-loading processes")
    train.add_argument("--checkpoint-every", type=int, default=defaults["checkpoint_every"],
                       help="save resumable state every N iterations too (0: each epoch)")
    train.add_argument("--device", default=defaults["device"], help="cpu, cuda, cuda:1, ...")
    train.add_argument("--strict", action="store_true", help="missing or unreadable images are an error")
    train.add_argument("--resume", action="store_true", help="continue the run saved in OUT_DIR, with its settings")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=run_train)

    predict = commands.add_parser("predict", help="print the attributes present in images")
    predict.add_argument("paths", nargs="+", help="image files or folders")
    predict.add_argument("--model", default=DEFAULT_MODEL)
    predict.add_argument("--json", action="store_true", help="one JSON object per line, with probabilities")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--workers", type=int, default=2, help="processes that decode and, on a CPU, run the model")
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(run=run_predict)

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on the validation images it held out")
    evaluate.add_argument("--model", default=DEFAULT_MODEL)
    evaluate.add_argument("--data-dir", default=".", help="folder with images/ and labels.txt")
    evaluate.add_argument("--labels", help="labels file (default: DATA_DIR/labels.txt)")
    evaluate.add_argument("--image-dir", help="image folder (default: DATA_DIR/images)")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="resamples for the confidence intervals")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    evaluate.add_argument("--all", action="store_true",
                          help="score every labelled image, training images included (optimistic)")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--workers", type=int, default=1)
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(run=run_evaluate)

    demo = commands.add_parser("demo", help="regenerate the embedded demo dataset (images/ + labels.txt)")
    demo.add_argument("--out-dir", default=".")
    demo.add_argument("--n-images", type=int, default=400)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=run_demo)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from aimonk.training import TrainConfig, TrainingInterrupted, train

    config = TrainConfig(
        data_dir=args.data_dir, labels=args.labels, image_dir=args.image_dir, out_dir=args.out_dir,
        backbone=args.backbone, weights=args.weights, freeze_backbone=not args.train_backbone,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        val_fraction=args.val_fraction, pos_weight=args.pos_weight, precision=args.precision,
        image_size=args.image_size, feature_cache=not args.no_feature_cache, cache_dir=args.cache_dir,
        num_workers=args.workers, checkpoint_every=args.checkpoint_every, strict=args.strict,
        progress=not args.no_progress, device=args.device,
    )
    try:
        result = train(config, resume=args.resume)
    except TrainingInterrupted:
        print(f"aimonk: interrupted; state saved, continue with: aimonk train --resume --out-dir {args.out_dir}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("aimonk: interrupted before the first training step; nothing new was saved", file=sys.stderr)
        return 130
    data = result.data
    print(f"trained on {len(data.train_rows)} images, {len(data.val_rows)} held out for validation, "
          f"{len(data.skipped)} skipped; final loss {result.history[-1]:.4f}")
    print(f"wrote {result.model_path}, loss_history.csv and loss_curve.png in {result.model_path.parent}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from aimonk.prediction import Predictor, expand_inputs

    predictor = Predictor(args.model, device=args.device)
    paths = expand_inputs(args.paths)
    if not paths:
        raise AimonkError(f"no image files in {', '.join(args.paths)}")
    failures = 0
    for prediction in predictor.predict(paths, args.batch_size, args.workers):
        if prediction.error:
            failures += 1
            print(f"aimonk: error: {prediction.error}", file=sys.stderr)
            continue
        present = predictor.present(prediction.probabilities)
        if args.json:
            rounded = (round(p, 4) for p in prediction.probabilities)
            probabilities = dict(zip(predictor.attributes, rounded, strict=True))
            print(json.dumps({"image": str(prediction.path), "attributes": present, "probabilities": probabilities}))
        else:
            print(f"{prediction.path}: {', '.join(present) or 'none'}")
        sys.stdout.flush()
    # Spares the interpreter's final garbage collection over torch's million objects (0.8 s at exit, measured);
    # everything predict opened is closed by now.
    gc.freeze()
    return 1 if failures else 0


def run_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from aimonk.metrics import evaluate, format_table, score_checkpoint

    if args.bootstrap < 0:
        raise AimonkError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    data_dir = Path(args.data_dir)
    scores = score_checkpoint(
        args.model, Path(args.labels) if args.labels else data_dir / "labels.txt",
        Path(args.image_dir) if args.image_dir else data_dir / "images",
        include_training=args.all, device=args.device, batch_size=args.batch_size, num_workers=args.workers,
    )
    results = evaluate(scores.table, scores.probabilities, scores.thresholds, args.bootstrap, args.seed)
    which = "all labelled images (training included)" if args.all else "the validation images held out at training"
    print(f"{args.model} on {len(scores.table)} of {which}; metrics over known labels, "
          f"[{args.bootstrap}-resample bootstrap 95% interval]")
    with pd.option_context("display.width", 1000, "display.max_columns", None, "display.max_colwidth", None):
        print(format_table(results).to_string())
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from aimonk.demo import make_demo_dataset

    labels = make_demo_dataset(Path(args.out_dir), n_images=args.n_images, seed=args.seed)
    print(f"wrote {labels} and {labels.parent / 'images'}")
    return 0
