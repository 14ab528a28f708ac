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

