"""complete and write_completed on out-of-fold probabilities whose truth is known: fills reach the level asked,
never where the estimated precision is below it; the original labels file never changes (docs/testing.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import scored_labels

from aimonk.data.labels import read_labels
from aimonk.errors import AimonkError
from aimonk.labelling.complete import NOT_FILLED, complete, completion_summary, write_completed


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_fills_reach_the_level_asked_on_the_hidden_truth(level: float):
    rng = np.random.default_rng(2)
    truth = (rng.random((4000, 3)) < [0.5, 0.2, 0.5]).astype(float)
    known = rng.random(truth.shape) > 0.3
    oof = scored_labels(truth, known, np.array([3.0, 2.0, 0.3]))  # the last one barely informative
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
    oof = scored_labels(truth, rng.random(truth.shape) > 0.3, np.array([3.0, 3.0]), better=np.array([True, False]))
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
    oof = scored_labels(truth, known, np.array([3.0, 3.0]))
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


ODD = (b"\xef\xbb\xbffilename\tA\tB\r\n"  # BOM, a header with tabs, CRLF
       b"  image_0.jpg\t1\tNA\r\n"  # leading blanks and tabs
       b"\r\n"
       b"image_1.jpg  NA   NA \r\n"  # repeated and trailing blanks
       b"\tgone.jpg NA\t0\n"  # an image left out of the completion, an LF among CRLF
       b"image_2.jpg NA NA")  # no final newline


@pytest.mark.parametrize(("fills", "expected"), [
    ([[NOT_FILLED, 0], [1, NOT_FILLED], [NOT_FILLED, NOT_FILLED]],
     ODD.replace(b"\t1\tNA\r\n", b"\t1\t0\r\n").replace(b"image_1.jpg  NA", b"image_1.jpg  1")),
    ([[NOT_FILLED, NOT_FILLED]] * 3, ODD),
    ([[NOT_FILLED, NOT_FILLED], [NOT_FILLED, NOT_FILLED], [0, 1]],
     ODD.replace(b"image_2.jpg NA NA", b"image_2.jpg 0 1")),
], ids=["two-fills", "nothing-filled", "the-line-without-newline"])
def test_the_completed_file_differs_from_the_original_in_exactly_the_filled_fields(tmp_path: Path, fills, expected):
    """Tabs, leading blanks, CRLF, a BOM and no final newline: every byte but the filled fields' stays (issue 32)."""
    labels = tmp_path / "labels.txt"
    labels.write_bytes(ODD)
    oof = scored_labels(np.zeros((3, 2)), np.array([[True, False], [False, False], [False, False]]),
                        np.array([3.0, 3.0]))
    oof.attributes = ["A", "B"]
    completion = complete(oof)
    completion.fills = np.array(fills)
    assert write_completed(completion, labels).read_bytes() == expected
    assert labels.read_bytes() == ODD
