"""`aimonk train | runs | predict | evaluate | tune | explain | export | audit | complete | next | cache | demo`: the
command line.

Each command is a `run_*` function of `aimonk.commands`, imported when that command runs (predict loads no training
or labelling code). This module builds the parser, and turns every input problem into one line on stderr and exit
code 2 (never a traceback). Training has one option per TrainConfig setting (the registry entries' own included),
generated from the config, so a new setting needs nothing here; every numeric option of every command is parsed by
`checked`: a value that is not a finite number, or that fails the setting's check (the same checks
`TrainConfig.check` applies), is one line naming the option, before any work.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from aimonk import io, world
from aimonk.config import (
    LABELLING_RECIPE,
    SEED,
    WORKERS,
    Check,
    TrainConfig,
    between,
    choices_of,
    declared_options,
    precision_level,
    value_problem,
)
from aimonk.errors import AimonkError, ImageReadError
from aimonk.io import MODEL_FILE
from aimonk.registry import Registry

DEFAULT_MODEL = str(Path(TrainConfig.out_dir) / MODEL_FILE)  # where `aimonk train` writes it
BATCH = between(1, 65536)  # images per forward pass
MAX_RESAMPLES = 100_000  # bootstrap resamples: more only fills memory
COMMANDS = {  # each command, and what it does
    "train": "train on DATA_DIR/images + DATA_DIR/labels.txt",
    "runs": "list the model in OUT_DIR and the earlier runs kept in OUT_DIR/runs",
    "predict": "print the attributes present in images",
    "evaluate": "score a checkpoint on the validation images it held out, or on a test set",
    "explain": "write where the model sees each attribute, as image overlays",
    "tune": "judge each attribute on the validation images, calibrate, tune thresholds",
    "audit": "rank the known labels that look wrong (cleanlab, out of fold)",
    "complete": "fill NA labels where the fills' precision reaches a level",
    "next": "the NA entries whose labels would help most, for Label Studio",
    "merge": "put Label Studio's answers to `next`'s tasks into a new labels file",
    "cache": "show the feature cache's size, or clear it",
    "export": "write the model for deployment (ONNX; needs aimonk[onnx])",
    "demo": "regenerate the embedded demo dataset (images/ + labels.txt)",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(next((word for word in argv[:1] if word in COMMANDS), None)).parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return int(done.code or 0)
    warnings.showwarning = _show_warning
    try:
        with io.sigterm_as_interrupt():  # for callers from Python: `aimonk` handles interrupts for the process
            return run(args)
    except KeyboardInterrupt:
        return io.interrupted(show=world.is_main())
    except Exception as error:
        if io.interrupt_received():  # e.g. a DataLoader worker gone with the interrupt: the interrupt
            return io.interrupted(show=world.is_main())
        if isinstance(error, (AimonkError, OSError)):
            # Under torchrun every process meets the same problems with the input, and rank 0 reports them; an
            # image that cannot be read is its own reader's to report.
            if world.is_main() or not isinstance(error, AimonkError) or isinstance(error, ImageReadError):
                print(f"aimonk: error: {error}", file=sys.stderr)
            return 2
        if not isinstance(error, RuntimeError) or not world.WORLD.peer_lost(error):
            raise
        print("aimonk: error: another process of this torchrun job stopped (torchrun's report says which)",
              file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    """The command's `run_*` function, from the one module of `aimonk.commands` it needs."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        import aimonk.distributed  # noqa: F401  (a torchrun job: `world.start` joins it)
    if args.command in ("train", "runs", "cache", "demo"):
        from aimonk.commands import training as commands
    elif args.command in ("audit", "complete", "next", "merge"):
        from aimonk.commands import labelling as commands
    else:
        from aimonk.commands import evaluation as commands
    return getattr(commands, f"run_{args.command}")(args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"aimonk: warning: {message}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse with the same one-line errors as the rest of aimonk (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"aimonk: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `command`, that one's options alone (the others are named, for --help)."""
    parser = Parser(prog="aimonk", description="Multi-label image attributes with missing (NA) labels: train a "
                    "model, predict, evaluate, tune, explain, export it; audit and complete the labels, choose which "
                    "to label next; manage the feature cache; make the demo data.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_text in COMMANDS.items():
        if command in (None, name):
            OPTIONS[name](commands, help_text)
        else:
            commands.add_parser(name, help=help_text)
    return parser


def _train(commands: argparse._SubParsersAction, help_text: str) -> None:
    train = commands.add_parser("train", help=help_text, description="Train a model. Every option is a field of "
                                "aimonk.config.TrainConfig; options not given take the recipe's value.")
    add_config_options(train)
    train.add_argument("--resume", action="store_true", help="continue the run saved in OUT_DIR, with its settings")


def _runs(commands: argparse._SubParsersAction, help_text: str) -> None:
    runs = commands.add_parser("runs", help=help_text, description="The model in OUT_DIR, then the runs a new "
                               "training run moved to OUT_DIR/runs (newest first): recipe, backbone, epochs run and "
                               "the one kept, learning rate, validation mAP, whether `aimonk tune` adjusted it.")
    runs.add_argument("--out-dir", default=TrainConfig.out_dir, help=f"[default: {TrainConfig.out_dir}]")


def _predict(commands: argparse._SubParsersAction, help_text: str) -> None:
    predict = commands.add_parser("predict", help=help_text)
    predict.add_argument("paths", nargs="+", help="image files, or folders searched recursively")
    predict.add_argument("--model", default=DEFAULT_MODEL, help="a checkpoint (.pth), or its ONNX export (.onnx, fp32 "
                         "or int8: run by onnxruntime on the CPU, with the decision rule written in it) "
                         f"[default: {DEFAULT_MODEL}]")
    predict.add_argument("--json", action="store_true", help="one JSON object per line, with probabilities")
    predict.add_argument("--csv", metavar="FILE", help="also write a table: one row per image, the probability and "
                         "decision (1/0) for each attribute, an error column")
    add_inference_options(predict, workers=2)


def _evaluate(commands: argparse._SubParsersAction, help_text: str) -> None:
    evaluate = commands.add_parser("evaluate", help=help_text)
    add_labelled_data_arguments(evaluate)
    add_number(evaluate, "--bootstrap", int, between(0, MAX_RESAMPLES), 1000,
               "resamples for the confidence intervals (0: point estimates only)")
    add_number(evaluate, "--seed", int, SEED, 0, "seed of the bootstrap")
    evaluate.add_argument("--all", action="store_true",
                          help="score every labelled image of the training labels, training images included "
                          "(optimistic); labels other than the training ones (a test set) are scored whole anyway")
    evaluate.add_argument("--details", action="store_true", help="the full table: every metric, baseline, the "
                          "verdict in words (wide)")
    evaluate.add_argument("--csv", metavar="FILE", help="also write every column (metrics with _low/_high interval "
                          "bounds, counts, prevalence, threshold, verdict) to FILE")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document with every column instead "
                          "of the table")
    add_inference_options(evaluate, workers=1)


def _explain(commands: argparse._SubParsersAction, help_text: str) -> None:
    explain = commands.add_parser("explain", help=help_text)
    explain.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for one PNG per image and attribute")
    explain.add_argument("--model", default=DEFAULT_MODEL)
    explain.add_argument("--attributes", nargs="+", metavar="NAME", help="only these attributes (default: all)")


def _tune(commands: argparse._SubParsersAction, help_text: str) -> None:
    tune = commands.add_parser("tune", help=help_text, description="On the validation images the checkpoint held "
                               "out: record each attribute's verdict; for learnable ones a temperature (where it "
                               "lowers the log loss out of fold) and a best-F1 threshold, with its F1 estimated out of "
                               "fold. Written into the checkpoint's decision rule, which aimonk predict, evaluate, the "
                               "model card and the ONNX export apply.")
    add_labelled_data_arguments(tune)
    add_number(tune, "--bootstrap", int, between(1, MAX_RESAMPLES), 1000, "resamples for the verdicts' intervals")
    add_number(tune, "--folds", int, between(2, 100), 5, "folds of the validation images for cross-fitting")
    add_number(tune, "--seed", int, SEED, 0, "seed of the bootstrap and the folds")
    tune.add_argument("--no-temperature", action="store_true", help="keep every temperature at 1")
    tune.add_argument("--device", default="cpu")


def _labelling(commands: argparse._SubParsersAction, name: str, help_text: str, description: str
               ) -> argparse.ArgumentParser:
    """audit, complete, next: out-of-fold probabilities of the head the training options describe (default
    `--recipe recommended`), cross-fitted over the labelled images."""
    about = ("Every training option sets the cross-fitted heads (default --recipe recommended: lbfgs on frozen, "
             "standardised features); --seed also seeds the folds.")
    command = commands.add_parser(name, help=help_text, description=f"{description} {about}")
    add_number(command, "--folds", int, between(2, 100), 5, "folds of the labelled images for cross-fitting")
    add_config_options(command, LABELLING_RECIPE)
    return command


def _audit(commands: argparse._SubParsersAction, help_text: str) -> None:
    audit = _labelling(commands, "audit", help_text, "Suspected label errors per attribute better than chance: "
                       "cleanlab's confident learning on the known labels' out-of-fold probabilities (NA never "
                       "flagged).")
    audit.add_argument("--csv", metavar="FILE", help="write the suspects: image, attribute, given, probability, "
                       "rank, score")


def _complete(commands: argparse._SubParsersAction, help_text: str) -> None:
    complete = _labelling(commands, "complete", help_text, "Fill NA entries where the precision of the fill, "
                          "estimated on the known labels scored out of fold, reaches --level (lower bound of its 95%% "
                          "interval); every other entry stays NA. Writes a completed labels file beside the "
                          "original, never over it.")
    add_number(complete, "--level", float, precision_level, 0.95, "precision the fills must reach")
    complete.add_argument("--out", metavar="FILE", help="completed labels file (default: LABELS stem + "
                          ".completed.txt, beside it)")
    complete.add_argument("--csv", metavar="FILE", help="also write every NA entry: image, attribute, calibrated "
                          "probability, fill (1, 0 or NA)")


def _next(commands: argparse._SubParsersAction, help_text: str) -> None:
    next_ = _labelling(commands, "next", help_text, "Rank NA entries by p(1-p) of their calibrated probability "
                       "times the width of their attribute's AP interval.")
    add_number(next_, "--k", int, between(1, 10_000_000), 50, "entries to propose")
    next_.add_argument("--csv", metavar="FILE", help="write them: image, attribute, probability, priority")
    next_.add_argument("--label-studio", metavar="FILE", help="write them as a Label Studio import file (JSON "
                       "tasks; labelling config: docs/cli.md)")


def _merge(commands: argparse._SubParsersAction, help_text: str) -> None:
    merge = commands.add_parser("merge", help=help_text, description="Read a Label Studio JSON export of the tasks "
                                "`aimonk next --label-studio` wrote and write the labels file with each answered NA "
                                "entry filled (present 1, absent 0; `cannot tell` stays NA), every other byte as it "
                                "was; never over the original. Conflicts (an answer against a known label, annotators "
                                "who disagree) are listed and left as they were unless --prefer-answers.")
    merge.add_argument("--label-studio", required=True, metavar="EXPORT", help="Label Studio's JSON export")
    merge.add_argument("--labels", default="labels.txt", help="the labels file the tasks were made from "
                       "[default: labels.txt]")
    merge.add_argument("--out", metavar="FILE", help="the merged labels file (default: LABELS stem + .merged and its "
                       "suffix, beside it)")
    merge.add_argument("--prefer-answers", action="store_true", help="an answer replaces a known label it "
                       "contradicts (annotators who disagree still leave the entry as it was)")
    add_label_format_options(merge)


def _cache(commands: argparse._SubParsersAction, help_text: str) -> None:
    cache = commands.add_parser("cache", help=help_text)
    cache.add_argument("--cache-dir", help="default: $AIMONK_CACHE_DIR or ~/.cache/aimonk/features")
    cache.add_argument("--clear", action="store_true",
                       help="delete what the cache made (any other file in its folders stays)")


def _export(commands: argparse._SubParsersAction, help_text: str) -> None:
    from aimonk.evaluate.export import CALIBRATION_IMAGES, FORMATS, QUANTIZATIONS

    export = commands.add_parser("export", help=help_text, description="Export the whole model (fp32, or int8 with "
                                 "--quantize int8) with its decision rule (temperatures in the graph; attribute names, "
                                 "thresholds and preprocessing in the file), after checking it against PyTorch on "
                                 "real images.")
    export.add_argument("--model", default=DEFAULT_MODEL)
    export.add_argument("--format", default="onnx", help=f"one of: {', '.join(FORMATS)}")
    export.add_argument("--out", metavar="FILE", help="output file (default: the model's path, suffix .onnx, or "
                        ".int8.onnx with --quantize int8)")
    export.add_argument("--check-images", nargs="+", metavar="PATH", help="image files or folders to check the "
                        "export on (default: the checkpoint's validation images, where it was trained)")
    export.add_argument("--quantize", choices=QUANTIZATIONS, help="int8: onnxruntime static quantisation, calibrated "
                        "on the checkpoint's training images (for CPUs with VNNI; docs/export.md)")
    export.add_argument("--calibration-images", nargs="+", metavar="PATH", help="image files or folders to "
                        f"calibrate int8 on (default: up to {CALIBRATION_IMAGES} of the checkpoint's training images)")


def _demo(commands: argparse._SubParsersAction, help_text: str) -> None:
    demo = commands.add_parser("demo", help=help_text)
    demo.add_argument("--out-dir", default=".", help="folder for images/ and labels.txt")
    demo.add_argument("--overwrite", action="store_true", help="replace the labels.txt and demo images already there "
                      "(otherwise a folder holding a dataset is refused)")
    add_number(demo, "--n-images", int, between(1, 1_000_000), 400, "number of images")
    add_number(demo, "--seed", int, SEED, 0, "random seed")
    add_number(demo, "--size", int, between(32, 4096), 96, "image side in pixels")


OPTIONS: dict[str, Callable[[argparse._SubParsersAction, str], None]] = {
    "train": _train, "runs": _runs, "predict": _predict, "evaluate": _evaluate, "explain": _explain, "tune": _tune,
    "audit": _audit, "complete": _complete, "next": _next, "merge": _merge, "cache": _cache, "export": _export,
    "demo": _demo,
}


def add_inference_options(command: argparse.ArgumentParser, workers: int) -> None:
    """How a command runs the model over images: batch size, decoding processes, device."""
    add_number(command, "--batch-size", int, BATCH, 32, "images per forward pass")
    add_number(command, "--workers", int, WORKERS, workers, "processes that decode and, on a CPU, run the model")
    command.add_argument("--device", default="cpu")


def add_labelled_data_arguments(command: argparse.ArgumentParser) -> None:
    """A checkpoint and labelled data: by default those its run was trained on (evaluate and tune score its
    validation images), found where the checkpoint recorded them."""
    command.add_argument("--model", default=DEFAULT_MODEL)
    command.add_argument("--data-dir", help="folder with images/ and labels.txt (default: the labels and images the "
                         "model was trained on)")
    command.add_argument("--labels", help="labels file (default: DATA_DIR/labels.txt); other labels than the "
                         "training ones are a test set")
    command.add_argument("--image-dir", "--images", dest="image_dir", help="image folder (default: DATA_DIR/images)")
    add_label_format_options(command)


LABEL_FORMAT = ("filename_column", "attributes", "values", "delimiter")  # the TrainConfig settings of a label table


def add_label_format_options(command: argparse.ArgumentParser) -> None:
    """How a label table is read (a CSV's columns, the values' spelling): the training settings' options."""
    specs = {spec.name: spec for spec in fields(TrainConfig)}
    for name in LABEL_FORMAT:
        _add_option(command, name, specs[name].type, specs[name].metadata["help"], None,
                    specs[name].metadata.get("check"))


# Options: every numeric one checked here, as the training settings are.

_TYPES = {"str": str, "str | None": str, "int": int, "int | None": int, "float": float}


def checked(kind: type, name: str, check: Check | None) -> Callable[[str], Any]:
    """An argparse `type`: the text as `kind` (argparse reports one that is not), then refused unless finite and
    passing `check`."""

    def convert(text: str) -> Any:
        value = kind(text)
        problem = value_problem(value, check)
        if problem:
            raise argparse.ArgumentTypeError(f"{name} {problem}, got {value}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in "invalid int value: 'x'"
    convert.check = check  # type: ignore[attr-defined]  # marks a checked option (the tests find them all)
    return convert


def add_number(parser: argparse.ArgumentParser, flag: str, kind: type, check: Check, default: int | float,
               help: str | None = None) -> None:
    """A numeric option of a command other than train, checked like the training settings."""
    name = flag.lstrip("-").replace("-", "_")
    parser.add_argument(flag, type=checked(kind, name, check), default=default, metavar=name.upper(),
                        help=f"{help + ' ' if help else ''}[default: {default}]")


def add_config_options(parser: argparse.ArgumentParser, recipe: str = "reference") -> None:
    """One option per setting, its help showing `recipe`'s value (the command's default recipe). Options not given
    stay absent, so the recipe's values apply. Every method a run can use is registered first: the training layer's,
    and the labels workflow's NA mode."""
    import aimonk.labelling.selftrain  # noqa: F401  (NA_MODES: self_train)
    import aimonk.train  # noqa: F401  (every table a training run reads)

    defaults = TrainConfig.from_recipe(recipe)
    for spec in fields(TrainConfig):
        help_text, registry = spec.metadata["help"], spec.metadata.get("choices")
        if isinstance(registry, Registry):
            help_text += " (" + "; ".join(f"{name}: {text}" if text else name
                                          for name, text in registry.descriptions.items()) + ")"
        _add_option(parser, spec.name, spec.type, help_text, getattr(defaults, spec.name), spec.metadata.get("check"),
                    choices_of(spec.name))
        for entry_option in declared_options(registry) if isinstance(registry, Registry) else ():
            _add_option(parser, entry_option.name, type(entry_option.default).__name__, entry_option.help,
                        entry_option.default, entry_option.check)


def _add_option(parser: argparse.ArgumentParser, name: str, kind: str, help_text: str, default: Any,
                check: Check | None, choices: list[str] | None = None) -> None:
    flag = "--" + name.replace("_", "-")
    if default is not None:
        help_text += f" [default: {default}]"
    if kind == "bool":
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
    else:  # choices are checked by TrainConfig.check, whose one-line error lists them
        metavar = "{" + ",".join(choices) + "}" if choices else name.upper()
        kind_type = _TYPES[kind]
        parse = kind_type if kind_type is str else checked(kind_type, name, check)
        parser.add_argument(flag, type=parse, default=argparse.SUPPRESS, help=help_text, metavar=metavar)
