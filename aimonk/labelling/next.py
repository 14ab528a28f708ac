"""The NA entries to label next, ranked by how much a label is expected to help: the uncertainty of the entry's
calibrated probability, p(1 - p), weighted by how uncertain its attribute's metrics still are (the width of its
average-precision interval), and the same entries as a Label Studio import file.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from aimonk.labelling.crossfit import OutOfFold

# The Label Studio labelling config the tasks are meant for (docs/cli.md): one image, the attribute asked about, and
# three answers. A task with no annotation is "not yet labelled"; "cannot tell" keeps the label NA; neither is
# "absent".
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Header value="Is $attribute present?"/>
  <Choices name="label" toName="image" choice="single-radio" required="true">
    <Choice value="present" alias="1"/>
    <Choice value="absent" alias="0"/>
    <Choice value="cannot tell" alias="NA"/>
  </Choices>
</View>
"""
LOCAL_FILES = "/data/local-files/?d="  # how Label Studio serves a local file (its document root: /)


def next_to_label(oof: OutOfFold, k: int) -> pd.DataFrame:
    """The `k` NA entries of highest priority (image, attribute, probability, priority, reason), highest first; never
    a known entry. First the entries of attributes that cannot be judged at all (no known positive or negative
    label, a column just added say: no probability, no priority, the reason given), in the file's order; then the
    rest by priority. An attribute without an AP interval (too few known positives) counts as fully uncertain
    (width 1)."""
    width = (oof.metrics["ap_high"] - oof.metrics["ap_low"]).to_numpy(dtype=np.float64)
    width = np.where(np.isfinite(width), width, 1.0)
    shortages = oof.shortages()
    reasons = np.array([f"cannot be judged: {why}" if why else "" for why in shortages], dtype=object)
    rows, columns = np.nonzero(~oof.known)
    p = oof.probabilities[rows, columns]
    priority = p * (1 - p) * width[columns]
    unjudged = np.array([shortages[c] is not None for c in columns], bool)
    order = np.concatenate([np.flatnonzero(unjudged), np.flatnonzero(~unjudged)[np.argsort(-priority[~unjudged],
                                                                                          kind="stable")]])[:k]
    return pd.DataFrame({"image": [oof.images[rows[i]] for i in order],
                         "attribute": [oof.attributes[columns[i]] for i in order],
                         "probability": p[order], "priority": priority[order],
                         "reason": reasons[columns[order]].astype(str)})


def label_studio_tasks(rows: pd.DataFrame, image_dir: str | Path) -> list[dict]:
    """One Label Studio task per row (an image and the one attribute asked about), in priority order:
    `{"data": {"image": URL, "attribute": NAME, "file": NAME}, "meta": {"file", "probability", "priority", "rank"}}`,
    the image served by Label Studio's local-files storage from its absolute path (`aimonk merge` reads the file
    name back from `data`, which every export keeps)."""
    folder = Path(image_dir).resolve()
    return [{"data": {"image": LOCAL_FILES + quote((folder / row.image).as_posix().lstrip("/")),
                      "attribute": row.attribute, "file": row.image},
             "meta": {"file": row.image, "probability": _rounded(row.probability, 4),
                      "priority": _rounded(row.priority, 6), "rank": rank, **({"reason": row.reason} if row.reason
                                                                            else {})}}
            for rank, row in enumerate(rows.itertuples(), start=1)]


def _rounded(value: float, digits: int) -> float | None:
    return None if np.isnan(value) else round(float(value), digits)
