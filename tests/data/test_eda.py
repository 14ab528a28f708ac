"""Exploratory tables: label balance, missing labels, co-occurrence and independence, image file facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import chi2_contingency

from aimonk.data.eda import cooccurrence, describe_images, independence_tests, label_counts, na_patterns, na_per_image
from aimonk.data.labels import read_labels

LINES = [
    "a.jpg 1 1 NA",
    "b.jpg 1 1 0",
    "c.jpg 0 0 0",
    "d.jpg 1 NA NA",
    "e.jpg 0 0 1",
    "f.jpg 1 1 1",
    "g.jpg 0 1 NA",
]


@pytest.fixture
def table(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LINES) + "\n")
    return read_labels(path)


def test_label_counts(table):
    counts = label_counts(table)
    assert counts[["positive", "negative", "NA"]].to_numpy().tolist() == [[4, 3, 0], [4, 2, 1], [2, 2, 3]]
    assert counts.loc["Attr2", "positive_rate"] == pytest.approx(4 / 6)
    assert counts.loc["Attr3", "NA_rate"] == pytest.approx(3 / 7)
    assert counts.loc["Attr1", "imbalance"] == pytest.approx(4 / 3)


def test_imbalance_is_infinite_when_a_class_is_absent(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_text("a.jpg 1\nb.jpg 1\n")
    assert np.isinf(label_counts(read_labels(path)).loc["Attr1", "imbalance"])


def test_missing_labels_per_image_and_patterns(table):
    assert na_per_image(table)["images"].tolist() == [4, 2, 1, 0]
    patterns = na_patterns(table)["images"]
    assert patterns.to_dict() == {"none": 4, "Attr3": 2, "Attr2, Attr3": 1}


def test_cooccurrence_counts_rows_where_both_are_positive(table):
    matrix = cooccurrence(table)
    assert matrix.loc["Attr1", "Attr2"] == 3  # a, b, f (d is NA for Attr2)
    assert matrix.loc["Attr2", "Attr3"] == 1
    assert matrix.loc["Attr3", "Attr3"] == 2


def test_independence_test_matches_scipy_over_known_pairs(table):
    tests = independence_tests(table).set_index(["attribute_a", "attribute_b"])
    row = tests.loc[("Attr1", "Attr2")]
    # Known pairs a, b, c, e, f, g: Attr1 (1,1,0,0,1,0) vs Attr2 (1,1,0,0,1,1).
    expected = chi2_contingency(np.array([[2, 1], [0, 3]]), correction=False)
    assert row["n"] == 6 and row["both_positive"] == 3
    assert row["chi2"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert 0 < row["phi"] <= 1 and row["phi"] ** 2 * 6 == pytest.approx(expected.statistic)
    assert len(tests) == 3 and tests["dependent"].dtype == bool


def test_strongly_dependent_attributes_are_flagged(tmp_path: Path):
    rng = np.random.default_rng(0)
    first = rng.random(300) < 0.5
    second = np.where(rng.random(300) < 0.9, ~first, first)  # mostly the opposite: negative association
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"{i}.jpg {int(a)} {int(b)}\n" for i, (a, b) in enumerate(zip(first, second, strict=True))))
    row = independence_tests(read_labels(path)).iloc[0]
    assert row["dependent"] and row["phi"] < -0.5


def test_a_pair_without_both_values_has_no_test(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_text("a.jpg 1 0\nb.jpg 1 1\nc.jpg 1 0\n")
    row = independence_tests(read_labels(path)).iloc[0]
    assert np.isnan(row["p_value"]) and not row["dependent"]


def test_describe_images_finds_format_by_content(tmp_path: Path):
    Image.new("RGB", (30, 20)).save(tmp_path / "photo.jpg", format="JPEG")
    Image.new("RGBA", (8, 9)).save(tmp_path / "disguised.jpg", format="PNG")
    Image.new("L", (5, 5)).save(tmp_path / "grey.png", format="PNG")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    images = describe_images(tmp_path, ["photo.jpg", "disguised.jpg", "grey.png", "broken.jpg", "gone.jpg"])
    images = images.set_index("file")
    assert images.loc["photo.jpg", ["format", "width", "height", "mode"]].tolist() == ["JPEG", 30, 20, "RGB"]
    assert images.loc["disguised.jpg", ["format", "mode"]].tolist() == ["PNG", "RGBA"]
    assert images["format_matches_extension"].to_dict() == {
        "photo.jpg": True, "disguised.jpg": False, "grey.png": True, "broken.jpg": False, "gone.jpg": False
    }
    assert images.loc["photo.jpg", "bytes"] == (tmp_path / "photo.jpg").stat().st_size
    assert images.loc["broken.jpg", "error"].startswith("unreadable")
    assert images.loc["gone.jpg", "error"] == "missing"
