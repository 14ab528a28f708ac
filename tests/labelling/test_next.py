"""next_to_label and the Label Studio tasks: NA entries only, by priority; JSON of the documented shape
(docs/testing.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import ROOT, planted_flips

from aimonk.labelling.next import label_studio_tasks, next_to_label


def test_next_never_proposes_a_known_entry_and_ranks_by_priority():
    oof, _ = planted_flips()
    chosen = next_to_label(oof, 25)
    assert len(chosen) == 25 and chosen["priority"].is_monotonic_decreasing
    rows = {name: i for i, name in enumerate(oof.images)}
    assert not any(oof.known[rows[image], oof.attributes.index(attribute)]
                   for image, attribute in zip(chosen["image"], chosen["attribute"], strict=True))
    every = next_to_label(oof, 10**6)
    assert len(every) == (~oof.known).sum()  # all the NA entries, and nothing else
    p = every["probability"]
    assert np.allclose(every["priority"] / (p * (1 - p)), [0.05 + 1 / 3] * len(every))


def test_label_studio_tasks_are_json_of_the_documented_shape(tmp_path: Path):
    oof, _ = planted_flips()
    chosen = next_to_label(oof, 5)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(label_studio_tasks(chosen, ROOT / "images")))
    tasks = json.loads(path.read_text())
    assert len(tasks) == 5
    for rank, (task, row) in enumerate(zip(tasks, chosen.itertuples(), strict=True), start=1):
        assert set(task) == {"data", "meta"} and set(task["data"]) == {"image", "attribute", "file"}
        assert task["data"]["file"] == row.image  # what `aimonk merge` reads back from an export
        assert task["data"]["attribute"] == row.attribute
        assert task["data"]["image"].startswith("/data/local-files/?d=")
        assert task["data"]["image"].endswith(row.image)
        assert task["meta"]["rank"] == rank and task["meta"]["file"] == row.image



def test_entries_of_an_attribute_without_a_known_label_come_first_with_the_reason_and_no_probability():
    """A column just added (all NA) cannot be judged: its entries come first, in the file's order, with no made-up
    probability or priority; the rest follow by priority, as without it."""
    oof, _ = planted_flips()
    ranked = next_to_label(oof, 10**6)
    ranked = ranked[ranked["attribute"] != oof.attributes[2]].head(10)
    oof.known[:, 2] = False  # the third attribute: every label NA
    oof.probabilities[:, 2] = np.nan  # as cross-fitting gives it
    chosen = next_to_label(oof, len(oof.images) + 10)
    first = chosen.head(len(oof.images))
    assert (first["attribute"] == oof.attributes[2]).all() and list(first["image"]) == oof.images
    assert first["probability"].isna().all() and first["priority"].isna().all()
    assert (first["reason"] == "cannot be judged: no known label (all NA)").all()
    rest = chosen.iloc[len(oof.images):]
    assert (rest["reason"] == "").all() and rest["priority"].is_monotonic_decreasing
    assert rest[["image", "attribute"]].values.tolist() == ranked[["image", "attribute"]].values.tolist()
    [task] = label_studio_tasks(chosen.head(1), ROOT / "images")
    assert task["meta"]["probability"] is None and task["meta"]["reason"] == first["reason"].iloc[0]
