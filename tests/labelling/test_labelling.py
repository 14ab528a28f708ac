"""audit, complete and next on out-of-fold probabilities whose truth is known: planted flips are found, fills reach
the precision asked, NA entries are never flagged and known ones never proposed (docs/testing.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

from aimonk.data.labels import read_labels
from aimonk.errors import AimonkError
from aimonk.labelling.audit import audit, audit_summary
from aimonk.labelling.complete import NOT_FILLED, complete, completion_summary, write_completed
from aimonk.labelling.crossfit import OutOfFold
from aimonk.labelling.next import label_studio_tasks, next_to_label


def scored(truth: np.ndarray, known: np.ndarray, separation: np.ndarray, seed: int = 0,
           better: np.ndarray | None = None) -> OutOfFold:
    """An OutOfFold whose probabilities tell the truth apart by `separation` (logit units, per attribute)."""
    rng = np.random.default_rng(seed)
    logits = (2 * truth - 1) * separation + rng.normal(size=truth.shape)
    attributes = [f"Attr{j + 1}" for j in range(truth.shape[1])]
    width = 1 / np.asarray(separation, float)  # a weaker attribute: a wider AP interval
    metrics = pd.DataFrame({"ap_low": 0.9 - width, "ap_high": np.full(len(attributes), 0.95), "roc_auc": 0.5,
                            "roc_auc_low": 0.4, "roc_auc_high": 0.6, "verdict": "no better than chance"},
                           index=pd.Index(attributes, name="attribute"))
    better = np.ones(len(attributes), bool) if better is None else better
    return OutOfFold([f"image_{i}.jpg" for i in range(len(truth))], attributes, truth * known, known,
                     1 / (1 + np.exp(-logits)), better, metrics, np.ones(len(attributes)),
                     np.arange(len(truth)) % 5, Path("labels.txt"), Path("images"), [])


@pytest.fixture
def planted() -> tuple[OutOfFold, np.ndarray, np.ndarray]:
    """600 images, 3 learnable attributes, 10 % NA; 5 % of the known labels flipped. (oof, truth, flipped)"""
    rng = np.random.default_rng(1)
    truth = (rng.random((600, 3)) < [0.5, 0.3, 0.8]).astype(float)
    known = rng.random(truth.shape) > 0.1
    oof = scored(truth, known, np.array([3.0, 3.0, 3.0]))
    flipped = known & (rng.random(truth.shape) < 0.05)
    oof.targets = np.where(flipped, 1 - truth, truth) * known
    return oof, truth, flipped


def test_planted_flips_lead_the_audit_and_na_entries_are_never_flagged(planted):
    oof, _, flipped = planted
    # NA entries whose probability contradicts whatever they would be: still never flagged
    oof.probabilities[~oof.known] = np.where(oof.targets[~oof.known] > 0, 0.001, 0.999)
    suspects = audit(oof)
    rows = {name: i for i, name in enumerate(oof.images)}
    where = [(rows[image], oof.attributes.index(attribute)) for image, attribute in
             zip(suspects["image"], suspects["attribute"], strict=True)]
    assert all(oof.known[i, j] for i, j in where)
    top = suspects.sort_values("score").head(2 * int(flipped.sum()))
    found = sum(flipped[rows[image], oof.attributes.index(attribute)]
                for image, attribute in zip(top["image"], top["attribute"], strict=True))
    assert found >= 0.8 * flipped.sum(), (found, flipped.sum())
    assert (suspects.groupby("attribute")["rank"].min() == 1).all()
    assert list(suspects.columns) == ["image", "attribute", "given", "probability", "rank", "score"]


def test_an_attribute_not_better_than_chance_is_not_audited_and_the_summary_says_why(planted):
    oof, _, _ = planted
    oof.better_than_chance[1] = False
    suspects = audit(oof)
    assert "Attr2" not in set(suspects["attribute"]) and {"Attr1", "Attr3"} <= set(suspects["attribute"])
    assert "Attr2: not audited" in "\n".join(audit_summary(oof, suspects))
    oof.better_than_chance[:] = False
    assert audit(oof).empty


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_fills_reach_the_level_asked_on_the_hidden_truth(level: float):
    rng = np.random.default_rng(2)
    truth = (rng.random((4000, 3)) < [0.5, 0.2, 0.5]).astype(float)
    known = rng.random(truth.shape) > 0.3
    oof = scored(truth, known, np.array([3.0, 2.0, 0.3]))  # the last one barely informative
    completion = complete(oof, level)
    for rule in completion.rules.itertuples():
        j = oof.attributes.index(rule.attribute)
        filled = completion.fills[:, j] == rule.value
        assert not (filled & oof.known[:, j]).any()
        if rule.filled:  # never written where the estimated precision is below the level
            assert rule.precision_low >= level
            assert (truth[filled, j] == rule.value).mean() >= level - 0.02
    attr3 = completion.rules[completion.rules["attribute"] == "Attr3"]
    assert (attr3["filled"] == 0).all() and attr3["reason"].str.startswith("no threshold").all()
    assert completion.rules.set_index(["attribute", "value"]).loc[("Attr1", 1), "filled"] > 0


def test_no_fills_for_an_attribute_not_better_than_chance():
    rng = np.random.default_rng(3)
    truth = (rng.random((1000, 2)) < 0.5).astype(float)
    oof = scored(truth, rng.random(truth.shape) > 0.3, np.array([3.0, 3.0]), better=np.array([True, False]))
    completion = complete(oof)
    assert (completion.fills[:, 1] == NOT_FILLED).all() and (completion.fills[:, 0] != NOT_FILLED).any()
    assert "Attr2 as present (1): nothing filled: no better than chance" in "\n".join(completion_summary(completion))
    with pytest.raises(ValueError, match="level"):
        complete(oof, 1.0)


def test_the_completed_file_fills_only_na_and_the_original_never_changes(tmp_path: Path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"filename A B\r\nimage_0.jpg 1 NA\r\nimage_1.jpg NA NA\r\ngone.jpg NA 0\r\n")
    original = labels.read_bytes()
    truth, known = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[True, False], [False, False]])
    oof = scored(truth, known, np.array([3.0, 3.0]))
    oof.attributes = ["A", "B"]
    completion = complete(oof)
    completion.fills = np.array([[NOT_FILLED, 0], [1, NOT_FILLED]])
    out = write_completed(completion, labels)
    assert out == tmp_path / "labels.completed.txt" and labels.read_bytes() == original
    assert out.read_bytes() == b"filename A B\r\nimage_0.jpg 1 0\r\nimage_1.jpg 1 NA\r\ngone.jpg NA 0\r\n"
    assert read_labels(out).attributes == ["A", "B"]
    with pytest.raises(AimonkError, match="not written over"):
        write_completed(completion, labels, labels)
    assert labels.read_bytes() == original


def test_next_never_proposes_a_known_entry_and_ranks_by_priority(planted):
    oof, _, _ = planted
    chosen = next_to_label(oof, 25)
    assert len(chosen) == 25 and chosen["priority"].is_monotonic_decreasing
    rows = {name: i for i, name in enumerate(oof.images)}
    assert not any(oof.known[rows[image], oof.attributes.index(attribute)]
                   for image, attribute in zip(chosen["image"], chosen["attribute"], strict=True))
    every = next_to_label(oof, 10**6)
    assert len(every) == (~oof.known).sum()  # all the NA entries, and nothing else
    p = every["probability"]
    assert np.allclose(every["priority"] / (p * (1 - p)), [0.05 + 1 / 3] * len(every))


def test_label_studio_tasks_are_json_of_the_documented_shape(planted, tmp_path: Path):
    oof, _, _ = planted
    chosen = next_to_label(oof, 5)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(label_studio_tasks(chosen, ROOT / "images")))
    tasks = json.loads(path.read_text())
    assert len(tasks) == 5
    for rank, (task, row) in enumerate(zip(tasks, chosen.itertuples(), strict=True), start=1):
        assert set(task) == {"data", "meta"} and set(task["data"]) == {"image", "attribute"}
        assert task["data"]["attribute"] == row.attribute
        assert task["data"]["image"].startswith("/data/local-files/?d=")
        assert task["data"]["image"].endswith(row.image)
        assert task["meta"]["rank"] == rank and task["meta"]["file"] == row.image
