"""The threshold explorer of notebook 03 (ipywidgets, which JupyterLab renders): per attribute a slider over its
decision threshold showing precision, recall and F1 with bootstrap intervals, the confusion counts and the images
whose decision flips near that point; a button saves the thresholds into the checkpoint's decision rule with
`save_rule`, the call `aimonk tune` makes.

What the numbers are computed on is said on the widget: the validation images held out at training (known labels
only), with the probabilities `aimonk predict` computes. A threshold chosen by looking at them is tuned on those
same images, so they flatter it; the honest figure next to them is the best-F1 threshold's F1 out of fold
(`tune_out_of_fold`). The values are `evaluate`'s: the same point metrics, and the same bootstrap draws for the
same seed, so each interval is the one `aimonk evaluate` prints at that threshold.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from aimonk.checkpoint import DecisionRule, load_checkpoint
from aimonk.data.images import open_rgb
from aimonk.evaluate.thresholds import tune_out_of_fold
from aimonk.evaluate.tuning import save_rule
from aimonk.io import output_lock
from aimonk.metrics import Scores, bootstrap_draws, metrics_with_intervals

if TYPE_CHECKING:
    import ipywidgets
    from PIL.Image import Image

SHOWN = ("precision", "recall", "f1")
THUMBNAIL = 96  # pixels, the longer side of an image that flips


class ThresholdExplorer:
    """Thresholds of a checkpoint explored on `scores` (its validation images at its decision rule:
    `score_checkpoint(...).scores()`, probabilities calibrated by its temperatures, `scores.thresholds` the saved
    ones). The numbers behind the widget are plain methods (`values`,
    `flips`), which the widget's callbacks show and the tests check."""

    def __init__(self, model_path: str | Path, scores: Scores, n_bootstrap: int = 1000, seed: int = 0,
                 folds: int = 5, flips_shown: int = 4):
        self.model_path, self.scores, self.n_bootstrap, self.seed = Path(model_path), scores, n_bootstrap, seed
        self.flips_shown = flips_shown
        self.thresholds = [float(value) for value in scores.thresholds]
        table = scores.table
        self.rule = DecisionRule.of(load_checkpoint(model_path, attributes=table.attributes))
        self.learnable = list(self.rule.learnable)
        self.known = [table.known_labels(j) for j in range(len(table.attributes))]
        rng = np.random.default_rng(seed)  # drawn attribute after attribute, as `evaluate` draws them
        self.draws = [bootstrap_draws(int(known.sum()), n_bootstrap, rng) for known, _ in self.known]
        self.best = tune_out_of_fold(table, scores.probabilities, self.learnable, folds, seed)
        self.sliders: list[ipywidgets.FloatSlider] = []
        self.readouts: list[ipywidgets.HTML] = []
        self.flip_boxes: list[ipywidgets.HBox] = []
        self.status: ipywidgets.HTML | None = None
        self.save_button: ipywidgets.Button | None = None

    def _attribute(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        known, truth = self.known[j]
        return truth, self.scores.probabilities[known, j]

    def values(self, j: int, threshold: float) -> dict[str, object]:
        """Attribute j at `threshold`: (point, low, high) of precision, recall, F1, AP and ROC AUC, and the confusion
        counts (true/false positives and negatives) over its known validation labels."""
        truth, scores = self._attribute(j)
        decided = scores >= threshold
        return {**metrics_with_intervals(truth, scores, threshold, self.draws[j]),
                "tp": int((truth & decided).sum()), "fp": int((~truth & decided).sum()),
                "fn": int((truth & ~decided).sum()), "tn": int((~truth & ~decided).sum())}

    def flips(self, j: int, threshold: float) -> pd.DataFrame:
        """The known images nearest the threshold, half on each side: those whose decision a small move flips."""
        known, truth = self.known[j]
        rows, scores = np.flatnonzero(known), self.scores.probabilities[known, j]
        half = self.flips_shown // 2
        above, below = np.flatnonzero(scores >= threshold), np.flatnonzero(scores < threshold)
        chosen = [*below[np.argsort(scores[below])[::-1][:half]], *above[np.argsort(scores[above])[:half]]]
        return pd.DataFrame({"image": [self.scores.table.filenames[rows[i]] for i in chosen],
                             "probability": scores[chosen], "present": truth[chosen],
                             "decided": scores[chosen] >= threshold})

    def describe(self, j: int, threshold: float) -> str:
        """The readout under attribute j's slider, as HTML."""
        values, best = self.values(j, threshold), self.best.iloc[j]
        shown = ", ".join(f"{name} {_interval(values[name])}" for name in SHOWN)
        counts = f"TP {values['tp']}, FP {values['fp']}, FN {values['fn']}, TN {values['tn']}"
        if self.learnable[j]:
            honest = (f"best-F1 threshold {best['threshold']:.3f}: F1 out of fold {best['f1_out_of_fold']:.3f}, "
                      f"in sample {best['f1_in_sample']:.3f}")
        else:
            why = self.rule.why_not_judged().get(self.rule.attributes[j], "no better than chance")
            honest = f"cannot be judged ({why}): aimonk predict never reports it present"
        total = sum(values[kind] for kind in ("tp", "fp", "fn", "tn"))
        return f"<b>{shown}</b><br>{counts} of {total} known labels; {honest}"

    def set_threshold(self, j: int, threshold: float) -> None:
        """What moving attribute j's slider does: the threshold kept for Save, the readout and images redrawn."""
        self.thresholds[j] = float(threshold)
        if self.readouts:
            self.readouts[j].value = self.describe(j, threshold)
            self.flip_boxes[j].children = self._flip_images(j, threshold)

    def save(self) -> pd.DataFrame:
        """The thresholds as set, saved into the checkpoint's decision rule (with the validation metrics at them and
        the model card), under the output folder's lock, through `save_rule` like `aimonk tune`."""
        chosen = Scores(self.scores.table, self.scores.probabilities, list(self.thresholds), self.scores.image_dir)
        with output_lock(self.model_path.parent):
            saved = save_rule(self.model_path, chosen, replace(self.rule, thresholds=tuple(self.thresholds)),
                              self.n_bootstrap, self.seed)
        if self.status is not None:
            self.status.value = f"saved thresholds {', '.join(f'{t:.3f}' for t in self.thresholds)} into " \
                                f"{self.model_path} (and its model card)"
        return saved

    def widget(self) -> ipywidgets.VBox:
        """The explorer: a header saying what the numbers are, a row per attribute, the Save button."""
        import ipywidgets

        n = len(self.scores.table)
        header = ipywidgets.HTML(
            f"Precision, recall and F1 at each slider's threshold on the {n} validation images held out at training "
            f"(known labels only; probabilities as <code>aimonk predict</code> computes them), "
            f"[95 % bootstrap interval, {self.n_bootstrap} resamples]. A threshold chosen by looking at these numbers "
            "is tuned on these same images, which flatters it; the honest estimate is the best-F1 threshold's F1 "
            "out of fold. Images: the nearest below and above the threshold (label, probability).")
        rows = []
        for j, name in enumerate(self.scores.table.attributes):
            slider = ipywidgets.FloatSlider(value=self.thresholds[j], min=0.0, max=1.0, step=0.005, description=name,
                                            readout_format=".3f", continuous_update=False,
                                            layout=ipywidgets.Layout(width="520px"))
            slider.observe(lambda change, j=j: self.set_threshold(j, change["new"]), names="value")
            self.sliders.append(slider)
            self.readouts.append(ipywidgets.HTML(self.describe(j, self.thresholds[j])))
            self.flip_boxes.append(ipywidgets.HBox(self._flip_images(j, self.thresholds[j])))
            rows.append(ipywidgets.VBox([slider, self.readouts[j], self.flip_boxes[j]]))
        self.save_button = ipywidgets.Button(description="Save thresholds", button_style="primary")
        self.save_button.on_click(lambda _: self.save())
        self.status = ipywidgets.HTML("")
        return ipywidgets.VBox([header, *rows, ipywidgets.HBox([self.save_button, self.status])])

    def _flip_images(self, j: int, threshold: float) -> tuple[ipywidgets.Widget, ...]:
        import ipywidgets

        shown = []
        for row in self.flips(j, threshold).itertuples():
            picture = open_rgb(self.scores.image_dir / row.image) if self.scores.image_dir else None
            caption = ipywidgets.HTML(f"{row.image}<br>label {int(row.present)}, p={row.probability:.3f}")
            parts = [caption] if picture is None else [ipywidgets.Image(value=_png(picture), format="png"), caption]
            shown.append(ipywidgets.VBox(parts))
        return tuple(shown)


def _interval(value: tuple[float, float, float]) -> str:
    point, low, high = (("n/a" if np.isnan(v) else f"{v:.3f}") for v in value)
    return point if low == "n/a" else f"{point} [{low}, {high}]"


def _png(picture: Image) -> bytes:
    picture = picture.copy()
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
