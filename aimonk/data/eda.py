"""Exploratory tables for a labelled image folder: label balance, missing labels, co-occurrence, image files."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from scipy.stats import chi2_contingency

from aimonk.data.labels import LabelTable
from aimonk.io import atomic_file

# Formats that are a JPEG file under another name (MPO: JPEG with extra pictures appended, from cameras).
JPEG_FAMILY = {"JPEG", "MPO"}


def save_table(table: pd.DataFrame, path: str | Path, index: bool = True) -> None:
    """`table` as a CSV file, written atomically: a full disk is one AimonkError and leaves any old file intact."""
    with atomic_file(path, "w", newline="", encoding="utf-8") as file:
        table.to_csv(file, index=index)


def label_counts(table: LabelTable) -> pd.DataFrame:
    """Per attribute: positive, negative and NA counts, positive rate among known labels, NA rate, imbalance."""
    positives = table.positives().sum(axis=0)
    negatives = (table.known & ~table.positives()).sum(axis=0)
    missing = (~table.known).sum(axis=0)
    counts = pd.DataFrame(
        {"positive": positives, "negative": negatives, "NA": missing},
        index=pd.Index(table.attributes, name="attribute"),
    )
    known = counts["positive"] + counts["negative"]
    counts["positive_rate"] = counts["positive"] / known.where(known > 0)
    counts["NA_rate"] = counts["NA"] / len(table)
    classes = counts[["positive", "negative"]].astype(float)
    # Majority-to-minority ratio among known labels: 1 is balanced; infinite when one class is absent.
    counts["imbalance"] = classes.max(axis=1) / classes.min(axis=1)
    return counts


def na_per_image(table: LabelTable) -> pd.DataFrame:
    """How many images have 0, 1, ... all labels missing."""
    per_image = (~table.known).sum(axis=1)
    counts = np.bincount(per_image, minlength=len(table.attributes) + 1)
    frame = pd.DataFrame({"images": counts}, index=pd.RangeIndex(len(counts), name="NA labels per image"))
    frame["share"] = frame["images"] / len(table)
    return frame


def na_patterns(table: LabelTable) -> pd.DataFrame:
    """Which sets of attributes are missing together, most frequent first ("none" for complete rows)."""
    names = np.asarray(table.attributes)
    patterns = [", ".join(names[~row]) or "none" for row in table.known]
    frame = pd.Series(patterns, name="missing").value_counts().rename("images").to_frame()
    frame["share"] = frame["images"] / len(table)
    return frame


def cooccurrence(table: LabelTable) -> pd.DataFrame:
    """Positive-positive counts for each pair of attributes, over images where both labels are known."""
    both_positive = table.positives()
    matrix = both_positive.T.astype(np.int64) @ both_positive.astype(np.int64)
    return pd.DataFrame(matrix, index=table.attributes, columns=table.attributes)


def independence_tests(table: LabelTable, alpha: float = 0.05) -> pd.DataFrame:
    """Chi-square test of independence for every pair of attributes, over images where both are known.

    `phi` is the correlation of the two 0/1 labels (sign: positive when they tend to co-occur). `dependent`
    applies a Bonferroni correction over all pairs. A pair where one attribute takes a single value among
    the shared images has no test (NaN).
    """
    pairs = list(combinations(range(len(table.attributes)), 2))
    rows = []
    for a, b in pairs:
        both = table.known[:, a] & table.known[:, b]
        x, y = table.targets[both, a] > 0.5, table.targets[both, b] > 0.5
        contingency = pd.crosstab(x, y).reindex(index=[False, True], columns=[False, True], fill_value=0).to_numpy()
        row = {"attribute_a": table.attributes[a], "attribute_b": table.attributes[b], "n": int(both.sum()),
               "both_positive": int(contingency[1, 1]), "chi2": np.nan, "p_value": np.nan, "phi": np.nan,
               "expected_both_positive": np.nan}
        if (contingency.sum(axis=0) > 0).all() and (contingency.sum(axis=1) > 0).all():
            # No continuity correction, so chi2 = n * phi^2 exactly.
            test = chi2_contingency(contingency, correction=False)
            (n00, n01), (n10, n11) = contingency
            phi_sign = np.sign(n11 * n00 - n10 * n01)
            row.update(chi2=test.statistic, p_value=test.pvalue, phi=phi_sign * np.sqrt(test.statistic / both.sum()),
                       expected_both_positive=test.expected_freq[1, 1])
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["dependent"] = frame["p_value"] < alpha / max(len(pairs), 1)
    return frame


def describe_images(image_dir: str | Path, filenames: Sequence[str]) -> pd.DataFrame:
    """One row per file: size on disk, format PIL finds from the content, whether it fits the extension, size, mode.

    Reads headers only (no decoding). Missing or unidentifiable files get `error` set.
    """
    image_dir = Path(image_dir)
    by_extension = Image.registered_extensions()
    rows = []
    for name in filenames:
        path = image_dir / name
        extension = path.suffix.lower()
        row = {"file": name, "extension": extension, "bytes": np.nan, "format": None, "width": np.nan,
               "height": np.nan, "mode": None, "progressive": False, "format_matches_extension": False,
               "error": None}
        try:
            row["bytes"] = path.stat().st_size
            with Image.open(path) as image:
                row.update(format=image.format, width=image.width, height=image.height, mode=image.mode,
                           progressive=bool(image.info.get("progressive")))
        except FileNotFoundError:
            row["error"] = "missing"
        except (UnidentifiedImageError, OSError) as error:
            row["error"] = f"unreadable: {error}"
        expected = by_extension.get(extension)
        row["format_matches_extension"] = row["format"] is not None and (
            row["format"] == expected or {row["format"], expected} <= JPEG_FAMILY
        )
        rows.append(row)
    return pd.DataFrame(rows).astype({"bytes": "Int64", "width": "Int64", "height": "Int64"})
