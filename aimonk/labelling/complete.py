"""NA entries filled where the fills' precision is shown to reach a level, and a completed labels file beside the
original, never over it.

The precision of a fill rule ("present where p >= t1", "absent where p <= t0") is estimated on the known labels,
each of which was hidden (its image's fold: 1/folds of the images, at random) and completed by the model fitted
without it, as every NA entry is (`crossfit`). Per attribute and direction the thresholds are tried from the
strictest down to 0.5 (a fill never goes against the probability); the rule is the least strict threshold of the
first run whose Clopper-Pearson lower bound on that precision reaches the level. The estimate holds for the NA
entries where they are like the known ones (missing at random).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aimonk.data.labels import LabelFormat, replace_labels
from aimonk.errors import AimonkError
from aimonk.io import atomic_file
from aimonk.labelling.crossfit import OutOfFold

NOT_FILLED = -1


@dataclass
class Completion:
    """The fills (1, 0 or NOT_FILLED per entry; known entries are never filled) and the rule behind each."""

    oof: OutOfFold
    level: float
    confidence: float
    fills: np.ndarray  # int (images, attributes)
    rules: pd.DataFrame  # per attribute and value: threshold, fills, the precision estimate and its interval, reason


def clopper_pearson(correct: np.ndarray, total: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The exact two-sided `confidence` interval of a proportion, `correct` of `total`, elementwise."""
    from scipy.stats import beta

    correct, total, tail = np.asarray(correct, float), np.asarray(total, float), (1 - confidence) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(correct > 0, beta.ppf(tail, correct, total - correct + 1), 0.0)
        high = np.where(correct < total, beta.ppf(1 - tail, correct + 1, total - correct), 1.0)
    return low, high


def least_strict(scores: np.ndarray, correct: np.ndarray, level: float, confidence: float) -> dict:
    """The fill rule "score >= threshold" from known labels' `scores` and whether filling them would be `correct`:
    threshold None where no threshold's lower bound reaches `level` (then the estimate shown is the best one)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], np.cumsum(correct[order])
    total = np.arange(1, len(scores) + 1)
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], bool(len(scores))])  # with its ties
    ends = ends[sorted_scores[ends] > 0.5]  # a fill is what the model decides: never against its probability
    if not len(ends):
        return {"threshold": None, "known": 0, "precision": np.nan, "precision_low": np.nan, "precision_high": np.nan}
    low, high = clopper_pearson(hits[ends], total[ends], confidence)
    passing = low >= level
    if passing.any():
        first = int(np.argmax(passing))
        failing = np.flatnonzero(~passing[first:])
        chosen, threshold = (first + failing[0] - 1 if len(failing) else len(ends) - 1), True
    else:
        chosen, threshold = int(np.argmax(low)), False
    end = ends[chosen]
    return {"threshold": float(sorted_scores[end]) if threshold else None, "known": int(total[end]),
            "precision": hits[end] / total[end], "precision_low": float(low[chosen]),
            "precision_high": float(high[chosen])}


def complete(oof: OutOfFold, level: float = 0.95, confidence: float = 0.95) -> Completion:
    """Fill NA entries as present where p >= t1 and as absent where p <= t0, per attribute, with the least strict
    thresholds whose estimated precision (the lower bound of its `confidence` interval) reaches `level`.

    An attribute not better than chance gets no fills, nor a direction whose precision cannot reach the level.
    """
    if not 0.5 <= level < 1:
        raise ValueError(f"level must be in [0.5, 1), got {level}")
    fills = np.full(oof.known.shape, NOT_FILLED)
    rules = []
    for j, name in enumerate(oof.attributes):
        known, truth = oof.known[:, j], oof.targets[:, j] > 0.5
        p = oof.probabilities[:, j]
        for value in (1, 0):
            scores = p if value else 1 - p  # fill `value` where its probability is at least the threshold
            rule = least_strict(scores[known], truth[known] == bool(value), level, confidence)
            if not oof.better_than_chance[j]:
                reason, rule["threshold"] = oof.why_not(j), None
            elif rule["threshold"] is None:
                reason = (f"no threshold reaches precision {level:g} (lower bound of the {confidence:.0%} interval); "
                          f"best: {estimate(rule)}")
            else:
                reason = ""
            chosen = ~known & (scores >= rule["threshold"]) if rule["threshold"] is not None else np.zeros_like(known)
            fills[chosen, j] = value  # never both: each side's threshold is beyond 0.5
            threshold = rule.pop("threshold")
            rules.append({"attribute": name, "value": value, "threshold": np.nan if threshold is None else
                          (threshold if value else 1 - threshold), "filled": int((fills[:, j] == value).sum()),
                          **rule, "reason": reason})
    return Completion(oof, level, confidence, fills, pd.DataFrame(rules))


def estimate(rule: dict) -> str:
    """A rule's precision on the known labels it would fill, with its interval."""
    if not rule["known"]:
        return "no known label is on that side of p = 0.5"
    return (f"precision {rule['precision']:.3f} [{rule['precision_low']:.3f}, {rule['precision_high']:.3f}] on "
            f"{rule['known']} known labels")


def completion_summary(completion: Completion) -> list[str]:
    """Per attribute and value, how many NA entries were filled, by which rule, at what estimated precision."""
    lines = []
    for rule in completion.rules.itertuples():
        label = "present (1)" if rule.value else "absent (0)"
        if rule.reason:
            lines.append(f"{rule.attribute} as {label}: nothing filled: {rule.reason}")
        else:
            where = f"p >= {rule.threshold:.4f}" if rule.value else f"p <= {rule.threshold:.4f}"
            lines.append(f"{rule.attribute} as {label}: {rule.filled} NA filled where {where}, "
                         f"{estimate(rule._asdict())}")
    left = int((~completion.oof.known & (completion.fills == NOT_FILLED)).sum())
    lines.append(f"{int((completion.fills != NOT_FILLED).sum())} NA entries filled, {left} left NA "
                 f"(level {completion.level:g}, {completion.confidence:.0%} Clopper-Pearson intervals)")
    return lines


def completed_path(labels_path: str | Path) -> Path:
    """Where the completed labels go by default: beside the original, `<stem>.completed<suffix>`."""
    labels_path = Path(labels_path)
    return labels_path.with_name(f"{labels_path.stem}.completed{labels_path.suffix or '.txt'}")


def write_completed(completion: Completion, labels_path: str | Path, out_path: str | Path | None = None,
                    label_format: LabelFormat | None = None) -> Path:
    """The labels file with the fills in place of their NA, in the file's own spelling of values, and every other
    byte as it was (separators, blanks, BOM, line ends, header, images left out: `replace_labels`); written
    atomically to `out_path` (default `completed_path`), never over the original."""
    labels_path = Path(labels_path)
    out = Path(out_path) if out_path is not None else completed_path(labels_path)
    if out.resolve() == labels_path.resolve():
        raise AimonkError(f"{out}: is the labels file being completed, so not written over: write it elsewhere")
    oof = completion.oof
    fills = {(oof.images[i], oof.attributes[j]): bool(completion.fills[i, j])
             for i, j in zip(*np.nonzero(completion.fills != NOT_FILLED), strict=True)}
    merged = replace_labels(labels_path, fills, label_format)
    with atomic_file(out, "wb") as file:
        file.write(merged)
    return out
