"""Suspected label errors: cleanlab's confident learning applied per attribute to the known labels' out-of-fold
probabilities (its multi-label mode has no notion of a missing label), so an NA entry is never flagged; an
attribute whose scores are no better than chance is not audited, since its probabilities say nothing of its labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aimonk.labelling.crossfit import OutOfFold

COLUMNS = ["image", "attribute", "given", "probability", "rank", "score"]


def audit(oof: OutOfFold) -> pd.DataFrame:
    """One row per suspected error: image, attribute, given label (0/1), out-of-fold probability of present, rank
    within the attribute (1: most suspect) and cleanlab's label-quality score (the probability of the given label;
    lower is more suspect). Rows by attribute, then rank.

    Cleanlab's `find_label_issues` (pruning by the estimated noise rates of the confident joint) decides which
    labels are suspects; its self-confidence score ranks them.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    frames = []
    for j in np.flatnonzero(oof.better_than_chance):
        rows = np.flatnonzero(oof.known[:, j])
        given = (oof.targets[rows, j] > 0.5).astype(np.int64)
        p = oof.probabilities[rows, j]
        pred_probs = np.column_stack([1 - p, p])
        flagged = find_label_issues(given, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
        scores = get_label_quality_scores(given, pred_probs, method="self_confidence")
        frames.append(pd.DataFrame({
            "image": [oof.images[rows[i]] for i in flagged], "attribute": oof.attributes[j],
            "given": given[flagged], "probability": p[flagged], "rank": np.arange(1, len(flagged) + 1),
            "score": scores[flagged]}))
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in zip(
            COLUMNS, (object, object, np.int64, np.float64, np.int64, np.float64), strict=True)})
    return pd.concat(frames, ignore_index=True)


def audit_summary(oof: OutOfFold, suspects: pd.DataFrame) -> list[str]:
    """One line per attribute: how many known labels were audited and how many look wrong, or why none was."""
    counts = suspects["attribute"].value_counts()
    lines = []
    for j, name in enumerate(oof.attributes):
        known = int(oof.known[:, j].sum())
        if not oof.better_than_chance[j]:
            lines.append(f"{name}: not audited ({known} known labels): {oof.why_not(j)}")
            continue
        found = int(counts.get(name, 0))
        top = suspects[suspects["attribute"] == name].head(3)
        worst = ", ".join(f"{row.image} (given {row.given}, p={row.probability:.2f})" for row in top.itertuples())
        lines.append(f"{name}: {found} of {known} known labels suspected wrong" + (f"; first {worst}" if found else ""))
    return lines
