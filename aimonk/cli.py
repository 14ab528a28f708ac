"""`aimonk train | predict | evaluate | tune | explain | export | audit | complete | next | cache | demo`: the command
line.

Each command is a `run_*` function of `aimonk.commands`; this module only builds the parser and turns every input
problem into one line on stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from aimonk import distributed
from aimonk.commands import (
    LABELLING_RECIPE,
    run_audit,
    run_cache,
    run_complete,
    run_demo,
    run_evaluate,
    run_explain,
    run_export,
    run_next,
    run_predict,
    run_train,
    run_tune,
)
from aimonk.config import SEED, WORKERS, TrainConfig, between
from aimonk.errors import AimonkError, ImageReadError
from aimonk.io import MODEL_FILE
from aimonk.options import add_config_options, add_number

DEFAULT_MODEL = str(Path(TrainConfig.out_dir) / MODEL_FILE)  # where `aimonk train` writes it
BATCH = between(1, 65536)  # images per forward pass
MAX_RESAMPLES = 100_000  # bootstrap resamples: more only fills memory


def LEVEL(value: float) -> str | None:  # noqa: N802  (a check, named like the others)
    return None if 0.5 <= value < 1 else "must be in [0.5, 1)"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return int(done.code or 0)
    warnings.showwarning = _show_warning
    try:
        with distributed.sigterm_as_interrupt():  # SIGTERM is Ctrl-C for every command: outputs stay whole
            return args.run(args)
    except (AimonkError, OSError) as error:
        # Under torchrun every process meets the same problems with the input, and rank 0 reports them; an image
        # that cannot be read is its own reader's to report.
        if distributed.is_main() or not isinstance(error, AimonkError) or isinstance(error, ImageReadError):
            print(f"aimonk: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if distributed.is_main():
            print("aimonk: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        from aimonk.distributed import peer_lost

        if not peer_lost(error):
            raise
        print("aimonk: error: another process of this torchrun job stopped (torchrun's report says which)",
              file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"aimonk: warning: {message}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse with the same one-line errors as the rest of aimonk (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"aimonk: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:

    parser = Parser(prog="aimonk", description="Multi-label image attributes with missing (NA) labels: train a "
                    "model, predict, evaluate, tune, explain, export it; audit and complete the labels, choose which "
                    "to label next; manage the feature cache; make the demo data.")
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
    add_inference_options(predict, workers=2)
    predict.set_defaults(run=run_predict)

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on the validation images it held out")
    add_labelled_data_arguments(evaluate)
    add_number(evaluate, "--bootstrap", int, between(0, MAX_RESAMPLES), 1000,
               "resamples for the confidence intervals (0: point estimates only)")
    add_number(evaluate, "--seed", int, SEED, 0, "seed of the bootstrap")
    evaluate.add_argument("--all", action="store_true",
                          help="score every labelled image, training images included (optimistic)")
    evaluate.add_argument("--details", action="store_true", help="the full table: every metric, baseline, the "
                          "verdict in words (wide)")
    evaluate.add_argument("--csv", metavar="FILE", help="also write every column (metrics with _low/_high interval "
                          "bounds, counts, prevalence, threshold, verdict) to FILE")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document with every column instead "
                          "of the table")
    add_inference_options(evaluate, workers=1)
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
    add_number(tune, "--bootstrap", int, between(1, MAX_RESAMPLES), 1000, "resamples for the verdicts' intervals")
    add_number(tune, "--folds", int, between(2, 100), 5, "folds of the validation images for cross-fitting")
    add_number(tune, "--seed", int, SEED, 0, "seed of the bootstrap and the folds")
    tune.add_argument("--no-temperature", action="store_true", help="keep every temperature at 1")
    tune.add_argument("--device", default="cpu")
    tune.set_defaults(run=run_tune)

    add_labelling_commands(commands)

    cache = commands.add_parser("cache", help="show the feature cache's size, or clear it")
    cache.add_argument("--cache-dir", help="default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features")
    cache.add_argument("--clear", action="store_true",
                       help="delete what the cache made (any other file in its folders stays)")
    cache.set_defaults(run=run_cache)

    from aimonk.evaluate.export import FORMATS

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
    demo.add_argument("--overwrite", action="store_true", help="replace the labels.txt and demo images already there "
                      "(otherwise a folder holding a dataset is refused)")
    add_number(demo, "--n-images", int, between(1, 1_000_000), 400, "number of images")
    add_number(demo, "--seed", int, SEED, 0, "random seed")
    add_number(demo, "--size", int, between(32, 4096), 96, "image side in pixels")
    demo.set_defaults(run=run_demo)
    return parser


def add_labelling_commands(commands: argparse._SubParsersAction) -> None:
    """audit, complete, next: out-of-fold probabilities of the head the training options describe (default
    `--recipe recommended`), cross-fitted over the labelled images."""
    about = ("Every training option sets the cross-fitted heads (default --recipe recommended: lbfgs on frozen, "
             "standardised features); --seed also seeds the folds.")
    audit = commands.add_parser("audit", help="rank the known labels that look wrong (cleanlab, out of fold)",
                                description="Suspected label errors per attribute better than chance: cleanlab's "
                                "confident learning on the known labels' out-of-fold probabilities (NA never "
                                "flagged). " + about)
    audit.add_argument("--csv", metavar="FILE", help="write the suspects: image, attribute, given, probability, "
                       "rank, score")
    complete = commands.add_parser("complete", help="fill NA labels where the fills' precision reaches a level",
                                   description="Fill NA entries where the precision of the fill, estimated on the "
                                   "known labels scored out of fold, reaches --level (lower bound of its 95%% "
                                   "interval); every other entry stays NA. Writes a completed labels file beside the "
                                   "original, never over it. " + about)
    add_number(complete, "--level", float, LEVEL, 0.95, "precision the fills must reach")
    complete.add_argument("--out", metavar="FILE", help="completed labels file (default: LABELS stem + "
                          ".completed.txt, beside it)")
    complete.add_argument("--csv", metavar="FILE", help="also write every NA entry: image, attribute, calibrated "
                          "probability, fill (1, 0 or NA)")
    next_ = commands.add_parser("next", help="the NA entries whose labels would help most, for Label Studio",
                                description="Rank NA entries by p(1-p) of their calibrated probability times the "
                                "width of their attribute's AP interval. " + about)
    add_number(next_, "--k", int, between(1, 10_000_000), 50, "entries to propose")
    next_.add_argument("--csv", metavar="FILE", help="write them: image, attribute, probability, priority")
    next_.add_argument("--label-studio", metavar="FILE", help="write them as a Label Studio import file (JSON "
                       "tasks; labelling config: docs/cli.md)")
    for command, run in ((audit, run_audit), (complete, run_complete), (next_, run_next)):
        add_number(command, "--folds", int, between(2, 100), 5, "folds of the labelled images for cross-fitting")
        add_config_options(command, LABELLING_RECIPE)
        command.set_defaults(run=run)


def add_inference_options(command: argparse.ArgumentParser, workers: int) -> None:
    """How a command runs the model over images: batch size, decoding processes, device."""
    add_number(command, "--batch-size", int, BATCH, 32, "images per forward pass")
    add_number(command, "--workers", int, WORKERS, workers, "processes that decode and, on a CPU, run the model")
    command.add_argument("--device", default="cpu")


def add_labelled_data_arguments(command: argparse.ArgumentParser) -> None:
    """A checkpoint and the labelled data it was trained on (evaluate and tune score its validation images)."""
    command.add_argument("--model", default=DEFAULT_MODEL)
    command.add_argument("--data-dir", default=".", help="folder with images/ and labels.txt")
    command.add_argument("--labels", help="labels file (default: DATA_DIR/labels.txt)")
    command.add_argument("--image-dir", help="image folder (default: DATA_DIR/images)")
