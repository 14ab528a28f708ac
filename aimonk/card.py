"""What a model says to a person, beside its checkpoint: the model card `MODEL_CARD.md`, the run's loss history
(`loss_history.csv`) and curve (`loss_curve.png`), and its validation per epoch (`metrics.csv`,
`validation_curve.png`).

`aimonk train` writes the card, `aimonk tune` and the threshold explorer's Save (notebook 03) rewrite it, all through
`write_model_card`. Every number on it is an entry of the checkpoint, or a share of two (tests/test_card.py checks
each one against the checkpoint), so the card never says what the model file does not.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aimonk.checkpoint import DecisionRule, load_checkpoint
from aimonk.config import TrainConfig, recipe_description
from aimonk.io import CARD_FILE, CURVE_FILE, HISTORY_FILE, METRICS_FILE, VALIDATION_CURVE_FILE, atomic_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Aimonk_multilabel_problem"

LIMITATIONS = (
    "Every number here comes from the validation images held out at training: images of the same collection, "
    "labelled the same way. On images of another kind (other cameras, places, people) it may not hold.",
    "The intervals are bootstrap intervals over those images: they show how much the numbers move with the sample, "
    "not how far they would move on another collection.",
    "Thresholds tuned on the validation images make the F1 on them optimistic: `aimonk tune` prints F1 out of fold "
    "(each image decided by a threshold tuned without it), the honest estimate.",
    "Only what is labelled is learned: an attribute is judged on its known labels; NA labels are left out of "
    "training and of every metric.",
)


def write_model_card(checkpoint_path: str | Path, checkpoint: dict | None = None) -> Path:
    """`MODEL_CARD.md` beside the checkpoint, from the checkpoint alone (`checkpoint`: what was just written there,
    so that it is not read back), written atomically."""
    checkpoint_path = Path(checkpoint_path)
    text = model_card(checkpoint or load_checkpoint(checkpoint_path), checkpoint_path.name)
    path = checkpoint_path.parent / CARD_FILE
    with atomic_file(path, "w", encoding="utf-8") as file:
        file.write(text)
    return path


def model_card(checkpoint: dict, name: str) -> str:
    """The card's markdown for a checkpoint (the dict `load_checkpoint` gives) saved as `name`."""
    return "\n".join([f"# Model card: {name}", "",
                      "Written from the checkpoint alone by aimonk (`aimonk train`; rewritten by `aimonk tune` and by "
                      "the threshold explorer of notebook 03): every number below is stored in the checkpoint.", "",
                      *_data(checkpoint), *_model(checkpoint), *_training(checkpoint), *_validation(checkpoint),
                      *_cannot_judge(checkpoint),
                      "## Limitations", "", *(f"- {line}" for line in LIMITATIONS), ""])


def _data(checkpoint: dict) -> Iterator[str]:
    yield from ["## Data", ""]
    counts, config = checkpoint.get("label_counts"), checkpoint.get("train_config", {})
    if config.get("data_dir") is not None:
        yield f"- data: `{config.get('labels') or Path(config['data_dir']) / 'labels.txt'}` (labels), " \
              f"`{config.get('image_dir') or Path(config['data_dir']) / 'images'}` (images)"
    if counts is None:
        yield from ["- the checkpoint records no label counts (written before aimonk stored them)", ""]
        return
    yield (f"- {counts['images']} labelled images used: {counts['train']} for training, {counts['validation']} held "
           f"out for validation; {counts['skipped']} skipped (missing or unreadable)")
    yield from ["", "| attribute | known labels | present | absent | NA share |", "| --- | --- | --- | --- | --- |"]
    for name, known, positive in zip(checkpoint["attributes"], counts["known"], counts["positive"], strict=True):
        yield f"| {name} | {known} | {positive} | {known - positive} | {percent(1 - known / counts['images'])} |"
    yield ""


def _model(checkpoint: dict) -> Iterator[str]:
    config = checkpoint.get("train_config")
    try:
        recipe = recipe_description(TrainConfig(**config)) if config else "not recorded"
    except KeyError:  # a recipe this version of aimonk does not have
        recipe = str(config.get("recipe"))
    preprocessing = checkpoint["preprocessing"]
    yield from ["## Model", "",
                f"- backbone: {checkpoint['backbone']}, weights: {checkpoint['weights_origin']}",
                f"- recipe and the settings that differ from it: {recipe}",
                f"- images made {preprocessing['image_size']} px squares by `{preprocessing.get('resize', 'squash')}`"
                f" (squash: the whole picture stretched; crop: the central square); backbone arithmetic "
                f"{checkpoint.get('precision', 'fp32')}", ""]


def _training(checkpoint: dict) -> Iterator[str]:
    training = checkpoint.get("training")
    if training is None:
        return
    yield from ["## Training", "", f"- {training['epochs_run']} epoch(s) run; {training['stopped']}"]
    if "init_from" in training:
        yield f"- started from the weights of `{training['init_from']['path']}` (SHA-256 " \
              f"`{training['init_from']['sha256'][:16]}...`)"
    yield ""


def validation_map(checkpoint: dict) -> float | None:
    """The mAP on the validation images that a checkpoint records (None if none were held out); for a checkpoint
    from before the mAP was recorded, the mean of its attributes' APs (`metrics.mean_ap`, the same point)."""
    validation = checkpoint.get("validation")
    if validation is None:
        return None
    if "map" in validation:
        return validation["map"]["map"]
    from aimonk.metrics import mean_ap  # scikit-learn and pandas: not for a card without metrics

    return mean_ap([validation["metrics"][name]["ap"] for name in checkpoint["attributes"]])


def _validation(checkpoint: dict) -> Iterator[str]:
    yield from ["## On the validation images", ""]
    validation = checkpoint.get("validation")
    if validation is None:
        yield from ["Not scored: no images were held out (`--val-fraction 0`).", ""]
        return
    yield (f"{validation['images']} validation images, known labels only, at the thresholds below; "
           f"[{percent(validation['confidence'], 0)} bootstrap interval over {validation['bootstrap']} resamples, "
           f"seed {validation['seed']}]. Trivial baselines: a constant score has AP = the share present and ROC AUC "
           "0.5; `F1 all present` is predicting every image present.")
    yield from ["", "| attribute | verdict | AP | AP baseline | ROC AUC | F1 | F1 all present | precision | recall "
                "| threshold | temperature |", "| --- " * 11 + "|"]
    rule = DecisionRule.of(checkpoint)
    for j, name in enumerate(rule.attributes):
        row = validation["metrics"][name]
        # the verdict `aimonk tune` recorded (the decision rule's), else that of the metrics at the default rule
        verdict = row["verdict"] if rule.verdicts is None else rule.verdicts[j]
        cells = [name, verdict, interval(row, "ap"), number(row["prevalence"]),
                 interval(row, "roc_auc"), interval(row, "f1"), number(row["f1_all_positive"]),
                 interval(row, "precision"), interval(row, "recall"), number(rule.thresholds[j]),
                 number(rule.temperatures[j])]
        yield "| " + " | ".join(cells) + " |"
    yield ""
    if "map" in validation:  # recorded since mAP was: the same computation as `aimonk evaluate`'s
        from aimonk.metrics import map_line  # here: scikit-learn is not loaded to write a card without it

        yield from [map_line(validation["map"]), ""]
    else:
        yield from [f"mAP (mean AP over the attributes): {number(validation_map(checkpoint))}", ""]


def _cannot_judge(checkpoint: dict) -> Iterator[str]:
    yield from ["## What it cannot judge", ""]
    rule = DecisionRule.of(checkpoint)
    shortages = rule.shortages or (None,) * len(rule.attributes)
    unlabelled = [f"- {name}: cannot be judged: {why} in its training labels; `aimonk predict` gives it no "
                  "probability and never reports it present" for name, why in zip(rule.attributes, shortages,
                                                                                  strict=True) if why]
    if rule.verdicts is None:
        yield from [*unlabelled, "Not decided yet: `aimonk tune` judges each attribute on the validation images "
                    "(verdicts above, if any, are at the default thresholds); until then `aimonk predict` reports "
                    f"every {'other ' if unlabelled else ''}attribute.", ""]
        return
    unable = unlabelled + [f"- {name}: {rule.verdicts[j]}; `aimonk predict` never reports it present"
                           for j, name in enumerate(rule.attributes) if not rule.learnable[j] and not shortages[j]]
    yield from [*(unable or ["Every attribute is better than chance on the validation images."]), ""]


def number(value: float) -> str:
    """Three decimals; `n/a` where undefined (NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def interval(row: dict, metric: str) -> str:
    """`0.912 [0.850, 0.960]`, or the point alone where there is no interval."""
    low, high = row[f"{metric}_low"], row[f"{metric}_high"]
    if number(low) == "n/a":
        return number(row[metric])
    return f"{number(row[metric])} [{number(low)}, {number(high)}]"


def percent(share: float, decimals: int = 1) -> str:
    return f"{100 * share:.{decimals}f} %"


def write_history(out_dir: Path, history: list[float]) -> None:
    """`loss_history.csv` (iteration_number,training_loss) and `loss_curve.png`, each written atomically."""
    with atomic_file(out_dir / HISTORY_FILE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["iteration_number", "training_loss"])
        writer.writerows((i, f"{loss:.8g}") for i, loss in enumerate(history, start=1))
    with atomic_file(out_dir / CURVE_FILE) as file:
        loss_curve_figure(history).savefig(file, format="png", dpi=100)


METRICS_COLUMNS = ("epoch", "training_loss", "validation_loss", "validation_mAP")


def write_metrics(out_dir: Path, rows: list[dict], attributes: list[str], figure: bool = True,
                  kept: int | None = None) -> None:
    """`metrics.csv` (one row per epoch: the columns of METRICS_COLUMNS, `AP_<attribute>` for each, seconds; the
    validation columns empty without validation images) and, with `figure`, `validation_curve.png` (marking the
    epoch `kept`, if given), each written atomically."""
    with atomic_file(out_dir / METRICS_FILE, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow([*METRICS_COLUMNS, *(f"AP_{name}" for name in attributes), "seconds"])
        for row in rows:
            aps = row["ap"] or [None] * len(attributes)
            writer.writerow([row["epoch"], *(_cell(row[key]) for key in METRICS_COLUMNS[1:]), *map(_cell, aps),
                             f"{row['seconds']:.3f}"])
    if figure:
        with atomic_file(out_dir / VALIDATION_CURVE_FILE) as file:
            validation_curve_figure(rows, kept).savefig(file, format="png", dpi=100)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.8g}"


def validation_curve_figure(rows: list[dict], kept: int | None = None) -> Figure:
    """Per epoch: the mean training loss and the validation loss (left), the validation mAP (right); a dashed line
    at the epoch whose weights were `kept`, where that is not the last."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    loss_axes, map_axes = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in rows]
    loss_axes.plot(epochs, [row["training_loss"] for row in rows], marker="o", label="training loss (epoch mean)")
    scored = [row for row in rows if row["validation_mAP"] is not None]
    if scored:
        loss_axes.plot([row["epoch"] for row in scored], [row["validation_loss"] for row in scored], marker="o",
                       label="validation loss (known labels)")
        map_axes.plot([row["epoch"] for row in scored], [row["validation_mAP"] for row in scored], marker="o",
                      color="tab:green")
    else:
        map_axes.text(0.5, 0.5, "no validation images held out", ha="center", va="center",
                      transform=map_axes.transAxes)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="Loss per epoch")
    map_axes.set(xlabel="epoch", ylabel="validation mAP", title="Validation mAP per epoch")
    for axes in (loss_axes, map_axes):
        if kept is not None and rows and kept != rows[-1]["epoch"]:
            axes.axvline(kept, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {kept}")
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    loss_axes.legend()
    figure.tight_layout()
    return figure


def loss_curve_figure(losses: Sequence[float]) -> Figure:
    """Per-iteration training loss; iterations are numbered from 1."""
    from matplotlib.figure import Figure  # only when a run ends: `aimonk predict` never needs matplotlib

    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    axes.plot(range(1, len(losses) + 1), losses, linewidth=1)
    axes.set_xlabel("iteration_number")
    axes.set_ylabel("training_loss")
    axes.set_title(TITLE)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
