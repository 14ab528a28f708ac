"""`aimonk audit`, `complete` and `next`: the labels themselves, judged by out-of-fold probabilities of the head
that `--recipe recommended` trains (every training option applies to the cross-fitted heads)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from pathlib import Path

from aimonk.commands.files import output_file, output_locks, output_path
from aimonk.errors import AimonkError
from aimonk.io import atomic_file


def labelling_config(args: argparse.Namespace):  # noqa: ANN201  (a TrainConfig: imported by the command alone)
    """The settings of the cross-fitted heads: `--recipe recommended` unless told otherwise, checked before any
    work."""
    from aimonk.config import LABELLING_RECIPE, config_from_arguments

    config = config_from_arguments(args, default_recipe=LABELLING_RECIPE)
    config.check()
    return config


def out_of_fold_from(config, folds: int):  # noqa: ANN001, ANN201  (TrainConfig -> OutOfFold)
    from aimonk.cache import config_stores
    from aimonk.labelling.crossfit import out_of_fold

    oof = out_of_fold(config.labels_path, config.images_path, config, folds=folds, seed=config.seed,
                      stores=config_stores(config))
    judged = int(oof.better_than_chance.sum())
    print(f"{config.labels_path}: {len(oof.images)} images, {int(oof.known.sum())} known labels and "
          f"{int((~oof.known).sum())} NA, scored out of fold ({folds} folds); {judged} of "
          f"{len(oof.attributes)} attributes better than chance")
    return oof


def run_audit(args: argparse.Namespace) -> int:
    from aimonk.labelling.audit import audit, audit_summary

    config = labelling_config(args)
    reads = [config.labels_path, config.images_path]
    with output_file(args.csv, ".csv", "--csv", reads, newline="", encoding="utf-8") as table:
        oof = out_of_fold_from(config, args.folds)
        suspects = audit(oof)
        if table:
            suspects.to_csv(table, index=False)
    print("\n".join(audit_summary(oof, suspects)))
    if args.csv:
        print(f"wrote {len(suspects)} suspects to {args.csv}")
    return 0


def run_complete(args: argparse.Namespace) -> int:
    from aimonk.data.labels import LabelFormat
    from aimonk.labelling.complete import NOT_FILLED, complete, completed_path, completion_summary, write_completed

    config = labelling_config(args)
    labels, reads = config.labels_path, [config.labels_path, config.images_path]
    target = output_path(args.out or completed_path(labels), labels.suffix or ".txt", "--out", reads)
    if target.parent.is_dir() and not os.access(target.parent, os.W_OK):  # said before the work, not after
        raise AimonkError(f"{target.parent}: cannot write there (read-only): name the completed file with --out FILE")
    table = output_path(args.csv, ".csv", "--csv", [*reads, target])
    with output_locks([target, table]):
        oof = out_of_fold_from(config, args.folds)
        completion = complete(oof, args.level)
        with atomic_file(table, "w", newline="", encoding="utf-8") as file:
            if file:  # every NA entry: its calibrated probability and what it was filled with
                rows = csv.writer(file)
                rows.writerow(["image", "attribute", "probability", "fill"])
                for i, j in zip(*(~oof.known).nonzero(), strict=True):
                    fill = completion.fills[i, j]
                    p = oof.probabilities[i, j]  # NaN: an attribute that cannot be judged
                    rows.writerow([oof.images[i], oof.attributes[j], "" if math.isnan(p) else f"{p:.6g}",
                                   "NA" if fill == NOT_FILLED else fill])
        write_completed(completion, labels, target, LabelFormat.of(config))
    print("\n".join(completion_summary(completion)))
    print(f"wrote {target}" + (f" and {table}" if table else ""))
    return 0


def run_next(args: argparse.Namespace) -> int:
    from aimonk.labelling.next import label_studio_tasks, next_to_label

    config = labelling_config(args)
    reads = [config.labels_path, config.images_path]
    studio = output_path(args.label_studio, ".json", "--label-studio", reads)
    table = output_path(args.csv, ".csv", "--csv", [*reads, studio] if studio else reads)
    with output_locks([table, studio]):
        oof = out_of_fold_from(config, args.folds)
        chosen = next_to_label(oof, args.k)
        with atomic_file(table, "w", newline="", encoding="utf-8") as file:
            if file:
                chosen.to_csv(file, index=False)
        with atomic_file(studio, "w", encoding="utf-8") as file:
            if file:
                json.dump(label_studio_tasks(chosen, oof.image_dir), file, indent=1)
    counts = chosen["attribute"].value_counts()
    print(f"the {len(chosen)} NA entries to label next (of {int((~oof.known).sum())}): " +
          ", ".join(f"{name} {int(counts.get(name, 0))}" for name in oof.attributes))
    for name, why in zip(oof.attributes, oof.shortages(), strict=True):
        if why:
            print(f"{name} cannot be judged ({why}): no probability; its NA entries come first")
    for row in chosen.head(10).itertuples():
        print(f"  {row.image} {row.attribute}: " + (row.reason if row.reason else
                                                      f"p={row.probability:.2f}, priority {row.priority:.4f}"))
    for path in (table, studio):
        if path:
            print(f"wrote {path}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from aimonk.data.labels import LabelFormat, read_labels, replace_labels
    from aimonk.labelling.studio import merge_answers, merged_path, read_export

    labels = Path(args.labels)
    target = output_path(args.out or merged_path(labels), labels.suffix or ".txt", "--out",
                         [labels, args.label_studio])
    label_format = LabelFormat.of(vars(args))
    tasks = read_export(args.label_studio)
    table = read_labels(labels, label_format)
    merge = merge_answers(tasks, table, args.label_studio, args.prefer_answers)
    merged = replace_labels(labels, merge.fills, label_format)
    with output_locks([target]), atomic_file(target, "wb") as file:
        file.write(merged)
    print(f"{args.label_studio}: {len(tasks)} tasks")
    print("\n".join(merge.summary()))
    print(f"wrote {target} ({len(merge.fills)} entries differ from {labels})")
    return 0
